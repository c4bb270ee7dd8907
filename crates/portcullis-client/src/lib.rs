//! The vendor's client: what `portcullis login`, `devices`, `request`, `grants` and `connect` do,
//! without the command line around it.
//!
//! - [`config`]: where the login session is kept (`$PORTCULLIS_CONFIG_DIR`, else
//!   `$XDG_CONFIG_HOME/portcullis`, else `~/.config/portcullis`), written atomically with mode 0600.
//! - [`api`]: the broker's JSON API (`/api/v1`) over HTTPS with a bearer session token.
//! - [`tunnel`]: the QUIC connection to the relay (docs/wire-protocol.md) and the local TCP
//!   listeners whose connections it carries, with reconnects inside the window.
//! - [`request`]: a request as typed on the command line, checked before it is sent.
//! - [`when`]: the times people type (`now`, `+2h`, RFC 3339) and the time left, for display.
//! - [`prompt`]: password and code prompts on a terminal, or lines on a pipe for scripts.
//! - [`trust`]: the certificate authorities the client trusts (the broker's CA from `--ca`, or the
//!   public web PKI), for HTTPS and QUIC alike.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod prompt;
pub mod request;
pub mod trust;
pub mod tunnel;
pub mod when;

/// `text` on one line with control characters replaced and at most `max` characters, for
/// printing words that came from the network (relay messages, API errors): a hostile or broken
/// peer can then neither forge a second output line nor drive the terminal.
pub fn printable(text: &str, max: usize) -> String {
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
        assert_eq!(printable("abc", 3), "abc");
    }
}
