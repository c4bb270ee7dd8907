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
    /// Alert thresholds (issue 15): `[alerts]`.
    alerts: Option<AlertsFile>,
    /// The SIEM stream (issue 15, decision 0016).
    syslog: Option<portcullis_siem::SyslogFile>,
}

pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// `[smtp]`, `[[webhook]]` and `[notifications]`, checked (and their secret files read) by
    /// the commands that deliver: [`Settings::notify`].
    smtp: Option<portcullis_notify::SmtpFile>,
    webhooks: Vec<portcullis_notify::WebhookFile>,
    notifications: Option<portcullis_notify::NotificationsFile>,
    /// When alerts fire: the `[alerts]` table over the defaults.
    pub alerts: portcullis_core::alert::Thresholds,
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
            .field("alerts", &self.alerts)
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
        let alerts = match &file.alerts {
            Some(a) => a.thresholds()?,
            None => portcullis_core::alert::Thresholds::default(),
        };
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
            smtp: file.smtp,
            webhooks: file.webhook,
            notifications: file.notifications,
            alerts,
            syslog,
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

/// `[alerts]`: every key optional, defaults in [`portcullis_core::alert::Thresholds`]. Read as
/// signed integers so that a negative value gets an error naming its key, not a parser's
/// "expected u32".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    login_failures: Option<i64>,
    login_failures_minutes: Option<i64>,
    relay_refusals: Option<i64>,
    relay_refusals_minutes: Option<i64>,
    connector_offline_secs: Option<i64>,
}

impl AlertsFile {
    fn thresholds(&self) -> anyhow::Result<portcullis_core::alert::Thresholds> {
        use std::time::Duration;
        /// A count or duration of at least 1 (0 would alert on nothing, or on everything at once).
        fn positive(key: &str, v: Option<i64>, max: i64) -> anyhow::Result<Option<u32>> {
            match v {
                None => Ok(None),
                Some(n) if (1..=max).contains(&n) => Ok(u32::try_from(n).ok()),
                Some(n) => anyhow::bail!("alerts.{key} must be between 1 and {max}, not {n}"),
            }
        }
        let mins = |m: u32| Duration::from_secs(u64::from(m) * 60);
        let d = portcullis_core::alert::Thresholds::default();
        Ok(portcullis_core::alert::Thresholds {
            login_failures: positive("login_failures", self.login_failures, 1_000_000)?
                .unwrap_or(d.login_failures),
            login_failures_window: positive(
                "login_failures_minutes",
                self.login_failures_minutes,
                7 * 24 * 60,
            )?
            .map_or(d.login_failures_window, mins),
            relay_refusals: positive("relay_refusals", self.relay_refusals, 1_000_000)?
                .unwrap_or(d.relay_refusals),
            relay_refusals_window: positive(
                "relay_refusals_minutes",
                self.relay_refusals_minutes,
                7 * 24 * 60,
            )?
            .map_or(d.relay_refusals_window, mins),
            connector_offline: positive(
                "connector_offline_secs",
                self.connector_offline_secs,
                7 * 24 * 3600,
            )?
            .map_or(d.connector_offline, |s| Duration::from_secs(u64::from(s))),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod alert_tests {
    use std::time::Duration;

    use super::*;

    fn alerts(toml_text: &str) -> anyhow::Result<portcullis_core::alert::Thresholds> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| anyhow::anyhow!("{e}"))?;
        match file.alerts {
            Some(a) => a.thresholds(),
            None => Ok(portcullis_core::alert::Thresholds::default()),
        }
    }

    #[test]
    fn alert_thresholds_default_and_override_key_by_key() {
        let d = portcullis_core::alert::Thresholds::default();
        assert_eq!(alerts("").unwrap(), d);
        assert_eq!(alerts("[alerts]\n").unwrap(), d);
        let t = alerts(
            "[alerts]\nlogin_failures = 3\nlogin_failures_minutes = 2\n\
             relay_refusals = 4\nrelay_refusals_minutes = 30\nconnector_offline_secs = 2\n",
        )
        .unwrap();
        assert_eq!(t.login_failures, 3);
        assert_eq!(t.login_failures_window, Duration::from_secs(120));
        assert_eq!(t.relay_refusals, 4);
        assert_eq!(t.relay_refusals_window, Duration::from_secs(1800));
        assert_eq!(t.connector_offline, Duration::from_secs(2));
        let only = alerts("[alerts]\nconnector_offline_secs = 5\n").unwrap();
        assert_eq!(only.login_failures, d.login_failures);
        assert_eq!(only.connector_offline, Duration::from_secs(5));
    }

    #[test]
    fn bad_alert_thresholds_are_errors_naming_the_key() {
        for (text, key) in [
            ("login_failures = 0", "alerts.login_failures"),
            (
                "login_failures_minutes = -1",
                "alerts.login_failures_minutes",
            ),
            ("relay_refusals = 0", "alerts.relay_refusals"),
            (
                "relay_refusals_minutes = 0",
                "alerts.relay_refusals_minutes",
            ),
            (
                "connector_offline_secs = -5",
                "alerts.connector_offline_secs",
            ),
        ] {
            let e = alerts(&format!("[alerts]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        // Unknown keys stay errors, inside the table too.
        let e = alerts("[alerts]\nlogin_failure = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("login_failure"), "{e}");
    }
}
