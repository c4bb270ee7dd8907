//! The API's answers as the client reads them. Fields the broker may add later are ignored
//! (the OpenAPI document promises the named fields, not that there are no others).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The answer to the password step: a token good only for the TOTP step.
#[derive(Deserialize)]
pub struct PendingMfa {
    pub(crate) mfa_token: String,
}

impl fmt::Debug for PendingMfa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingMfa(<redacted>)")
    }
}

/// The answer to the TOTP step: the session.
#[derive(Deserialize)]
pub struct LoggedIn {
    pub session_token: String,
    pub expires_at: String,
    pub username: String,
    pub role: String,
}

impl fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggedIn")
            .field("session_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("username", &self.username)
            .field("role", &self.role)
            .finish()
    }
}

/// A device the vendor may request, as `GET /api/v1/devices` lists it. Vendors see the flat
/// form; other roles see the inventory record, whose policy fields are nested (both are read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub name: String,
    pub device_type: String,
    pub site: String,
    pub criticality: String,
    pub ports: Vec<u16>,
    pub max_window_secs: Option<u64>,
    pub approvals_required: Option<u64>,
}

impl Device {
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Self> {
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let policy = &v["policy"];
        let ports = v
            .get("ports")
            .or_else(|| policy.get("allowed_ports"))
            .and_then(|p| p.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                    .collect()
            })
            .unwrap_or_default();
        Some(Device {
            name: v["name"].as_str()?.to_owned(),
            device_type: text("device_type"),
            site: text("site"),
            criticality: text("criticality"),
            ports,
            max_window_secs: v["max_window_secs"]
                .as_u64()
                .or_else(|| policy["max_window"].as_u64()),
            approvals_required: v["approvals_required"]
                .as_u64()
                .or_else(|| policy["approvals_required"].as_u64()),
        })
    }
}

/// A request's window, RFC 3339 in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowView {
    pub start: String,
    pub end: String,
}

/// A request or grant, as `GET /api/v1/requests` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: i64,
    pub device: String,
    pub ports: Vec<u16>,
    pub window: WindowView,
    /// `requested`, `approved`, `denied`, `active`, `expired` or `revoked`.
    pub state: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub requester: String,
    /// Time left in the window, for an active grant only.
    #[serde(default)]
    pub seconds_left: Option<u64>,
    /// Why it was denied or revoked.
    #[serde(default)]
    pub closing_reason: Option<String>,
}

/// What the vendor asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewRequest {
    pub device: String,
    pub ports: Vec<u16>,
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// The answer to `POST /api/v1/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Created {
    pub id: i64,
    pub state: String,
}

/// A relay token and where to use it: the answer to `POST /api/v1/grants/{id}/token`.
#[derive(Clone, Deserialize)]
pub struct RelayTicket {
    /// The JWT for `Hello`. Bound to one client certificate; still not for logs.
    pub token: String,
    pub expires_at: String,
    /// The relay's UDP address, `host:port`.
    pub relay: String,
    /// PEM of the CA that signs the relay's certificate, when the broker says (its development
    /// CA); trusted for this connection besides the CA kept at login. The answer comes over the
    /// broker's authenticated HTTPS, so this extends trust no further than the broker itself.
    #[serde(default)]
    pub relay_ca: Option<String>,
}

impl fmt::Debug for RelayTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayTicket")
            .field(
                "token",
                &format_args!("<redacted, {} bytes>", self.token.len()),
            )
            .field("expires_at", &self.expires_at)
            .field("relay", &self.relay)
            .field("relay_ca", &self.relay_ca.as_ref().map(String::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_read_in_the_vendor_and_the_inventory_shape() {
        let vendor = json!({ "name": "plc-7", "device_type": "PLC", "site": "Plant 2",
            "criticality": "high", "ports": [502, 80], "max_window_secs": 28800,
            "approvals_required": 1 });
        let d = Device::from_json(&vendor).unwrap();
        assert_eq!(d.ports, vec![502, 80]);
        assert_eq!(d.max_window_secs, Some(28800));
        let inventory = json!({ "name": "plc-7", "address": "10.0.0.7", "criticality": "low",
            "device_type": "", "policy": { "allowed_ports": [22], "max_window": 3600,
            "approvals_required": 2, "allowed_orgs": [] } });
        let d = Device::from_json(&inventory).unwrap();
        assert_eq!((d.ports, d.approvals_required), (vec![22], Some(2)));
        assert!(Device::from_json(&json!({ "nameless": true })).is_none());
    }

    #[test]
    fn tickets_and_sessions_hide_their_secrets_in_debug() {
        let t = RelayTicket {
            token: "eyJsecret".into(),
            expires_at: String::new(),
            relay: "r:1".into(),
            relay_ca: None,
        };
        assert!(!format!("{t:?}").contains("eyJsecret"));
    }
}
