//! What a request ADU asks for, read from its PDU by function code (Modbus Application Protocol
//! V1.1b3, section 6), and the exception response a filter answers with.

use super::{Adu, ModbusError};

/// A request's function and, where its function has them, the first address, the quantity, the
/// diagnostics sub-function (FC 8) and the MEI type (FC 43).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub unit: u8,
    pub function: u8,
    pub address: Option<u16>,
    pub quantity: Option<u16>,
    pub sub_function: Option<u16>,
    pub mei_type: Option<u8>,
}

impl Request {
    /// Reads `adu` as a client's request. A standard function code whose data has the wrong
    /// shape (a short read, a byte count that does not match its quantity) is malformed; other
    /// codes (user-defined, reserved) carry no known fields and are only named.
    pub fn parse(adu: &Adu) -> Result<Self, ModbusError> {
        let function = adu.function();
        let data = adu.pdu.get(1..).unwrap_or_default();
        let mut r = Request {
            unit: adu.unit,
            function,
            address: None,
            quantity: None,
            sub_function: None,
            mei_type: None,
        };
        let bad = |reason| ModbusError::Malformed { function, reason };
        let word = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
        };
        match function {
            // Read coils / discrete inputs / holding / input registers: address, quantity.
            1..=4 => {
                exact(data, 4).ok_or(bad("a read is an address and a quantity (4 bytes)"))?;
                r.address = word(0);
                r.quantity = word(2);
            }
            // Write single coil / register: address, value.
            5 | 6 => {
                exact(data, 4).ok_or(bad("a single write is an address and a value (4 bytes)"))?;
                r.address = word(0);
                r.quantity = Some(1);
            }
            // Read exception status, get comm event counter / log, report server id: no data.
            7 | 11 | 12 | 17 => {
                exact(data, 0).ok_or(bad("this request carries no data"))?;
            }
            // Diagnostics: a sub-function and its data.
            8 => {
                r.sub_function = Some(word(0).ok_or(bad("diagnostics need a sub-function"))?);
            }
            // Write multiple coils / registers: address, quantity, byte count, values.
            15 | 16 => {
                let (Some(address), Some(quantity), Some(&count)) = (word(0), word(2), data.get(4))
                else {
                    return Err(bad(
                        "a multiple write is an address, a quantity and a byte count",
                    ));
                };
                let needed = if function == 15 {
                    usize::from(quantity).div_ceil(8)
                } else {
                    usize::from(quantity) * 2
                };
                if usize::from(count) != needed || data.len() != 5 + needed {
                    return Err(bad(
                        "the byte count does not match the quantity and the data",
                    ));
                }
                r.address = Some(address);
                r.quantity = Some(quantity);
            }
            // Read / write file record: a byte count, then sub-requests of at least 7 bytes.
            20 | 21 => {
                let count = usize::from(*data.first().ok_or(bad("a byte count is missing"))?);
                if data.len() != 1 + count || count < 7 {
                    return Err(bad("the byte count does not match the sub-requests"));
                }
            }
            // Mask write register: address, AND mask, OR mask.
            22 => {
                exact(data, 6).ok_or(bad("a mask write is an address and two masks (6 bytes)"))?;
                r.address = word(0);
                r.quantity = Some(1);
            }
            // Read/write multiple registers: the write part is what changes the device.
            23 => {
                let (Some(write_at), Some(write_qty), Some(&count)) =
                    (word(4), word(6), data.get(8))
                else {
                    return Err(bad(
                        "a read/write is two addresses, two quantities and a byte count",
                    ));
                };
                let needed = usize::from(write_qty) * 2;
                if usize::from(count) != needed || data.len() != 9 + needed {
                    return Err(bad(
                        "the byte count does not match the write quantity and the data",
                    ));
                }
                r.address = Some(write_at);
                r.quantity = Some(write_qty);
            }
            // Read FIFO queue: the pointer address.
            24 => {
                exact(data, 2).ok_or(bad("a FIFO read is one address (2 bytes)"))?;
                r.address = word(0);
            }
            // Encapsulated interface transport: the MEI type, then its data.
            43 => {
                r.mei_type = Some(*data.first().ok_or(bad("the MEI type is missing"))?);
            }
            _ => {}
        }
        Ok(r)
    }
}

/// Function codes that only read (Modbus Application Protocol V1.1b3, section 5): read coils
/// (1), discrete inputs (2), holding registers (3), input registers (4), exception status (7),
/// comm event counter (11) and log (12), report server id (17), read file record (20), read FIFO
/// queue (24). Diagnostics (8) and encapsulated transport (43) read only with one sub-function
/// each ([`Request::only_reads`]).
pub const READ_FUNCTIONS: [u8; 10] = [1, 2, 3, 4, 7, 11, 12, 17, 20, 24];

/// FC 8's one sub-function that changes nothing: return query data (echo). Others do (4 forces
/// listen-only mode until a restart, 10 clears the counters, 1 restarts communications).
const DIAGNOSTICS_ECHO: u16 = 0;
/// FC 43's MEI type "read device identification". Type 13 (CANopen general reference) carries
/// arbitrary requests.
const MEI_READ_DEVICE_ID: u8 = 14;

impl Request {
    /// Whether the request only reads: what `read` access lets through. Everything else is
    /// refused under it: the writes (5, 6, 15, 16, 21, 22, 23), programming and vendor codes (40,
    /// 42, 90, 125, 126), FC 8 but echo, FC 43 but device identification, and every reserved or
    /// user-defined code.
    pub fn only_reads(&self) -> bool {
        match self.function {
            8 => self.sub_function == Some(DIAGNOSTICS_ECHO),
            43 => self.mei_type == Some(MEI_READ_DEVICE_ID),
            f => READ_FUNCTIONS.contains(&f),
        }
    }
}

/// Most values a write's audit event lists: FC 16 writes up to 123 registers, FC 15 up to 1968
/// coils; an auditor needs the first ones and the count.
pub const MAX_AUDITED_VALUES: usize = 125;

impl Request {
    /// The values a write carries, as the audit log records them: the register value of FC 6,
    /// 1 or 0 for FC 5, the registers of FC 16 and the write half of FC 23, the coils of FC 15
    /// (at most [`MAX_AUDITED_VALUES`]), the AND and OR masks of FC 22. Empty for other codes.
    /// `adu` is the ADU this request was parsed from.
    pub fn write_values(&self, adu: &Adu) -> Vec<u16> {
        let data = adu.pdu.get(1..).unwrap_or_default();
        let words = |from: usize, count: usize| -> Vec<u16> {
            data.get(from..)
                .unwrap_or_default()
                .chunks_exact(2)
                .take(count.min(MAX_AUDITED_VALUES))
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                .collect()
        };
        let quantity = usize::from(self.quantity.unwrap_or(0));
        match self.function {
            5 => words(2, 1)
                .into_iter()
                .map(|v| u16::from(v == 0xFF00))
                .collect(),
            6 => words(2, 1),
            16 => words(5, quantity),
            23 => words(9, quantity),
            22 => words(2, 2),
            15 => data
                .get(5..)
                .unwrap_or_default()
                .iter()
                .flat_map(|byte| (0..8).map(move |bit| u16::from(byte >> bit & 1)))
                .take(quantity.min(MAX_AUDITED_VALUES))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn exact(data: &[u8], len: usize) -> Option<()> {
    (data.len() == len).then_some(())
}

/// The exception response to `request` with `code` (01: illegal function): the same transaction
/// and unit, the function code with its high bit set.
pub fn exception_response(request: &Adu, code: u8) -> Adu {
    Adu {
        transaction: request.transaction,
        unit: request.unit,
        pdu: vec![request.function() | 0x80, code],
    }
}
