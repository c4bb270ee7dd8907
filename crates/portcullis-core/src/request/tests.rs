use super::*;
use crate::access::{Access, Mode, Protocol, WritePolicy, WriteScope};
use proptest::prelude::*;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_unix_micros(s * 1_000_000).unwrap()
}
fn user(name: &str, role: Role) -> Actor {
    Actor {
        username: Username::parse(name).unwrap(),
        role,
    }
}
fn ports(list: &[u32]) -> BTreeSet<Port> {
    list.iter().map(|p| Port::new(*p).unwrap()).collect()
}
fn acme() -> OrgName {
    OrgName::parse("acme").unwrap()
}
fn policy(approvals: u8) -> DevicePolicy {
    DevicePolicy::new(
        ports(&[22, 502]),
        Duration::from_secs(8 * 3600),
        approvals,
        [acme()].into(),
    )
    .unwrap()
}
fn request(approvals: u8, start: i64, end: i64, now: i64) -> AccessRequest {
    AccessRequest::submit(
        &user("vera", Role::Vendor),
        Some(&acme()),
        &DeviceName::parse("plc-7").unwrap(),
        &policy(approvals),
        ports(&[22, 502]),
        None,
        Window::new(ts(start), ts(end)).unwrap(),
        "firmware update",
        Some("T-1"),
        ts(now),
    )
    .unwrap()
}

#[test]
fn single_approval_grants_and_time_activates_then_expires() {
    let mut r = request(1, 100, 200, 0);
    let st = r
        .approve(
            &user("sam", Role::Supervisor),
            &policy(1),
            &Narrowing::default(),
            ts(10),
        )
        .unwrap();
    assert_eq!(st, RequestState::Approved);
    assert!(!r.is_active(ts(99)));
    assert!(r.is_active(ts(100)));
    assert!(r.tick(ts(150)));
    assert_eq!(r.state, RequestState::Active);
    assert!(!r.is_active(ts(200)));
    assert_eq!(r.state_at(ts(200)), RequestState::Expired);
}

#[test]
fn nobody_approves_their_own_request_even_as_supervisor() {
    let mut r = request(1, 100, 200, 0);
    let err = r.approve(
        &user("vera", Role::Supervisor),
        &policy(1),
        &Narrowing::default(),
        ts(10),
    );
    assert_eq!(err, Err(TransitionError::SelfApproval));
    assert_eq!(r.state, RequestState::Requested);
}

#[test]
fn only_supervisors_decide_and_only_vendors_request() {
    let mut r = request(1, 100, 200, 0);
    for role in [Role::Vendor, Role::Auditor, Role::Admin] {
        let e = r.approve(&user("x", role), &policy(1), &Narrowing::default(), ts(1));
        assert!(matches!(e, Err(TransitionError::Forbidden(_))), "{role}");
    }
    let e = AccessRequest::submit(
        &user("sam", Role::Supervisor),
        Some(&acme()),
        &DeviceName::parse("plc-7").unwrap(),
        &policy(1),
        ports(&[22]),
        None,
        Window::new(ts(100), ts(200)).unwrap(),
        "x",
        None,
        ts(0),
    );
    assert!(matches!(e, Err(TransitionError::Forbidden(_))));
}

#[test]
fn dual_approval_needs_two_different_supervisors() {
    let mut r = request(2, 100, 200, 0);
    let sam = user("sam", Role::Supervisor);
    assert_eq!(
        r.approve(&sam, &policy(2), &Narrowing::default(), ts(1)),
        Ok(RequestState::Requested)
    );
    assert!(matches!(
        r.approve(&sam, &policy(2), &Narrowing::default(), ts(2)),
        Err(TransitionError::Conflict(_))
    ));
    assert!(!r.is_active(ts(150)));
    let st = r.approve(
        &user("sue", Role::Supervisor),
        &policy(2),
        &Narrowing::default(),
        ts(3),
    );
    assert_eq!(st, Ok(RequestState::Approved));
    assert!(r.is_active(ts(150)));
}

#[test]
fn narrowing_only_narrows() {
    let mut r = request(1, 100, 200, 0);
    let sam = user("sam", Role::Supervisor);
    let wider = Narrowing {
        window: Some(Window::new(ts(90), ts(200)).unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        r.approve(&sam, &policy(1), &wider, ts(1)),
        Err(TransitionError::Invalid(_))
    ));
    let other_port = Narrowing {
        ports: Some(ports(&[80])),
        ..Default::default()
    };
    assert!(r.approve(&sam, &policy(1), &other_port, ts(1)).is_err());
    let narrow = Narrowing {
        ports: Some(ports(&[502])),
        window: Some(Window::new(ts(120), ts(150)).unwrap()),
        access: None,
    };
    r.approve(&sam, &policy(1), &narrow, ts(1)).unwrap();
    assert_eq!(r.ports, ports(&[502]));
    assert!(!r.is_active(ts(110)));
    assert!(!r.is_active(ts(150)));
}

#[test]
fn deciding_an_expired_or_decided_request_is_a_conflict() {
    let sam = user("sam", Role::Supervisor);
    let mut r = request(1, 100, 200, 0);
    assert!(matches!(
        r.approve(&sam, &policy(1), &Narrowing::default(), ts(200)),
        Err(TransitionError::Conflict(_))
    ));
    assert_eq!(r.state, RequestState::Expired);
    let mut r = request(1, 100, 200, 0);
    r.deny(&sam, "not today", ts(5)).unwrap();
    assert!(matches!(
        r.approve(&sam, &policy(1), &Narrowing::default(), ts(6)),
        Err(TransitionError::Conflict(_))
    ));
    assert!(matches!(
        r.deny(&sam, "again", ts(6)),
        Err(TransitionError::Conflict(_))
    ));
}

#[test]
fn revoke_ends_a_grant_for_good() {
    let sam = user("sam", Role::Supervisor);
    let mut r = request(1, 100, 200, 0);
    assert!(r.revoke(&sam, "not granted yet", ts(1)).is_err());
    r.approve(&sam, &policy(1), &Narrowing::default(), ts(1))
        .unwrap();
    r.revoke(&sam, "done early", ts(150)).unwrap();
    assert_eq!(r.state_at(ts(160)), RequestState::Revoked);
    assert!(!r.is_active(ts(160)));
    assert_eq!(r.closing_reason.as_deref(), Some("done early"));
}

#[test]
fn submit_checks_policy_window_and_text() {
    let vera = user("vera", Role::Vendor);
    let dev = DeviceName::parse("plc-7").unwrap();
    let submit = |org: &str, p: &[u32], s: i64, e: i64, reason: &str, now: i64| {
        AccessRequest::submit(
            &vera,
            Some(&OrgName::parse(org).unwrap()),
            &dev,
            &policy(1),
            ports(p),
            None,
            Window::new(ts(s), ts(e)).unwrap(),
            reason,
            None,
            ts(now),
        )
    };
    assert!(submit("acme", &[22], 100, 200, "fix", 0).is_ok());
    assert!(
        submit("other", &[22], 100, 200, "fix", 0).is_err(),
        "org not allowed"
    );
    assert!(
        submit("acme", &[80], 100, 200, "fix", 0).is_err(),
        "port not allowed"
    );
    assert!(
        submit("acme", &[22], 100, 100 + 9 * 3600, "fix", 0).is_err(),
        "too long"
    );
    assert!(
        submit("acme", &[22], 100, 200, "  ", 0).is_err(),
        "empty reason"
    );
    assert!(
        submit("acme", &[22], 100, 200, "a\u{1b}[2J", 0).is_err(),
        "control chars"
    );
    assert!(
        submit("acme", &[22], 100, 200, "fix", 300).is_err(),
        "over already"
    );
    assert!(
        submit("acme", &[22], 31 * 86400, 31 * 86400 + 10, "fix", 0).is_err(),
        "too far ahead"
    );
    // A window that began a moment ago starts now.
    let r = submit("acme", &[22], 100, 200, "fix", 150).unwrap();
    assert_eq!(r.window.start, ts(150));
}

#[derive(Debug, Clone)]
enum Op {
    Approve { by: usize, narrow_end: Option<i64> },
    Deny { by: usize },
    Revoke { by: usize },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4, proptest::option::of(101i64..400))
            .prop_map(|(by, narrow_end)| Op::Approve { by, narrow_end }),
        (0usize..4).prop_map(|by| Op::Deny { by }),
        (0usize..4).prop_map(|by| Op::Revoke { by }),
        Just(Op::Tick),
    ]
}

proptest! {
    /// Whatever happens, in whatever order and at whatever times: traffic flows only inside the
    /// window, only after enough distinct approvals none of which is the requester's, and final
    /// states stay final.
    #[test]
    fn state_machine_invariants(
        approvals in 1u8..=2,
        ops in proptest::collection::vec((op(), 0i64..50), 1..30),
    ) {
        let people = [
            user("vera", Role::Supervisor), // same name as the requester
            user("sam", Role::Supervisor),
            user("sue", Role::Supervisor),
            user("ada", Role::Admin),
        ];
        let pol = policy(approvals);
        let mut r = request(approvals, 100, 400, 0);
        let mut now = 0i64;
        let mut final_state: Option<RequestState> = None;
        for (op, step) in ops {
            now += step;
            let t = ts(now);
            let _ = match op {
                Op::Approve { by, narrow_end } => {
                    let n = Narrowing { ports: None, access: None, window: narrow_end.map(|e| Window::new(ts(100), ts(e)).unwrap()) };
                    r.approve(&people[by], &pol, &n, t).map(|_| ())
                }
                Op::Deny { by } => r.deny(&people[by], "no", t),
                Op::Revoke { by } => r.revoke(&people[by], "stop", t),
                Op::Tick => { r.tick(t); Ok(()) }
            };
            if let Some(f) = final_state {
                prop_assert_eq!(r.state_at(t), f, "a final state changed");
            }
            let s = r.state_at(t);
            if s.is_final() { final_state = Some(s); }
            if r.is_active(t) {
                prop_assert!(r.window.contains(t));
                prop_assert!(r.window.within(&Window::new(ts(100), ts(400)).unwrap()));
                let approvers: BTreeSet<_> = r.approvals.iter().map(|a| a.by.clone()).collect();
                prop_assert_eq!(approvers.len(), r.approvals.len());
                prop_assert!(approvers.len() >= usize::from(approvals));
                prop_assert!(!approvers.contains(&r.requester));
            }
            if r.window.has_ended(t) {
                prop_assert!(!r.is_active(t));
            }
        }
    }
}

fn modbus_policy(writes: WritePolicy) -> DevicePolicy {
    policy(1)
        .with_protocols(
            [(Port::new(502).unwrap(), Protocol::Modbus)].into(),
            writes,
            WriteScope::default(),
        )
        .unwrap()
}

fn submit_access(
    policy: &DevicePolicy,
    p: &[u32],
    access: Option<Access>,
) -> Result<AccessRequest, TransitionError> {
    AccessRequest::submit(
        &user("vera", Role::Vendor),
        Some(&acme()),
        &DeviceName::parse("plc-7").unwrap(),
        policy,
        ports(p),
        access,
        Window::new(ts(100), ts(200)).unwrap(),
        "read the counters",
        None,
        ts(0),
    )
}

#[test]
fn access_is_read_unless_write_is_asked_and_the_policy_allows_it() {
    let allowed = modbus_policy(WritePolicy::Allowed);
    assert_eq!(
        submit_access(&allowed, &[502], None).unwrap().access,
        Access::Read
    );
    assert_eq!(
        submit_access(&allowed, &[502, 22], Some(Access::Write))
            .unwrap()
            .access,
        Access::Write
    );
    let never = modbus_policy(WritePolicy::Never);
    let Err(TransitionError::Invalid(e)) = submit_access(&never, &[502], Some(Access::Write))
    else {
        panic!("a device that never grants writes took a write request");
    };
    assert_eq!(e.field, "access");
    assert!(e.message.contains("never grants writes"), "{e}");
    let Err(TransitionError::Invalid(e)) = submit_access(&allowed, &[22], Some(Access::Write))
    else {
        panic!("write access on raw ports only was accepted");
    };
    assert!(e.message.contains("none of 22 speaks Modbus"), "{e}");
    assert_eq!(
        submit_access(&allowed, &[22], Some(Access::Read))
            .unwrap()
            .access,
        Access::Read
    );
}

#[test]
fn approval_narrows_write_to_read_but_never_widens() {
    let p = modbus_policy(WritePolicy::Allowed);
    let sam = user("sam", Role::Supervisor);
    let read_only = Narrowing {
        access: Some(Access::Read),
        ..Default::default()
    };
    let mut r = submit_access(&p, &[502], Some(Access::Write)).unwrap();
    r.approve(&sam, &p, &read_only, ts(1)).unwrap();
    assert_eq!(r.access, Access::Read);
    assert_eq!(
        p.mode(Port::new(502).unwrap(), r.access),
        Mode::Modbus(Access::Read)
    );

    let widen = Narrowing {
        access: Some(Access::Write),
        ..Default::default()
    };
    let mut r = submit_access(&p, &[502], None).unwrap();
    let Err(TransitionError::Invalid(e)) = r.approve(&sam, &p, &widen, ts(1)) else {
        panic!("approval widened read to write");
    };
    assert!(e.message.contains("only narrow access"), "{e}");
    assert_eq!(
        r.state,
        RequestState::Requested,
        "a refused approval changes nothing"
    );

    // A policy tightened to `never` after the request was made refuses the write approval.
    let mut r = submit_access(&p, &[502], Some(Access::Write)).unwrap();
    let never = modbus_policy(WritePolicy::Never);
    assert!(
        r.approve(&sam, &never, &Narrowing::default(), ts(1))
            .is_err()
    );
    assert!(r.approve(&sam, &never, &read_only, ts(1)).is_ok());
}

#[test]
fn the_mode_follows_the_current_policy() {
    let p = modbus_policy(WritePolicy::Allowed);
    let (modbus, raw) = (Port::new(502).unwrap(), Port::new(22).unwrap());
    assert_eq!(p.mode(modbus, Access::Write), Mode::Modbus(Access::Write));
    assert_eq!(p.mode(raw, Access::Write), Mode::Raw);
    let never = modbus_policy(WritePolicy::Never);
    assert_eq!(
        never.mode(modbus, Access::Write),
        Mode::Modbus(Access::Read)
    );
    let e = policy(1)
        .with_protocols(
            [(Port::new(503).unwrap(), Protocol::Modbus)].into(),
            WritePolicy::Allowed,
            WriteScope::default(),
        )
        .unwrap_err();
    assert!(e.message.contains("not one of the device's ports"), "{e}");
}
