//! Live sessions at the relay (issue 14, point 5): the relay reports a running session's
//! counters to the store while bytes move, and a supervisor's end request cuts that one session
//! (`ended_by_supervisor`, with the supervisor's words on the wire and in the audit log), at
//! once when notified and by the reconciliation when the notice was lost. The grant stays
//! approved: the vendor connects again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use portcullis_store::{RelaySessionId, SessionFilter, SessionRecord};

fn sam(w: &World) -> AuditActor {
    AuditActor {
        name: w.sam.username.to_string(),
        role: ActorRole::Supervisor,
        source: Some("127.0.0.1".into()),
    }
}

async fn echo(send: &mut SendStream, recv: &mut RecvStream, n: usize) {
    let data = vec![7u8; n];
    send.write_all(&data).await.unwrap();
    let mut back = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut back))
        .await
        .expect("an echo within 5 s")
        .unwrap();
}

/// The session's row, once `ok` holds for it (polled, with a deadline).
async fn wait_row(w: &World, id: &str, ok: impl Fn(&SessionRecord) -> bool) -> SessionRecord {
    let id: RelaySessionId = id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = w.store.relay_session(&id).await.unwrap();
        if let Some(row) = row.filter(|r| ok(r)) {
            return row;
        }
        assert!(Instant::now() < deadline, "session {id} never got there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn session_id(welcome: &Frame) -> String {
    match welcome {
        Frame::Welcome { session_id, .. } => session_id.clone(),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn counters_grow_in_the_store_and_a_supervisor_ends_one_session() {
    let config = RelayConfig {
        report_every: Duration::from_millis(50),
        ..RelayConfig::default()
    };
    let w = world(config).await;
    let g = w.grant(-60, 3600).await;
    let (conn, _cs, mut cr, mut dec, welcome) = w.hello(&w.client(g)).await;
    let id = session_id(&welcome);
    let (f, mut send, mut recv) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f, Frame::Opened);

    echo(&mut send, &mut recv, 1000).await;
    let first = wait_row(&w, &id, |r| r.bytes_up >= 1000 && r.bytes_down >= 1000).await;
    assert_eq!(first.open_streams, 1);
    assert!(first.last_reported_at.is_some());
    echo(&mut send, &mut recv, 5000).await;
    let later = wait_row(&w, &id, |r| r.bytes_up >= 6000).await;
    assert!(later.bytes_down >= 6000, "{later:?}");
    // The listing the web service reads shows it live.
    let live = w
        .store
        .relay_sessions(&SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id.to_string(), id);

    let t = Instant::now();
    w.store
        .request_session_end(&sam(&w), &id.parse().unwrap(), "wrong PLC")
        .await
        .unwrap();
    let closed = w.device.next_close().await;
    let took = closed.at.saturating_duration_since(t.into_std());
    assert!(
        took < Duration::from_secs(1),
        "device closed after {took:?}"
    );
    let f = read_frame(&mut cr, &mut dec).await.unwrap();
    assert_eq!(
        f,
        Frame::Ending {
            reason: EndReason::EndedBySupervisor,
            message: "ended by sam: wrong PLC".into(),
        }
    );
    let ends = w.wait_audit("relay.session.end", 1).await;
    let d = &ends[0]["details"];
    assert_eq!(d["reason"], "ended_by_supervisor");
    assert_eq!(
        (d["supervisor"].as_str(), d["supervisor_reason"].as_str()),
        (Some("sam"), Some("wrong PLC"))
    );
    assert!(d["bytes_up"].as_u64().unwrap() >= 6000, "{d}");
    let row = wait_row(&w, &id, |r| r.ended_at.is_some()).await;
    assert_eq!(row.end_reason.as_deref(), Some("ended_by_supervisor"));
    assert_eq!(row.open_streams, 0);
    assert!(row.bytes_up >= 6000, "the final numbers stay");

    // The grant is untouched: the vendor connects again, with a fresh token.
    let (conn, _cs, _cr, _, welcome) = w.hello(&w.client(g)).await;
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    let (f, mut send, mut recv) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f, Frame::Opened);
    echo(&mut send, &mut recv, 10).await;
}

#[tokio::test]
async fn the_reconciliation_ends_a_session_whose_notice_was_lost() {
    let config = RelayConfig {
        reconcile_every: Duration::from_millis(100),
        ..RelayConfig::default()
    };
    let w = world(config).await;
    let g = w.grant(-60, 3600).await;
    let (conn, _cs, mut cr, mut dec, welcome) = w.hello(&w.client(g)).await;
    let id = session_id(&welcome);
    let (f, mut send, mut recv) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f, Frame::Opened);
    echo(&mut send, &mut recv, 10).await;
    // Another process on the database (this relay does not follow its notices here, as when
    // a NOTIFY is lost) asks for the end: only the reconciliation can see it.
    let mut sc = StoreConfig::new(MacKey::new([7; 32]));
    sc.clock = w.clock.clone();
    let other = Store::open(w._db.url(), sc).await.unwrap();
    let sue = AuditActor {
        name: "sue".into(),
        ..sam(&w)
    };
    other
        .request_session_end(&sue, &id.parse().unwrap(), "line stopped")
        .await
        .unwrap();
    let f = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut cr, &mut dec))
        .await
        .expect("ended within a few reconciliations")
        .unwrap();
    assert_eq!(
        f,
        Frame::Ending {
            reason: EndReason::EndedBySupervisor,
            message: "ended by sue: line stopped".into(),
        }
    );
    let ends = w.wait_audit("relay.session.end", 1).await;
    assert_eq!(ends[0]["details"]["reason"], "ended_by_supervisor");
}
