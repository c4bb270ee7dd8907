//! The decision on one request: what a grant's access and the device's write scope let through
//! (issue 14; the function-code lists and their sources are in docs/decisions/0013).

use crate::access::{Access, WriteScope};

use super::Request;

/// Exception 01, Illegal Function: what a client gets for a request its access does not allow.
pub const ILLEGAL_FUNCTION: u8 = 0x01;
/// Exception 02, Illegal Data Address: a write outside the device's register scope.
pub const ILLEGAL_DATA_ADDRESS: u8 = 0x02;
/// Exception 0A, Gateway Path Unavailable: a write to a unit outside the device's scope (the
/// relay is the gateway that will not route it).
pub const GATEWAY_PATH_UNAVAILABLE: u8 = 0x0A;

/// Function codes that write with an address and a quantity: coils (5, 15), holding registers
/// (6, 16), mask write (22), and the write half of read/write multiple (23).
const ADDRESSED_WRITES: [u8; 6] = [5, 6, 15, 16, 22, 23];
const COIL_WRITES: [u8; 2] = [5, 15];

/// What one Modbus port of a grant lets through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    pub access: Access,
    pub scope: WriteScope,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Only reads: forwarded.
    Read,
    /// Changes the device: forwarded and audited with the device's answer.
    Write,
    /// Answered by the relay with an exception; never reaches the device.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The grant is read-only and the request does not only read.
    ReadOnly,
    /// A write to a unit the device's scope does not name.
    UnitOutsideScope,
    /// A write to registers (or coils, or no address) outside the device's scope.
    OutsideScope,
}

impl Refusal {
    /// The Modbus exception code the client gets.
    pub fn exception_code(self) -> u8 {
        match self {
            Refusal::ReadOnly => ILLEGAL_FUNCTION,
            Refusal::UnitOutsideScope => GATEWAY_PATH_UNAVAILABLE,
            Refusal::OutsideScope => ILLEGAL_DATA_ADDRESS,
        }
    }

    /// The audit log's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "read_only",
            Refusal::UnitOutsideScope => "unit_outside_scope",
            Refusal::OutsideScope => "outside_write_scope",
        }
    }
}

impl Rules {
    pub fn read_only() -> Self {
        Self::default()
    }

    pub fn judge(&self, r: &Request) -> Judgement {
        if r.only_reads() {
            return Judgement::Read;
        }
        if self.access == Access::Read {
            return Judgement::Refused(Refusal::ReadOnly);
        }
        let scope = &self.scope;
        if !scope.units.is_empty() && !scope.units.contains(&r.unit) {
            return Judgement::Refused(Refusal::UnitOutsideScope);
        }
        if !scope.registers.is_empty() {
            let in_registers = ADDRESSED_WRITES.contains(&r.function)
                && !COIL_WRITES.contains(&r.function)
                && matches!((r.address, r.quantity), (Some(a), Some(q)) if scope.covers_registers(a, q));
            if !in_registers {
                return Judgement::Refused(Refusal::OutsideScope);
            }
        }
        Judgement::Write
    }
}
