//! Frames, their encoder and their incremental decoder.

use std::fmt;

use crate::GrantId;
use crate::access::Mode;

use super::{EndReason, HEADER_LEN, MAX_FRAME_LEN, RefusalCode, WireError};

/// Kind bytes. 0 is never a frame (a zeroed buffer fails loudly). Ranges by stream type leave room
/// to add frames within a group: 0x01.. control, 0x10.. data, 0x20.. connector, 0x30.. keepalive.
mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const REFUSED: u8 = 0x03;
    pub const WARNING: u8 = 0x04;
    pub const ENDING: u8 = 0x05;
    pub const OPEN: u8 = 0x10;
    pub const OPENED: u8 = 0x11;
    pub const DIAL: u8 = 0x20;
    pub const CONNECTOR_HELLO: u8 = 0x21;
    /// `Dial` with a mode byte at the end: sent for decoded (Modbus) ports only, so a raw dial
    /// stays byte for byte what version-1 connectors read.
    pub const DIAL_MODE: u8 = 0x22;
    pub const PING: u8 = 0x30;
    pub const PONG: u8 = 0x31;
}

/// One message of the relay protocol. Which frame may appear on which stream, in which order, is
/// the peers' business (docs/wire-protocol.md); this type only knows the bytes.
///
/// Names and strings are carried as received: the relay matches them against the grant and the
/// inventory and never uses one to build an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client -> relay, first frame of the control stream.
    Hello { version: u16, token: Token },
    /// Relay -> client: the token and grant checked out.
    Welcome {
        session_id: String,
        /// Written as its decimal digits (a string field, as in version 1 from the start).
        grant_id: GrantId,
        targets: Vec<WireTarget>,
        /// Window end, for display ("until 17:00"); the client's clock may be off.
        window_end_unix_ms: i64,
        /// Time left by the relay's clock when it sent this frame: the client counts down from
        /// this on its monotonic clock, so a skewed vendor laptop still shows the right time left.
        remaining_ms: u64,
    },
    /// Relay (or connector) -> peer: the handshake, `Open` or `Dial` is refused.
    Refused { code: RefusalCode, message: String },
    /// Relay -> client on the control stream: the session ends in `remaining_ms`.
    Warning { remaining_ms: u64 },
    /// Relay -> client on the control stream: the session is over; the connection closes next.
    Ending { reason: EndReason, message: String },
    /// Client -> relay, first frame of a data stream: connect me to this target.
    Open { device: String, port: u16 },
    /// Relay -> client (or connector -> relay): the device is connected; raw bytes follow.
    Opened,
    /// Relay -> connector, first frame of a relay-opened stream: connect to `host:port`. `host`
    /// comes from the relay's inventory, never from a client. `mode` is what the grant allows on
    /// the port, for a connector whose allowlist filters Modbus itself; a raw dial is encoded as
    /// kind `0x20` (no mode byte), any other as `0x22`.
    Dial {
        session_id: String,
        device: String,
        host: String,
        port: u16,
        mode: Mode,
    },
    /// Connector -> relay, first frame of the connector's control stream.
    ConnectorHello { version: u16, site: String },
    /// Keepalive on the connector control stream; the other side answers `Pong` with the nonce.
    Ping { nonce: u64 },
    /// Answer to `Ping`.
    Pong { nonce: u64 },
}

/// One granted device/port pair, as listed in `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WireTarget {
    pub device: String,
    pub port: u16,
}

/// The relay token from `Hello`. A bearer credential (bound to the client certificate, but still
/// not for logs), so `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted, {} bytes>)", self.0.len())
    }
}

impl From<String> for Token {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl Frame {
    /// The frame's name, for logs and "expected X, got Y" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Refused { .. } => "Refused",
            Frame::Warning { .. } => "Warning",
            Frame::Ending { .. } => "Ending",
            Frame::Open { .. } => "Open",
            Frame::Opened => "Opened",
            Frame::Dial { .. } => "Dial",
            Frame::ConnectorHello { .. } => "ConnectorHello",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Welcome { .. } => kind::WELCOME,
            Frame::Refused { .. } => kind::REFUSED,
            Frame::Warning { .. } => kind::WARNING,
            Frame::Ending { .. } => kind::ENDING,
            Frame::Open { .. } => kind::OPEN,
            Frame::Opened => kind::OPENED,
            Frame::Dial {
                mode: Mode::Raw, ..
            } => kind::DIAL,
            Frame::Dial { .. } => kind::DIAL_MODE,
            Frame::ConnectorHello { .. } => kind::CONNECTOR_HELLO,
            Frame::Ping { .. } => kind::PING,
            Frame::Pong { .. } => kind::PONG,
        }
    }

    /// Appends the frame (length prefix included) to `out`. On error `out` is left as it was, so
    /// a half-written frame can never reach a stream.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        let result = self.encode_unchecked(out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The frame as a fresh buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    fn encode_unchecked(&self, out: &mut Vec<u8>, start: usize) -> Result<(), WireError> {
        let w = &mut Writer {
            out,
            frame: self.name(),
        };
        w.out.extend_from_slice(&[0; HEADER_LEN]);
        w.out.push(self.kind());
        match self {
            Frame::Hello { version, token } => {
                w.u16(*version);
                w.str("token", token.as_str())?;
            }
            Frame::Welcome {
                session_id,
                grant_id,
                targets,
                window_end_unix_ms,
                remaining_ms,
            } => {
                w.str("session_id", session_id)?;
                w.str("grant_id", &grant_id.to_string())?;
                let count = u16::try_from(targets.len()).map_err(|_| WireError::TooManyItems {
                    frame: w.frame,
                    field: "targets",
                    count: targets.len(),
                })?;
                w.u16(count);
                for t in targets {
                    w.str("targets.device", &t.device)?;
                    w.u16(t.port);
                }
                w.out.extend_from_slice(&window_end_unix_ms.to_be_bytes());
                w.u64(*remaining_ms);
            }
            Frame::Refused { code, message } => {
                w.out.push(code.code());
                w.str("message", message)?;
            }
            Frame::Warning { remaining_ms } => w.u64(*remaining_ms),
            Frame::Ending { reason, message } => {
                w.out.push(reason.code());
                w.str("message", message)?;
            }
            Frame::Open { device, port } => {
                w.str("device", device)?;
                w.u16(*port);
            }
            Frame::Opened => {}
            Frame::Dial {
                session_id,
                device,
                host,
                port,
                mode,
            } => {
                w.str("session_id", session_id)?;
                w.str("device", device)?;
                w.str("host", host)?;
                w.u16(*port);
                if *mode != Mode::Raw {
                    w.out.push(mode.code());
                }
            }
            Frame::ConnectorHello { version, site } => {
                w.u16(*version);
                w.str("site", site)?;
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => w.u64(*nonce),
        }
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        // `len <= MAX_FRAME_LEN` (64 KiB) fits a u32.
        let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        out[start..start + HEADER_LEN].copy_from_slice(&prefix);
        Ok(())
    }
}

/// Reads a length prefix: the number of bytes (kind + body) that follow it. For readers that read
/// exactly one frame at a time: read [`HEADER_LEN`] bytes, call this, read that many more, and hand
/// the whole frame to [`decode`]. Refuses 0 and anything over [`MAX_FRAME_LEN`] before a single
/// body byte is read.
pub fn frame_len(header: [u8; HEADER_LEN]) -> Result<usize, WireError> {
    // A u32 always fits usize on the 32- and 64-bit targets we build for; saturate otherwise.
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    match len {
        0 => Err(WireError::EmptyFrame),
        n if n > MAX_FRAME_LEN => Err(WireError::FrameTooLarge {
            len: n,
            max: MAX_FRAME_LEN,
        }),
        n => Ok(n),
    }
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)`: `buf` holds only a prefix of a frame; call again with more bytes. `Ok(Some((frame,
/// n)))`: the frame took the first `n` bytes; the rest belongs to what follows. Errors come as
/// early as the bytes allow: an over-long length or an unknown kind fails without waiting for
/// the body.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = frame_len(*header)?;
    let Some((&kind, _)) = rest.split_first() else {
        return Ok(None);
    };
    let name = kind_name(kind).ok_or(WireError::UnknownKind(kind))?;
    let Some(frame) = rest.get(..len) else {
        return Ok(None);
    };
    let r = &mut Reader {
        rest: &frame[1..],
        frame: name,
    };
    let decoded = match kind {
        kind::HELLO => Frame::Hello {
            version: r.u16("version")?,
            token: Token(r.string("token")?),
        },
        kind::WELCOME => {
            let session_id = r.string("session_id")?;
            let grant_id = r.string("grant_id")?;
            let count = usize::from(r.u16("targets")?);
            // Each target takes at least 4 bytes (empty name + port). A count the body cannot
            // hold is refused here, before allocating for it.
            if count > r.rest.len() / 4 {
                return Err(r.truncated("targets"));
            }
            let mut targets = Vec::with_capacity(count);
            for _ in 0..count {
                targets.push(WireTarget {
                    device: r.string("targets.device")?,
                    port: r.u16("targets.port")?,
                });
            }
            // Checked once the body is read, so a cut-short frame says so first.
            let grant_id = grant_id
                .parse::<GrantId>()
                .map_err(|_| WireError::BadValue {
                    frame: "Welcome",
                    field: "grant_id",
                    reason: "is not a grant number",
                });
            let window_end_unix_ms = i64::from_be_bytes(r.array("window_end_unix_ms")?);
            let remaining_ms = r.u64("remaining_ms")?;
            Frame::Welcome {
                session_id,
                grant_id: grant_id?,
                targets,
                window_end_unix_ms,
                remaining_ms,
            }
        }
        kind::REFUSED => Frame::Refused {
            code: RefusalCode::from_code(r.u8("code")?),
            message: r.string("message")?,
        },
        kind::WARNING => Frame::Warning {
            remaining_ms: r.u64("remaining_ms")?,
        },
        kind::ENDING => Frame::Ending {
            reason: EndReason::from_code(r.u8("reason")?),
            message: r.string("message")?,
        },
        kind::OPEN => Frame::Open {
            device: r.string("device")?,
            port: r.u16("port")?,
        },
        kind::OPENED => Frame::Opened,
        kind::DIAL | kind::DIAL_MODE => {
            let (session_id, device, host, port) = (
                r.string("session_id")?,
                r.string("device")?,
                r.string("host")?,
                r.u16("port")?,
            );
            let mode = if kind == kind::DIAL {
                Mode::Raw
            } else {
                match Mode::from_code(r.u8("mode")?) {
                    Some(m) if m != Mode::Raw => m,
                    _ => {
                        return Err(WireError::BadValue {
                            frame: "Dial",
                            field: "mode",
                            reason: "is not a mode this version knows",
                        });
                    }
                }
            };
            Frame::Dial {
                session_id,
                device,
                host,
                port,
                mode,
            }
        }
        kind::CONNECTOR_HELLO => Frame::ConnectorHello {
            version: r.u16("version")?,
            site: r.string("site")?,
        },
        kind::PING => Frame::Ping {
            nonce: r.u64("nonce")?,
        },
        kind::PONG => Frame::Pong {
            nonce: r.u64("nonce")?,
        },
        // kind_name() above already refused every other byte.
        other => return Err(WireError::UnknownKind(other)),
    };
    if !r.rest.is_empty() {
        return Err(WireError::TrailingBytes {
            frame: name,
            count: r.rest.len(),
        });
    }
    Ok(Some((decoded, HEADER_LEN + len)))
}

pub(super) fn kind_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::HELLO => "Hello",
        kind::WELCOME => "Welcome",
        kind::REFUSED => "Refused",
        kind::WARNING => "Warning",
        kind::ENDING => "Ending",
        kind::OPEN => "Open",
        kind::OPENED => "Opened",
        kind::DIAL | kind::DIAL_MODE => "Dial",
        kind::CONNECTOR_HELLO => "ConnectorHello",
        kind::PING => "Ping",
        kind::PONG => "Pong",
        _ => return None,
    })
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    frame: &'static str,
}

impl Writer<'_> {
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, field: &'static str, s: &str) -> Result<(), WireError> {
        let len = u16::try_from(s.len()).map_err(|_| WireError::StringTooLong {
            frame: self.frame,
            field,
            len: s.len(),
        })?;
        self.u16(len);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn truncated(&self, field: &'static str) -> WireError {
        WireError::Truncated {
            frame: self.frame,
            field,
        }
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(field))?;
        self.rest = rest;
        Ok(*head)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = usize::from(self.u16(field)?);
        if self.rest.len() < len {
            return Err(self.truncated(field));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        let text = std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 {
            frame: self.frame,
            field,
        })?;
        Ok(text.to_owned())
    }
}

/// Buffers bytes from a stream read in chunks and yields the frames in them.
///
/// Memory: the buffer holds at most one partial frame (at most [`HEADER_LEN`] +
/// [`MAX_FRAME_LEN`] bytes, since a longer length prefix is an error as soon as it arrives) plus
/// whatever the caller pushed since it last drained [`FrameDecoder::next_frame`] to `None`; callers
/// push bounded chunks and drain after each. After an error the stream is out of step: close it.
///
/// On a data stream, stop calling `next_frame` once it returns `Opened`: what follows is raw
/// device bytes, not frames; take them with [`FrameDecoder::into_remainder`].
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, or `None` until more bytes are pushed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        match decode(&self.buf)? {
            Some((frame, used)) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The bytes after the last decoded frame. On a data stream, after `Opened` these are the
    /// first raw bytes from the device and must be forwarded, not dropped.
    pub fn into_remainder(self) -> Vec<u8> {
        self.buf
    }
}
