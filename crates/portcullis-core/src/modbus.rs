//! Modbus/TCP framing (Modbus Application Protocol V1.1b3, Modbus Messaging on TCP/IP V1.0b):
//! the MBAP header, a streaming decoder that accepts the bytes in any split, and what a request
//! asks for (function, unit, address, quantity) for the standard function codes. Pure: no IO.
//! The relay's read-only filter (issue 14) decides on what this reads.
//!
//! An ADU on TCP is the 7-byte MBAP header (transaction id, protocol id 0, length, unit id) and
//! the PDU (function code and data). The length counts the unit id and the PDU, so it is 2 to
//! 254: an ADU is at most 260 bytes. Anything else is malformed, and the stream is out of step.

mod request;
mod rules;
#[cfg(test)]
mod tests;

pub use request::{MAX_AUDITED_VALUES, READ_FUNCTIONS, Request, exception_response};
pub use rules::{
    GATEWAY_PATH_UNAVAILABLE, ILLEGAL_DATA_ADDRESS, ILLEGAL_FUNCTION, Judgement, Refusal, Rules,
};

/// Bytes of the MBAP header, the unit id included.
pub const MBAP_LEN: usize = 7;
/// The longest ADU on TCP: the header and a 253-byte PDU.
pub const MAX_ADU_LEN: usize = 260;
/// The MBAP length field's range: the unit id and at least a function code, at most 253 bytes of
/// PDU.
const LENGTH_RANGE: std::ops::RangeInclusive<usize> = 2..=(MAX_ADU_LEN - MBAP_LEN + 1);

/// One Modbus/TCP ADU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adu {
    pub transaction: u16,
    pub unit: u8,
    /// The function code and its data; never empty.
    pub pdu: Vec<u8>,
}

impl Adu {
    /// The function code (0 for an empty PDU, which [`decode`] never yields).
    pub fn function(&self) -> u8 {
        self.pdu.first().copied().unwrap_or_default()
    }

    /// The ADU's bytes: header, then PDU.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let length = u16::try_from(self.pdu.len() + 1).unwrap_or(u16::MAX);
        out.extend_from_slice(&self.transaction.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&length.to_be_bytes());
        out.push(self.unit);
        out.extend_from_slice(&self.pdu);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MBAP_LEN + self.pdu.len());
        self.encode(&mut out);
        out
    }
}

/// Bytes that are not Modbus/TCP. After one, the stream cannot be resynchronised: the
/// connection must end (`protocol_violation`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModbusError {
    #[error("the MBAP protocol id is {0}, not 0 (Modbus)")]
    ProtocolId(u16),
    #[error(
        "the MBAP length is {0}; a Modbus/TCP frame counts 2 to 254 bytes after it (at most 260 in all)"
    )]
    Length(u16),
    /// The PDU does not have the shape its function code requires.
    #[error("function {function}: {reason}")]
    Malformed { function: u8, reason: &'static str },
}

/// The first ADU in `buf` and the bytes it took, `None` while it is incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<(Adu, usize)>, ModbusError> {
    if buf.len() < MBAP_LEN {
        // A wrong protocol id or length is refused as soon as its bytes are in.
        check_header(buf)?;
        return Ok(None);
    }
    let length = check_header(buf)?;
    let total = MBAP_LEN - 1 + length;
    if buf.len() < total {
        return Ok(None);
    }
    let adu = Adu {
        transaction: u16::from_be_bytes([buf[0], buf[1]]),
        unit: buf[6],
        pdu: buf[MBAP_LEN..total].to_vec(),
    };
    Ok(Some((adu, total)))
}

/// The MBAP length of a header (or as much of one as is there), once its fields are checked.
fn check_header(buf: &[u8]) -> Result<usize, ModbusError> {
    if buf.len() >= 4 {
        let protocol = u16::from_be_bytes([buf[2], buf[3]]);
        if protocol != 0 {
            return Err(ModbusError::ProtocolId(protocol));
        }
    }
    if buf.len() >= 6 {
        let length = u16::from_be_bytes([buf[4], buf[5]]);
        if !LENGTH_RANGE.contains(&usize::from(length)) {
            return Err(ModbusError::Length(length));
        }
        return Ok(usize::from(length));
    }
    Ok(0)
}

/// ADUs out of a byte stream cut anywhere. Holds what [`AduDecoder::push`] gave it until
/// [`AduDecoder::next_adu`] has taken it, so at most one incomplete ADU (260 bytes) once every
/// whole one is taken. Taking an ADU copies only its PDU.
#[derive(Debug, Default)]
pub struct AduDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already taken.
    start: usize,
    /// Set once the stream broke the protocol: every later call says so again.
    broken: Option<ModbusError>,
}

impl AduDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        // What was taken goes before new bytes are added: the buffer never grows by it.
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole ADU, `None` until one is complete.
    pub fn next_adu(&mut self) -> Result<Option<Adu>, ModbusError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        match decode(&self.buf[self.start..]) {
            Ok(Some((adu, used))) => {
                self.start += used;
                Ok(Some(adu))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.buf = Vec::new();
                self.start = 0;
                self.broken = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Bytes held that are not yet a whole ADU.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}
