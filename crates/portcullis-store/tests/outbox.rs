//! The notification outbox (issue 15): a notice exists exactly when its event does, is routed
//! once, is tried by one worker at a time, and its failures are kept for admins; contact details
//! are checked and audited.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_core::notify::Notice;
use portcullis_core::{Email, GrantId, OrgName, Role, TimeZoneName, Timestamp, Username};
use portcullis_store::{
    AuditActor, AuditQuery, Channel, ContactChange, DeliveryFilter, NewDelivery, NewUser, Store,
    StoreConfig, StoreError,
};
use portcullis_testkit::{ManualClock, TestDb};

portcullis_testkit::both_backends!(
    a_notice_is_written_with_its_event_and_only_for_events_that_notify,
    a_notice_is_routed_once_and_a_delivery_tried_by_one_worker_at_a_time,
    failures_are_retried_later_then_kept_and_an_admin_may_retry,
    a_window_notice_is_written_once,
    contact_details_are_set_cleared_and_audited,
);

const T0: &str = "2026-12-02T08:00:00Z";

fn admin() -> AuditActor {
    AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

async fn open(db: &TestDb) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(T0));
    let mut config = StoreConfig::new(MacKey::new([5; 32]));
    config.clock = clock.clone();
    (Store::open(db.url(), config).await.unwrap(), clock)
}

fn draft(action: &str) -> AuditDraft {
    AuditDraft::new("portcullis", ActorRole::System, action)
}

async fn a_notice_is_written_with_its_event_and_only_for_events_that_notify(db: TestDb) {
    let (store, _) = open(&db).await;
    // Through the group appender: one notice for the alert, none for the rest.
    store.append(draft("device.add")).await.unwrap();
    let alert = store.append(draft("alert.lockout")).await.unwrap();
    store.append(draft("relay.modbus.write")).await.unwrap();
    // Through a change's own transaction: `user.add` notifies nobody.
    store
        .add_org(&admin(), &OrgName::parse("acme").unwrap())
        .await
        .unwrap();
    let notices = store.unrouted_notices(100).await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert_eq!(notices[0].event_seq, Some(alert.seq));
    assert_eq!(notices[0].notice, Notice::Alert);
    assert_eq!(notices[0].action, "alert.lockout");
    // Many appends at once still write one notice each, in the same transactions.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.append(draft("alert.config_change")).await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap().seq);
    }
    let notices = store.unrouted_notices(100).await.unwrap();
    let mut got: Vec<i64> = notices
        .iter()
        .skip(1)
        .map(|n| n.event_seq.unwrap())
        .collect();
    got.sort();
    seqs.sort();
    assert_eq!(got, seqs);
}

fn email(to: &str) -> NewDelivery {
    NewDelivery {
        channel: Channel::Email,
        recipient: to.into(),
        recipient_user: Some("sam".into()),
        subject: "[Portcullis] hello".into(),
        body: "hello\n".into(),
    }
}

async fn one_routed(store: &Store) -> i64 {
    let n = store.append(draft("alert.restart")).await.unwrap();
    let notice = store
        .unrouted_notices(100)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.event_seq == Some(n.seq))
        .unwrap();
    assert!(
        store
            .route_notice(notice.id, &[email("sam@plant.example")])
            .await
            .unwrap()
    );
    notice.id
}

async fn a_notice_is_routed_once_and_a_delivery_tried_by_one_worker_at_a_time(db: TestDb) {
    let (store, clock) = open(&db).await;
    let id = one_routed(&store).await;
    // A second worker that read the same notice writes nothing.
    assert!(
        !store
            .route_notice(id, &[email("other@plant.example")])
            .await
            .unwrap()
    );
    assert!(store.unrouted_notices(100).await.unwrap().is_empty());
    let lease = Duration::from_secs(120);
    let first = store.claim_deliveries(lease, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].recipient, "sam@plant.example");
    assert_eq!(first[0].attempts, 1);
    assert!(
        store.claim_deliveries(lease, 10).await.unwrap().is_empty(),
        "leased"
    );
    // The worker died mid-try: after the lease, another takes it.
    clock.advance(lease + Duration::from_secs(1));
    let again = store.claim_deliveries(lease, 10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    store.mark_delivered(again[0].id).await.unwrap();
    let s = store.outbox_stats().await.unwrap();
    assert_eq!((s.pending, s.delivered, s.failed), (0, 1, 0));
    assert!(store.claim_deliveries(lease, 10).await.unwrap().is_empty());
}

async fn failures_are_retried_later_then_kept_and_an_admin_may_retry(db: TestDb) {
    let (store, clock) = open(&db).await;
    one_routed(&store).await;
    let lease = Duration::from_secs(120);
    let d = store.claim_deliveries(lease, 10).await.unwrap().remove(0);
    store
        .mark_delivery_failed(
            d.id,
            "SMTP: connection refused",
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().retrying, 1);
    assert!(
        store.claim_deliveries(lease, 10).await.unwrap().is_empty(),
        "not yet due"
    );
    clock.advance(Duration::from_secs(31));
    let d = store.claim_deliveries(lease, 10).await.unwrap().remove(0);
    store
        .mark_delivery_failed(d.id, "SMTP: still refused", None)
        .await
        .unwrap();
    let failed = store.deliveries(DeliveryFilter::Failed, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("SMTP: still refused"));
    assert_eq!(failed[0].attempts, 2);
    clock.advance(Duration::from_secs(3600));
    assert!(
        store.claim_deliveries(lease, 10).await.unwrap().is_empty(),
        "given up"
    );
    // An admin sends it again; that is on the record.
    store.retry_delivery(&admin(), d.id).await.unwrap();
    let retried = store
        .audit_events(&AuditQuery {
            action: Some("notify.retry".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert!(
        retried[0].details.contains("still refused"),
        "{}",
        retried[0].details
    );
    let d = store.claim_deliveries(lease, 10).await.unwrap().remove(0);
    store.mark_delivered(d.id).await.unwrap();
    let e = store.retry_delivery(&admin(), d.id).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    let e = store.retry_delivery(&admin(), 999).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
}

async fn a_window_notice_is_written_once(db: TestDb) {
    let (store, _) = open(&db).await;
    let end = Timestamp::parse_rfc3339("2026-12-02T09:00:00Z").unwrap();
    let g = GrantId::new(7);
    assert!(store.enqueue_window_notice(g, 15, end).await.unwrap());
    assert!(
        !store.enqueue_window_notice(g, 15, end).await.unwrap(),
        "a restart repeats nothing"
    );
    assert!(store.enqueue_window_notice(g, 5, end).await.unwrap());
    let n = store.unrouted_notices(10).await.unwrap();
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].notice, Notice::WindowEnding);
    assert_eq!(n[0].grant_id, Some(g));
    assert_eq!(n[0].facts["minutes"], 15);
    assert_eq!(n[0].event_seq, None);
}

async fn contact_details_are_set_cleared_and_audited(db: TestDb) {
    let (store, _) = open(&db).await;
    let sam = Username::parse("sam").unwrap();
    let (u, _) = store
        .add_user_with_contact(
            &admin(),
            &NewUser {
                username: sam.clone(),
                role: Role::Supervisor,
                org: None,
            },
            &ContactChange {
                email: Some(Some(Email::parse("sam@plant.example").unwrap())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.email.as_ref().unwrap().as_str(), "sam@plant.example");
    assert!(!u.wants_alerts() && !u.notify_sessions);
    let u = store
        .set_contact(
            &admin(),
            &sam,
            &ContactChange {
                time_zone: Some(Some(TimeZoneName::parse("Europe/Berlin").unwrap())),
                notify_sessions: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.time_zone.as_ref().unwrap().as_str(), "Europe/Berlin");
    assert!(u.notify_sessions);
    assert_eq!(
        u.email.as_ref().unwrap().as_str(),
        "sam@plant.example",
        "kept"
    );
    let u = store
        .set_contact(
            &admin(),
            &sam,
            &ContactChange {
                email: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(u.email.is_none() && u.reachable().is_none());
    let e = store
        .set_contact(&admin(), &sam, &ContactChange::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing to change"), "{e}");
    let sets = store
        .audit_events(&AuditQuery {
            action: Some("user.set".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sets.len(), 2);
    assert!(sets[0].details.contains("Europe/Berlin"));
    assert!(
        sets[1].details.contains("\"email\":null"),
        "{}",
        sets[1].details
    );
    let added = store
        .audit_events(&AuditQuery {
            action: Some("user.add".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(added[0].details.contains("sam@plant.example"));
}
