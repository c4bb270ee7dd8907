//! The `[smtp]`, `[[webhook]]` and `[notifications]` tables of the config file, checked when the
//! broker starts: a typo, an unreadable secret file or a plain-HTTP webhook stops it with a
//! sentence naming the key, instead of failing every delivery later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_core::Email;
use portcullis_core::notify::{RetryPolicy, check_pattern};
use serde::Deserialize;

/// `[smtp]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    /// `host:port`.
    pub server: String,
    pub from: String,
    /// `none`, `starttls` (the default) or `tls`.
    #[serde(default)]
    pub tls: Option<String>,
    pub username: Option<String>,
    /// A file holding the SMTP password (never the password itself in the config).
    pub password_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for the server, besides the public roots.
    pub ca_file: Option<PathBuf>,
}

/// One `[[webhook]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: String,
    /// A file holding the shared HMAC secret.
    pub secret_file: PathBuf,
    /// Event patterns: `request.create`, `alert.*`, `*`.
    pub events: Vec<String>,
    /// A PEM file of CA certificates trusted for the receiver, besides the public roots.
    pub ca_file: Option<PathBuf>,
}

/// `[notifications]`: how deliveries are retried.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsFile {
    pub retry_first_secs: Option<u64>,
    pub retry_max_secs: Option<u64>,
    pub attempts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP: only for a relay on the same host or a test.
    None,
    /// STARTTLS on the submission port (587), required: a server that does not offer it fails.
    StartTls,
    /// TLS from the first byte (465).
    Tls,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub from: Email,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM text of extra trusted CAs.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    pub secret: Vec<u8>,
    pub events: Vec<String>,
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Everything the notifier needs from the config file.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub smtp: Option<SmtpConfig>,
    pub webhooks: Vec<WebhookConfig>,
    pub retry: RetryPolicy,
}

fn read_secret(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{key} = {}: cannot read it: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!("{key} = {}: the file is empty", path.display());
    }
    Ok(secret.as_bytes().to_vec())
}

fn read_pem(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{key} = {}: cannot read it: {e}", path.display()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("{key} = {}: holds no PEM certificate", path.display());
    }
    Ok(bytes)
}

impl SmtpFile {
    fn check(&self) -> anyhow::Result<SmtpConfig> {
        let (host, port) = self
            .server
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, p)| !h.is_empty() && *p != 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "[smtp] server = '{}': expected host:port, e.g. mail.plant.example:587",
                    self.server
                )
            })?;
        let from = Email::parse(&self.from).map_err(|e| anyhow::anyhow!("[smtp] from: {e}"))?;
        let tls = match self.tls.as_deref().unwrap_or("starttls") {
            "none" => SmtpTls::None,
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            other => {
                anyhow::bail!("[smtp] tls = '{other}': expected \"none\", \"starttls\" or \"tls\"")
            }
        };
        let password = match &self.password_file {
            Some(p) => Some(
                String::from_utf8(read_secret("[smtp] password_file", p)?)
                    .map_err(|_| anyhow::anyhow!("[smtp] password_file: not UTF-8 text"))?,
            ),
            None => None,
        };
        if password.is_some() != self.username.is_some() {
            anyhow::bail!("[smtp]: username and password_file go together");
        }
        if password.is_some() && tls == SmtpTls::None {
            anyhow::bail!("[smtp]: a password is never sent without TLS; set tls = \"starttls\"");
        }
        Ok(SmtpConfig {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            from,
            tls,
            username: self.username.clone(),
            password,
            ca_pem: self
                .ca_file
                .as_deref()
                .map(|p| read_pem("[smtp] ca_file", p))
                .transpose()?,
        })
    }
}

impl WebhookFile {
    fn check(&self, n: usize) -> anyhow::Result<WebhookConfig> {
        let key = format!("[[webhook]] #{n}");
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("{key} url = '{}': {e}", self.url))?;
        if url.scheme() != "https" {
            anyhow::bail!(
                "{key} url = '{}': webhooks go over HTTPS only (https://...)",
                self.url
            );
        }
        if !url.username().is_empty() || url.password().is_some() {
            anyhow::bail!(
                "{key} url: put no credentials in the URL; the HMAC secret signs each post"
            );
        }
        if self.events.is_empty() {
            anyhow::bail!(
                "{key} events: list at least one, e.g. [\"request.create\", \"alert.*\"]"
            );
        }
        for p in &self.events {
            check_pattern(p).map_err(|e| anyhow::anyhow!("{key} events: {e}"))?;
        }
        Ok(WebhookConfig {
            url,
            secret: read_secret(&format!("{key} secret_file"), &self.secret_file)?,
            events: self.events.clone(),
            ca_pem: self
                .ca_file
                .as_deref()
                .map(|p| read_pem(&format!("{key} ca_file"), p))
                .transpose()?,
        })
    }
}

impl NotifyConfig {
    /// Checks the file's tables and reads the secrets they name.
    pub fn from_file(
        smtp: Option<&SmtpFile>,
        webhooks: &[WebhookFile],
        notifications: Option<&NotificationsFile>,
    ) -> anyhow::Result<NotifyConfig> {
        let mut retry = RetryPolicy::default();
        if let Some(n) = notifications {
            if let Some(s) = n.retry_first_secs {
                anyhow::ensure!(s > 0, "[notifications] retry_first_secs must be at least 1");
                retry.first = Duration::from_secs(s);
            }
            if let Some(s) = n.retry_max_secs {
                anyhow::ensure!(s > 0, "[notifications] retry_max_secs must be at least 1");
                retry.max = Duration::from_secs(s);
            }
            if let Some(a) = n.attempts {
                anyhow::ensure!(
                    (1..=100).contains(&a),
                    "[notifications] attempts must be between 1 and 100"
                );
                retry.attempts = a;
            }
            anyhow::ensure!(
                retry.max >= retry.first,
                "[notifications] retry_max_secs must not be below retry_first_secs"
            );
        }
        Ok(NotifyConfig {
            smtp: smtp.map(SmtpFile::check).transpose()?,
            webhooks: webhooks
                .iter()
                .enumerate()
                .map(|(i, w)| w.check(i + 1))
                .collect::<anyhow::Result<_>>()?,
            retry,
        })
    }

    /// The settings as lines a page can show: no secrets, and no secret file names either.
    pub fn summary(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(s) = &self.smtp {
            let tls = match s.tls {
                SmtpTls::None => "no TLS",
                SmtpTls::StartTls => "STARTTLS",
                SmtpTls::Tls => "TLS",
            };
            out.push((
                "E-mail".into(),
                format!("{}:{} ({tls}), from {}", s.host, s.port, s.from),
            ));
        }
        for w in &self.webhooks {
            out.push((
                "Webhook".into(),
                format!("{} for {}", w.url, w.events.join(", ")),
            ));
        }
        let r = &self.retry;
        out.push((
            "Retries".into(),
            format!(
                "first after {} s, doubling to at most {} s, {} tries in all",
                r.first.as_secs(),
                r.max.as_secs(),
                r.attempts
            ),
        ));
        out
    }

    /// Whether anything is configured to send to.
    pub fn is_empty(&self) -> bool {
        self.smtp.is_none() && self.webhooks.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn smtp(server: &str, tls: Option<&str>) -> SmtpFile {
        SmtpFile {
            server: server.into(),
            from: "portcullis@plant.example".into(),
            tls: tls.map(str::to_owned),
            username: None,
            password_file: None,
            ca_file: None,
        }
    }

    #[test]
    fn smtp_settings_are_checked_with_the_key_named() {
        let ok = NotifyConfig::from_file(Some(&smtp("mail.plant.example:587", None)), &[], None)
            .unwrap();
        let s = ok.smtp.unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("mail.plant.example", 587, SmtpTls::StartTls)
        );
        for (server, tls, says) in [
            ("mail.plant.example", None, "host:port"),
            ("mail.plant.example:0", None, "host:port"),
            ("mail.plant.example:587", Some("ssl"), "tls = 'ssl'"),
        ] {
            let e = NotifyConfig::from_file(Some(&smtp(server, tls)), &[], None).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn webhooks_need_https_patterns_and_a_readable_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "shared secret\n").unwrap();
        let hook = |url: &str, events: &[&str], secret_file: &Path| WebhookFile {
            url: url.into(),
            secret_file: secret_file.to_path_buf(),
            events: events.iter().map(|e| e.to_string()).collect(),
            ca_file: None,
        };
        let ok = NotifyConfig::from_file(
            None,
            &[hook("https://hooks.plant.example/p", &["alert.*"], &secret)],
            None,
        )
        .unwrap();
        assert_eq!(ok.webhooks[0].secret, b"shared secret");
        for (h, says) in [
            (
                hook("http://hooks.plant.example/p", &["alert.*"], &secret),
                "HTTPS only",
            ),
            (
                hook("https://hooks.plant.example/p", &[], &secret),
                "at least one",
            ),
            (
                hook("https://hooks.plant.example/p", &["Alert"], &secret),
                "not an event pattern",
            ),
            (
                hook(
                    "https://hooks.plant.example/p",
                    &["alert.*"],
                    &dir.path().join("none"),
                ),
                "cannot read it",
            ),
        ] {
            let e = NotifyConfig::from_file(None, &[h], None).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
