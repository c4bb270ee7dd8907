//! The device inventory: what a plant records for every connected asset (IEC 62443-2-1 asset
//! inventory; CISA CPG 1.A), and the targets a grant names.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DeviceName, DevicePolicy, ValidationError};

/// A TCP port, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u16")]
pub struct Port(u16);

impl Port {
    pub fn new(n: u32) -> Result<Self, ValidationError> {
        match u16::try_from(n) {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(ValidationError::new(
                "port",
                format!("{n} is not a TCP port (1..65535)"),
            )),
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }

    /// Parses `502,80, 443` into a non-empty set; duplicates collapse.
    pub fn parse_list(text: &str) -> Result<BTreeSet<Port>, ValidationError> {
        let mut ports = BTreeSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let n: u32 = part.parse().map_err(|_| {
                ValidationError::new("ports", format!("'{part}' is not a port number (1..65535)"))
            })?;
            ports.insert(Port::new(n).map_err(|e| ValidationError::new("ports", e.message))?);
        }
        if ports.is_empty() {
            return Err(ValidationError::new("ports", "name at least one port"));
        }
        Ok(ports)
    }

    pub fn join(ports: &BTreeSet<Port>) -> String {
        ports
            .iter()
            .map(|p| p.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl TryFrom<u32> for Port {
    type Error = ValidationError;
    fn try_from(n: u32) -> Result<Self, ValidationError> {
        Port::new(n)
    }
}
impl From<Port> for u16 {
    fn from(p: Port) -> u16 {
        p.0
    }
}
impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the relay (or a site connector) dials a device: an IP address or a DNS host name.
/// Never a URL and never with a port: ports come from the grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkAddress(String);

impl NetworkAddress {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let t = text.trim();
        let bad = |why: &str| {
            ValidationError::new(
                "address",
                format!("'{t}' {why}; give an IP address or a host name such as plc7.line2.plant"),
            )
        };
        if t.is_empty() {
            return Err(bad("is empty"));
        }
        if let Ok(ip) = IpAddr::from_str(t.trim_start_matches('[').trim_end_matches(']')) {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(bad("is not a single device's address"));
            }
            return Ok(Self(ip.to_string()));
        }
        // RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
        let name = t.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let all_numeric = name.chars().all(|c| c.is_ascii_digit() || c == '.');
        if name.len() > 253 || all_numeric || !name.split('.').all(label_ok) {
            return Err(bad("is not a valid IP address or host name"));
        }
        Ok(Self(name))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NetworkAddress {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Self::parse(&s)
    }
}
impl From<NetworkAddress> for String {
    fn from(a: NetworkAddress) -> String {
        a.0
    }
}
impl fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Low,
    Medium,
    High,
}

impl Criticality {
    pub const ALL: [Criticality; 3] = [Criticality::Low, Criticality::Medium, Criticality::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
        }
    }
}

impl FromStr for Criticality {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        match s.trim() {
            "low" => Ok(Criticality::Low),
            "medium" => Ok(Criticality::Medium),
            "high" => Ok(Criticality::High),
            other => Err(ValidationError::new(
                "criticality",
                format!("'{other}' is not low, medium or high"),
            )),
        }
    }
}

/// The descriptive inventory fields: free text a plant keeps about an asset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// e.g. PLC, HMI, engineering workstation.
    pub device_type: String,
    /// Site and location, e.g. "Plant 2 / line 3 / cabinet 4".
    pub site: String,
    /// Who in the plant answers for it.
    pub owner: String,
    /// Manufacturer or machine builder.
    pub vendor: String,
    pub purpose: String,
    /// Data it handles, e.g. recipes, production counts.
    pub data_handled: String,
    /// How it is reached, e.g. Modbus/TCP, HTTPS, SSH.
    pub access_method: String,
    pub firmware: String,
    pub support_contact: String,
}

impl DeviceProfile {
    /// Free text stays free, but bounded and without control characters that would garble a
    /// terminal, a CSV file or a log line.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let fields: [(&'static str, &str); 9] = [
            ("type", &self.device_type),
            ("site", &self.site),
            ("owner", &self.owner),
            ("vendor", &self.vendor),
            ("purpose", &self.purpose),
            ("data", &self.data_handled),
            ("access", &self.access_method),
            ("firmware", &self.firmware),
            ("contact", &self.support_contact),
        ];
        for (field, value) in fields {
            if value.chars().count() > 500 {
                return Err(ValidationError::new(field, "is longer than 500 characters"));
            }
            if value.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        Ok(())
    }
}

/// One entry of the inventory together with its access policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: DeviceName,
    pub address: NetworkAddress,
    pub criticality: Criticality,
    #[serde(flatten)]
    pub profile: DeviceProfile,
    pub policy: DevicePolicy,
}

/// What a vendor may reach: one port of one device. The address is looked up in the inventory,
/// never taken from the client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    pub device: DeviceName,
    pub port: Port,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_parse_and_refuse_clearly() {
        let ports = Port::parse_list("502, 80,502").unwrap();
        assert_eq!(Port::join(&ports), "80,502");
        for bad in ["", "0", "65536", "-1", "http", "80,,x"] {
            let e = Port::parse_list(bad).unwrap_err();
            assert_eq!(e.field, "ports", "{bad}");
        }
    }

    #[test]
    fn addresses_are_ips_or_host_names_only() {
        assert_eq!(
            NetworkAddress::parse("10.1.2.3").unwrap().as_str(),
            "10.1.2.3"
        );
        assert_eq!(NetworkAddress::parse("[::1]").unwrap().as_str(), "::1");
        assert_eq!(
            NetworkAddress::parse("PLC7.Line2").unwrap().as_str(),
            "plc7.line2"
        );
        for bad in [
            "",
            "0.0.0.0",
            "10.1.2.3:502",
            "http://plc",
            "a..b",
            "-plc",
            "999.1.1.1",
            "plc 7",
            "224.0.0.1",
        ] {
            assert!(NetworkAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn profile_refuses_control_characters() {
        let p = DeviceProfile {
            owner: "line\nlead".into(),
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "owner");
    }
}
