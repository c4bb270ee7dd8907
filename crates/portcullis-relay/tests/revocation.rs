//! Logout, "log out everywhere" and the admin reset at the relay (issue 12): relay tokens issued
//! before the user's `tokens_not_before` are refused (`session_revoked`, audited), and live
//! sessions started before `sessions_not_before` end at once (end reason `session_revoked`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use portcullis_store::{SessionPolicy, Stage};

/// A full web session of vera's (what logout ends).
async fn web_session(w: &World) -> String {
    w.store
        .create_session(w.vera.id, Stage::Full, None, &SessionPolicy::default())
        .await
        .unwrap()
        .token
}

fn vera_actor() -> AuditActor {
    AuditActor {
        name: "vera".into(),
        role: ActorRole::Vendor,
        source: Some("127.0.0.1".into()),
    }
}

/// A stream through a new session; proves it echoes.
async fn live(
    w: &World,
    c: &Client,
) -> (Connection, SendStream, RecvStream, SendStream, RecvStream) {
    let (conn, cs, cr, _, welcome) = w.hello(c).await;
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    let (f, mut send, mut recv) = open(&conn, "plc-7", w.port()).await;
    assert_eq!(f, Frame::Opened);
    echo(&mut send, &mut recv).await;
    (conn, cs, cr, send, recv)
}

async fn echo(send: &mut SendStream, recv: &mut RecvStream) {
    send.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut buf))
        .await
        .expect("an echo within 5 s")
        .unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn tokens_minted_before_a_logout_are_refused_as_session_revoked() {
    let config = RelayConfig {
        // Reconciliations come often, so a plain logout that wrongly ended live sessions
        // would show within the wait below.
        reconcile_every: Duration::from_millis(20),
        ..RelayConfig::default()
    };
    let w = world(config).await;
    let g = w.grant(-60, 3600).await;
    // Minted at T0 (iat = T0), then vera logs out 250 ms later.
    let before = w.client(g);
    w.clock.advance(Duration::from_millis(250));
    let token = web_session(&w).await;
    w.store
        .logout(&vera_actor(), &w.vera, &token)
        .await
        .unwrap();
    let (_, _, _, _, f) = w.hello(&before).await;
    assert_eq!(refused(&f), RefusalCode::SessionRevoked);
    // Minted after the logout but in the same second: `iat` cannot tell, so refused too.
    let same_second = w.client(g);
    let (_, _, _, _, f) = w.hello(&same_second).await;
    assert_eq!(refused(&f), RefusalCode::SessionRevoked);
    assert_eq!(w.device.accepted(), 0, "nothing was dialed");
    // A token of the next second is after the logout: it works.
    w.clock.advance(Duration::from_secs(1));
    let after = w.client(g);
    let (_conn, _cs, _cr, mut send, mut recv) = live(&w, &after).await;
    // A plain logout leaves that live session alone, through many reconciliations.
    w.clock.advance(Duration::from_secs(1));
    let token = web_session(&w).await;
    w.store
        .logout(&vera_actor(), &w.vera, &token)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    echo(&mut send, &mut recv).await;
    assert!(w.audit("relay.session.end").await.is_empty());

    let refusals = w.audit("relay.session.refuse").await;
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    for r in &refusals {
        assert_eq!(r["actor"], "vera");
        assert_eq!(r["grant"], g);
        assert_eq!(r["details"]["code"], "session_revoked");
        assert!(r["details"]["jti"].is_string(), "{r}");
    }
}

#[tokio::test]
async fn logout_everywhere_and_a_reset_end_live_sessions_at_once() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;
    for cut in ["logout-everywhere", "reset"] {
        let c = w.client(g);
        let (_conn, _cs, mut cr, _s, _r) = live(&w, &c).await;
        w.clock.advance(Duration::from_millis(300));
        let t = Instant::now();
        if cut == "reset" {
            w.store
                .reset_user(&admin(), &w.vera.username)
                .await
                .unwrap();
        } else {
            w.store
                .logout_everywhere(&vera_actor(), &w.vera)
                .await
                .unwrap();
        }
        let closed = w.device.next_close().await;
        let took = closed.at.saturating_duration_since(t.into_std());
        assert!(
            took < Duration::from_secs(1),
            "{cut}: device closed after {took:?}"
        );
        let mut dec = FrameDecoder::new();
        let f = read_frame(&mut cr, &mut dec).await.unwrap();
        assert!(
            matches!(
                f,
                Frame::Ending {
                    reason: EndReason::SessionRevoked,
                    ..
                }
            ),
            "{cut}: {f:?}"
        );
        // The next session needs a token of a later second (a new login in real life).
        w.clock.advance(Duration::from_secs(1));
    }
    let ends = w.wait_audit("relay.session.end", 2).await;
    for e in &ends {
        assert_eq!(e["details"]["reason"], "session_revoked", "{e}");
    }

    // A session that starts after "log out everywhere" is not ended by it: another user's
    // change re-checks it and it goes on.
    let c = w.client(g);
    let (_conn, _cs, _cr, mut send, mut recv) = live(&w, &c).await;
    w.store
        .disable_user(&admin(), &w.sam.username)
        .await
        .unwrap();
    w.store
        .set_device_policy(
            &admin(),
            &DeviceName::parse("plc-7").unwrap(),
            &w.store
                .device(&DeviceName::parse("plc-7").unwrap())
                .await
                .unwrap()
                .unwrap()
                .policy,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    echo(&mut send, &mut recv).await;
    assert_eq!(w.audit("relay.session.end").await.len(), 2);
}
