//! The SIEM stream (issue 15, decision 0016): every audit event, as it is committed, to the
//! plant's syslog collector, in `seq` order, from a cursor kept in the database (`siem` in
//! `delivery_cursors`), so a collector that was away gets what it missed.
//!
//! - [`format`]: one event as an RFC 5424 message (JSON or CEF in MSG);
//! - [`transport`]: UDP datagrams, or TCP / TLS with octet-counting framing;
//! - [`forward`]: the follower that reads after the cursor, sends, and moves the cursor.
//!
//! The binary parses `[syslog]` from its config file into a [`SyslogConfig`] and starts
//! [`forward::start`] in `serve` and `web`.
#![forbid(unsafe_code)]

pub mod config;
pub mod format;
pub mod forward;
pub mod transport;

pub use config::{ConfigError, SyslogConfig, SyslogFile};
pub use format::{MessageFormat, Severity};
pub use forward::{Forwarder, SiemMetrics};
pub use transport::Endpoint;
