//! Settings, layered: command-line flags, then environment (`PORTCULLIS_*`, handled by clap),
//! then the `--config` TOML file, then defaults.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::cli::Globals;

/// The TOML file. Unknown keys are an error, so a typo never silently falls back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    /// The SIEM stream (issue 15, decision 0016).
    syslog: Option<portcullis_siem::SyslogFile>,
}

pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub syslog: Option<portcullis_siem::SyslogConfig>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &portcullis_store::redact(&self.database_url),
            )
            .field("syslog", &self.syslog)
            .finish()
    }
}

impl Settings {
    pub fn resolve(cli: &Globals) -> anyhow::Result<Settings> {
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("portcullis-data"));
        let data_dir = absolute(&data_dir)?;
        let database_url = cli
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("portcullis.db").display()));
        let syslog = file
            .syslog
            .as_ref()
            .map(portcullis_siem::SyslogConfig::from_file)
            .transpose()
            .map_err(|e| match &cli.config {
                Some(p) => anyhow::anyhow!("config file {}: {e}", p.display()),
                None => anyhow::anyhow!("{e}"),
            })?;
        Ok(Settings {
            data_dir,
            database_url,
            syslog,
        })
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}
