//! During a PostgreSQL outage a relay handshake is refused fast (issue 12, point 8): one wait
//! for a pooled connection (1.5 s), not two of 10 s each (the grant check, then the refusal's
//! audit event, which is now queued at once while the audit log is known to be away).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use portcullis_testkit::proxy::CutProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_a_handshake_is_refused_within_3_s() {
    let db = TestDb::postgres().await;
    let (proxy, url) = CutProxy::start_for_url(db.url()).await;
    let w = world_in(
        tempfile::tempdir().unwrap(),
        db,
        Some(&url),
        RelayConfig::default(),
    )
    .await;
    let g = w.grant(-60, 3600).await;
    let (_live, .., f) = w.hello(&w.client(g)).await;
    assert!(matches!(f, Frame::Welcome { .. }), "{f:?}");

    proxy.cut().await;
    for i in 0..3 {
        let c = w.client(g);
        let t = Instant::now();
        let (_conn, .., f) = w.hello(&c).await;
        let took = t.elapsed();
        assert_eq!(refused(&f), RefusalCode::AuditUnavailable, "handshake {i}");
        assert!(
            took < Duration::from_secs(3),
            "handshake {i} refused after {took:?}"
        );
    }

    // Back: the queued refusals are written and a new session starts.
    proxy.restore();
    let start = Instant::now();
    loop {
        let (_conn, .., f) = w.hello(&w.client(g)).await;
        if matches!(f, Frame::Welcome { .. }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still refused: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refusals = w.wait_audit("relay.session.refuse", 3).await;
    assert!(
        refusals
            .iter()
            .all(|e| e["details"]["code"] == "audit_unavailable"),
        "{refusals:?}"
    );
}
