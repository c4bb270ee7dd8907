//! What a granted port speaks, and what a grant may do on it (issue 14).
//!
//! A device's policy names the ports that speak Modbus/TCP ([`Protocol`]); every other port is
//! raw TCP and passes bytes as before. On a Modbus port the grant's [`Access`] decides what the
//! relay lets through: `read` (the default) passes the reading function codes only and answers
//! everything else itself with exception 01; `write` passes writes too, each on the record. The
//! policy's [`WritePolicy`] says whether `write` may be granted at all, and its [`WriteScope`] may
//! bound writes to some units and holding registers. [`Mode`] is what one stream runs under.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Port, ValidationError};

/// What a port speaks, as far as the relay decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Bytes pass as they are.
    Tcp,
    /// Modbus/TCP (MBAP framing): requests are decoded and checked against the access.
    Modbus,
}

/// What a grant allows on its Modbus ports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Reading function codes only ([`crate::modbus::Request::only_reads`]).
    #[default]
    Read,
    /// Reads and writes; every write is audited with its values and the device's answer.
    Write,
}

/// Whether a device's policy lets `write` access be granted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WritePolicy {
    /// `write` may be asked for and approved (the supervisor still decides, request by
    /// request).
    #[default]
    Allowed,
    /// Every grant on this device is read-only on its Modbus ports, whatever was asked.
    Never,
}

macro_rules! spelled {
    ($ty:ident, $field:literal, $($variant:ident = $text:literal),+) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                let t = s.trim();
                $ty::ALL.iter().copied().find(|v| v.as_str() == t).ok_or_else(|| {
                    let names: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                    ValidationError::new($field, format!("'{t}' is not one of {}", names.join(", ")))
                })
            }
        }
    };
}

spelled!(Protocol, "protocol", Tcp = "tcp", Modbus = "modbus");
spelled!(Access, "access", Read = "read", Write = "write");
spelled!(WritePolicy, "writes", Allowed = "allowed", Never = "never");

impl Access {
    /// The narrower of two accesses.
    pub fn min(self, other: Access) -> Access {
        Ord::min(self, other)
    }
}

/// What one tunnelled connection runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Raw TCP: bytes pass as they are.
    #[default]
    Raw,
    /// Modbus/TCP with this access.
    Modbus(Access),
}

impl Mode {
    /// `tcp`, `modbus-read` or `modbus-write`: the spelling in JSON, audit details and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Raw => "tcp",
            Mode::Modbus(Access::Read) => "modbus-read",
            Mode::Modbus(Access::Write) => "modbus-write",
        }
    }

    /// The byte on the wire (`Dial`, docs/wire-protocol.md): 0 raw, 1 Modbus read, 2 Modbus
    /// write.
    pub fn code(self) -> u8 {
        match self {
            Mode::Raw => 0,
            Mode::Modbus(Access::Read) => 1,
            Mode::Modbus(Access::Write) => 2,
        }
    }

    /// `None` for a byte this version does not know: the peer must refuse, not guess.
    pub fn from_code(code: u8) -> Option<Mode> {
        match code {
            0 => Some(Mode::Raw),
            1 => Some(Mode::Modbus(Access::Read)),
            2 => Some(Mode::Modbus(Access::Write)),
            _ => None,
        }
    }

    /// How a person reads it: `tcp`, `modbus, read-only`, `modbus, read and write`.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Raw => "tcp",
            Mode::Modbus(Access::Read) => "modbus, read-only",
            Mode::Modbus(Access::Write) => "modbus, read and write",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `--protocol` values: `502=modbus`, several separated by commas (`502=modbus,80=tcp`).
/// Naming a port twice with different protocols is an error; `tcp` entries are accepted and
/// mean what an unnamed port means.
pub fn parse_protocols(text: &str) -> Result<BTreeMap<Port, Protocol>, ValidationError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            ValidationError::new(
                "protocol",
                format!("'{part}' is not PORT=PROTOCOL, such as 502=modbus"),
            )
        };
        let (port, proto) = part.split_once('=').ok_or_else(bad)?;
        let n: u32 = port.trim().parse().map_err(|_| bad())?;
        let port = Port::new(n).map_err(|e| ValidationError::new("protocol", e.message))?;
        let proto: Protocol = proto.parse()?;
        if out
            .insert(port, proto)
            .is_some_and(|before| before != proto)
        {
            return Err(ValidationError::new(
                "protocol",
                format!("port {port} is given two protocols"),
            ));
        }
    }
    Ok(out)
}

/// `502=modbus,80=tcp`: the spelling [`parse_protocols`] reads, for storage and display.
pub fn join_protocols(protocols: &BTreeMap<Port, Protocol>) -> String {
    protocols
        .iter()
        .map(|(port, proto)| format!("{port}={proto}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Where writes may go on a device's Modbus ports, when `write` is granted: "only to holding
/// registers 100-199 of unit 1". Empty sets mean no bound of that kind. With registers named,
/// coil writes (FC 5, 15) and writes without an address (file records, vendor codes) are
/// refused: they reach outside the named registers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WriteScope {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub units: BTreeSet<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<RangeInclusive<u16>>,
}

impl WriteScope {
    pub fn is_unbounded(&self) -> bool {
        self.units.is_empty() && self.registers.is_empty()
    }

    /// Parses `--write-units 1,2` (unit ids 0-255).
    pub fn parse_units(text: &str) -> Result<BTreeSet<u8>, ValidationError> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u8>().map_err(|_| {
                    ValidationError::new(
                        "write-units",
                        format!("'{p}' is not a Modbus unit id (0-255)"),
                    )
                })
            })
            .collect()
    }

    /// Parses `--write-registers 100-199,300` (holding register addresses 0-65535, ranges with
    /// both ends included).
    pub fn parse_registers(text: &str) -> Result<Vec<RangeInclusive<u16>>, ValidationError> {
        let bad = |p: &str| {
            ValidationError::new(
                "write-registers",
                format!("'{p}' is not a register address (0-65535) or a range such as 100-199"),
            )
        };
        let mut out = Vec::new();
        for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let a: u16 = a.trim().parse().map_err(|_| bad(p))?;
            let b: u16 = b.trim().parse().map_err(|_| bad(p))?;
            if a > b {
                return Err(ValidationError::new(
                    "write-registers",
                    format!("'{p}' ends before it starts"),
                ));
            }
            out.push(a..=b);
        }
        out.sort_by_key(|r| (*r.start(), *r.end()));
        Ok(out)
    }

    pub fn join_units(&self) -> String {
        self.units
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn join_registers(&self) -> String {
        self.registers
            .iter()
            .map(|r| {
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `quantity` registers from `address` all lie inside one named range.
    pub fn covers_registers(&self, address: u16, quantity: u16) -> bool {
        let Some(last) = quantity.checked_sub(1).and_then(|q| address.checked_add(q)) else {
            return false;
        };
        self.registers
            .iter()
            .any(|r| r.contains(&address) && r.contains(&last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(n: u32) -> Port {
        Port::new(n).unwrap()
    }

    #[test]
    fn protocols_parse_and_join_round_trip() {
        let p = parse_protocols("502=modbus, 80=tcp").unwrap();
        assert_eq!(p[&port(502)], Protocol::Modbus);
        assert_eq!(p[&port(80)], Protocol::Tcp);
        assert_eq!(parse_protocols(&join_protocols(&p)).unwrap(), p);
        assert!(parse_protocols("").unwrap().is_empty());
    }

    #[test]
    fn bad_protocols_say_what_is_wrong() {
        let e = parse_protocols("502").unwrap_err();
        assert!(e.message.contains("PORT=PROTOCOL"), "{e}");
        let e = parse_protocols("502=dnp3").unwrap_err();
        assert!(e.message.contains("tcp, modbus"), "{e}");
        let e = parse_protocols("0=modbus").unwrap_err();
        assert!(e.message.contains("not a TCP port"), "{e}");
        let e = parse_protocols("502=modbus,502=tcp").unwrap_err();
        assert!(e.message.contains("two protocols"), "{e}");
        assert!(parse_protocols("502=modbus,502=modbus").is_ok());
    }

    #[test]
    fn modes_have_one_code_each() {
        for mode in [
            Mode::Raw,
            Mode::Modbus(Access::Read),
            Mode::Modbus(Access::Write),
        ] {
            assert_eq!(Mode::from_code(mode.code()), Some(mode));
        }
        assert_eq!(Mode::from_code(3), None);
    }

    #[test]
    fn write_scope_covers_whole_writes_only() {
        let scope = WriteScope {
            units: [1].into(),
            registers: WriteScope::parse_registers("100-199, 300").unwrap(),
        };
        assert!(scope.covers_registers(100, 100));
        assert!(scope.covers_registers(300, 1));
        assert!(!scope.covers_registers(150, 51), "runs past 199");
        assert!(!scope.covers_registers(99, 2));
        assert!(!scope.covers_registers(301, 1));
        assert!(
            !scope.covers_registers(100, 0),
            "a write of nothing names no register"
        );
        assert!(
            !scope.covers_registers(u16::MAX, 2),
            "wraps past the last address"
        );
        assert_eq!(scope.join_registers(), "100-199,300");
        assert!(WriteScope::parse_registers("9-1").is_err());
        assert!(WriteScope::parse_registers("x").is_err());
        assert!(WriteScope::parse_units("256").is_err());
    }
}
