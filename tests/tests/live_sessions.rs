//! Live sessions through the real binary (issue 14, point 5): while a vendor's `portcullis
//! connect` carries traffic, `GET /api/v1/sessions?live=true` shows the session with growing
//! byte counts; a supervisor ends it with a reason; the tunnelled TCP connection is cut,
//! `connect` prints `session ended (ended_by_supervisor): ended by sam: <reason>` and exits 3
//! (access taken away), and the audit log has the supervisor's `session.end` and the relay's
//! session end with that reason. The grant stays approved: `connect` works again. Once with
//! `serve` on SQLite, once with `portcullis web` and `portcullis relay` as two processes on
//! PostgreSQL (the numbers and the end cross only through the database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Plant;
use portcullis_testkit::TestDb;
use portcullis_testkit::devices::EchoDevice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Polls the live list as `bearer` until a session satisfies `ok` (deadline 20 s).
async fn live_session(plant: &Plant, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = plant
            .broker
            .get("/api/v1/sessions?live=true", &plant.sam)
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(s) = body["sessions"].as_array().unwrap().iter().find(|s| ok(s)) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "no such live session: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn echo(s: &mut TcpStream, n: usize) {
    let data = vec![0x5a; n];
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert!(back == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_watches_a_live_session_grow_and_ends_it_with_a_reason() {
    let echo_device = EchoDevice::start().await;
    let port = echo_device.addr().port();
    let plant = Plant::new(&[port], &["--live-report-every", "300ms"]).await;
    watch_and_end(plant, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_web_and_relay_apart_on_postgresql() {
    let db = TestDb::postgres().await;
    let echo_device = EchoDevice::start().await;
    let port = echo_device.addr().port();
    // The relay reports at its default period (2 s).
    let plant = Plant::on(Some(db.url()), true, &[port], &[]).await;
    watch_and_end(plant, port).await;
}

async fn watch_and_end(plant: Plant, port: u16) {
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let mut tcp = TcpStream::connect(tunnel.local(port)).await.unwrap();

    echo(&mut tcp, 10 * 1024).await;
    let first = live_session(&plant, |s| s["bytes_up"].as_u64() >= Some(10 * 1024)).await;
    assert_eq!(first["grant"], grant);
    assert_eq!(
        (first["vendor"].as_str(), first["device"].as_str()),
        (Some("vera"), Some("plc-7"))
    );
    assert_eq!(first["source"], "127.0.0.1");
    assert_eq!(first["relay"], "relay");
    assert_eq!(first["open_streams"], 1);
    assert!(first["bytes_down"].as_u64() >= Some(10 * 1024), "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    // More traffic, higher numbers, without anyone asking the relay.
    echo(&mut tcp, 200 * 1024).await;
    let grown = live_session(&plant, |s| {
        s["id"] == id.as_str() && s["bytes_up"].as_u64() >= Some(210 * 1024)
    })
    .await;
    assert!(grown["bytes_down"].as_u64() >= Some(210 * 1024), "{grown}");
    assert!(grown["last_reported_at"].as_str() > first["last_reported_at"].as_str());

    let (status, body) = plant
        .broker
        .post(
            &format!("/api/v1/sessions/{id}/end"),
            json!({ "reason": "wrong PLC" }),
            Some(&plant.sam),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["end_requested"]["by"], "sam");

    // The tunnelled connection is cut: the next read sees the end (an RST or a FIN), soon.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("the local connection ends when the session does");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let (status, lines) = tunnel.exit().await;
    assert_eq!(status.code(), Some(3), "access taken away: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "session ended (ended_by_supervisor): ended by sam: wrong PLC"),
        "connect says who ended it and why: {lines:?}"
    );

    let ends = plant.broker.audit("session.end");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["actor"], "sam");
    assert_eq!(ends[0]["target"], format!("session:{id}"));
    assert_eq!(ends[0]["details"]["reason"], "wrong PLC");
    let relay_ends = plant.broker.audit("relay.session.end");
    assert_eq!(relay_ends.len(), 1, "{relay_ends:?}");
    let d = &relay_ends[0]["details"];
    assert_eq!(d["reason"], "ended_by_supervisor");
    assert_eq!(d["supervisor"], "sam");
    assert_eq!(d["supervisor_reason"], "wrong PLC");
    assert!(d["bytes_up"].as_u64() >= Some(210 * 1024), "{d}");

    // Gone from the live list; the record keeps why it ended.
    let (_, body) = plant
        .broker
        .get("/api/v1/sessions?live=true", &plant.sam)
        .await;
    assert_eq!(body["sessions"], json!([]), "{body}");
    let (_, body) = plant.broker.get("/api/v1/sessions", &plant.sam).await;
    assert_eq!(body["sessions"][0]["end_reason"], "ended_by_supervisor");
    // Not a revoke: the grant is still active and the vendor connects again.
    let (_, req) = plant
        .broker
        .get(&format!("/api/v1/requests/{grant}"), &plant.sam)
        .await;
    assert_eq!(req["state"], "active", "{req}");
    let again = plant.vera.connect(grant, &[], 1).await;
    let mut tcp = TcpStream::connect(again.local(port)).await.unwrap();
    echo(&mut tcp, 100).await;
}
