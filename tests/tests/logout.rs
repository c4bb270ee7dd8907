//! Issue 12, points 3 and 4, through the real binary.
//! - A relay token minted before the vendor's `portcullis logout` is refused at the relay
//!   (`session_revoked`, audited); `portcullis logout --everywhere` ends a live
//!   `portcullis connect` session at once.
//! - `portcullis admin user disable`, run as a separate process while the broker runs, reaches
//!   a live session through the change feed (SQLite) or NOTIFY (PostgreSQL), well inside the 5 s
//!   reconciliation that used to be the only path (3.4 s measured before the fix).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Plant;
use portcullis_core::wire::{self, Frame, FrameDecoder, RefusalCode, Token};
use portcullis_net::{devca, quic};
use portcullis_testkit::TestDb;
use portcullis_testkit::devices::EchoDevice;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The CLI-made change must reach the session within this (the design says 250 ms; a loaded
/// 2-core CI machine gets room, and anything under it can only have come through the change
/// feed or NOTIFY: the reconciliation runs every 5 s).
const CLI_BOUND: Duration = Duration::from_secs(1);

/// One round trip through the tunnel; the connection stays open.
async fn round_trip(local: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(local).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("an echo within 10 s")
        .unwrap();
    assert_eq!(&buf, b"ping");
    s
}

/// The session token `portcullis login` stored for the vendor.
fn stored_session(plant: &Plant) -> String {
    let path = plant.vera.config.path().join("session.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["session_token"].as_str().unwrap().to_owned()
}

/// Connects to the relay with the given client configuration (its identity), sends
/// `Hello{token}` and returns the
/// relay's answer.
async fn hello(config: quinn::ClientConfig, relay: &str, token: &str) -> Frame {
    let relay: SocketAddr = relay.parse().unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    let conn = ep.connect(relay, "127.0.0.1").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = Frame::Hello {
        version: wire::VERSION,
        token: Token::new(token.to_owned()),
    };
    send.write_all(&frame.to_vec().unwrap()).await.unwrap();
    let mut dec = FrameDecoder::new();
    loop {
        if let Some(f) = dec.next_frame().unwrap() {
            return f;
        }
        let chunk = timeout(Duration::from_secs(10), recv.read_chunk(65536, true))
            .await
            .expect("an answer within 10 s");
        match chunk {
            Ok(Some(c)) => dec.push(&c.bytes),
            other => panic!("the relay closed without answering: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_before_logout_is_refused_at_the_relay() {
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let plant = Plant::new(&[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    // The vendor fetches a token, bound to a client certificate of their own, with the
    // session `portcullis login` stored (fresh MFA).
    let (cert, key) = devca::ephemeral_client_identity("vera").unwrap();
    let thumb = hex::encode(Sha256::digest(cert.as_ref()));
    let (status, ticket) = plant
        .broker
        .post(
            &format!("/api/v1/grants/{grant}/token"),
            json!({ "client_cert_sha256": thumb }),
            Some(&stored_session(&plant)),
        )
        .await;
    assert_eq!(status, 200, "{ticket}");
    let token = ticket["token"].as_str().unwrap().to_owned();

    let out = plant.vera.run(&["logout"]);
    assert!(out.contains("logged out of"), "{out}");
    assert!(
        !plant.vera.config.path().join("session.json").exists(),
        "the session file is gone"
    );
    let again = plant.vera.run(&["logout"]);
    assert!(again.contains("not logged in"), "{again}");

    let config = quic::client_config(&plant.broker.ca(), cert, key, &[wire::ALPN]).unwrap();
    let answer = hello(config, &plant.broker.relay, &token).await;
    let Frame::Refused { code, message } = answer else {
        panic!("the token minted before logout was accepted: {answer:?}")
    };
    assert_eq!(code, RefusalCode::SessionRevoked, "{message}");
    assert!(message.contains("log in again"), "{message}");
    assert_eq!(echo.accepted(), 0, "nothing was dialed");
    let refusals = plant.broker.audit("relay.session.refuse");
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["actor"], "vera");
    assert_eq!(refusals[0]["details"]["code"], "session_revoked");
    assert_eq!(
        refusals[0]["details"]["jti"],
        plant.broker.audit("token.issue")[0]["details"]["jti"],
        "the refusal names the token"
    );
    let logouts = plant.broker.audit("logout");
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert!(logouts[0]["details"]["tokens_not_before"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connect_session_ends_when_the_vendor_logs_out_everywhere() {
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let mut plant = Plant::new(&[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let _live = round_trip(tunnel.local(port)).await;
    // A second session of vera's (her browser): it ends too.
    let browser = plant.broker.login(&mut plant.vera.person).await;

    let config = plant.vera.config.path().to_owned();
    let mut cli = plant.vera.cmd(&["logout", "--everywhere"]);
    let out = tokio::task::spawn_blocking(move || cli.output().unwrap())
        .await
        .unwrap();
    let exited = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("everywhere: 2 session(s) ended"),
        "{stdout}"
    );
    assert!(!config.join("session.json").exists());
    let closed = timeout(Duration::from_secs(10), echo.next_close())
        .await
        .expect("the device saw the close");
    let took = closed.at.saturating_duration_since(exited);
    assert!(took < CLI_BOUND, "cut {took:?} after the CLI exited");
    let (status, lines) = tunnel.exit().await;
    assert!(!status.success(), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("session_revoked")),
        "connect says why it ended: {lines:?}"
    );
    let ends = plant.broker.audit("relay.session.end");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["details"]["reason"], "session_revoked");
    // The browser session is over too.
    let (s, _) = plant.broker.get("/api/v1/requests", &browser).await;
    assert_eq!(s, 401);
    let everywhere = plant.broker.audit("logout.everywhere");
    assert_eq!(everywhere.len(), 1);
    assert_eq!(everywhere[0]["details"]["sessions_ended"], 2);
}

/// A live session, then `portcullis admin user disable vera` as its own process; returns how
/// long after the CLI's start and after its exit the device saw the close.
async fn cli_disable_cuts(db: Option<&str>, split: bool) -> (Duration, Duration) {
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let plant = Plant::on(db, split, &[port], &[]).await;
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let _live = round_trip(tunnel.local(port)).await;
    let data = plant.broker.data.clone();
    let db_owned = db.map(str::to_owned);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        common::admin_on(
            &data,
            db_owned.as_deref(),
            &["admin", "user", "disable", "vera"],
        )
    })
    .await
    .unwrap();
    let exited = Instant::now();
    assert!(out.contains("disabled 'vera'"), "{out}");
    let closed = timeout(Duration::from_secs(10), echo.next_close())
        .await
        .expect("the device saw the close");
    let from_start = closed.at.saturating_duration_since(started);
    let from_exit = closed.at.saturating_duration_since(exited);
    let (_, lines) = tunnel.exit().await;
    assert!(
        lines.iter().any(|l| l.contains("user_disabled")),
        "{lines:?}"
    );
    let ends = plant.broker.audit("relay.session.end");
    assert_eq!(ends[0]["details"]["reason"], "user_disabled");
    eprintln!(
        "cli disable ({}{}): device closed {from_start:?} after the CLI started, {from_exit:?} after it exited",
        if db.is_some() { "postgresql" } else { "sqlite" },
        if split { ", web + relay" } else { ", serve" },
    );
    assert!(
        from_exit < CLI_BOUND,
        "the CLI's disable took {from_exit:?} after it exited to cut the session"
    );
    (from_start, from_exit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_disable_reaches_a_live_session_on_sqlite() {
    cli_disable_cuts(None, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_disable_reaches_a_live_session_on_postgresql() {
    let db = TestDb::postgres().await;
    cli_disable_cuts(Some(db.url()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_disable_reaches_a_split_relay_on_postgresql() {
    let db = TestDb::postgres().await;
    cli_disable_cuts(Some(db.url()), true).await;
}
