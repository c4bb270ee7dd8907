//! Login state, sessions and access requests, on both databases.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_core::request::Narrowing;
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    RequestState, Role, Timestamp, Username, Window,
};
use portcullis_store::{
    AuditActor, AuditQuery, FailureOutcome, LockoutPolicy, NewRequest, NewUser, RequestFilter,
    SessionPolicy, Stage, Store, StoreConfig, StoreError, UserRecord,
};
use portcullis_testkit::{ManualClock, TestDb};

portcullis_testkit::both_backends!(
    enrollment_code_works_once_and_totp_steps_are_used_once,
    parallel_submissions_of_one_code_succeed_exactly_once,
    failures_lock_the_account_within_the_window,
    parallel_failures_lock_once,
    sessions_expire_when_idle_or_old_and_logout_ends_them,
    requests_follow_the_state_machine_with_audit_events,
    dual_approval_needs_two_different_supervisors,
);

const T0: &str = "2026-11-25T08:00:00Z";

struct World {
    store: Store,
    clock: Arc<ManualClock>,
}

fn admin() -> AuditActor {
    AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

fn as_actor(u: &UserRecord) -> AuditActor {
    AuditActor {
        name: u.username.to_string(),
        role: u.role.into(),
        source: Some("127.0.0.1".into()),
    }
}

async fn world(db: &TestDb) -> World {
    let clock = Arc::new(ManualClock::at(T0));
    let mut config = StoreConfig::new(MacKey::new([5; 32]));
    config.clock = clock.clone();
    let store = Store::open(db.url(), config).await.unwrap();
    store
        .add_org(&admin(), &OrgName::parse("acme").unwrap())
        .await
        .unwrap();
    World { store, clock }
}

impl World {
    async fn user(&self, name: &str, role: Role) -> (UserRecord, String) {
        let org = (role == Role::Vendor).then(|| OrgName::parse("acme").unwrap());
        let (u, code) = self
            .store
            .add_user(
                &admin(),
                &NewUser {
                    username: Username::parse(name).unwrap(),
                    role,
                    org,
                },
            )
            .await
            .unwrap();
        (u, code.code)
    }

    async fn device(&self, name: &str, approvals: u8) {
        let d = Device {
            name: DeviceName::parse(name).unwrap(),
            address: NetworkAddress::parse("127.0.0.1").unwrap(),
            criticality: Criticality::High,
            profile: DeviceProfile::default(),
            policy: DevicePolicy::new(
                Port::parse_list("502,80").unwrap(),
                Duration::from_secs(8 * 3600),
                approvals,
                BTreeSet::from([OrgName::parse("acme").unwrap()]),
            )
            .unwrap(),
        };
        self.store.add_device(&admin(), &d).await.unwrap();
    }

    fn at(&self, offset_mins: u64) -> Timestamp {
        Timestamp::parse_rfc3339(T0)
            .unwrap()
            .saturating_add(Duration::from_secs(offset_mins * 60))
    }

    fn new_request(&self, device: &str, start: u64, end: u64) -> NewRequest {
        NewRequest {
            device: DeviceName::parse(device).unwrap(),
            ports: Port::parse_list("502,80").unwrap(),
            window: Window::new(self.at(start), self.at(end)).unwrap(),
            reason: "replace the filler's recipe".into(),
            ticket: Some("CHG-1234".into()),
            access: None,
        }
    }
}

async fn enrollment_code_works_once_and_totp_steps_are_used_once(db: TestDb) {
    let w = world(&db).await;
    let (vera, code) = w.user("vera", Role::Vendor).await;
    assert!(w.store.enrollment("not-the-code").await.unwrap().is_none());
    let creds = w.store.enrollment(&code).await.unwrap().unwrap();
    assert_eq!(creds.user.id, vera.id);
    w.store
        .enroll_set_secrets(vera.id, "$argon2id$fake", "v1.sealed")
        .await
        .unwrap();
    assert!(
        w.store
            .enroll_confirm(&as_actor(&vera), vera.id, 100)
            .await
            .unwrap()
    );
    assert!(
        !w.store
            .enroll_confirm(&as_actor(&vera), vera.id, 101)
            .await
            .unwrap(),
        "the code works once"
    );
    assert!(w.store.enrollment(&code).await.unwrap().is_none());
    assert!(w.store.user_by_id(vera.id).await.unwrap().enrolled);
    // Steps: the confirmed one is used; only later steps pass.
    assert!(!w.store.use_totp_step(vera.id, 100).await.unwrap());
    assert!(!w.store.use_totp_step(vera.id, 99).await.unwrap());
    assert!(w.store.use_totp_step(vera.id, 101).await.unwrap());
    // Enrollment codes expire after 24 h.
    let (_, late) = w.user("otto", Role::Vendor).await;
    w.clock.advance(Duration::from_secs(24 * 3600));
    assert!(w.store.enrollment(&late).await.unwrap().is_none());
    // A reset issues a new code and clears the old credentials.
    let fresh = w
        .store
        .reset_enrollment(&admin(), &vera.username)
        .await
        .unwrap();
    assert!(!w.store.user_by_id(vera.id).await.unwrap().enrolled);
    assert!(w.store.enrollment(&fresh.code).await.unwrap().is_some());
}

async fn parallel_submissions_of_one_code_succeed_exactly_once(db: TestDb) {
    let w = world(&db).await;
    let (vera, _) = w.user("vera", Role::Vendor).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = w.store.clone();
            tokio::spawn(async move { s.use_totp_step(vera.id, 5_000_000).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

/// The event a failed password attempt writes, as the web service builds it.
fn failure(u: &UserRecord) -> AuditDraft {
    as_actor(u)
        .draft("login.fail")
        .target(format!("user:{}", u.username))
        .details(serde_json::json!({ "reason": "bad_password" }))
}

async fn failures_lock_the_account_within_the_window(db: TestDb) {
    let w = world(&db).await;
    let (vera, _) = w.user("vera", Role::Vendor).await;
    let policy = LockoutPolicy::default();
    let draft = failure(&vera);
    let fail = || w.store.record_login_failure(vera.id, &policy, &draft);
    for _ in 0..4 {
        assert_eq!(fail().await.unwrap(), FailureOutcome::Counted);
    }
    // Failures older than the window do not count.
    w.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(fail().await.unwrap(), FailureOutcome::Counted);
    for _ in 0..3 {
        assert_eq!(fail().await.unwrap(), FailureOutcome::Counted);
    }
    let FailureOutcome::Locked { until } = fail().await.unwrap() else {
        panic!("the fifth failure locks");
    };
    assert_eq!(until, w.clock_now().saturating_add(policy.lock_for));
    assert_eq!(
        w.store
            .user_by_id(vera.id)
            .await
            .unwrap()
            .status(w.clock_now()),
        "locked"
    );
    // Failing again while locked neither locks again nor moves the end of the lock.
    w.clock.advance(Duration::from_secs(60));
    assert_eq!(fail().await.unwrap(), FailureOutcome::Counted);
    assert_eq!(
        w.store.user_by_id(vera.id).await.unwrap().locked_until,
        Some(until)
    );
    assert_eq!(w.count("login.locked").await, 1);
    assert_eq!(w.count("login.fail").await, 10, "every attempt is recorded");
    w.store.unlock_user(&admin(), &vera.username).await.unwrap();
    assert_eq!(
        w.store.user_by_id(vera.id).await.unwrap().locked_until,
        None
    );
    w.store.record_login_success(vera.id).await.unwrap();
    assert_eq!(w.store.user_by_id(vera.id).await.unwrap().failed_logins, 0);
}

/// Issue 12: ten parallel wrong passwords wrote `login.locked` six times. The lock is decided by
/// the database, so exactly one of any number of parallel failures locks. The clock moves a
/// little before each attempt, as a real one does between requests: each call computes a later
/// `until` than the one before, which is what let later calls "lock" again.
async fn parallel_failures_lock_once(db: TestDb) {
    let w = world(&db).await;
    let (vera, _) = w.user("vera", Role::Vendor).await;
    let policy = LockoutPolicy::default();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = w.store.clone();
            let clock = w.clock.clone();
            let vera = vera.clone();
            tokio::spawn(async move {
                clock.advance(Duration::from_millis(1));
                store
                    .record_login_failure(vera.id, &policy, &failure(&vera))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut locks = Vec::new();
    for t in tasks {
        if let FailureOutcome::Locked { until } = t.await.unwrap() {
            locks.push(until);
        }
    }
    assert_eq!(locks.len(), 1, "exactly one call locks: {locks:?}");
    assert_eq!(w.count("login.locked").await, 1);
    assert_eq!(w.count("login.fail").await, 12);
    let user = w.store.user_by_id(vera.id).await.unwrap();
    assert_eq!(user.locked_until, Some(locks[0]));
    assert_eq!(user.failed_logins, 12);
    assert!(
        w.store
            .verify_chain(Some(MacKey::new([5; 32])), vec![])
            .await
            .unwrap()
            .is_ok()
    );
}

impl World {
    fn clock_now(&self) -> Timestamp {
        use portcullis_core::Clock;
        self.clock.now()
    }

    /// How many events with this action the log holds.
    async fn count(&self, action: &str) -> usize {
        self.store
            .audit_events(&AuditQuery {
                action: Some(action.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }
}

async fn sessions_expire_when_idle_or_old_and_logout_ends_them(db: TestDb) {
    let w = world(&db).await;
    let (sam, _) = w.user("sam", Role::Supervisor).await;
    let policy = SessionPolicy::default();
    let a = w
        .store
        .create_session(sam.id, Stage::Full, Some("127.0.0.1"), &policy)
        .await
        .unwrap();
    let b = w
        .store
        .create_session(sam.id, Stage::Full, None, &policy)
        .await
        .unwrap();
    assert_ne!(a.token, b.token, "a new id at every login");
    assert_eq!(
        w.store
            .session(&a.token, &policy)
            .await
            .unwrap()
            .unwrap()
            .stage,
        Stage::Full
    );
    // Active use keeps it alive up to the absolute limit (24 x 29 min = 11 h 36 min)...
    for _ in 0..24 {
        w.clock.advance(Duration::from_secs(29 * 60));
        assert!(w.store.session(&a.token, &policy).await.unwrap().is_some());
    }
    w.clock.advance(Duration::from_secs(29 * 60));
    assert!(
        w.store.session(&a.token, &policy).await.unwrap().is_none(),
        "12 h absolute"
    );
    // ...idleness ends it after 30 minutes.
    let c = w
        .store
        .create_session(sam.id, Stage::Full, None, &policy)
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(30 * 60));
    assert!(
        w.store.session(&c.token, &policy).await.unwrap().is_none(),
        "30 min idle"
    );
    // Use is recorded at most once a minute, so idleness can end a session up to a minute
    // early, never late: seen at 0 s (creation) and 59 s (not recorded), idle from 0 s.
    let e = w
        .store
        .create_session(sam.id, Stage::Full, None, &policy)
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(59));
    let seen = w.store.session(&e.token, &policy).await.unwrap().unwrap();
    assert_eq!(seen.last_seen_at, e.session.last_seen_at, "not rewritten");
    w.clock.advance(Duration::from_secs(30 * 60 - 59));
    assert!(
        w.store.session(&e.token, &policy).await.unwrap().is_none(),
        "idle from the last recorded use"
    );
    // A use a minute or more later is recorded and keeps it alive.
    let f = w
        .store
        .create_session(sam.id, Stage::Full, None, &policy)
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(60));
    let seen = w.store.session(&f.token, &policy).await.unwrap().unwrap();
    assert!(seen.last_seen_at > f.session.last_seen_at, "recorded");
    w.clock.advance(Duration::from_secs(30 * 60 - 1));
    assert!(w.store.session(&f.token, &policy).await.unwrap().is_some());
    // The password-only stage lives 5 minutes.
    let m = w
        .store
        .create_session(sam.id, Stage::Mfa, None, &policy)
        .await
        .unwrap();
    assert_eq!(m.session.step_up_at, None);
    w.clock.advance(Duration::from_secs(5 * 60));
    assert!(w.store.session(&m.token, &policy).await.unwrap().is_none());
    let d = w
        .store
        .create_session(sam.id, Stage::Full, None, &policy)
        .await
        .unwrap();
    w.store.end_session(&d.token).await.unwrap();
    assert!(
        w.store.session(&d.token, &policy).await.unwrap().is_none(),
        "logout invalidates"
    );
    let e = w
        .store
        .create_session(sam.id, Stage::Full, None, &policy)
        .await
        .unwrap();
    w.store.disable_user(&admin(), &sam.username).await.unwrap();
    assert!(
        w.store.session(&e.token, &policy).await.unwrap().is_none(),
        "disable ends sessions"
    );
}

async fn requests_follow_the_state_machine_with_audit_events(db: TestDb) {
    let w = world(&db).await;
    w.device("plc-7", 1).await;
    let (vera, _) = w.user("vera", Role::Vendor).await;
    let (sam, _) = w.user("sam", Role::Supervisor).await;
    let req = w
        .store
        .create_request(&as_actor(&vera), &vera, &w.new_request("plc-7", 10, 70))
        .await
        .unwrap();
    assert_eq!(req.request.state, RequestState::Requested);

    // Only supervisors, never oneself, and only narrowing.
    let own = w
        .store
        .approve_request(&as_actor(&vera), &vera, req.id, &Narrowing::default())
        .await
        .unwrap_err();
    assert!(matches!(own, StoreError::Forbidden(_)), "{own}");
    let wider = Narrowing {
        ports: Some(Port::parse_list("22").unwrap()),
        window: None,
        access: None,
    };
    let e = w
        .store
        .approve_request(&as_actor(&sam), &sam, req.id, &wider)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    let narrow = Narrowing {
        ports: Some(Port::parse_list("502").unwrap()),
        window: Some(Window::new(w.at(20), w.at(50)).unwrap()),
        access: None,
    };
    let ok = w
        .store
        .approve_request(&as_actor(&sam), &sam, req.id, &narrow)
        .await
        .unwrap();
    assert_eq!(ok.request.state, RequestState::Approved);
    assert_eq!(Port::join(&ok.request.ports), "502");
    let again = w
        .store
        .approve_request(&as_actor(&sam), &sam, req.id, &Narrowing::default())
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::Conflict(_)),
        "deciding twice is a conflict: {again}"
    );

    // The clock moves the state: active inside the window, expired after.
    w.clock.advance(Duration::from_secs(25 * 60));
    assert_eq!(
        w.store
            .request(req.id)
            .await
            .unwrap()
            .unwrap()
            .request
            .state,
        RequestState::Active
    );
    let mine = w
        .store
        .list_requests(&RequestFilter {
            requester: Some(vera.username.clone()),
            state: None,
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    let revoked = w
        .store
        .revoke_grant(&as_actor(&sam), &sam, req.id, "job done early")
        .await
        .unwrap();
    assert_eq!(revoked.request.state, RequestState::Revoked);
    assert_eq!(revoked.request.closed_by, Some(sam.username.clone()));

    // A denied one, and an expired one that can no longer be decided.
    let r2 = w
        .store
        .create_request(&as_actor(&vera), &vera, &w.new_request("plc-7", 30, 90))
        .await
        .unwrap();
    w.store
        .deny_request(&as_actor(&sam), &sam, r2.id, "not during production")
        .await
        .unwrap();
    let r3 = w
        .store
        .create_request(&as_actor(&vera), &vera, &w.new_request("plc-7", 30, 40))
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(60 * 60));
    let late = w
        .store
        .approve_request(&as_actor(&sam), &sam, r3.id, &Narrowing::default())
        .await
        .unwrap_err();
    assert!(matches!(late, StoreError::Conflict(_)), "{late}");
    let expired = w
        .store
        .list_requests(&RequestFilter {
            requester: None,
            state: Some(RequestState::Expired),
        })
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![r3.id]
    );

    let events = w
        .store
        .audit_events(&AuditQuery {
            grant_id: Some(req.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<_> = events
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("request.create", "vera"),
            ("request.approve", "sam"),
            ("grant.revoke", "sam")
        ]
    );
    // The approval names whom it lets in, and where (issue 12).
    let approval = &events[1];
    let details: serde_json::Value = serde_json::from_str(&approval.details).unwrap();
    assert_eq!(details["requester"], "vera", "{details}");
    assert_eq!(details["device"], "plc-7", "{details}");
    assert_eq!(details["org"], "acme", "{details}");
    assert!(
        w.store
            .verify_chain(Some(MacKey::new([5; 32])), vec![])
            .await
            .unwrap()
            .is_ok()
    );
}

async fn dual_approval_needs_two_different_supervisors(db: TestDb) {
    let w = world(&db).await;
    w.device("hmi-1", 2).await;
    let (vera, _) = w.user("vera", Role::Vendor).await;
    let (sam, _) = w.user("sam", Role::Supervisor).await;
    let (sue, _) = w.user("sue", Role::Supervisor).await;
    let req = w
        .store
        .create_request(&as_actor(&vera), &vera, &w.new_request("hmi-1", 10, 70))
        .await
        .unwrap();
    let first = w
        .store
        .approve_request(&as_actor(&sam), &sam, req.id, &Narrowing::default())
        .await
        .unwrap();
    assert_eq!(
        first.request.state,
        RequestState::Requested,
        "one approval is not enough"
    );
    let twice = w
        .store
        .approve_request(&as_actor(&sam), &sam, req.id, &Narrowing::default())
        .await
        .unwrap_err();
    assert!(matches!(twice, StoreError::Conflict(_)), "{twice}");
    let second = w
        .store
        .approve_request(&as_actor(&sue), &sue, req.id, &Narrowing::default())
        .await
        .unwrap();
    assert_eq!(second.request.state, RequestState::Approved);
    assert_eq!(second.request.approvals.len(), 2);
}
