//! The API's answers as the client reads them: the broker's own types, from
//! `portcullis-api-types`, so the client cannot drift from what the broker sends. Fields the
//! broker may add later are ignored (the OpenAPI document promises the named fields, not that
//! there are no others).
//!
//! Enum fields (`state`, `role`, `criticality`) are [`OrUnknown`]: a word from a newer broker
//! is kept and shown as it came instead of failing the whole answer, and it never matches a
//! known value, so nothing acts on a state it does not understand. A value that is no enum word
//! at all (too long, control characters, not a string) is [`super::ApiError::BadAnswer`], as is
//! an answer missing a field the document requires.

use serde::Serialize;

pub use portcullis_api_types::OrUnknown;
pub use portcullis_api_types::access::{
    Created, DeviceEntry, OfferedDevice as Device, RelayToken as RelayTicket, Request,
    Window as WindowView,
};
pub use portcullis_api_types::auth::{PendingMfa, Session as LoggedIn};

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
    /// `read` or `write`; left out, the broker's default (`read`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_api_types::access::DeviceList;
    use portcullis_core::{Criticality, RequestState, Timestamp};
    use serde_json::json;

    #[test]
    fn devices_read_in_the_vendor_and_the_inventory_shape() {
        let list = json!({ "devices": [
            { "name": "plc-7", "device_type": "PLC", "site": "Plant 2",
              "criticality": "high", "ports": [502, 80], "max_window_secs": 28800,
              "approvals_required": 1 },
            { "name": "plc-8", "address": "10.0.0.7", "criticality": "low",
              "device_type": "", "site": "", "owner": "", "vendor": "", "purpose": "",
              "data_handled": "", "access_method": "", "firmware": "", "support_contact": "",
              "policy": { "allowed_ports": [22], "max_window": 3600,
              "approvals_required": 2, "allowed_orgs": [] } },
        ] });
        let list: DeviceList = serde_json::from_value(list).unwrap();
        let d: Vec<Device> = list.devices.into_iter().map(DeviceEntry::offered).collect();
        let ports: Vec<u16> = d[0].ports.iter().map(|p| p.get()).collect();
        assert_eq!(ports, vec![80, 502]);
        assert_eq!(d[0].max_window_secs, 28800);
        assert!(d[0].criticality.is(Criticality::High));
        assert_eq!((d[1].approvals_required, d[1].max_window_secs), (2, 3600));
        assert!(
            serde_json::from_value::<DeviceList>(json!({ "devices": [{ "nameless": true }] }))
                .is_err()
        );
    }

    #[test]
    fn a_state_from_a_newer_broker_is_kept_not_fatal() {
        let r = json!({ "id": 7, "requester": "vera", "org": "acme", "device": "plc-7",
            "ports": [502], "window": { "start": "2026-05-01T08:00:00Z", "end": "2026-05-01T10:00:00Z" },
            "reason": "r", "ticket": null, "created_at": "2026-05-01T07:00:00Z",
            "state": "suspended", "approvals": [], "closing_reason": null, "closed_by": null,
            "ended_at": null, "seconds_left": null, "added_later": 1 });
        let r: Request = serde_json::from_value(r).unwrap();
        assert_eq!(r.state, OrUnknown::Unknown("suspended".into()));
        assert!(!r.state.is(RequestState::Active));
        assert_eq!(
            r.window.start,
            Timestamp::parse_rfc3339("2026-05-01T08:00:00Z").unwrap()
        );
    }

    #[test]
    fn tickets_and_sessions_hide_their_secrets_in_debug() {
        let t = RelayTicket {
            token: "eyJsecret".into(),
            expires_at: Timestamp::from_unix_micros(0).unwrap(),
            relay: "r:1".into(),
            relay_ca: None,
            modes: Default::default(),
        };
        assert!(!format!("{t:?}").contains("eyJsecret"));
        let s: LoggedIn = serde_json::from_value(json!({ "session_token": "sess-secret",
            "expires_at": "2026-05-01T08:00:00Z", "csrf_token": "csrf-secret",
            "username": "vera", "role": "vendor" }))
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("sess-secret") && !shown.contains("csrf-secret"),
            "{shown}"
        );
        let p: PendingMfa = serde_json::from_value(json!({ "mfa_token": "mfa-secret",
            "expires_at": "2026-05-01T08:00:00Z" }))
        .unwrap();
        assert!(!format!("{p:?}").contains("mfa-secret"));
    }
}
