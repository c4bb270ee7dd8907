//! The site connector: runs in (or at the edge of) a plant's OT zone, dials **out** to the relay
//! over QUIC, and carries the relay's dials to the devices its local allowlist permits. The OT
//! zone accepts no inbound connection (docs/decisions/0007-site-connectors.md).
//!
//! - [`allowlist`]: the plant's own list of devices this connector may dial (TOML, deny by
//!   default).
//! - [`enroll`]: `portcullis connector enroll`: a key made here, a certificate from the broker's
//!   site CA, written to the [`state`] directory.
//! - [`link`]: `portcullis connector run`: the connection to the relay, Ping/Pong, reconnects with
//!   [`backoff`], and the dial streams (`dial`).
//! - [`config`]: the timings ([`ConnectorConfig`]) and the QUIC transport built from them.
//!
//! The connector depends on the wire protocol (`portcullis-core`) and the TLS/QUIC helpers
//! (`portcullis-net`) only: no database, no web service, no relay code.
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod backoff;
pub mod config;
mod dial;
pub mod enroll;
pub mod link;
pub mod state;

pub use allowlist::{Allowlist, AllowlistError};
pub use config::ConnectorConfig;
pub use enroll::{EnrollError, EnrollOptions, Enrolled, enroll};
pub use link::{Connector, SetupError};
pub use state::{Enrollment, Identity, StateDir, StateError};

/// The one `host:port` parser (`portcullis_net::addr`), kept here under its old path.
pub use portcullis_net::split_host_port;

/// `text` on one line with control characters replaced and at most `max` characters: for words
/// from the network (the relay's names, the broker's messages) in logs and frames.
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_control_characters_and_bounds_length() {
        assert_eq!(printable("a\nb\x1b[31m", 100), "a b [31m");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
