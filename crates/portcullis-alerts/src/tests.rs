#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The watcher on real stores (SQLite and PostgreSQL): alerts reach the log, the cursor follows,
//! a restart neither repeats nor forgets. Time: a manual store clock for event times and an
//! explicit `now` for timers (tokio's paused clock would also advance through the waits on the
//! database's own threads and fire the pool's timeouts).

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, AuditDraft, AuditEvent, MacKey};
use portcullis_testkit::{ManualClock, TestDb};
use serde_json::json;

use super::*;

struct Env {
    store: Store,
    clock: Arc<ManualClock>,
    _db: TestDb,
}

async fn env(db: TestDb) -> Env {
    let clock = Arc::new(ManualClock::at("2027-03-01T08:00:00Z"));
    let mut cfg = portcullis_store::StoreConfig::new(MacKey::new([3; 32]));
    cfg.clock = clock.clone();
    let store = Store::open(db.url(), cfg).await.unwrap();
    Env {
        store,
        clock,
        _db: db,
    }
}

impl Env {
    fn now(&self) -> Timestamp {
        self.store.now()
    }

    async fn watcher(&self) -> Watcher {
        Watcher::start(
            self.store.clone(),
            Thresholds::default(),
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap()
    }

    async fn bad_login(&self, user: &str) -> AuditEvent {
        self.store
            .append(
                AuditDraft::new(user, ActorRole::Vendor, "login.fail")
                    .target(format!("user:{user}"))
                    .source(match user {
                        "bob" => "198.51.100.7",
                        "eve" => "198.51.100.8",
                        _ => "198.51.100.9",
                    })
                    .details(json!({ "reason": "bad_password" })),
            )
            .await
            .unwrap()
    }

    async fn alerts(&self, action: &str) -> Vec<AuditEvent> {
        self.store
            .audit_events(&AuditQuery {
                action: Some(action.into()),
                ..AuditQuery::default()
            })
            .await
            .unwrap()
    }

    async fn connector(&self, action: &str, id: &str) -> AuditEvent {
        self.store
            .append(
                AuditDraft::new("site:north", ActorRole::System, action)
                    .target("site:north")
                    .details(json!({ "connection": id, "relay": "relay-1", "reason": "lost" })),
            )
            .await
            .unwrap()
    }
}

async fn five_failures_alert_once_and_a_restart_neither_repeats_nor_forgets(db: TestDb) {
    let e = env(db).await;
    // History before the first start is not alerted on: the watcher starts at the head.
    for _ in 0..6 {
        e.bad_login("old").await;
    }
    let mut w = e.watcher().await;
    assert_eq!(w.cursor(), 6);
    w.poll(e.now()).await.unwrap();
    assert!(e.alerts("alert.login_failures").await.is_empty());

    let mut seqs = Vec::new();
    for _ in 0..4 {
        seqs.push(e.bad_login("bob").await.seq);
        e.clock.advance(Duration::from_secs(5));
    }
    w.poll(e.now()).await.unwrap();
    assert!(
        e.alerts("alert.login_failures").await.is_empty(),
        "4 failures are below the threshold"
    );
    seqs.push(e.bad_login("bob").await.seq);
    w.poll(e.now()).await.unwrap();
    let alerts = e.alerts("alert.login_failures").await;
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(
        (a.actor.as_str(), a.role.as_str()),
        ("portcullis", "system")
    );
    assert_eq!(a.target, "user:bob");
    let d: serde_json::Value = serde_json::from_str(&a.details).unwrap();
    assert_eq!(d["seqs"], json!(seqs));
    assert_eq!(d["count"], 5);
    // The cursor passed the trigger only once the alert was written; the next round passes the
    // alert itself.
    assert_eq!(w.cursor(), *seqs.last().unwrap());
    w.poll(e.now()).await.unwrap();
    assert_eq!(w.cursor(), a.seq);
    assert_eq!(e.store.cursor(CURSOR).await.unwrap(), a.seq);

    // A restart: no repeat of the alert, and the suppression is remembered.
    drop(w);
    let mut w = e.watcher().await;
    w.poll(e.now()).await.unwrap();
    for _ in 0..5 {
        e.bad_login("bob").await;
    }
    w.poll(e.now()).await.unwrap();
    assert_eq!(e.alerts("alert.login_failures").await.len(), 1);

    // After the quiet time, a new run of failures alerts again.
    e.clock.advance(Duration::from_secs(11 * 60));
    for _ in 0..5 {
        e.bad_login("bob").await;
    }
    w.poll(e.now()).await.unwrap();
    assert_eq!(e.alerts("alert.login_failures").await.len(), 2);
}

async fn a_restart_rebuilds_the_windows_from_the_log(db: TestDb) {
    let e = env(db).await;
    let mut w = e.watcher().await;
    for _ in 0..3 {
        e.bad_login("bob").await;
        e.bad_login("eve").await;
    }
    w.poll(e.now()).await.unwrap();
    drop(w);
    // bob's three failures are still inside the window when the next two come.
    e.clock.advance(Duration::from_secs(60));
    let mut w = e.watcher().await;
    e.bad_login("bob").await;
    e.bad_login("bob").await;
    w.poll(e.now()).await.unwrap();
    let alerts = e.alerts("alert.login_failures").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    // Not a stale window either: eve's three are 11 minutes old by her next two.
    drop(w);
    e.clock.advance(Duration::from_secs(11 * 60));
    let mut w = e.watcher().await;
    e.bad_login("eve").await;
    e.bad_login("eve").await;
    w.poll(e.now()).await.unwrap();
    let after = e.alerts("alert.login_failures").await;
    assert_eq!(after.len(), 1, "{after:?}");
}

async fn a_connector_offline_past_the_threshold_alerts_and_then_its_return(db: TestDb) {
    let e = env(db).await;
    let mut w = e.watcher().await;
    e.connector("relay.connector.connect", "c1").await;
    e.connector("relay.connector.disconnect", "c1").await;
    let down = e.now();
    w.poll(down).await.unwrap();
    w.poll(down.saturating_add(Duration::from_secs(59)))
        .await
        .unwrap();
    assert!(e.alerts("alert.connector_offline").await.is_empty());
    w.poll(down.saturating_add(Duration::from_secs(60)))
        .await
        .unwrap();
    let off = e.alerts("alert.connector_offline").await;
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].target, "site:north");

    // A restart while it is still down: the offline alert is not raised again.
    w.poll(down.saturating_add(Duration::from_secs(61)))
        .await
        .unwrap();
    drop(w);
    let mut w = e.watcher().await;
    w.poll(down.saturating_add(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(e.alerts("alert.connector_offline").await.len(), 1);
    e.clock.advance(Duration::from_secs(120));
    e.connector("relay.connector.connect", "c2").await;
    w.poll(e.now()).await.unwrap();
    let on = e.alerts("alert.connector_online").await;
    assert_eq!(
        on.len(),
        1,
        "the return follows the offline alert after a restart"
    );
    let d: serde_json::Value = serde_json::from_str(&on[0].details).unwrap();
    assert_eq!(d["offline_secs"], 120);
}

async fn alerts_count_in_metrics_and_raise_no_alerts(db: TestDb) {
    let e = env(db).await;
    let metrics = Arc::new(Metrics::default());
    let mut w = Watcher::start(e.store.clone(), Thresholds::default(), metrics.clone())
        .await
        .unwrap();
    e.store
        .append(
            AuditDraft::new("root", ActorRole::Admin, "device.set_policy")
                .target("device:plc-7")
                .source("cli")
                .details(json!({ "max_connections": 1 })),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        w.poll(e.now()).await.unwrap();
    }
    let changes = e.alerts("alert.config_change").await;
    assert_eq!(
        changes.len(),
        1,
        "one change, one alert, and no alert about the alert"
    );
    let d: serde_json::Value = serde_json::from_str(&changes[0].details).unwrap();
    assert_eq!(d["actor"], "root");
    assert_eq!(d["action"], "device.set_policy");
    assert_eq!(d["change"]["max_connections"], 1);
    let text = metrics.render();
    assert!(
        text.contains("portcullis_alerts_total{kind=\"config_change\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_alerts_total{kind=\"login_failures\"} 0\n"),
        "{text}"
    );
}

portcullis_testkit::both_backends!(
    five_failures_alert_once_and_a_restart_neither_repeats_nor_forgets,
    a_restart_rebuilds_the_windows_from_the_log,
    a_connector_offline_past_the_threshold_alerts_and_then_its_return,
    alerts_count_in_metrics_and_raise_no_alerts,
    a_crash_after_the_alert_but_before_the_cursor_repeats_it_once,
);

/// SQLite only: `max_page_count` fills the database without filling a disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_is_alerted_with_its_gap_once_it_takes_writes_again() {
    use sqlx::Row;
    let db = TestDb::sqlite();
    let clock = Arc::new(ManualClock::at("2027-03-01T08:00:00Z"));
    let mut cfg = portcullis_store::StoreConfig::new(MacKey::new([3; 32]));
    cfg.clock = clock.clone();
    // One connection, so the page limit below holds for every write.
    cfg.max_connections = 1;
    let store = Store::open(db.url(), cfg).await.unwrap();
    let mut w = Watcher::start(
        store.clone(),
        Thresholds::default(),
        Arc::new(Metrics::default()),
    )
    .await
    .unwrap();
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {pages}"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let big = AuditDraft::new("a", ActorRole::System, "test.big")
        .details(json!({ "blob": "x".repeat(200_000) }));
    store.append(big).await.unwrap_err();
    assert!(store.audit_writable().is_err());
    let since = store.now();
    w.poll(since).await.unwrap();
    w.poll(since.saturating_add(Duration::from_secs(30)))
        .await
        .unwrap();

    sqlx::raw_sql("PRAGMA max_page_count = 1073741823")
        .execute(store.pool())
        .await
        .unwrap();
    store.probe_writes().await.unwrap();
    let until = since.saturating_add(Duration::from_secs(95));
    w.poll(until).await.unwrap();
    let got = store
        .audit_events(&AuditQuery {
            action: Some("alert.audit_unwritable".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&got[0].details).unwrap();
    assert_eq!(d["duration_secs"], 95);
    assert_eq!(d["since"], json!(since));
    assert_eq!(d["until"], json!(until));
    assert!(d["error"].as_str().unwrap().contains("full"), "{d}");
    w.poll(until).await.unwrap();
    let again = store
        .audit_events(&AuditQuery {
            action: Some("alert.audit_unwritable".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "once per gap");
}

async fn a_crash_after_the_alert_but_before_the_cursor_repeats_it_once(db: TestDb) {
    let e = env(db).await;
    let mut w = e.watcher().await;
    for _ in 0..4 {
        e.bad_login("bob").await;
    }
    w.poll(e.now()).await.unwrap();
    let before = w.cursor();
    e.bad_login("bob").await;
    // The run that crashed got as far as appending its alert, not as far as moving the cursor:
    // raise the alert as it did (the same rules over the same log) and append it.
    let mut rules = AlertRules::new(Thresholds::default());
    let mut raised = Vec::new();
    for ev in e.store.audit_events(&AuditQuery::default()).await.unwrap() {
        raised = rules.observe(&ev.view());
    }
    assert_eq!(raised.len(), 1);
    e.store.append(raised[0].draft()).await.unwrap();
    drop(w);

    let mut w = e.watcher().await;
    assert_eq!(w.cursor(), before);
    w.poll(e.now()).await.unwrap();
    w.poll(e.now()).await.unwrap();
    assert_eq!(
        e.alerts("alert.login_failures").await.len(),
        2,
        "raised again, once: at least once, never lost"
    );
    // Reading the crashed run's alert back restored the quiet time: no third.
    for _ in 0..5 {
        e.bad_login("bob").await;
    }
    w.poll(e.now()).await.unwrap();
    assert_eq!(e.alerts("alert.login_failures").await.len(), 2);
    assert_eq!(w.cursor(), e.store.audit_head().await.unwrap().seq);
}

/// SQLite only (`query_only`): an alert that cannot be written holds the cursor back, so a
/// crash before the log takes writes again does not lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_could_not_be_written_survives_a_crash() {
    let db = TestDb::sqlite();
    let mut cfg = portcullis_store::StoreConfig::new(MacKey::new([3; 32]));
    cfg.max_connections = 1;
    let store = Store::open(db.url(), cfg).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut w = Watcher::start(store.clone(), Thresholds::default(), metrics.clone())
        .await
        .unwrap();
    let fail = || {
        AuditDraft::new("bob", ActorRole::Vendor, "login.fail")
            .target("user:bob")
            .source("198.51.100.7")
            .details(json!({ "reason": "bad_password" }))
    };
    for _ in 0..4 {
        store.append(fail()).await.unwrap();
    }
    w.poll(store.now()).await.unwrap();
    let before = w.cursor();
    let fifth = store.append(fail()).await.unwrap();
    // Read-only from here (the pool's one connection): the alert's append fails.
    sqlx::raw_sql("PRAGMA query_only = ON")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(w.poll(store.now()).await.is_err(), "the append failed");
    assert!(metrics.render().contains("portcullis_alerts_pending 1\n"));
    assert_eq!(
        w.cursor(),
        before,
        "held back before the trigger {}",
        fifth.seq
    );
    assert_eq!(store.cursor(CURSOR).await.unwrap(), before);
    drop(w);
    sqlx::raw_sql("PRAGMA query_only = OFF")
        .execute(store.pool())
        .await
        .unwrap();
    store.probe_writes().await.unwrap();

    let mut w = Watcher::start(store.clone(), Thresholds::default(), metrics.clone())
        .await
        .unwrap();
    w.poll(store.now()).await.unwrap();
    let got = store
        .audit_events(&AuditQuery {
            action: Some("alert.login_failures".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "raised after the restart, not lost");
    let d: serde_json::Value = serde_json::from_str(&got[0].details).unwrap();
    assert_eq!(
        d["seqs"].as_array().unwrap().last(),
        Some(&json!(fifth.seq))
    );
}
