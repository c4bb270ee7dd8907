use std::time::Duration;

use super::*;
use crate::access::{Access, Protocol, WritePolicy};
use crate::device::{Criticality, DeviceProfile, NetworkAddress};
use crate::names::{DeviceName, OrgName, Username};
use crate::policy::DevicePolicy;
use crate::window::Window;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_unix_micros(s * 1_000_000).unwrap()
}

fn ports(list: &[u32]) -> BTreeSet<Port> {
    list.iter().map(|p| Port::new(*p).unwrap()).collect()
}

fn org(name: &str) -> OrgName {
    OrgName::parse(name).unwrap()
}

fn device(allowed: &[u32], orgs: &[&str]) -> Device {
    Device {
        name: DeviceName::parse("plc-7").unwrap(),
        address: NetworkAddress::parse("10.0.0.7").unwrap(),
        criticality: Criticality::Medium,
        profile: DeviceProfile::default(),
        policy: DevicePolicy::new(
            ports(allowed),
            Duration::from_secs(8 * 3600),
            1,
            orgs.iter().map(|o| org(o)).collect(),
        )
        .unwrap(),
    }
}

/// An approved grant of ports 22 and 502 from t=100 to t=200, for vera of acme.
fn snapshot() -> GrantSnapshot {
    GrantSnapshot {
        request: AccessRequest {
            requester: Username::parse("vera").unwrap(),
            org: org("acme"),
            device: DeviceName::parse("plc-7").unwrap(),
            ports: ports(&[22, 502]),
            access: Access::Write,
            window: Window::new(ts(100), ts(200)).unwrap(),
            reason: "firmware update".into(),
            ticket: None,
            created_at: ts(0),
            state: RequestState::Approved,
            approvals: Vec::new(),
            closing_reason: None,
            closed_by: None,
        },
        vendor: Some(VendorAccount::default()),
        device: Some(device(&[22, 502], &["acme"])),
        site: None,
    }
}

#[test]
fn an_approved_grant_inside_its_window_allows_its_ports_at_the_inventory_address() {
    let mut s = snapshot();
    s.site = Some("plant-2".into());
    s.vendor = Some(VendorAccount {
        disabled: false,
        not_before: NotBefore {
            tokens: Some(ts(50)),
            sessions: None,
        },
    });
    let a = decide(&s, ts(150)).unwrap();
    assert_eq!(a.address, "10.0.0.7");
    assert_eq!(a.ports, ports(&[22, 502]));
    assert_eq!(a.window_end, ts(200));
    assert_eq!(a.site.as_deref(), Some("plant-2"));
    assert_eq!(a.not_before.tokens, Some(ts(50)));
}

#[test]
fn every_reason_a_grant_is_refused() {
    let at = |s: &GrantSnapshot, t: i64| decide(s, ts(t));
    let base = snapshot();
    assert_eq!(at(&base, 99), Err(Dead::NotStarted));
    assert_eq!(
        at(&base, 200),
        Err(Dead::WindowOver),
        "the end is exclusive"
    );

    for (state, dead) in [
        (RequestState::Requested, Dead::Inactive),
        (RequestState::Denied, Dead::Inactive),
        (RequestState::Revoked, Dead::Revoked),
        (RequestState::Expired, Dead::WindowOver),
    ] {
        let mut s = base.clone();
        s.request.state = state;
        assert_eq!(at(&s, 150), Err(dead), "{state:?}");
    }

    let mut s = base.clone();
    s.vendor = Some(VendorAccount {
        disabled: true,
        ..VendorAccount::default()
    });
    assert_eq!(at(&s, 150), Err(Dead::UserDisabled));
    s.vendor = None;
    assert_eq!(at(&s, 150), Err(Dead::UserDisabled), "account removed");

    let mut s = base.clone();
    s.device = None;
    assert_eq!(at(&s, 150), Err(Dead::PolicyChanged), "device removed");
    s.device = Some(device(&[22, 502], &["globex"]));
    assert_eq!(
        at(&s, 150),
        Err(Dead::PolicyChanged),
        "org no longer allowed"
    );
    s.device = Some(device(&[80], &["acme"]));
    assert_eq!(
        at(&s, 150),
        Err(Dead::PolicyChanged),
        "no granted port left"
    );
}

#[test]
fn a_narrowed_policy_keeps_only_the_ports_it_still_allows() {
    let mut s = snapshot();
    s.device = Some(device(&[502, 80], &["acme"]));
    assert_eq!(decide(&s, ts(150)).unwrap().ports, ports(&[502]));
}

#[test]
fn the_modes_come_from_the_current_policy_and_the_grants_access() {
    let mut s = snapshot();
    let allowed = decide(&s, ts(150)).unwrap();
    assert!(allowed.modes.is_empty(), "no port is named Modbus: all raw");
    assert_eq!(allowed.mode(Port::new(502).unwrap()), Mode::Raw);
    let modbus = |writes| {
        device(&[22, 502], &["acme"])
            .policy
            .with_protocols(
                [(Port::new(502).unwrap(), Protocol::Modbus)].into(),
                writes,
                WriteScope {
                    units: [1].into(),
                    registers: Vec::new(),
                },
            )
            .unwrap()
    };
    s.device.as_mut().unwrap().policy = modbus(WritePolicy::Allowed);
    let allowed = decide(&s, ts(150)).unwrap();
    assert_eq!(
        allowed.mode(Port::new(502).unwrap()),
        Mode::Modbus(Access::Write)
    );
    assert_eq!(allowed.mode(Port::new(22).unwrap()), Mode::Raw);
    assert_eq!(allowed.write_scope.units, [1].into());
    // Writes turned off after the approval: the grant is read-only from now on.
    s.device.as_mut().unwrap().policy = modbus(WritePolicy::Never);
    let allowed = decide(&s, ts(150)).unwrap();
    assert_eq!(
        allowed.mode(Port::new(502).unwrap()),
        Mode::Modbus(Access::Read)
    );
}

#[test]
fn each_death_has_its_refusal_and_end_reason() {
    for (dead, code, end) in [
        (
            Dead::NotStarted,
            RefusalCode::NotInWindow,
            EndReason::WindowEnd,
        ),
        (
            Dead::WindowOver,
            RefusalCode::NotInWindow,
            EndReason::WindowEnd,
        ),
        (
            Dead::Revoked,
            RefusalCode::GrantInactive,
            EndReason::Revoked,
        ),
        (
            Dead::Inactive,
            RefusalCode::GrantInactive,
            EndReason::WindowEnd,
        ),
        (
            Dead::UserDisabled,
            RefusalCode::GrantInactive,
            EndReason::UserDisabled,
        ),
        (
            Dead::PolicyChanged,
            RefusalCode::GrantInactive,
            EndReason::PolicyChanged,
        ),
    ] {
        assert_eq!(dead.refusal().0, code, "{dead:?}");
        assert!(!dead.refusal().1.is_empty());
        assert_eq!(dead.end_reason(), end, "{dead:?}");
    }
}

#[test]
fn a_token_from_the_second_of_a_not_before_is_refused() {
    let nb = Timestamp::from_unix_micros(100_500_000).unwrap();
    assert!(issued_before(99, Some(nb)));
    assert!(
        issued_before(100, Some(nb)),
        "same second: cannot tell, refuse"
    );
    assert!(!issued_before(101, Some(nb)));
    assert!(!issued_before(0, None));
    assert!(!issued_before(u64::MAX, Some(nb)));
}
