//! Per-device access policy: what may be asked for at all. Deny by default: a device with no
//! allowed organisation can be requested by nobody.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::access::{Access, Mode, Protocol, WritePolicy, WriteScope};
use crate::window::format_duration;
use crate::{OrgName, Port, ValidationError, Window};

/// The longest window a policy may allow at all: a week. Standing access is what Portcullis exists
/// to remove.
pub const MAX_POLICY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most supervisors a device's policy can require (dual approval).
pub const APPROVALS_MAX: u8 = 2;

/// `--approvals` and the web form's field: how many supervisors must approve, 1 or 2.
pub fn parse_approvals(text: &str) -> Result<u8, ValidationError> {
    match text.trim() {
        "1" => Ok(1),
        "2" => Ok(2),
        other => Err(ValidationError::new(
            "approvals",
            format!("'{other}' is not 1 or 2"),
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicy {
    pub allowed_ports: BTreeSet<Port>,
    /// Longest window one request may ask for.
    #[serde(with = "duration_secs")]
    pub max_window: Duration,
    /// 1, or 2 for dual approval by two different supervisors (SR 2.1).
    pub approvals_required: u8,
    /// Vendor organisations whose engineers may request this device.
    pub allowed_orgs: BTreeSet<OrgName>,
    /// Ports that speak a protocol the relay decodes (Modbus); every other port is raw TCP.
    /// Only allowed ports, and never `tcp` (that is what an unnamed port is).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub protocols: BTreeMap<Port, Protocol>,
    /// Whether `write` access may be granted on the Modbus ports.
    #[serde(default)]
    pub writes: WritePolicy,
    /// Where granted writes may go.
    #[serde(default, skip_serializing_if = "WriteScope::is_unbounded")]
    pub write_scope: WriteScope,
}

impl DevicePolicy {
    pub fn new(
        allowed_ports: BTreeSet<Port>,
        max_window: Duration,
        approvals_required: u8,
        allowed_orgs: BTreeSet<OrgName>,
    ) -> Result<Self, ValidationError> {
        if allowed_ports.is_empty() {
            return Err(ValidationError::new("ports", "name at least one port"));
        }
        if max_window.is_zero() {
            return Err(ValidationError::new(
                "max-window",
                "must be longer than zero",
            ));
        }
        if max_window > MAX_POLICY_WINDOW {
            return Err(ValidationError::new(
                "max-window",
                format!(
                    "{} is longer than the limit of {}",
                    format_duration(max_window),
                    format_duration(MAX_POLICY_WINDOW)
                ),
            ));
        }
        if !(1..=APPROVALS_MAX).contains(&approvals_required) {
            return Err(ValidationError::new(
                "approvals",
                format!("{approvals_required} is not 1 or 2"),
            ));
        }
        Ok(Self {
            allowed_ports,
            max_window,
            approvals_required,
            allowed_orgs,
            protocols: BTreeMap::new(),
            writes: WritePolicy::default(),
            write_scope: WriteScope::default(),
        })
    }

    /// The same policy with these ports decoded as `protocols`, and writes on them allowed or
    /// not. A protocol on a port the policy does not allow is an error (likely a typo).
    pub fn with_protocols(
        mut self,
        protocols: BTreeMap<Port, Protocol>,
        writes: WritePolicy,
        write_scope: WriteScope,
    ) -> Result<Self, ValidationError> {
        if let Some(p) = protocols.keys().find(|p| !self.allowed_ports.contains(p)) {
            return Err(ValidationError::new(
                "protocol",
                format!(
                    "port {p} is not one of the device's ports ({})",
                    Port::join(&self.allowed_ports)
                ),
            ));
        }
        self.protocols = protocols
            .into_iter()
            .filter(|(_, proto)| *proto != Protocol::Tcp)
            .collect();
        self.writes = writes;
        self.write_scope = write_scope;
        Ok(self)
    }

    pub fn protocol(&self, port: Port) -> Protocol {
        self.protocols.get(&port).copied().unwrap_or(Protocol::Tcp)
    }

    /// What a stream to `port` runs under for a grant of `access`: raw TCP unless the port
    /// speaks Modbus; read-only whatever was granted when the policy now says `never`.
    pub fn mode(&self, port: Port, access: Access) -> Mode {
        match self.protocol(port) {
            Protocol::Tcp => Mode::Raw,
            Protocol::Modbus if self.writes == WritePolicy::Never => Mode::Modbus(Access::Read),
            Protocol::Modbus => Mode::Modbus(access),
        }
    }

    /// Checks the access asked for (or approved) on `ports`: `write` needs a Modbus port among
    /// them and a policy that allows writes.
    pub fn check_access(
        &self,
        ports: &BTreeSet<Port>,
        access: Access,
    ) -> Result<(), ValidationError> {
        if access == Access::Read {
            return Ok(());
        }
        if !ports.iter().any(|p| self.protocol(*p) == Protocol::Modbus) {
            return Err(ValidationError::new(
                "access",
                format!(
                    "write access applies to Modbus ports, and none of {} speaks Modbus on this device; leave access out",
                    Port::join(ports)
                ),
            ));
        }
        if self.writes == WritePolicy::Never {
            return Err(ValidationError::new(
                "access",
                "this device's policy never grants writes; ask for read access",
            ));
        }
        Ok(())
    }

    /// Checks a request (or a narrowed approval) against the policy.
    pub fn check(
        &self,
        org: &OrgName,
        ports: &BTreeSet<Port>,
        window: &Window,
    ) -> Result<(), ValidationError> {
        if !self.allowed_orgs.contains(org) {
            return Err(ValidationError::new(
                "device",
                format!("organisation '{org}' may not request this device"),
            ));
        }
        if ports.is_empty() {
            return Err(ValidationError::new("ports", "name at least one port"));
        }
        if let Some(p) = ports.iter().find(|p| !self.allowed_ports.contains(p)) {
            return Err(ValidationError::new(
                "ports",
                format!(
                    "port {p} is not allowed on this device (allowed: {})",
                    Port::join(&self.allowed_ports)
                ),
            ));
        }
        if window.length() > self.max_window {
            return Err(ValidationError::new(
                "window",
                format!(
                    "{} is longer than this device allows ({})",
                    format_duration(window.length()),
                    format_duration(self.max_window)
                ),
            ));
        }
        Ok(())
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use proptest::prelude::*;

    fn org(s: &str) -> OrgName {
        OrgName::parse(s).unwrap()
    }

    fn policy(ports: &[u32], hours: u64) -> DevicePolicy {
        DevicePolicy::new(
            ports.iter().map(|p| Port::new(*p).unwrap()).collect(),
            Duration::from_secs(hours * 3600),
            1,
            [org("acme")].into(),
        )
        .unwrap()
    }

    #[test]
    fn policy_values_are_bounded() {
        let ports: BTreeSet<Port> = [Port::new(502).unwrap()].into();
        let h = Duration::from_secs(3600);
        assert!(DevicePolicy::new(BTreeSet::new(), h, 1, BTreeSet::new()).is_err());
        assert!(DevicePolicy::new(ports.clone(), Duration::ZERO, 1, BTreeSet::new()).is_err());
        assert!(DevicePolicy::new(ports.clone(), h * 24 * 8, 1, BTreeSet::new()).is_err());
        assert!(DevicePolicy::new(ports.clone(), h, 0, BTreeSet::new()).is_err());
        assert!(DevicePolicy::new(ports.clone(), h, 3, BTreeSet::new()).is_err());
        assert!(DevicePolicy::new(ports, h, 2, BTreeSet::new()).is_ok());
    }

    #[test]
    fn unknown_org_is_refused_by_default() {
        let p = policy(&[502], 8);
        let w = Window::new(Timestamp::EPOCH, Timestamp::from_unix_micros(1).unwrap()).unwrap();
        let ports = p.allowed_ports.clone();
        assert!(p.check(&org("acme"), &ports, &w).is_ok());
        assert_eq!(
            p.check(&org("other"), &ports, &w).unwrap_err().field,
            "device"
        );
    }

    proptest! {
        #[test]
        fn check_accepts_exactly_subsets_within_length(
            allowed in proptest::collection::btree_set(1u32..20, 1..6),
            asked in proptest::collection::btree_set(1u32..20, 1..6),
            hours in 1u64..48,
            asked_secs in 1i64..(48 * 3600),
        ) {
            let allowed_v: Vec<u32> = allowed.iter().copied().collect();
            let p = policy(&allowed_v, hours);
            let asked_ports: BTreeSet<Port> = asked.iter().map(|n| Port::new(*n).unwrap()).collect();
            let w = Window::new(
                Timestamp::EPOCH,
                Timestamp::from_unix_micros(asked_secs * 1_000_000).unwrap(),
            ).unwrap();
            let ok = asked.is_subset(&allowed) && asked_secs as u64 <= hours * 3600;
            prop_assert_eq!(p.check(&org("acme"), &asked_ports, &w).is_ok(), ok);
        }
    }
}
