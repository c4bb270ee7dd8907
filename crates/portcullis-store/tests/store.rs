//! The store's behaviour, asserted identically on SQLite and PostgreSQL: every test below runs
//! once per backend (`both_backends!`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, AuditDraft, BreakReason, Checkpoint, MacKey};
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    Role, Username,
};
use portcullis_store::{AuditActor, AuditQuery, Backend, NewUser, Store, StoreConfig, StoreError};
use portcullis_testkit::{ManualClock, TestDb};
use sqlx::AssertSqlSafe;

portcullis_testkit::both_backends!(
    admin_changes_are_written_with_their_audit_event,
    bad_input_leaves_database_and_chain_untouched,
    concurrent_appenders_never_fork_the_chain,
    audit_rows_refuse_update_delete_and_truncate,
    open_refuses_a_database_without_guards,
    tampering_is_named_by_first_bad_seq,
    audit_time_never_runs_backwards,
    audit_queries_filter_and_page,
    users_disable_and_unlock,
    device_policy_changes_are_audited,
    appends_fail_closed_when_the_database_is_gone,
);

const T0: &str = "2026-11-25T08:00:00Z";

fn key() -> MacKey {
    MacKey::new([42; 32])
}

fn admin() -> AuditActor {
    AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

async fn open(db: &TestDb, clock: Arc<ManualClock>) -> Store {
    let mut config = StoreConfig::new(key());
    config.clock = clock;
    Store::open(db.url(), config).await.expect("open store")
}

fn org(s: &str) -> OrgName {
    OrgName::parse(s).unwrap()
}

fn user(name: &str, role: Role, o: Option<&str>) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        role,
        org: o.map(org),
    }
}

fn device(name: &str, orgs: &[&str]) -> Device {
    Device {
        name: DeviceName::parse(name).unwrap(),
        address: NetworkAddress::parse("127.0.0.1").unwrap(),
        criticality: Criticality::High,
        profile: DeviceProfile {
            device_type: "PLC".into(),
            site: "Plant 2 / line 3".into(),
            ..Default::default()
        },
        policy: DevicePolicy::new(
            Port::parse_list("502,80").unwrap(),
            Duration::from_secs(8 * 3600),
            1,
            orgs.iter().map(|o| org(o)).collect(),
        )
        .unwrap(),
    }
}

async fn count(store: &Store, table: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<i64, _>("n")
}

async fn verify(store: &Store) -> portcullis_store::VerifyOutcome {
    store.verify_chain(Some(key()), vec![]).await.unwrap()
}

async fn admin_changes_are_written_with_their_audit_event(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock).await;
    store.add_org(&admin(), &org("acme")).await.unwrap();
    let (rec, code) = store
        .add_user(&admin(), &user("vera", Role::Vendor, Some("acme")))
        .await
        .unwrap();
    assert_eq!(rec.org, Some(org("acme")));
    assert!(!rec.enrolled);
    assert_eq!(code.code.len(), 32);
    assert_eq!(code.expires_at.to_rfc3339(), "2026-11-26T08:00:00.000000Z");
    store
        .add_device(&admin(), &device("plc-7", &["acme"]))
        .await
        .unwrap();

    let got = store
        .device(&DeviceName::parse("plc-7").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, device("plc-7", &["acme"]));
    assert_eq!(
        store.list_devices().await.unwrap(),
        vec![device("plc-7", &["acme"])]
    );
    assert_eq!(store.list_users().await.unwrap().len(), 1);

    let events = store.audit_events(&AuditQuery::default()).await.unwrap();
    let actions: Vec<_> = events
        .iter()
        .map(|e| (e.seq, e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (1, "org.add", "org:acme"),
            (2, "user.add", "user:vera"),
            (3, "device.add", "device:plc-7")
        ]
    );
    // The code itself never reaches the log; only that it exists and when it expires.
    assert!(!events[1].details.contains(&code.code));
    let v = verify(&store).await.unwrap();
    assert_eq!(v.events, 3);
}

async fn bad_input_leaves_database_and_chain_untouched(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    store.add_org(&admin(), &org("acme")).await.unwrap();
    store
        .add_user(&admin(), &user("vera", Role::Vendor, Some("acme")))
        .await
        .unwrap();
    store
        .add_device(&admin(), &device("plc-7", &["acme"]))
        .await
        .unwrap();
    let head = store.audit_head().await.unwrap();

    let dup_org = store.add_org(&admin(), &org("acme")).await.unwrap_err();
    assert!(
        matches!(&dup_org, StoreError::Conflict(m) if m == "organisation 'acme' already exists")
    );
    let dup_user = store
        .add_user(&admin(), &user("vera", Role::Vendor, Some("acme")))
        .await
        .unwrap_err();
    assert_eq!(dup_user.to_string(), "user 'vera' already exists");
    let no_org = store
        .add_user(&admin(), &user("otto", Role::Vendor, Some("nope")))
        .await
        .unwrap_err();
    assert!(
        matches!(&no_org, StoreError::NotFound(m) if m.contains("organisation 'nope' does not exist"))
    );
    let vendor_without_org = store
        .add_user(&admin(), &user("otto", Role::Vendor, None))
        .await
        .unwrap_err();
    assert!(vendor_without_org.to_string().contains("--org"));
    let supervisor_with_org = store
        .add_user(&admin(), &user("sam", Role::Supervisor, Some("acme")))
        .await
        .unwrap_err();
    assert!(supervisor_with_org.to_string().contains("only vendors"));
    let dup_device = store
        .add_device(&admin(), &device("plc-7", &["acme"]))
        .await
        .unwrap_err();
    assert_eq!(dup_device.to_string(), "device 'plc-7' already exists");
    let device_unknown_org = store
        .add_device(&admin(), &device("hmi-1", &["acme", "ghost"]))
        .await
        .unwrap_err();
    assert!(matches!(device_unknown_org, StoreError::NotFound(_)));

    // Nothing half-written: no device row, no device_orgs rows, no audit rows.
    assert_eq!(count(&store, "devices").await, 1);
    assert_eq!(count(&store, "device_orgs").await, 1);
    assert_eq!(count(&store, "users").await, 1);
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert!(verify(&store).await.is_ok());
}

async fn concurrent_appenders_never_fork_the_chain(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                let d = AuditDraft::new(format!("writer{w}"), ActorRole::System, "test.append")
                    .details(serde_json::json!({ "i": i }));
                s.append(d).await.unwrap();
            }
        }));
    }
    // A business write in the middle of the storm takes the same lock.
    store.add_org(&admin(), &org("acme")).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let events = store.audit_events(&AuditQuery::default()).await.unwrap();
    assert_eq!(events.len(), 4001);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as i64 + 1),
        "seq is dense"
    );
    let v = verify(&store).await.unwrap();
    assert_eq!(v.events, 4001);
}

async fn audit_rows_refuse_update_delete_and_truncate(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    store.add_org(&admin(), &org("acme")).await.unwrap();
    let upd = sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
        .execute(store.pool())
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM audit_events")
        .execute(store.pool())
        .await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
    if store.backend() == Backend::Postgres {
        let tr = sqlx::query("TRUNCATE audit_events")
            .execute(store.pool())
            .await;
        assert!(tr.unwrap_err().to_string().contains("append-only"));
    }
    assert_eq!(count(&store, "audit_events").await, 1);
    assert!(verify(&store).await.is_ok());

    if store.backend() == Backend::Postgres {
        // Second layer on PostgreSQL: an application role with only SELECT and INSERT cannot
        // change history even when the triggers are gone (see deploy/postgres/roles.sql).
        let role = format!("pc_app_{}", std::process::id());
        let setup = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/postgres/roles.sql"
        ))
        .unwrap()
        .replace("portcullis_app", &role);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS {role}; {setup}"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::raw_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
            .execute(store.pool())
            .await
            .unwrap();
        let app_url = db.url().replacen("postgres@", &format!("{role}@"), 1);
        let mut config = StoreConfig::new(key());
        config.max_connections = 2;
        config.migrate = false;
        let app = Store::open_unguarded(&app_url, config).await.unwrap();
        app.append(AuditDraft::new("x", ActorRole::System, "app.insert"))
            .await
            .unwrap();
        for stmt in [
            "UPDATE audit_events SET actor = 'm'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ] {
            let err = sqlx::query(stmt)
                .execute(app.pool())
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("permission denied"), "{stmt}: {err}");
        }
        // With the triggers disabled, the privilege layer alone satisfies the start-up probe.
        app.check_guards().await.unwrap();
        app.close().await;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE audit_events ENABLE TRIGGER USER; \
             DROP OWNED BY {role}; DROP ROLE {role}"
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
}

/// What an attacker with the database owner's rights does first.
async fn drop_guards(store: &Store) {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;"
        }
        Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER USER",
    };
    sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
}

async fn open_refuses_a_database_without_guards(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    drop_guards(&store).await;
    store.close().await;
    let err = Store::open(db.url(), StoreConfig::new(key()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::GuardMissing(m) if m.contains("UPDATE") && m.contains("DELETE")),
        "{err}"
    );
    // A tampered database can still be opened for inspection.
    Store::open_unguarded(db.url(), StoreConfig::new(key()))
        .await
        .unwrap();
}

/// How an attacker with the database owner's rights changes history (guards dropped first).
enum Attack {
    Sql(&'static str),
    /// Slip in a made-up event at this seq, moving later rows up and re-hashing the chain.
    ForgeRowAt(i64),
}

struct TamperCase {
    name: &'static str,
    attack: Attack,
    first_bad_seq: i64,
    reason: fn(&BreakReason) -> bool,
}

async fn tampering_is_named_by_first_bad_seq(db: TestDb) {
    let cases = [
        TamperCase {
            name: "edited field",
            attack: Attack::Sql("UPDATE audit_events SET actor = 'mallory' WHERE seq = 4"),
            first_bad_seq: 4,
            reason: |r| *r == BreakReason::HashMismatch,
        },
        TamperCase {
            name: "deleted row",
            attack: Attack::Sql("DELETE FROM audit_events WHERE seq = 6"),
            first_bad_seq: 6,
            reason: |r| *r == BreakReason::Missing { found: 7 },
        },
        TamperCase {
            name: "swapped rows",
            attack: Attack::Sql(
                "UPDATE audit_events SET seq = seq + 1000 WHERE seq IN (3, 5); \
                 UPDATE audit_events SET seq = 5 WHERE seq = 1003; \
                 UPDATE audit_events SET seq = 3 WHERE seq = 1005;",
            ),
            first_bad_seq: 3,
            reason: |r| *r == BreakReason::BrokenLink,
        },
        TamperCase {
            name: "truncated tail",
            attack: Attack::Sql("DELETE FROM audit_events WHERE seq > 7"),
            first_bad_seq: 8,
            reason: |r| matches!(r, BreakReason::Truncated { checkpoint_seq: 10 }),
        },
        // Correctly hash-chained by the attacker: only the MAC (key outside the database) tells.
        TamperCase {
            name: "forged row",
            attack: Attack::ForgeRowAt(5),
            first_bad_seq: 5,
            reason: |r| *r == BreakReason::MacMismatch,
        },
    ];
    for case in cases {
        let fresh = match &db {
            TestDb::Sqlite { .. } => TestDb::sqlite(),
            TestDb::Postgres { .. } => TestDb::postgres().await,
        };
        let store = open(&fresh, Arc::new(ManualClock::at(T0))).await;
        for i in 0..10 {
            store
                .append(AuditDraft::new(
                    format!("u{i}"),
                    ActorRole::Admin,
                    "user.add",
                ))
                .await
                .unwrap();
        }
        let signing = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let cp = Checkpoint::sign(&store.audit_head().await.unwrap(), store.now(), &signing);
        drop_guards(&store).await;
        match case.attack {
            Attack::Sql(sql) => {
                sqlx::raw_sql(sql).execute(store.pool()).await.unwrap();
            }
            Attack::ForgeRowAt(at) => forge_row(&store, at).await,
        }
        let vouched = cp.verify(&signing.verifying_key()).unwrap();
        let got = store
            .verify_chain(Some(key()), vec![vouched])
            .await
            .unwrap()
            .unwrap_err();
        let name = case.name;
        assert_eq!(got.seq, case.first_bad_seq, "{name}: {got}");
        assert!((case.reason)(&got.reason), "{name}: {got}");
        assert!(
            got.to_string()
                .starts_with(&format!("first bad seq: {}", case.first_bad_seq)),
            "{got}"
        );
    }
}

/// Inserts a forged event at `at`, shifting later rows up and re-hashing the whole chain from
/// there as an attacker who knows the (public) hash rule but not the MAC key would.
async fn forge_row(store: &Store, at: i64) {
    let mut events = store.audit_events(&AuditQuery::default()).await.unwrap();
    let mallory = MacKey::new([0; 32]);
    let prev = events[(at - 2) as usize].head();
    let forged = portcullis_core::audit::AuditEvent::seal(
        &prev,
        &AuditDraft::new("mallory", ActorRole::Admin, "user.add"),
        events[(at - 2) as usize].ts,
        &mallory,
    );
    events.insert((at - 1) as usize, forged);
    for i in (at - 1) as usize..events.len() {
        events[i].seq = i as i64 + 1;
        if i > 0 {
            events[i].prev_hash = events[i - 1].hash;
        }
        events[i].hash = events[i].compute_hash();
    }
    sqlx::query("DELETE FROM audit_events WHERE seq >= $1")
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
    for ev in &events[(at - 1) as usize..] {
        sqlx::query(
            "INSERT INTO audit_events (seq, ts, actor, role, action, target, grant_id, session_id, \
             source, details, prev_hash, hash, mac) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        )
        .bind(ev.seq)
        .bind(ev.ts.to_rfc3339())
        .bind(ev.actor.clone())
        .bind(ev.role.clone())
        .bind(ev.action.clone())
        .bind(ev.target.clone())
        .bind(ev.grant_id.map(portcullis_core::GrantId::get))
        .bind(ev.session_id.clone())
        .bind(ev.source.clone())
        .bind(ev.details.clone())
        .bind(ev.prev_hash.to_hex())
        .bind(ev.hash.to_hex())
        .bind(ev.mac.to_hex())
        .execute(store.pool())
        .await
        .unwrap();
    }
}

async fn audit_time_never_runs_backwards(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let a = store
        .append(AuditDraft::new("s", ActorRole::System, "a"))
        .await
        .unwrap();
    clock.set(a.ts.saturating_sub(Duration::from_secs(3600)));
    let b = store
        .append(AuditDraft::new("s", ActorRole::System, "b"))
        .await
        .unwrap();
    assert_eq!(
        b.ts, a.ts,
        "a wall clock stepped back an hour does not reorder the log"
    );
    clock.set(a.ts.saturating_add(Duration::from_secs(5)));
    let c = store
        .append(AuditDraft::new("s", ActorRole::System, "c"))
        .await
        .unwrap();
    assert_eq!(c.ts.duration_since(a.ts), Duration::from_secs(5));
    assert!(verify(&store).await.is_ok());
}

async fn audit_queries_filter_and_page(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    store.add_org(&admin(), &org("acme")).await.unwrap();
    clock.advance(Duration::from_secs(60));
    store
        .add_device(&admin(), &device("plc-7", &["acme"]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    store
        .append(
            AuditDraft::new("vera", ActorRole::Vendor, "stream.refused")
                .grant(portcullis_core::GrantId::new(7))
                .details(serde_json::json!({ "device": "plc-7", "port": 22 })),
        )
        .await
        .unwrap();
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    let seqs = |evs: Vec<portcullis_core::audit::AuditEvent>| {
        evs.iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(
            store
                .audit_events(&q(|q| q.actor = Some("vera".into())))
                .await
                .unwrap()
        ),
        vec![3]
    );
    assert_eq!(
        seqs(
            store
                .audit_events(&q(|q| q.action = Some("org.add".into())))
                .await
                .unwrap()
        ),
        vec![1]
    );
    assert_eq!(
        seqs(
            store
                .audit_events(&q(|q| q.device = Some("plc-7".into())))
                .await
                .unwrap()
        ),
        vec![2, 3]
    );
    assert_eq!(
        seqs(
            store
                .audit_events(&q(|q| q.grant_id = Some(7)))
                .await
                .unwrap()
        ),
        vec![3]
    );
    let since = portcullis_core::Timestamp::parse_rfc3339("2026-11-25T08:01:00Z").unwrap();
    let until = portcullis_core::Timestamp::parse_rfc3339("2026-11-25T08:02:00Z").unwrap();
    let window = store
        .audit_events(&AuditQuery {
            since: Some(since),
            until: Some(until),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(seqs(window), vec![2], "since is inclusive, until exclusive");
    let page = store
        .audit_events(&AuditQuery {
            after: Some(1),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(seqs(page), vec![2]);
}

async fn users_disable_and_unlock(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    store
        .add_user(&admin(), &user("sam", Role::Supervisor, None))
        .await
        .unwrap();
    let sam = Username::parse("sam").unwrap();
    let rec = store.disable_user(&admin(), &sam).await.unwrap();
    assert_eq!(rec.status(store.now()), "disabled");
    assert_eq!(
        store
            .disable_user(&admin(), &sam)
            .await
            .unwrap_err()
            .to_string(),
        "user 'sam' is already disabled"
    );
    let ghost = store
        .unlock_user(&admin(), &Username::parse("ghost").unwrap())
        .await
        .unwrap_err();
    assert_eq!(ghost.to_string(), "user 'ghost' does not exist");
    sqlx::query("UPDATE users SET failed_logins = 5, locked_until = '2999-01-01T00:00:00.000000Z'")
        .execute(store.pool())
        .await
        .unwrap();
    let rec = store.unlock_user(&admin(), &sam).await.unwrap();
    assert_eq!((rec.failed_logins, rec.locked_until), (0, None));
    let actions: Vec<_> = store
        .audit_events(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["user.add", "user.disable", "user.unlock"]);
}

async fn device_policy_changes_are_audited(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    for o in ["acme", "globex"] {
        store.add_org(&admin(), &org(o)).await.unwrap();
    }
    store
        .add_device(&admin(), &device("plc-7", &["acme"]))
        .await
        .unwrap();
    let name = DeviceName::parse("plc-7").unwrap();
    let policy = DevicePolicy::new(
        Port::parse_list("502").unwrap(),
        Duration::from_secs(3600),
        2,
        BTreeSet::from([org("globex")]),
    )
    .unwrap();
    store
        .set_device_policy(&admin(), &name, &policy)
        .await
        .unwrap();
    assert_eq!(store.device(&name).await.unwrap().unwrap().policy, policy);
    let last = store
        .audit_events(&AuditQuery::default())
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.action, "device.set_policy");
    let details: serde_json::Value = serde_json::from_str(&last.details).unwrap();
    assert_eq!(details["old"]["approvals_required"], 1);
    assert_eq!(details["new"]["approvals_required"], 2);
}

async fn appends_fail_closed_when_the_database_is_gone(db: TestDb) {
    let store = open(&db, Arc::new(ManualClock::at(T0))).await;
    store
        .append(AuditDraft::new("s", ActorRole::System, "ok"))
        .await
        .unwrap();
    store.close().await;
    let err = store
        .append(AuditDraft::new("s", ActorRole::System, "lost"))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        store
            .add_org(&admin(), &org("acme"))
            .await
            .unwrap_err()
            .is_unavailable()
    );
}
