//! The relay wire protocol: frames and their byte encoding, with no IO.
//!
//! The vendor client, the relay and the site connector exchange these frames on QUIC bidirectional
//! streams (ALPN [`ALPN`] / [`CONNECTOR_ALPN`]). A frame is
//!
//! ```text
//! u32 length (big-endian, counts kind + body, 1..=MAX_FRAME_LEN) | u8 kind | body
//! ```
//!
//! Bodies use big-endian integers, `u16`-length-prefixed UTF-8 strings and `u16`-counted lists.
//! The decoder is written for hostile input: every malformed frame is a [`WireError`], never a
//! panic, and it allocates at most a small constant times the frame's declared length (itself at
//! most [`MAX_FRAME_LEN`]), because a list count is checked against the bytes left before any
//! allocation. The encoding is canonical: re-encoding a decoded frame gives back the same bytes.
//! The full protocol (streams, sequences, what the relay checks) is in docs/wire-protocol.md.
//!
//! Readers have two ways in: [`frame_len`] for read-exactly-this-much readers (read 4 bytes, then
//! exactly the announced length, then [`decode`]), which never read past a frame and so suit a data
//! stream whose frames give way to raw bytes; and [`FrameDecoder`] for chunked readers, which keeps
//! the bytes past the last frame for the caller ([`FrameDecoder::into_remainder`]).

mod codes;
mod error;
mod frame;

pub use codes::{EndReason, RefusalCode};
pub use error::WireError;
pub use frame::{Frame, FrameDecoder, Token, WireTarget, decode, frame_len};

/// ALPN protocol id of vendor client connections. The digit is the major version: a change that
/// old peers cannot decode gets a new ALPN id, so the TLS handshake itself refuses a mismatch.
pub const ALPN: &str = "portcullis/1";

/// ALPN protocol id of site-connector connections. A separate id keeps the two roles apart before
/// any frame is read: a vendor connection can never be taken for a connector and be sent `Dial`.
pub const CONNECTOR_ALPN: &str = "portcullis-connector/1";

/// The protocol version carried in `Hello` and `ConnectorHello`; equal to the ALPN major version.
pub const VERSION: u16 = 1;

/// Bytes of the length prefix in front of every frame.
pub const HEADER_LEN: usize = 4;

/// Largest value of the length prefix (kind byte + body): 64 KiB. Bounds what a reader buffers
/// for one frame; the largest real frame (a `Hello` with a ~2 KB token) is far below it.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

#[cfg(test)]
mod tests;
