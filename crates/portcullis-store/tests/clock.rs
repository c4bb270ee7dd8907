//! Issue 12: a grant's end by time is persisted the first time it is seen, so a wall clock
//! stepped back cannot re-open it; the clock monitor detects steps and an admin's
//! acknowledgement ends the anomaly. On both databases.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::clockwatch::ClockSample;
use portcullis_core::request::Narrowing;
use portcullis_core::{
    Clock, Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName,
    Port, RequestState, Role, Timestamp, Username, Window,
};
use portcullis_store::{
    AuditActor, AuditQuery, ClockMonitorConfig, EndObserver, NewRequest, NewUser, RequestFilter,
    Store, StoreConfig, StoreError, UserRecord,
};
use portcullis_testkit::{ManualClock, TestDb};

portcullis_testkit::both_backends!(
    an_ended_grant_stays_ended_when_the_clock_steps_back,
    the_sweep_persists_ends_nobody_saw_once,
    the_relay_timer_ends_a_grant_whatever_the_wall_clock_says,
    a_clock_step_is_an_anomaly_until_an_admin_acknowledges,
    an_anomaly_ends_when_the_clocks_agree_again,
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

async fn world(db: &TestDb) -> World {
    let clock = Arc::new(ManualClock::at(T0));
    let mut config = StoreConfig::new(MacKey::new([5; 32]));
    config.clock = clock.clone();
    let store = Store::open(db.url(), config).await.unwrap();
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
    /// Vera asks for plc-7 from now for `minutes`; Sam approves. Returns the grant id.
    async fn grant(&self, minutes: u64) -> i64 {
        let now = self.clock.now();
        let new = NewRequest {
            device: DeviceName::parse("plc-7").unwrap(),
            ports: Port::parse_list("502").unwrap(),
            window: Window::new(now, now.saturating_add(Duration::from_secs(minutes * 60)))
                .unwrap(),
            reason: "replace the filler's recipe".into(),
            ticket: None,
            access: None,
        };
        let rec = self
            .store
            .create_request(&as_actor(&self.vera), &self.vera, &new)
            .await
            .unwrap();
        self.store
            .approve_request(
                &as_actor(&self.sam),
                &self.sam,
                rec.id,
                &Narrowing::default(),
            )
            .await
            .unwrap();
        rec.id
    }

    async fn state(&self, id: i64) -> RequestState {
        self.store.request(id).await.unwrap().unwrap().request.state
    }

    async fn events(&self, action: &str) -> Vec<serde_json::Value> {
        self.store
            .audit_events(&AuditQuery {
                action: Some(action.into()),
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|e| {
                let mut d: serde_json::Value = serde_json::from_str(&e.details).unwrap();
                d["_actor"] = e.actor.clone().into();
                d["_grant"] = e.grant_id.map(portcullis_core::GrantId::get).into();
                d
            })
            .collect()
    }
}

async fn an_ended_grant_stays_ended_when_the_clock_steps_back(db: TestDb) {
    let w = world(&db).await;
    let id = w.grant(10).await;
    assert_eq!(w.state(id).await, RequestState::Active);
    // 1 s after the window's end, a read sees it over: the end is persisted with its event.
    w.clock.advance(Duration::from_secs(10 * 60 + 1));
    let rec = w.store.request(id).await.unwrap().unwrap();
    assert_eq!(rec.request.state, RequestState::Expired);
    let ended = rec
        .ended_at
        .expect("ended_at is set by the first read after the end");
    assert_eq!(ended, w.clock.now());
    // The wall clock steps back 10 s, into the window: the grant stays ended.
    w.clock
        .set(Timestamp::parse_rfc3339("2026-11-25T08:09:51Z").unwrap());
    assert_eq!(w.state(id).await, RequestState::Expired);
    let active = w
        .store
        .list_requests(&RequestFilter {
            state: Some(RequestState::Active),
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert!(active.is_empty(), "{active:?}");
    let all = w
        .store
        .list_requests(&RequestFilter::default())
        .await
        .unwrap();
    assert_eq!(all[0].request.state, RequestState::Expired);
    assert_eq!(all[0].ended_at, Some(ended));
    // Ended is final: no revoke "inside the window" either.
    let revoke = w
        .store
        .revoke_grant(&as_actor(&w.sam), &w.sam, id, "too late")
        .await;
    assert!(matches!(revoke, Err(StoreError::Conflict(_))), "{revoke:?}");
    // Written once, by the system, naming who saw it.
    let ev = w.events("request.expire").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["_actor"], "portcullis");
    assert_eq!(ev[0]["_grant"], id);
    assert_eq!(ev[0]["observed_by"], "read");
    // Nothing left for the sweep.
    assert_eq!(w.store.sweep_ended().await.unwrap(), 0);
}

async fn the_sweep_persists_ends_nobody_saw_once(db: TestDb) {
    let w = world(&db).await;
    let a = w.grant(5).await;
    let b = w.grant(20).await;
    assert_eq!(w.store.sweep_ended().await.unwrap(), 0);
    w.clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(w.store.sweep_ended().await.unwrap(), 1);
    assert_eq!(w.store.sweep_ended().await.unwrap(), 0);
    w.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(w.store.sweep_ended().await.unwrap(), 1);
    // Back to before both ends: both stay ended.
    w.clock.set(Timestamp::parse_rfc3339(T0).unwrap());
    assert_eq!(w.state(a).await, RequestState::Expired);
    assert_eq!(w.state(b).await, RequestState::Expired);
    let ev = w.events("request.expire").await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e["observed_by"] == "sweep"));
}

async fn the_relay_timer_ends_a_grant_whatever_the_wall_clock_says(db: TestDb) {
    let w = world(&db).await;
    let id = w.grant(10).await;
    // A read inside the window persists nothing...
    assert!(!w.store.persist_end(id, EndObserver::Read).await.unwrap());
    assert_eq!(w.state(id).await, RequestState::Active);
    // ...but the relay's monotonic timer firing does (the wall clock was stepped back).
    assert!(
        w.store
            .persist_end(id, EndObserver::RelayTimer)
            .await
            .unwrap()
    );
    assert!(
        !w.store
            .persist_end(id, EndObserver::RelayTimer)
            .await
            .unwrap()
    );
    assert_eq!(w.state(id).await, RequestState::Expired);
    let ev = w.events("request.expire").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["observed_by"], "relay_window_timer");
}

/// Drives a monitor by hand: `mono` is the monotonic clock, the store's ManualClock the wall.
struct Driver {
    mono: Duration,
}

impl Driver {
    fn sample(&self, w: &World) -> ClockSample {
        ClockSample {
            wall: w.clock.now(),
            monotonic: self.mono,
        }
    }
    /// Both clocks run 250 ms.
    fn run(&mut self, w: &World) {
        self.mono += Duration::from_millis(250);
        w.clock.advance(Duration::from_millis(250));
    }
}

async fn a_clock_step_is_an_anomaly_until_an_admin_acknowledges(db: TestDb) {
    let w = world(&db).await;
    assert_eq!(w.store.clock_status().state, "unknown");
    let mut m = w
        .store
        .clock_monitor(ClockMonitorConfig::new("serve", Duration::from_secs(2)));
    let mut d = Driver {
        mono: Duration::ZERO,
    };
    assert!(m.step(d.sample(&w)).await);
    for _ in 0..8 {
        d.run(&w);
        assert!(m.step(d.sample(&w)).await);
    }
    assert_eq!(w.store.clock_status().state, "ok");
    assert!(w.store.clock_anomaly().is_none());
    let before = w.clock.now();
    // The wall clock steps back 10 s; the monotonic clock runs on.
    d.run(&w);
    w.clock
        .set(w.clock.now().saturating_sub(Duration::from_secs(10)));
    m.step(d.sample(&w)).await;
    let step = w
        .store
        .clock_anomaly()
        .expect("a 10 s step back is an anomaly");
    assert_eq!(step.step_ms, -10_000);
    let ev = w.events("clock.anomaly").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["wall_before"], serde_json::to_value(before).unwrap());
    assert_eq!(
        ev[0]["wall_after"],
        serde_json::to_value(w.clock.now()).unwrap()
    );
    assert_eq!(ev[0]["monotonic_elapsed_ms"], 250);
    assert_eq!(ev[0]["step_ms"], -10_000);
    assert_eq!(ev[0]["tolerance_ms"], 2000);
    assert_eq!(ev[0]["service"], "serve");
    // Running on in disagreement: still an anomaly, reported once.
    for _ in 0..8 {
        d.run(&w);
        m.step(d.sample(&w)).await;
    }
    assert!(w.store.clock_anomaly().is_some());
    assert_eq!(w.events("clock.anomaly").await.len(), 1);
    // An admin confirms the time (as `admin clock ack` in another process would: an event).
    w.store.acknowledge_clock(&admin()).await.unwrap();
    d.run(&w);
    m.step(d.sample(&w)).await;
    assert!(w.store.clock_anomaly().is_none());
    assert_eq!(w.store.clock_status().state, "ok");
    let resolved = w.events("clock.resolved").await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["how"], "ack");
    assert_eq!(resolved[0]["by"], "cli:root");
    // The acknowledged time is the reference now.
    d.run(&w);
    m.step(d.sample(&w)).await;
    assert!(w.store.clock_anomaly().is_none());
}

async fn an_anomaly_ends_when_the_clocks_agree_again(db: TestDb) {
    let w = world(&db).await;
    let mut m = w
        .store
        .clock_monitor(ClockMonitorConfig::new("relay", Duration::from_secs(2)));
    let mut d = Driver {
        mono: Duration::ZERO,
    };
    m.step(d.sample(&w)).await;
    d.run(&w);
    w.clock.advance(Duration::from_secs(30));
    m.step(d.sample(&w)).await;
    assert_eq!(w.store.clock_anomaly().unwrap().step_ms, 30_000);
    // An acknowledgement written before the anomaly would not count; none here. Stepped back.
    d.run(&w);
    w.clock
        .set(w.clock.now().saturating_sub(Duration::from_secs(30)));
    m.step(d.sample(&w)).await;
    assert!(w.store.clock_anomaly().is_none());
    let resolved = w.events("clock.resolved").await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["how"], "clocks_agree");
}
