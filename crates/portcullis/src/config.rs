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
    smtp: Option<portcullis_notify::SmtpFile>,
    #[serde(default)]
    webhook: Vec<portcullis_notify::WebhookFile>,
    notifications: Option<portcullis_notify::NotificationsFile>,
}

pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// `[smtp]`, `[[webhook]]` and `[notifications]`, checked (and their secret files read) by
    /// the commands that deliver: [`Settings::notify`].
    smtp: Option<portcullis_notify::SmtpFile>,
    webhooks: Vec<portcullis_notify::WebhookFile>,
    notifications: Option<portcullis_notify::NotificationsFile>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &portcullis_store::redact(&self.database_url),
            )
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
        Ok(Settings {
            data_dir,
            database_url,
            smtp: file.smtp,
            webhooks: file.webhook,
            notifications: file.notifications,
        })
    }

    /// The notification settings, checked: a bad address, a plain-HTTP webhook or an unreadable
    /// secret file is an error naming its key.
    pub fn notify(&self) -> anyhow::Result<portcullis_notify::NotifyConfig> {
        portcullis_notify::NotifyConfig::from_file(
            self.smtp.as_ref(),
            &self.webhooks,
            self.notifications.as_ref(),
        )
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
