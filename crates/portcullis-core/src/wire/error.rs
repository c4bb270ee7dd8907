//! Everything that can be wrong with a frame, said so that a person reading a log can act on it.

use thiserror::Error;

/// A frame that cannot be encoded or decoded. After a decode error the stream is out of step and
/// must be closed: there is no way to find the next frame boundary.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The length prefix (or an encoded frame) is over [`super::MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    /// The length prefix is 0, so there is not even a kind byte.
    #[error("empty frame: the length prefix is 0, but every frame has at least a kind byte")]
    EmptyFrame,
    /// The kind byte names no frame this build knows.
    #[error("unknown frame kind 0x{0:02x}; the peer may speak another protocol version")]
    UnknownKind(u8),
    /// The body ended in the middle of a field (or a list count promises more than the body holds).
    #[error("{frame} frame is cut short: it ends inside field `{field}`")]
    Truncated {
        frame: &'static str,
        field: &'static str,
    },
    /// A string field is not valid UTF-8.
    #[error("{frame} frame: field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        frame: &'static str,
        field: &'static str,
    },
    /// The body has bytes left after its last field.
    #[error("{frame} frame has {count} unexpected byte(s) after its last field")]
    TrailingBytes { frame: &'static str, count: usize },
    /// Encoding: a string is longer than its `u16` length prefix can say.
    #[error("{frame} frame: field `{field}` is {len} bytes long; the limit is 65535")]
    StringTooLong {
        frame: &'static str,
        field: &'static str,
        len: usize,
    },
    /// A field holds a value its kind cannot (a grant number that is not a positive number).
    #[error("{frame} frame: field `{field}` {reason}")]
    BadValue {
        frame: &'static str,
        field: &'static str,
        reason: &'static str,
    },
    /// Encoding: a list has more items than its `u16` count can say.
    #[error("{frame} frame: field `{field}` has {count} items; the limit is 65535")]
    TooManyItems {
        frame: &'static str,
        field: &'static str,
        count: usize,
    },
}
