//! Devices a vendor may request, requests and grants, relay tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use portcullis_core::{
    Access, AccessRequest, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress,
    OrgName, Port, Protocol, Timestamp, Username, WritePolicy, WriteScope,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::{self, Time};
use crate::{AccessName, CriticalityName, ProtocolName, Redacted, State, WritesName};

/// `{"502": "modbus"}`: the ports decoded as something other than raw TCP.
pub type Protocols = BTreeMap<Port, ProtocolName>;

fn protocols(p: &BTreeMap<Port, Protocol>) -> Protocols {
    p.iter()
        .map(|(port, proto)| (*port, (*proto).into()))
        .collect()
}

fn writes_allowed() -> WritesName {
    WritePolicy::Allowed.into()
}

fn read_access() -> AccessName {
    Access::Read.into()
}

/// `GET /api/v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceEntry>,
}

/// One device of the list: vendors get what they may ask for, the other roles the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DeviceEntry {
    /// What a vendor sees: no address, no other organisations.
    Offered(OfferedDevice),
    /// What supervisors, auditors and admins see.
    Inventory(Box<InventoryDevice>),
}

impl DeviceEntry {
    /// The device as a vendor would be offered it, whichever shape came.
    pub fn offered(self) -> OfferedDevice {
        match self {
            DeviceEntry::Offered(d) => d,
            DeviceEntry::Inventory(d) => (*d).into(),
        }
    }
}

/// A device a vendor may request: what they may ask for, not the plant's addressing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OfferedDevice {
    #[schema(value_type = String)]
    pub name: DeviceName,
    pub device_type: String,
    pub site: String,
    pub criticality: CriticalityName,
    #[schema(value_type = Vec<schema::Port>)]
    pub ports: BTreeSet<Port>,
    /// The longest window one request may ask for.
    pub max_window_secs: u64,
    /// 1, or 2 for dual approval.
    pub approvals_required: u8,
    /// Ports that speak Modbus/TCP, where `read` access (the default) is enforced; the other
    /// ports are raw TCP.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, ProtocolName>)]
    pub protocols: Protocols,
    /// Whether `write` access may be asked for on the Modbus ports.
    #[serde(default = "writes_allowed")]
    #[schema(value_type = WritesName)]
    pub writes: WritesName,
}

impl OfferedDevice {
    pub fn from_core(d: &Device) -> Self {
        let p = &d.policy;
        Self {
            name: d.name.clone(),
            device_type: d.profile.device_type.clone(),
            site: d.profile.site.clone(),
            criticality: d.criticality.into(),
            ports: p.allowed_ports.clone(),
            max_window_secs: p.max_window.as_secs(),
            approvals_required: p.approvals_required,
            protocols: protocols(&p.protocols),
            writes: p.writes.into(),
        }
    }
}

impl From<InventoryDevice> for OfferedDevice {
    fn from(d: InventoryDevice) -> Self {
        Self {
            name: d.name,
            device_type: d.device_type,
            site: d.site,
            criticality: d.criticality,
            ports: d.policy.allowed_ports,
            max_window_secs: d.policy.max_window,
            approvals_required: d.policy.approvals_required,
            protocols: d.policy.protocols,
            writes: d.policy.writes,
        }
    }
}

/// An inventory record with its access policy (`portcullis_core::Device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryDevice {
    #[schema(value_type = String)]
    pub name: DeviceName,
    #[schema(value_type = String)]
    pub address: NetworkAddress,
    pub criticality: CriticalityName,
    pub device_type: String,
    pub site: String,
    pub owner: String,
    pub vendor: String,
    pub purpose: String,
    pub data_handled: String,
    pub access_method: String,
    pub firmware: String,
    pub support_contact: String,
    pub policy: Policy,
}

/// A device's access policy (`portcullis_core::DevicePolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    #[schema(value_type = Vec<schema::Port>)]
    pub allowed_ports: BTreeSet<Port>,
    /// Seconds.
    pub max_window: u64,
    pub approvals_required: u8,
    #[schema(value_type = Vec<String>)]
    pub allowed_orgs: BTreeSet<OrgName>,
    /// Ports decoded as Modbus/TCP (`{"502": "modbus"}`); the others are raw TCP.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, ProtocolName>)]
    pub protocols: Protocols,
    /// Whether `write` access may be granted on the Modbus ports.
    #[serde(default = "writes_allowed")]
    #[schema(value_type = WritesName)]
    pub writes: WritesName,
    /// Unit ids writes may go to; empty: any.
    #[serde(default)]
    pub write_units: Vec<u8>,
    /// Holding registers writes may go to (`"100-199"`, `"300"`); empty: any.
    #[serde(default)]
    pub write_registers: Vec<String>,
}

impl From<&Device> for InventoryDevice {
    fn from(d: &Device) -> Self {
        // Destructured without `..`: a field added to the inventory fails to compile here
        // until the API says whether it shows it.
        let Device {
            name,
            address,
            criticality,
            profile,
            policy,
        } = d;
        let DeviceProfile {
            device_type,
            site,
            owner,
            vendor,
            purpose,
            data_handled,
            access_method,
            firmware,
            support_contact,
        } = profile;
        let DevicePolicy {
            allowed_ports,
            max_window,
            approvals_required,
            allowed_orgs,
            protocols: decoded,
            writes,
            write_scope,
        } = policy;
        let WriteScope { units, registers } = write_scope;
        Self {
            name: name.clone(),
            address: address.clone(),
            criticality: (*criticality).into(),
            device_type: device_type.clone(),
            site: site.clone(),
            owner: owner.clone(),
            vendor: vendor.clone(),
            purpose: purpose.clone(),
            data_handled: data_handled.clone(),
            access_method: access_method.clone(),
            firmware: firmware.clone(),
            support_contact: support_contact.clone(),
            policy: Policy {
                allowed_ports: allowed_ports.clone(),
                max_window: max_window.as_secs(),
                approvals_required: *approvals_required,
                allowed_orgs: allowed_orgs.clone(),
                protocols: protocols(decoded),
                writes: (*writes).into(),
                write_units: units.iter().copied().collect(),
                write_registers: registers
                    .iter()
                    .map(|r| {
                        WriteScope {
                            units: BTreeSet::new(),
                            registers: vec![r.clone()],
                        }
                        .join_registers()
                    })
                    .collect(),
            },
        }
    }
}

/// `GET /api/v1/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestList {
    pub requests: Vec<Request>,
}

/// A request or grant, as `GET /api/v1/requests/{id}` and the decisions on it answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Request {
    pub id: i64,
    #[schema(value_type = String)]
    pub requester: Username,
    #[schema(value_type = String)]
    pub org: OrgName,
    #[schema(value_type = String)]
    pub device: DeviceName,
    #[schema(value_type = Vec<schema::Port>)]
    pub ports: BTreeSet<Port>,
    /// What the grant allows on its Modbus ports: `read` (the default) or `write`. Raw TCP
    /// ports are not filtered.
    #[serde(default = "read_access")]
    #[schema(value_type = AccessName)]
    pub access: AccessName,
    pub window: Window,
    pub reason: String,
    #[schema(required = true)]
    pub ticket: Option<String>,
    #[schema(value_type = Time)]
    pub created_at: Timestamp,
    pub state: State,
    pub approvals: Vec<Approval>,
    /// Why it was denied or revoked.
    #[schema(required = true)]
    pub closing_reason: Option<String>,
    #[schema(required = true, value_type = Option<String>)]
    pub closed_by: Option<Username>,
    /// When the broker first saw the window over (state `expired`, persisted); null while it
    /// has not ended, or when it ended otherwise (denied, revoked).
    #[schema(required = true, value_type = Option<Time>)]
    pub ended_at: Option<Timestamp>,
    /// Time left in the window, for an active grant only.
    #[schema(required = true, minimum = 0)]
    pub seconds_left: Option<u64>,
}

impl Request {
    /// The API's view of stored request `id`.
    pub fn from_core(
        id: i64,
        r: &AccessRequest,
        ended_at: Option<Timestamp>,
        seconds_left: Option<u64>,
    ) -> Self {
        // Destructured without `..`, as for devices.
        let AccessRequest {
            requester,
            org,
            device,
            ports,
            access,
            window,
            reason,
            ticket,
            created_at,
            state,
            approvals,
            closing_reason,
            closed_by,
        } = r;
        Self {
            id,
            requester: requester.clone(),
            org: org.clone(),
            device: device.clone(),
            ports: ports.clone(),
            access: (*access).into(),
            window: Window {
                start: window.start,
                end: window.end,
            },
            reason: reason.clone(),
            ticket: ticket.clone(),
            created_at: *created_at,
            state: (*state).into(),
            approvals: approvals
                .iter()
                .map(|a| Approval {
                    by: a.by.clone(),
                    at: a.at,
                })
                .collect(),
            closing_reason: closing_reason.clone(),
            closed_by: closed_by.clone(),
            ended_at,
            seconds_left,
        }
    }
}

/// A request's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Window {
    #[schema(value_type = Time)]
    pub start: Timestamp,
    #[schema(value_type = Time)]
    pub end: Timestamp,
}

/// One supervisor's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    #[schema(value_type = String)]
    pub by: Username,
    #[schema(value_type = Time)]
    pub at: Timestamp,
}

/// `POST /api/v1/requests`: the new request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Created {
    pub id: i64,
    pub state: State,
}

/// `POST /api/v1/grants/{id}/token`: a relay token and where to use it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RelayToken {
    /// The JWT for the relay's `Hello`. Bound to one client certificate; still not for logs.
    pub token: String,
    #[schema(value_type = Time)]
    pub expires_at: Timestamp,
    /// The relay's UDP address, `host:port`.
    pub relay: String,
    /// PEM of the CA that signs the relay's certificate (development CA), or null. The answer
    /// comes over the broker's authenticated HTTPS, so trusting it extends trust no further than
    /// the broker itself.
    #[serde(default)]
    pub relay_ca: Option<String>,
    /// What the decoded ports run under, by the relay's rules: `{"502": "modbus-read"}`
    /// (`modbus-read` or `modbus-write`). Ports not listed are raw TCP. For display: the relay
    /// enforces its own reading of the grant.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub modes: BTreeMap<Port, String>,
}

impl fmt::Debug for RelayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayToken")
            .field("token", &Redacted(self.token.len()))
            .field("expires_at", &self.expires_at)
            .field("relay", &self.relay)
            .field("relay_ca", &self.relay_ca.as_ref().map(String::len))
            .field("modes", &self.modes)
            .finish()
    }
}
