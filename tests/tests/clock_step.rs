//! Issue 12, point 1, through the real binary: the broker's wall clock is stepped back 10 s
//! with libfaketime (monotonic clock untouched) shortly after a window's real end. The grant
//! must stay ended (API, token endpoint, relay via `portcullis connect`, no new connection to
//! the device), `clock.anomaly` must be audited with both readings, and new tokens stay refused
//! until `portcullis admin clock ack`; then a new grant works and the old one stays expired.
//!
//! Needs Debian's `faketime` package; prints SKIPPED without it unless
//! PORTCULLIS_REQUIRE_FAKETIME=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Plant, admin, now_unix};
use portcullis_core::Timestamp;
use portcullis_testkit::devices::EchoDevice;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

async fn round_trip(local: std::net::SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(local).await.map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    match timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == b"ping" => Ok(()),
        Ok(Ok(_)) => Err("wrong bytes".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in 10 s".into()),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
async fn within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

fn secs(t: &Value) -> i64 {
    Timestamp::parse_rfc3339(t.as_str().unwrap())
        .unwrap()
        .unix_micros()
        / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepped_back_after_a_window_ended_does_not_reopen_it() {
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_FAKETIME").as_deref() != Ok("1"),
            "PORTCULLIS_REQUIRE_FAKETIME=1 but {LIBFAKETIME} is missing (apt-get install faketime)"
        );
        println!("SKIPPED: libfaketime is not installed (apt-get install faketime)");
        return;
    }
    let offset_dir = tempfile::tempdir().unwrap();
    let offset = offset_dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let env: Vec<(String, String)> = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let echo = EchoDevice::start().await;
    let port = echo.addr().port();
    let mut plant = Plant::with_broker_env(&[port], &env).await;
    let b = &plant.broker;
    let starts = b.audit("service.start");
    let start = &starts[0];
    assert!(
        start["details"]["time_sync"].is_object(),
        "service.start records the time-sync state: {start}"
    );
    // Vera's API session, for calling the token endpoint directly.
    let vera_api = b.login(&mut plant.vera.person).await;
    let b = &plant.broker;

    // A grant whose window ends in 15 s; a tunnel works inside it.
    let grant = plant.grant(&port.to_string(), "+15s").await;
    let sam = &plant.sam;
    let get = || async move {
        let (s, body) = b.get(&format!("/api/v1/requests/{grant}"), sam).await;
        assert_eq!(s, 200, "{body}");
        body
    };
    let body = get().await;
    assert_eq!(body["state"], "active", "{body}");
    let window_end = secs(&body["window"]["end"]);
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    round_trip(tunnel.local(port)).await.unwrap();

    // The window ends (the relay's timer, a read or the sweep persists it).
    let ended = within(
        Duration::from_secs(40),
        "the grant shows expired",
        || async move {
            let body = get().await;
            (body["state"] == "expired").then_some(body)
        },
    )
    .await;
    assert!(ended["ended_at"].is_string(), "{ended}");
    drop(tunnel);
    let expire = b.audit("request.expire");
    assert_eq!(expire.len(), 1, "{expire:?}");
    assert_eq!(expire[0]["grant_id"], grant);

    // The broker's wall clock steps back 10 s: into the window, if we are quick enough.
    let now = i64::try_from(now_unix()).unwrap();
    assert!(
        now - 10 < window_end - 1,
        "the step must land inside the window (now {now}, end {window_end}): too slow a machine?"
    );
    std::fs::write(&offset, "-10\n").unwrap();
    let anomaly = within(
        Duration::from_secs(10),
        "clock.anomaly is audited",
        || async move { b.audit("clock.anomaly").into_iter().next() },
    )
    .await;
    let d = &anomaly["details"];
    let step = d["step_ms"].as_i64().unwrap();
    assert!((-10_500..=-9_500).contains(&step), "{anomaly}");
    assert_eq!(d["tolerance_ms"], 2000, "{anomaly}");
    assert!(
        d["monotonic_elapsed_ms"].as_u64().unwrap() < 2000,
        "{anomaly}"
    );
    let (before, after) = (secs(&d["wall_before"]), secs(&d["wall_after"]));
    assert!((8..=11).contains(&(before - after)), "{anomaly}");
    assert_eq!(anomaly["details"]["service"], "serve");

    // The grant stays ended, whatever the wall clock says.
    let body = get().await;
    assert_eq!(body["state"], "expired", "{body}");
    assert_eq!(body["ended_at"], ended["ended_at"]);
    let token_body = json!({ "client_cert_sha256": "A".repeat(43) });
    let (s, body) = b
        .post(
            &format!("/api/v1/grants/{grant}/token"),
            token_body.clone(),
            Some(&vera_api),
        )
        .await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["code"], "clock_anomaly", "{body}");
    // `portcullis connect` gets no session, and nothing new reaches the device.
    let accepted = echo.accepted();
    let out = timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking({
            let mut c = plant.vera.cmd(&["connect", &grant.to_string()]);
            move || c.output().unwrap()
        }),
    )
    .await
    .expect("connect gives up on a refused grant")
    .unwrap();
    assert!(
        !out.status.success(),
        "connect succeeded during the anomaly"
    );
    assert_eq!(
        echo.accepted(),
        accepted,
        "a new connection reached the device"
    );
    // A new grant gets no token either while the clocks disagree.
    let from = Timestamp::from_unix_micros((now - 60) * 1_000_000)
        .unwrap()
        .to_rfc3339();
    let request = |until: &str| {
        let out = plant.vera.run(&[
            "request",
            "--device",
            "plc-7",
            "--port",
            &port.to_string(),
            "--from",
            &from,
            "--until",
            until,
            "--reason",
            "firmware check",
            "--format",
            "json",
        ]);
        serde_json::from_str::<Value>(&out).unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let fresh = request("+10m");
    b.approve(&plant.sam, fresh).await;
    let (s, body) = b
        .post(
            &format!("/api/v1/grants/{fresh}/token"),
            token_body.clone(),
            Some(&vera_api),
        )
        .await;
    assert_eq!((s, &body["code"]), (503, &json!("clock_anomaly")), "{body}");

    // An admin confirms the time: new tokens again; the old grant stays expired.
    admin(&b.data, &["admin", "clock", "ack"]);
    within(
        Duration::from_secs(10),
        "clock.resolved is audited",
        || async move { b.audit("clock.resolved").into_iter().next() },
    )
    .await;
    let (s, body) = b
        .post(
            &format!("/api/v1/grants/{grant}/token"),
            token_body.clone(),
            Some(&vera_api),
        )
        .await;
    assert_eq!((s, &body["code"]), (409, &json!("conflict")), "{body}");
    let tunnel = plant.vera.connect(fresh, &[], 1).await;
    round_trip(tunnel.local(port)).await.unwrap();
    assert_eq!(echo.accepted(), accepted + 1);
    assert_eq!(get().await["state"], "expired");
}
