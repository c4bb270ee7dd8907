//! Logout, "log out everywhere" and the admin reset move the user's not-befores (issue 12), and
//! grant changes committed by another process reach this one (the SQLite change feed,
//! PostgreSQL NOTIFY).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::{OrgName, Role, Timestamp, Username};
use portcullis_store::{
    AuditActor, AuditQuery, GrantChange, NewUser, NotBefore, SessionPolicy, Stage, Store,
    StoreConfig, UserRecord,
};
use portcullis_testkit::{ManualClock, TestDb};
use sqlx::Row;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::timeout;

portcullis_testkit::both_backends!(
    logout_refuses_earlier_tokens_but_leaves_live_sessions,
    logout_everywhere_ends_every_session_and_tells_the_relay,
    a_reset_clears_credentials_and_ends_everything,
    changes_another_process_commits_reach_this_one,
);

const T0: &str = "2026-11-25T08:00:00Z";

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

async fn setup(db: &TestDb) -> (Store, Arc<ManualClock>, UserRecord) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(db, clock.clone()).await;
    store
        .add_org(&admin(), &OrgName::parse("acme").unwrap())
        .await
        .unwrap();
    let vera = add_vendor(&store, "vera").await;
    (store, clock, vera)
}

async fn add_vendor(store: &Store, name: &str) -> UserRecord {
    let (u, _) = store
        .add_user(
            &admin(),
            &NewUser {
                username: Username::parse(name).unwrap(),
                role: Role::Vendor,
                org: Some(OrgName::parse("acme").unwrap()),
            },
        )
        .await
        .unwrap();
    u
}

async fn session(store: &Store, u: &UserRecord) -> String {
    store
        .create_session(u.id, Stage::Full, None, &SessionPolicy::default())
        .await
        .unwrap()
        .token
}

async fn alive(store: &Store, token: &str) -> bool {
    store
        .session(token, &SessionPolicy::default())
        .await
        .unwrap()
        .is_some()
}

/// The details of the last audit event named `action`.
async fn last_event(store: &Store, action: &str) -> serde_json::Value {
    let events = store.audit_events(&AuditQuery::default()).await.unwrap();
    let e = events
        .iter()
        .rev()
        .find(|e| e.action == action)
        .unwrap_or_else(|| panic!("no {action} event"));
    serde_json::json!({
        "actor": e.actor, "target": e.target,
        "details": serde_json::from_str::<serde_json::Value>(&e.details).unwrap(),
    })
}

fn at(clock: &ManualClock) -> Timestamp {
    portcullis_core::Clock::now(clock)
}

async fn logout_refuses_earlier_tokens_but_leaves_live_sessions(db: TestDb) {
    let (store, clock, vera) = setup(&db).await;
    assert_eq!(
        store.not_before(&vera.username).await.unwrap(),
        NotBefore::default()
    );
    let mut changes = store.grant_changes();
    let browser = session(&store, &vera).await;
    let cli = session(&store, &vera).await;
    clock.advance(Duration::from_secs(10));
    store.logout(&as_actor(&vera), &vera, &cli).await.unwrap();
    assert!(!alive(&store, &cli).await, "the session logged out ends");
    assert!(alive(&store, &browser).await, "other sessions go on");
    let nb = store.not_before(&vera.username).await.unwrap();
    assert_eq!(nb.tokens, Some(at(&clock)));
    assert_eq!(
        nb.sessions, None,
        "a plain logout does not end live sessions"
    );
    // Nothing for the relay to re-check: live sessions go on.
    assert_eq!(changes.try_recv(), Err(TryRecvError::Empty));
    let e = last_event(&store, "logout").await;
    assert_eq!(e["actor"], "vera");
    assert_eq!(e["target"], "user:vera");
    assert_eq!(
        e["details"]["tokens_not_before"],
        serde_json::to_value(at(&clock)).unwrap()
    );
    // A later logout moves it forward.
    clock.advance(Duration::from_secs(5));
    store
        .logout(&as_actor(&vera), &vera, &browser)
        .await
        .unwrap();
    let later = store.not_before(&vera.username).await.unwrap();
    assert_eq!(later.tokens, Some(at(&clock)));
    assert!(later.tokens > nb.tokens);
}

async fn logout_everywhere_ends_every_session_and_tells_the_relay(db: TestDb) {
    let (store, clock, vera) = setup(&db).await;
    let otto = add_vendor(&store, "otto").await;
    let mut changes = store.grant_changes();
    let a = session(&store, &vera).await;
    let b = session(&store, &vera).await;
    let other = session(&store, &otto).await;
    clock.advance(Duration::from_secs(3));
    let ended = store
        .logout_everywhere(&as_actor(&vera), &vera)
        .await
        .unwrap();
    assert_eq!(ended, 2);
    assert!(!alive(&store, &a).await && !alive(&store, &b).await);
    assert!(
        alive(&store, &other).await,
        "another user's session goes on"
    );
    let nb = store.not_before(&vera.username).await.unwrap();
    assert_eq!(nb.tokens, Some(at(&clock)));
    assert_eq!(nb.sessions, Some(at(&clock)));
    assert_eq!(
        store.not_before(&otto.username).await.unwrap(),
        NotBefore::default()
    );
    assert_eq!(changes.try_recv(), Ok(GrantChange::User("vera".into())));
    let e = last_event(&store, "logout.everywhere").await;
    assert_eq!(e["details"]["sessions_ended"], 2);
}

async fn a_reset_clears_credentials_and_ends_everything(db: TestDb) {
    let (store, clock, vera) = setup(&db).await;
    let mut changes = store.grant_changes();
    let s = session(&store, &vera).await;
    clock.advance(Duration::from_secs(7));
    let code = store.reset_user(&admin(), &vera.username).await.unwrap();
    assert!(!alive(&store, &s).await);
    let creds = store
        .enrollment(&code.code)
        .await
        .unwrap()
        .expect("the new code works");
    assert_eq!(creds.password_hash, None);
    assert_eq!(creds.totp_sealed, None);
    assert!(!store.user(&vera.username).await.unwrap().unwrap().enrolled);
    let nb = store.not_before(&vera.username).await.unwrap();
    assert_eq!(
        (nb.tokens, nb.sessions),
        (Some(at(&clock)), Some(at(&clock)))
    );
    assert_eq!(changes.try_recv(), Ok(GrantChange::User("vera".into())));
    let e = last_event(&store, "user.reset").await;
    assert_eq!(e["actor"], "cli:root");
    assert_eq!(e["target"], "user:vera");
    assert_eq!(e["details"]["sessions_ended"], 1);
    // The older enrollment reset does the same, under its own name.
    clock.advance(Duration::from_secs(1));
    store
        .reset_enrollment(&admin(), &vera.username)
        .await
        .unwrap();
    let nb = store.not_before(&vera.username).await.unwrap();
    assert_eq!(nb.sessions, Some(at(&clock)));
    assert_eq!(changes.try_recv(), Ok(GrantChange::User("vera".into())));
    last_event(&store, "user.reset_enrollment").await;
    // Unknown users are an error a person understands.
    let e = store
        .reset_user(&admin(), &Username::parse("nobody").unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'nobody' does not exist"), "{e}");
}

/// Waits (bounded) for the next change on `rx`.
async fn next(rx: &mut tokio::sync::broadcast::Receiver<GrantChange>) -> GrantChange {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a change within 5 s")
        .unwrap()
}

async fn changes_another_process_commits_reach_this_one(db: TestDb) {
    let (broker, clock, _vera) = setup(&db).await;
    let otto = add_vendor(&broker, "otto").await;
    // Another handle on the same database: what `portcullis admin` opens.
    let cli = open(&db, clock.clone()).await;
    broker.follow_other_processes(db.url()).await.unwrap();
    let mut rx = broker.grant_changes();
    cli.disable_user(&admin(), &Username::parse("vera").unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, GrantChange::User("vera".into()));
    if broker.backend() == portcullis_store::Backend::Sqlite {
        // The broker's own change arrives once (in-process), not again from the feed: the
        // CLI's next change is the next thing it sees.
        broker.disable_user(&admin(), &otto.username).await.unwrap();
        assert_eq!(next(&mut rx).await, GrantChange::User("otto".into()));
        cli.reset_user(&admin(), &otto.username).await.unwrap();
        assert_eq!(next(&mut rx).await, GrantChange::User("otto".into()));
        assert_eq!(
            feed_rows(&broker).await,
            3,
            "one feed row per change, whoever made it"
        );
        // Rows older than an hour are pruned by a follower (the first prune comes with its
        // first poll).
        clock.advance(Duration::from_secs(2 * 3600));
        let later = open(&db, clock.clone()).await;
        later
            .follow_change_feed(Duration::from_millis(10))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while feed_rows(&broker).await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "old feed rows were not pruned"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        // PostgreSQL carries changes by NOTIFY; the feed table stays empty.
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM grant_changes")
            .fetch_one(broker.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(n, 0);
    }
}

/// Rows in the SQLite change feed.
async fn feed_rows(store: &Store) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM grant_changes")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get::<i64, _>("n")
        .unwrap()
}
