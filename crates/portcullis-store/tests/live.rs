//! Live relay sessions (issue 14, point 5), on both databases: the relay's batched counter
//! reports, the lists the web service reads, the top bar's counts, and a supervisor's request to
//! end one session (recorded, audited, sent to relays in this and other processes, refused
//! twice and for a session already over).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::request::Narrowing;
use portcullis_core::{
    Clock, Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, GrantId, NetworkAddress,
    OrgName, Port, RequestState, Role, Timestamp, Username, Window,
};
use portcullis_store::{
    Attention, AuditActor, AuditQuery, GrantChange, LiveCounters, NewRequest, NewUser,
    RelaySessionEnd, RelaySessionId, RelaySessionStart, SessionFilter, Store, StoreConfig,
    StoreError, UserRecord,
};
use portcullis_testkit::{ManualClock, TestDb};
use tokio::time::timeout;

portcullis_testkit::both_backends!(
    counters_are_reported_in_one_batch_and_the_end_keeps_the_final_ones,
    sessions_are_listed_live_or_recent_by_vendor_grant_and_limit,
    ending_a_session_is_recorded_audited_and_sent_to_relays_everywhere,
    a_session_over_or_already_being_ended_is_a_conflict,
);

const T0: &str = "2026-11-25T08:00:00Z";

struct World {
    store: Store,
    clock: Arc<ManualClock>,
    vera: UserRecord,
    sam: UserRecord,
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

async fn open(db: &TestDb, clock: Arc<ManualClock>) -> Store {
    let mut config = StoreConfig::new(MacKey::new([5; 32]));
    config.clock = clock;
    Store::open(db.url(), config).await.unwrap()
}

async fn world(db: &TestDb) -> World {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(db, clock.clone()).await;
    let acme = OrgName::parse("acme").unwrap();
    store.add_org(&admin(), &acme).await.unwrap();
    let user = |name: &str, role: Role| NewUser {
        username: Username::parse(name).unwrap(),
        role,
        org: (role == Role::Vendor).then(|| acme.clone()),
    };
    let (vera, _) = store
        .add_user(&admin(), &user("vera", Role::Vendor))
        .await
        .unwrap();
    let (sam, _) = store
        .add_user(&admin(), &user("sam", Role::Supervisor))
        .await
        .unwrap();
    let device = Device {
        name: DeviceName::parse("plc-7").unwrap(),
        address: NetworkAddress::parse("127.0.0.1").unwrap(),
        criticality: Criticality::High,
        profile: DeviceProfile::default(),
        policy: DevicePolicy::new(
            Port::parse_list("502").unwrap(),
            Duration::from_secs(8 * 3600),
            1,
            BTreeSet::from([acme]),
        )
        .unwrap(),
    };
    store.add_device(&admin(), &device).await.unwrap();
    World {
        store,
        clock,
        vera,
        sam,
    }
}

impl World {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Vera asks for plc-7 for the next two hours; approved by Sam unless `pending`.
    async fn grant(&self, pending: bool) -> GrantId {
        let new = NewRequest {
            device: DeviceName::parse("plc-7").unwrap(),
            ports: Port::parse_list("502").unwrap(),
            window: Window::new(
                self.now(),
                self.now().saturating_add(Duration::from_secs(7200)),
            )
            .unwrap(),
            reason: "firmware check".into(),
            ticket: None,
            access: None,
        };
        let rec = self
            .store
            .create_request(&as_actor(&self.vera), &self.vera, &new)
            .await
            .unwrap();
        if !pending {
            self.store
                .approve_request(
                    &as_actor(&self.sam),
                    &self.sam,
                    rec.id,
                    &Narrowing::default(),
                )
                .await
                .unwrap();
        }
        GrantId::new(rec.id)
    }

    /// A session of `grant` on relay `relay`, as the relay records its start.
    async fn start(&self, id: &str, grant: GrantId, relay: &str) -> RelaySessionId {
        self.store
            .start_relay_session(&RelaySessionStart {
                id: id.into(),
                relay: relay.into(),
                grant,
                username: "vera".into(),
                device: "plc-7".into(),
                jti: format!("jti-{id}"),
                cnf: "thumb".into(),
                source: "192.0.2.7".into(),
                targets: vec!["plc-7:502".into()],
                window_end: self.now().saturating_add(Duration::from_secs(7200)),
                site: None,
            })
            .await
            .unwrap();
        id.parse().unwrap()
    }

    async fn end(&self, id: &RelaySessionId, grant: GrantId, bytes_up: u64) {
        let rec = self.store.relay_session(id).await.unwrap().unwrap();
        self.store
            .end_relay_session(&RelaySessionEnd {
                id: id.to_string(),
                grant,
                username: "vera".into(),
                device: "plc-7".into(),
                reason: "client_closed".into(),
                started_at: rec.started_at,
                ended_at: self.now(),
                bytes_up,
                bytes_down: 2 * bytes_up,
                streams: 3,
                refused_streams: 1,
                modbus: serde_json::json!({ "reads": 4, "writes": 0, "refused": 1, "last": [] }),
                connectors: Vec::new(),
                ended_by: None,
            })
            .await
            .unwrap();
    }

    fn live(&self) -> SessionFilter {
        SessionFilter::default()
    }
}

fn counters(id: &RelaySessionId, n: u64) -> LiveCounters {
    LiveCounters {
        id: id.to_string(),
        open_streams: n % 3,
        bytes_up: n,
        bytes_down: 10 * n,
        refused_streams: n / 100,
        modbus: serde_json::Value::Null,
    }
}

const A: &str = "rs_AAAAAAAAAAAAAAAA";
const B: &str = "rs_BBBBBBBBBBBBBBBB";
const C: &str = "rs_CCCCCCCCCCCCCCCC";

async fn counters_are_reported_in_one_batch_and_the_end_keeps_the_final_ones(db: TestDb) {
    let w = world(&db).await;
    let g = w.grant(false).await;
    let a = w.start(A, g, "relay").await;
    w.clock.advance(Duration::from_secs(1));
    let b = w.start(B, g, "relay").await;

    // Before the first report: zeros, and no report time.
    let fresh = w.store.relay_session(&a).await.unwrap().unwrap();
    assert_eq!(
        (fresh.bytes_up, fresh.open_streams, fresh.last_reported_at),
        (0, 0, None)
    );
    assert_eq!(fresh.source.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        (fresh.relay.as_str(), fresh.device.as_str()),
        ("relay", "plc-7")
    );

    w.clock.advance(Duration::from_secs(2));
    let modbus = serde_json::json!({
        "reads": 2, "writes": 1, "refused": 1,
        "last": [{ "at": w.now(), "kind": "refused", "unit": 1, "function": 6,
                   "address": 100, "quantity": 1 }],
    });
    let mut with_modbus = counters(&b, 250);
    with_modbus.modbus = modbus.clone();
    w.store
        .report_live_sessions(&[counters(&a, 1000), with_modbus])
        .await
        .unwrap();
    let now = w.now();
    let a_rec = w.store.relay_session(&a).await.unwrap().unwrap();
    assert_eq!(
        (
            a_rec.bytes_up,
            a_rec.bytes_down,
            a_rec.open_streams,
            a_rec.refused_streams
        ),
        (1000, 10_000, 1, 10)
    );
    assert_eq!(a_rec.last_reported_at, Some(now));
    assert_eq!(a_rec.modbus, None, "no Modbus request: none");
    let b_rec = w.store.relay_session(&b).await.unwrap().unwrap();
    assert_eq!(b_rec.bytes_up, 250);
    assert_eq!(b_rec.modbus, Some(modbus));

    // The end writes the final numbers; a report that comes later (a snapshot taken just
    // before the end) does not overwrite them.
    w.clock.advance(Duration::from_secs(1));
    w.end(&a, g, 5000).await;
    w.store
        .report_live_sessions(&[counters(&a, 1200), counters(&b, 300)])
        .await
        .unwrap();
    let ended = w.store.relay_session(&a).await.unwrap().unwrap();
    assert_eq!(ended.ended_at, Some(w.now()));
    assert_eq!(ended.end_reason.as_deref(), Some("client_closed"));
    assert_eq!(
        (
            ended.bytes_up,
            ended.bytes_down,
            ended.open_streams,
            ended.refused_streams
        ),
        (5000, 10_000, 0, 1),
        "final numbers kept"
    );
    assert_eq!(ended.modbus.as_ref().unwrap()["reads"], 4);
    assert_eq!(
        w.store.relay_session(&b).await.unwrap().unwrap().bytes_up,
        300,
        "the live one took the report"
    );
    // No report when there is nothing to report, and none writes an audit row.
    let before = w
        .store
        .audit_events(&AuditQuery::default())
        .await
        .unwrap()
        .len();
    w.store.report_live_sessions(&[]).await.unwrap();
    w.store
        .report_live_sessions(&[counters(&b, 400)])
        .await
        .unwrap();
    let after = w
        .store
        .audit_events(&AuditQuery::default())
        .await
        .unwrap()
        .len();
    assert_eq!(before, after, "reports are working state, not audit events");

    // A relay that dies leaves B open; its restart closes it with the last report's bytes.
    let closed = w.store.close_orphan_relay_sessions("relay").await.unwrap();
    assert_eq!(closed.len(), 1);
    let events = w.store.audit_events(&AuditQuery::default()).await.unwrap();
    let end = events
        .iter()
        .rev()
        .find(|e| e.action == "relay.session.end")
        .unwrap();
    let d: serde_json::Value = serde_json::from_str(&end.details).unwrap();
    assert_eq!(d["reason"], "relay_restart");
    assert_eq!(d["bytes_up"], 400, "{d}");
    assert!(
        d["note"].as_str().unwrap().contains("as last reported"),
        "{d}"
    );
    let b_rec = w.store.relay_session(&b).await.unwrap().unwrap();
    assert_eq!((b_rec.open_streams, b_rec.bytes_up), (0, 400));
}

async fn sessions_are_listed_live_or_recent_by_vendor_grant_and_limit(db: TestDb) {
    let w = world(&db).await;
    assert_eq!(w.store.attention().await.unwrap(), Attention::default());
    let g1 = w.grant(false).await;
    let g2 = w.grant(false).await;
    let _pending = w.grant(true).await;
    let _a = w.start(A, g1, "relay").await;
    w.clock.advance(Duration::from_secs(1));
    let b = w.start(B, g2, "relay-2").await;
    w.clock.advance(Duration::from_secs(1));
    let c = w.start(C, g1, "relay").await;
    w.end(&c, g1, 10).await;

    let ids = |list: Vec<portcullis_store::SessionRecord>| -> Vec<String> {
        list.into_iter().map(|s| s.id.to_string()).collect()
    };
    let live = w.store.relay_sessions(&w.live()).await.unwrap();
    assert_eq!(ids(live), [B, A], "live only, newest first");
    let recent = SessionFilter {
        live_only: false,
        ..w.live()
    };
    let all = w.store.relay_sessions(&recent).await.unwrap();
    assert_eq!(ids(all), [C, B, A], "live and ended");
    let of_g1 = SessionFilter {
        grant: Some(g1),
        ..recent.clone()
    };
    assert_eq!(ids(w.store.relay_sessions(&of_g1).await.unwrap()), [C, A]);
    let one = SessionFilter {
        limit: 1,
        ..recent.clone()
    };
    assert_eq!(ids(w.store.relay_sessions(&one).await.unwrap()), [C]);
    let otto = SessionFilter {
        vendor: Some(Username::parse("otto").unwrap()),
        ..recent.clone()
    };
    assert!(w.store.relay_sessions(&otto).await.unwrap().is_empty());
    let vera = SessionFilter {
        vendor: Some(Username::parse("vera").unwrap()),
        ..recent
    };
    assert_eq!(w.store.relay_sessions(&vera).await.unwrap().len(), 3);
    let b_rec = w.store.relay_session(&b).await.unwrap().unwrap();
    assert_eq!((b_rec.grant, b_rec.relay.as_str()), (g2, "relay-2"));

    // The top bar: one request awaits a decision, two sessions are live.
    assert_eq!(
        w.store.attention().await.unwrap(),
        Attention {
            pending_requests: 1,
            live_sessions: 2
        }
    );
    // A pending request whose window has passed is not awaiting anyone any more.
    w.clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(w.store.attention().await.unwrap().pending_requests, 0);
}

async fn ending_a_session_is_recorded_audited_and_sent_to_relays_everywhere(db: TestDb) {
    let w = world(&db).await;
    let g = w.grant(false).await;
    let a = w.start(A, g, "relay").await;
    let b = w.start(B, g, "relay-2").await;
    // Another process on the same database (a second broker, `portcullis web` apart from the
    // relay): it hears of the end through NOTIFY or the SQLite feed.
    let other = open(&db, w.clock.clone()).await;
    other.follow_other_processes(db.url()).await.unwrap();
    let mut elsewhere = other.grant_changes();
    let mut here = w.store.grant_changes();

    w.clock.advance(Duration::from_secs(30));
    let rec = w
        .store
        .request_session_end(&as_actor(&w.sam), &a, "  wrong PLC, stop now ")
        .await
        .unwrap();
    let request = rec.end_request.clone().unwrap();
    assert_eq!(
        (request.by.as_str(), request.reason.as_str(), request.at),
        ("sam", "wrong PLC, stop now", w.now())
    );
    assert_eq!(request.message(), "ended by sam: wrong PLC, stop now");
    assert_eq!(rec.ended_at, None, "the relay ends it; the store only asks");

    let told = timeout(Duration::from_secs(5), here.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(told, GrantChange::Session(a.clone()));
    let told = timeout(Duration::from_secs(5), elsewhere.recv())
        .await
        .expect("the other process hears of it")
        .unwrap();
    assert_eq!(told, GrantChange::Session(a.clone()));
    assert_eq!(told.to_payload(), format!("session:{A}"));
    assert_eq!(GrantChange::from_payload(&told.to_payload()), told);
    assert_eq!(
        GrantChange::from_payload("session:not-an-id"),
        GrantChange::All,
        "an unreadable notice re-checks everything"
    );

    // What the relays read: the request on the one session, nothing on the other.
    assert_eq!(
        w.store.session_end_request(&a).await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(w.store.session_end_request(&b).await.unwrap(), None);
    assert_eq!(
        w.store.end_requests("relay").await.unwrap(),
        vec![(A.to_owned(), request.clone())]
    );
    assert!(w.store.end_requests("relay-2").await.unwrap().is_empty());

    // Audited with who, which session, its grant and why; the grant is untouched.
    let events = w.store.audit_events(&AuditQuery::default()).await.unwrap();
    let e = events.iter().find(|e| e.action == "session.end").unwrap();
    assert_eq!((e.actor.as_str(), e.role.as_str()), ("sam", "supervisor"));
    assert_eq!(e.target, format!("session:{A}"));
    assert_eq!(e.grant_id, Some(g));
    assert_eq!(e.session_id.as_deref(), Some(A));
    let d: serde_json::Value = serde_json::from_str(&e.details).unwrap();
    assert_eq!(d["reason"], "wrong PLC, stop now");
    assert_eq!(
        (d["vendor"].as_str(), d["device"].as_str()),
        (Some("vera"), Some("plc-7"))
    );
    assert_eq!(d["relay"], "relay");
    let grant = w.store.request(g.get()).await.unwrap().unwrap();
    assert_eq!(grant.request.state, RequestState::Active, "the grant stays");

    // Once the relay has ended it, the request is no longer outstanding.
    w.end(&a, g, 1).await;
    assert_eq!(w.store.session_end_request(&a).await.unwrap(), None);
    assert!(w.store.end_requests("relay").await.unwrap().is_empty());
    let listed = w.store.relay_session(&a).await.unwrap().unwrap();
    assert_eq!(
        listed.end_request,
        Some(request),
        "who asked stays on the row"
    );
}

async fn a_session_over_or_already_being_ended_is_a_conflict(db: TestDb) {
    let w = world(&db).await;
    let g = w.grant(false).await;
    let a = w.start(A, g, "relay").await;
    let b = w.start(B, g, "relay").await;
    let sam = as_actor(&w.sam);
    for bad in ["", "   ", "line\nbreak"] {
        match w.store.request_session_end(&sam, &a, bad).await {
            Err(StoreError::Invalid(v)) => assert_eq!(v.field, "reason", "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let unknown: RelaySessionId = C.parse().unwrap();
    assert!(matches!(
        w.store.request_session_end(&sam, &unknown, "x").await,
        Err(StoreError::NotFound(m)) if m.contains(C)
    ));
    w.store
        .request_session_end(&sam, &a, "first")
        .await
        .unwrap();
    match w.store.request_session_end(&sam, &a, "second").await {
        Err(StoreError::Conflict(m)) => {
            assert!(
                m.contains("already being ended") && m.contains("sam"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    w.end(&b, g, 1).await;
    match w.store.request_session_end(&sam, &b, "too late").await {
        Err(StoreError::Conflict(m)) => {
            assert!(
                m.contains("already over") && m.contains("client_closed"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    let events = w.store.audit_events(&AuditQuery::default()).await.unwrap();
    let ends: Vec<_> = events
        .iter()
        .filter(|e| e.action == "session.end")
        .collect();
    assert_eq!(ends.len(), 1, "only the request that was taken is audited");
}
