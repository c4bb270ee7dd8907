//! Sites and connector enrollment (issue 5), asserted identically on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::{Clock, SiteName, Timestamp};
use portcullis_store::{
    AuditActor, AuditQuery, BAD_SITE_TOKEN, ConnectorPresence, GrantChange, SiteStatus, Store,
    StoreConfig, StoreError,
};
use portcullis_testkit::{ManualClock, TestDb};

portcullis_testkit::both_backends!(
    a_token_enrolls_once_and_only_its_site,
    a_token_expires_after_a_day,
    a_revoked_sites_token_is_refused_and_revoking_twice_is_explained,
    a_new_token_replaces_the_old_one_and_re_enrollment_replaces_the_certificate,
    presence_is_only_changed_by_its_own_connection,
    site_changes_are_audited_and_reach_the_relay,
);

const T0: &str = "2026-11-25T08:00:00Z";
const FP1: &str = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg";
const FP2: &str = "LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564";

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

fn site(s: &str) -> SiteName {
    SiteName::parse(s).unwrap()
}

async fn open(db: &TestDb, clock: Arc<ManualClock>) -> Store {
    let mut config = StoreConfig::new(key());
    config.clock = clock;
    Store::open(db.url(), config).await.expect("open store")
}

fn not_after(clock: &ManualClock) -> Timestamp {
    clock
        .now()
        .saturating_add(Duration::from_secs(365 * 86_400))
}

fn refused(e: StoreError) {
    assert!(
        matches!(&e, StoreError::Forbidden(m) if m == BAD_SITE_TOKEN),
        "{e:?}"
    );
    assert!(e.to_string().contains("portcullis admin site token"), "{e}");
}

async fn a_token_enrolls_once_and_only_its_site(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let (rec, token) = store.add_site(&admin(), &site("plant-2")).await.unwrap();
    store.add_site(&admin(), &site("plant-3")).await.unwrap();
    assert_eq!(rec.name, "plant-2");
    assert_eq!(rec.created_by, "cli:root");
    assert_eq!(rec.status(clock.now()), SiteStatus::NotEnrolled);
    assert!(token.token.starts_with("pcs_"));
    assert_eq!(token.expires_at.to_rfc3339(), "2026-11-26T08:00:00.000000Z");

    let dup = store
        .add_site(&admin(), &site("plant-2"))
        .await
        .unwrap_err();
    assert!(matches!(&dup, StoreError::Conflict(m) if m == "site 'plant-2' already exists"));

    assert_eq!(
        store.site_for_token(&token.token).await.unwrap().as_deref(),
        Some("plant-2")
    );
    assert_eq!(store.site_for_token("pcs_guess").await.unwrap(), None);
    refused(
        store
            .enroll_site("pcs_guess", FP1, not_after(&clock), None)
            .await
            .unwrap_err(),
    );

    clock.advance(Duration::from_secs(60));
    let name = store
        .enroll_site(
            &token.token,
            FP1,
            not_after(&clock),
            Some("192.0.2.7".into()),
        )
        .await
        .unwrap();
    assert_eq!(name, "plant-2");
    let rec = store.site("plant-2").await.unwrap().unwrap();
    assert_eq!(rec.cert_fingerprint.as_deref(), Some(FP1));
    assert_eq!(rec.enrolled_at, Some(clock.now()));
    assert_eq!(rec.cert_not_after, Some(not_after(&clock)));
    assert_eq!(rec.status(clock.now()), SiteStatus::Offline);

    // Used: refused the second time, whatever certificate comes with it.
    assert_eq!(store.site_for_token(&token.token).await.unwrap(), None);
    refused(
        store
            .enroll_site(&token.token, FP2, not_after(&clock), None)
            .await
            .unwrap_err(),
    );
    let other = store.site("plant-3").await.unwrap().unwrap();
    assert_eq!(other.cert_fingerprint, None, "only the token's own site");
    let names: Vec<_> = store
        .list_sites()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["plant-2", "plant-3"]);
    assert!(store.site("plant-9").await.unwrap().is_none());
    let missing = store
        .new_site_token(&admin(), &site("plant-9"))
        .await
        .unwrap_err();
    assert!(matches!(&missing, StoreError::NotFound(m) if m.contains("'plant-9' does not exist")));
}

async fn a_token_expires_after_a_day(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let (_, token) = store.add_site(&admin(), &site("plant-2")).await.unwrap();
    clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert!(store.site_for_token(&token.token).await.unwrap().is_some());
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.site_for_token(&token.token).await.unwrap(), None);
    refused(
        store
            .enroll_site(&token.token, FP1, not_after(&clock), None)
            .await
            .unwrap_err(),
    );
    // A fresh token works again.
    let fresh = store
        .new_site_token(&admin(), &site("plant-2"))
        .await
        .unwrap();
    store
        .enroll_site(&fresh.token, FP1, not_after(&clock), None)
        .await
        .unwrap();
}

async fn a_revoked_sites_token_is_refused_and_revoking_twice_is_explained(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let (_, token) = store.add_site(&admin(), &site("plant-2")).await.unwrap();
    store.revoke_site(&admin(), &site("plant-2")).await.unwrap();
    assert_eq!(store.site_for_token(&token.token).await.unwrap(), None);
    refused(
        store
            .enroll_site(&token.token, FP1, not_after(&clock), None)
            .await
            .unwrap_err(),
    );
    let rec = store.site("plant-2").await.unwrap().unwrap();
    assert_eq!(rec.status(clock.now()), SiteStatus::Revoked);
    assert_eq!(rec.revoked_at, Some(clock.now()));

    let again = store
        .revoke_site(&admin(), &site("plant-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, StoreError::Conflict(m) if m.contains("already revoked")),
        "{again:?}"
    );
    let token = store
        .new_site_token(&admin(), &site("plant-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&token, StoreError::Conflict(m) if m.contains("revoked")),
        "{token:?}"
    );
    let missing = store
        .revoke_site(&admin(), &site("plant-9"))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)));
}

async fn a_new_token_replaces_the_old_one_and_re_enrollment_replaces_the_certificate(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let (_, first) = store.add_site(&admin(), &site("plant-2")).await.unwrap();
    let second = store
        .new_site_token(&admin(), &site("plant-2"))
        .await
        .unwrap();
    assert_ne!(first.token, second.token);
    assert_eq!(store.site_for_token(&first.token).await.unwrap(), None);
    store
        .enroll_site(&second.token, FP1, not_after(&clock), None)
        .await
        .unwrap();

    // The box is replaced: a new token, a new key, and the old certificate no longer counts.
    let third = store
        .new_site_token(&admin(), &site("plant-2"))
        .await
        .unwrap();
    assert_eq!(
        store
            .site("plant-2")
            .await
            .unwrap()
            .unwrap()
            .cert_fingerprint
            .as_deref(),
        Some(FP1),
        "the enrolled certificate works until the replacement enrolls"
    );
    store
        .enroll_site(&third.token, FP2, not_after(&clock), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .site("plant-2")
            .await
            .unwrap()
            .unwrap()
            .cert_fingerprint
            .as_deref(),
        Some(FP2)
    );

    // One certificate never stands for two sites.
    let (_, other) = store.add_site(&admin(), &site("plant-3")).await.unwrap();
    let clash = store
        .enroll_site(&other.token, FP2, not_after(&clock), None)
        .await
        .unwrap_err();
    assert!(matches!(clash, StoreError::Conflict(_)), "{clash:?}");
    assert!(store.site_for_token(&other.token).await.unwrap().is_some());
}

fn presence(id: &str, relay: &str, at: Timestamp) -> ConnectorPresence {
    ConnectorPresence {
        connection_id: id.into(),
        relay: relay.into(),
        source: "192.0.2.7:50000".into(),
        connected_at: at,
        last_seen_at: at,
    }
}

async fn presence_is_only_changed_by_its_own_connection(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let (_, token) = store.add_site(&admin(), &site("plant-2")).await.unwrap();
    store
        .enroll_site(&token.token, FP1, not_after(&clock), None)
        .await
        .unwrap();
    let (_, t3) = store.add_site(&admin(), &site("plant-3")).await.unwrap();
    store
        .enroll_site(&t3.token, FP2, not_after(&clock), None)
        .await
        .unwrap();
    let head = store.audit_head().await.unwrap();
    let t0 = clock.now();
    store
        .connector_online("plant-2", &presence("c1", "relay", t0))
        .await
        .unwrap();
    let rec = store.site("plant-2").await.unwrap().unwrap();
    assert_eq!(rec.presence, Some(presence("c1", "relay", t0)));
    assert_eq!(rec.status(t0), SiteStatus::Online);

    clock.advance(Duration::from_secs(20));
    store
        .connector_seen("plant-2", "c1", clock.now())
        .await
        .unwrap();
    assert_eq!(
        store.site("plant-2").await.unwrap().unwrap().last_seen(),
        Some(clock.now())
    );
    // 31 s without a sign of life: offline, though the row still names the connection.
    let rec = store.site("plant-2").await.unwrap().unwrap();
    assert_eq!(
        rec.status(clock.now().saturating_add(Duration::from_secs(31))),
        SiteStatus::Offline
    );

    // A second connection replaces the first; the first's late updates change nothing.
    let t1 = clock.now();
    store
        .connector_online("plant-2", &presence("c2", "relay", t1))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5));
    store
        .connector_seen("plant-2", "c1", clock.now())
        .await
        .unwrap();
    store.connector_offline("plant-2", "c1").await.unwrap();
    assert_eq!(
        store.site("plant-2").await.unwrap().unwrap().presence,
        Some(presence("c2", "relay", t1))
    );
    store.connector_offline("plant-2", "c2").await.unwrap();
    assert_eq!(store.site("plant-2").await.unwrap().unwrap().presence, None);

    let missing = store
        .connector_online("plant-9", &presence("c3", "relay", t1))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)));

    // A restarted relay clears what it held, and only that.
    store
        .connector_online("plant-2", &presence("c4", "relay-a", t1))
        .await
        .unwrap();
    store
        .connector_online("plant-3", &presence("c5", "relay-b", t1))
        .await
        .unwrap();
    assert_eq!(store.clear_connector_presence("relay-a").await.unwrap(), 1);
    assert_eq!(store.site("plant-2").await.unwrap().unwrap().presence, None);
    assert!(
        store
            .site("plant-3")
            .await
            .unwrap()
            .unwrap()
            .presence
            .is_some()
    );
    assert_eq!(store.clear_connector_presence("relay-a").await.unwrap(), 0);
    // Presence is working state: the relay audits connections, the store does not.
    assert_eq!(store.audit_head().await.unwrap(), head);
}

async fn site_changes_are_audited_and_reach_the_relay(db: TestDb) {
    let clock = Arc::new(ManualClock::at(T0));
    let store = open(&db, clock.clone()).await;
    let mut changes = store.grant_changes();
    let (_, first) = store.add_site(&admin(), &site("plant-2")).await.unwrap();
    let token = store
        .new_site_token(&admin(), &site("plant-2"))
        .await
        .unwrap();
    store
        .enroll_site(
            &token.token,
            FP1,
            not_after(&clock),
            Some("192.0.2.7".into()),
        )
        .await
        .unwrap();
    assert_eq!(
        changes.try_recv().unwrap(),
        GrantChange::Site("plant-2".into())
    );
    store.revoke_site(&admin(), &site("plant-2")).await.unwrap();
    assert_eq!(
        changes.try_recv().unwrap(),
        GrantChange::Site("plant-2".into())
    );
    assert!(
        changes.try_recv().is_err(),
        "adding and tokens change no grant"
    );

    let events = store.audit_events(&AuditQuery::default()).await.unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.role.as_str(),
                e.target.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("site.add", "cli:root", "admin", "site:plant-2"),
            ("site.token", "cli:root", "admin", "site:plant-2"),
            ("site.enroll", "site:plant-2", "system", "site:plant-2"),
            ("site.revoke", "cli:root", "admin", "site:plant-2"),
        ]
    );
    let enroll: serde_json::Value = serde_json::from_str(&events[2].details).unwrap();
    assert_eq!(enroll["fingerprint"], FP1);
    assert_eq!(enroll["not_after"], not_after(&clock).to_rfc3339());
    assert_eq!(events[2].source.as_deref(), Some("192.0.2.7"));
    let token_event: serde_json::Value = serde_json::from_str(&events[1].details).unwrap();
    assert_eq!(token_event["replaces_unused_token"], true);
    // Tokens never reach the log.
    for e in &events {
        assert!(!e.details.contains(&first.token) && !e.details.contains(&token.token));
    }
    store
        .verify_chain(Some(key()), vec![])
        .await
        .unwrap()
        .unwrap();
}
