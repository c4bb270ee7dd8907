//! Faults, through the real binary: the relay killed with `kill -9` and restarted; the
//! database unreachable while a session is live; web and relay as separate processes, where a
//! revoke reaches the relay only through PostgreSQL LISTEN/NOTIFY.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Plant;
use portcullis_testkit::TestDb;
use portcullis_testkit::devices::EchoDevice;
use portcullis_testkit::proxy::CutProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// One round trip through the tunnel: `Ok` when the device echoed, `Err` when the connection
/// was refused or closed.
async fn round_trip(local: std::net::SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(local).await.map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    match timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == b"ping" => Ok(s),
        Ok(Ok(_)) => Err("wrong bytes".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in 10 s".into()),
    }
}

/// Retries `round_trip` until it succeeds (the client is reconnecting), for at most `limit`.
async fn until_through(local: std::net::SocketAddr, limit: Duration) -> TcpStream {
    let start = Instant::now();
    loop {
        match round_trip(local).await {
            Ok(s) => return s,
            Err(e) if start.elapsed() > limit => panic!("still not through after {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_hard_closes_its_sessions_on_restart_and_the_client_comes_back_with_a_fresh_token()
 {
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let mut plant = Plant::new(&[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let mut tunnel = plant.vera.connect(grant, &[], 1).await;
    let local = tunnel.local(port);
    let live = round_trip(local).await.unwrap();

    plant.broker.kill_and_restart();
    // The device side of the live connection closed with the process.
    timeout(Duration::from_secs(10), echo.next_close())
        .await
        .expect("the device saw the connection close when the relay died");
    // The restarted relay closed the session in the audit log, and the client reconnected
    // with a new token: a new connection works again.
    let _again = until_through(local, Duration::from_secs(60)).await;
    // The client learned of the restart from the new relay's stateless reset, which it could
    // check because the reset key survived the restart (issue 16), not from its idle timeout.
    let lost = tunnel.wait_for("connection to the relay lost").await;
    assert!(lost.contains("reset"), "{lost}");
    // The connection that was open when the relay died could not be kept, and `connect` says
    // which one it was and why.
    let live_addr = live.local_addr().unwrap();
    let closed = tunnel
        .wait_for(&format!("connection {live_addr} -> "))
        .await;
    assert!(
        closed.contains("ended: the connection to the relay was")
            && closed.contains("open it again once `connect` has reconnected"),
        "{closed}"
    );
    let ends = plant.broker.audit("relay.session.end");
    assert_eq!(ends[0]["details"]["reason"], "relay_restart", "{ends:?}");
    let starts = plant.broker.audit("relay.session.start");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_ne!(
        starts[0]["details"]["jti"], starts[1]["details"]["jti"],
        "nothing resumed without a fresh token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_unreachable_new_streams_are_refused_the_live_one_ends_on_time_and_all_recovers()
 {
    let db = TestDb::postgres().await;
    let (proxy, url) = CutProxy::start_for_url(db.url()).await;
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let plant = Plant::on(Some(&url), false, &[port], &[]).await;
    let short = plant.grant(&port.to_string(), "+30s").await;
    let long = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(short, &[], 1).await;
    let local = tunnel.local(port);
    let mut live = round_trip(local).await.unwrap();

    proxy.cut().await;
    // The relay notices at its next reconciliation (every 5 s) and refuses new streams: the
    // device sees no new connection.
    let accepted = echo.accepted();
    let start = Instant::now();
    loop {
        if round_trip(local).await.is_err() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "new streams still admitted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admitted_before_noticing = echo.accepted() - accepted;
    assert!(admitted_before_noticing <= 30);
    let refused_at = echo.accepted();
    assert!(round_trip(local).await.is_err());
    assert_eq!(
        echo.accepted(),
        refused_at,
        "a refused stream never reaches the device"
    );

    // The live connection still works, and still ends on time (window end, +30 s).
    live.write_all(b"more").await.unwrap();
    let mut buf = [0u8; 4];
    live.read_exact(&mut buf).await.unwrap();
    let n = timeout(Duration::from_secs(60), live.read(&mut buf))
        .await
        .expect("the live connection ended at the window end")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Recovery without restart: once the database answers, a new session starts, and the end
    // of the first one, queued while the database was away, is in the log.
    proxy.restore();
    let tunnel2 = plant.vera.connect(long, &[], 1).await;
    let _s = until_through(tunnel2.local(port), Duration::from_secs(30)).await;
    let start = Instant::now();
    loop {
        let ends = plant.broker.audit("relay.session.end");
        if ends.iter().any(|e| e["details"]["reason"] == "window_end") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{ends:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refusals = plant.broker.audit("relay.stream.refuse");
    assert!(
        refusals
            .iter()
            .any(|e| e["details"]["code"] == "audit_unavailable"),
        "{refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_in_the_web_process_cuts_the_relay_process_through_postgresql() {
    let db = TestDb::postgres().await;
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let plant = Plant::on(Some(db.url()), true, &[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let _live = round_trip(tunnel.local(port)).await.unwrap();
    let t = Instant::now();
    plant.broker.revoke(&plant.sam, grant).await;
    let closed = timeout(Duration::from_secs(10), echo.next_close())
        .await
        .expect("the device saw the close");
    let took = closed.at.saturating_duration_since(t.into_std());
    assert!(
        took < Duration::from_secs(1),
        "cut {took:?} after the revoke"
    );
    let (_, lines) = tunnel.exit().await;
    assert!(lines.iter().any(|l| l.contains("revoked")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_live_sessions_as_shutdown_and_the_chain_still_verifies() {
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let mut plant = Plant::new(&[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let _live = round_trip(tunnel.local(port)).await.unwrap();
    let status = plant.broker.stop();
    assert!(status.success(), "{status}");
    timeout(Duration::from_secs(10), echo.next_close())
        .await
        .expect("the device saw the connection close at shutdown");
    let ends = plant.broker.audit("relay.session.end");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["details"]["reason"], "shutdown");
    let (_, lines) = tunnel.exit().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutdown") || l.contains("shutting down")),
        "{lines:?}"
    );
    common::admin(&plant.broker.data, &["audit", "verify"]);
}
