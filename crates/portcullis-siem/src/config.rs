//! `[syslog]` in the config file, and the typed settings it becomes.
//!
//! ```toml
//! [syslog]
//! server = "tcp+tls://siem.plant.example:6514"   # or "udp://host:514", "tcp://host:601"
//! format = "json"                                # or "cef"
//! ca_file = "/etc/portcullis/siem-ca.pem"        # tcp+tls only: trusted besides the web PKI
//! facility = "authpriv"                          # a syslog facility name or 0..23
//! app_name = "portcullis"                        # APP-NAME in each message
//! hostname = "broker-1"                          # HOSTNAME; default: this machine's name
//! ```
//!
//! Every check names the key it is about, so `syslog.server: ...` says which line to fix.

use std::path::PathBuf;

use serde::Deserialize;

use crate::format::{Facility, MessageFormat, printable_ascii};
use crate::transport::{Endpoint, Scheme};

/// `[syslog]` as written in the file. Unknown keys are an error, like the rest of the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogFile {
    pub server: String,
    pub format: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub facility: Option<String>,
    pub app_name: Option<String>,
    pub hostname: Option<String>,
}

/// The checked settings of the SIEM stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    pub endpoint: Endpoint,
    pub format: MessageFormat,
    /// PEM CA certificates trusted for `tcp+tls` besides the public web PKI (read when the
    /// stream starts, so a command that never streams does not need the file).
    pub ca_file: Option<PathBuf>,
    pub facility: Facility,
    pub app_name: String,
    /// HOSTNAME in each message; `None`: this machine's name, read when the stream starts.
    pub hostname: Option<String>,
}

/// A `[syslog]` value a person must fix; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("syslog.{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// RFC 5424 limits APP-NAME to 48 and HOSTNAME to 255 printable US-ASCII characters.
const APP_NAME_MAX: usize = 48;
const HOSTNAME_MAX: usize = 255;

impl SyslogConfig {
    pub fn from_file(file: &SyslogFile) -> Result<Self, ConfigError> {
        let endpoint: Endpoint = file.server.parse()?;
        let format = match file.format.as_deref().map(str::trim) {
            None | Some("json") => MessageFormat::Json,
            Some("cef") => MessageFormat::Cef,
            Some(other) => {
                return Err(ConfigError::new(
                    "format",
                    format!("'{other}' is not a format: use \"json\" or \"cef\""),
                ));
            }
        };
        if file.ca_file.is_some() && endpoint.scheme != Scheme::Tls {
            return Err(ConfigError::new(
                "ca_file",
                format!(
                    "only a tcp+tls:// server uses a CA file, and the server is {}",
                    endpoint
                ),
            ));
        }
        let facility = match &file.facility {
            None => Facility::AUTHPRIV,
            Some(name) => Facility::parse(name).ok_or_else(|| {
                ConfigError::new(
                    "facility",
                    format!(
                        "'{name}' is not a syslog facility: use a name such as \"authpriv\", \
                         \"auth\", \"daemon\", \"local0\"..\"local7\", or a number 0..23"
                    ),
                )
            })?,
        };
        let app_name = match &file.app_name {
            None => "portcullis".to_owned(),
            Some(a) => checked_token(a, "app_name", APP_NAME_MAX)?,
        };
        let hostname = file
            .hostname
            .as_deref()
            .map(|h| checked_token(h, "hostname", HOSTNAME_MAX))
            .transpose()?;
        Ok(Self {
            endpoint,
            format,
            ca_file: file.ca_file.clone(),
            facility,
            app_name,
            hostname,
        })
    }

    /// HOSTNAME for the messages: the configured one, else this machine's name made safe for
    /// the header, else the nil value `-`.
    pub fn hostname_or_local(&self) -> String {
        if let Some(h) = &self.hostname {
            return h.clone();
        }
        let local = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let name = printable_ascii(local.trim(), HOSTNAME_MAX);
        if name.is_empty() {
            "-".to_owned()
        } else {
            name
        }
    }
}

fn checked_token(value: &str, key: &'static str, max: usize) -> Result<String, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(ConfigError::new(
            key,
            format!(
                "'{value}' must be 1 to {max} printable ASCII characters without spaces \
                 (RFC 5424)"
            ),
        ));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(server: &str) -> SyslogFile {
        SyslogFile {
            server: server.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_json_authpriv_and_portcullis() {
        let c = SyslogConfig::from_file(&file("tcp+tls://siem.plant.example:6514")).unwrap();
        assert_eq!(c.format, MessageFormat::Json);
        assert_eq!(c.facility, Facility::AUTHPRIV);
        assert_eq!(c.app_name, "portcullis");
        assert_eq!(c.endpoint.host, "siem.plant.example");
        assert_eq!(c.endpoint.port, 6514);
        assert_eq!(c.endpoint.scheme, Scheme::Tls);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut f = file("udp://h:514");
        f.format = Some("xml".into());
        let e = SyslogConfig::from_file(&f).unwrap_err().to_string();
        assert!(e.starts_with("syslog.format: 'xml'"), "{e}");

        let mut f = file("tcp://h:601");
        f.ca_file = Some("/ca.pem".into());
        let e = SyslogConfig::from_file(&f).unwrap_err().to_string();
        assert!(e.starts_with("syslog.ca_file: only a tcp+tls://"), "{e}");

        let mut f = file("udp://h:514");
        f.facility = Some("kitchen".into());
        let e = SyslogConfig::from_file(&f).unwrap_err().to_string();
        assert!(e.starts_with("syslog.facility: 'kitchen'"), "{e}");

        let mut f = file("udp://h:514");
        f.app_name = Some("two words".into());
        let e = SyslogConfig::from_file(&f).unwrap_err().to_string();
        assert!(e.starts_with("syslog.app_name:"), "{e}");

        let mut f = file("udp://h:514");
        f.facility = Some("local3".into());
        f.format = Some("cef".into());
        let c = SyslogConfig::from_file(&f).unwrap();
        assert_eq!(c.facility, Facility(19));
        assert_eq!(c.format, MessageFormat::Cef);
    }

    #[test]
    fn the_local_hostname_is_a_header_token() {
        let c = SyslogConfig::from_file(&file("udp://h:514")).unwrap();
        let h = c.hostname_or_local();
        assert!(
            !h.is_empty() && h.bytes().all(|b| (33..=126).contains(&b)),
            "{h}"
        );
    }
}
