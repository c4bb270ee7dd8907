//! Issue 15, point 4, through the real broker: each alert fires on its scripted trigger and
//! stays quiet below its threshold. Alerts are audit events (`alert.*`, actor `portcullis`),
//! read here with `portcullis audit export --format jsonl` as an auditor would.
//! - 4 bad passwords: no alert; the 5th: one `alert.login_failures` (and the lockout's alert);
//! - a config change (`admin device set-policy`): `alert.config_change` naming actor and change;
//! - a target outside the grant, asked of the relay directly: `alert.relay_refusals`;
//! - a site connector killed for longer than the threshold (2 s in the config file):
//!   `alert.connector_offline`, then `alert.connector_online` when it is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, Plant, Reaped, admin, admin_on};
use portcullis_core::wire::{self, Frame, FrameDecoder, RefusalCode, Token};
use portcullis_net::{devca, quic};
use portcullis_testkit::devices::EchoDevice;
use portcullis_testkit::portcullis_bin;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::timeout;

/// The config file of these brokers: a 2 s connector threshold, the rest defaults.
fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, "[alerts]\nconnector_offline_secs = 2\n").unwrap();
    path
}

/// Polls the audit log until it holds at least `n` events with `action`, for at most `within`.
async fn audited(b: &Broker, action: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = b.audit(action);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {action} within {within:?}; the log ends: {:#?}",
            b.audit_all().iter().rev().take(12).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls the audit log until an event with `action` matches `pred`; returns it.
async fn until(b: &Broker, action: &str, pred: impl Fn(&Value) -> bool, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = b.audit(action).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no matching {action} within {within:?}; the log ends: {:#?}",
            b.audit_all().iter().rev().take(12).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn bad_login(b: &Broker, user: &str, i: usize) {
    let (status, _) = b
        .post(
            "/api/v1/auth/login",
            json!({ "username": user, "password": format!("not the password, try {i}") }),
            None,
        )
        .await;
    assert_eq!(status, 401);
}

fn details(e: &Value) -> &Value {
    &e["details"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_alert_at_the_threshold_and_a_config_change_alerts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path());
    admin(&data, &["admin", "org", "add", "acme"]);
    let b = Broker::start(&data, None, &["--config", config.to_str().unwrap()]);
    b.enroll("vera", "vendor", Some("acme")).await;
    admin(
        &data,
        &[
            "admin",
            "device",
            "add",
            "plc-7",
            "--address",
            "127.0.0.1",
            "--ports",
            "502",
            "--orgs",
            "acme",
        ],
    );

    for i in 0..4 {
        bad_login(&b, "vera", i).await;
    }
    // A configuration change after the four failures: once its alert is there, the watcher has
    // read past them, so their silence is not a watcher that has not looked yet.
    admin(
        &data,
        &[
            "admin",
            "device",
            "set-policy",
            "plc-7",
            "--ports",
            "502",
            "--approvals",
            "1",
        ],
    );
    let change = until(
        &b,
        "alert.config_change",
        |e| details(e)["action"] == "device.set_policy",
        Duration::from_secs(20),
    )
    .await;
    let change = &change;
    assert_eq!(change["actor"], "portcullis");
    assert_eq!(change["role"], "system");
    assert_eq!(change["target"], "device:plc-7");
    let set_policy = &b.audit("device.set_policy")[0];
    assert_eq!(details(change)["actor"], set_policy["actor"]);
    assert_eq!(details(change)["seqs"], json!([set_policy["seq"]]));
    assert!(
        b.audit("alert.login_failures").is_empty(),
        "4 failures are below the threshold of 5"
    );
    assert!(b.audit("alert.lockout").is_empty());

    bad_login(&b, "vera", 4).await;
    let alerts = audited(&b, "alert.login_failures", 1, Duration::from_secs(20)).await;
    let a = &alerts[0];
    assert_eq!(a["actor"], "portcullis");
    assert_eq!(a["target"], "user:vera");
    assert_eq!(details(a)["count"], 5);
    assert_eq!(details(a)["threshold"], 5);
    let fails: Vec<Value> = b
        .audit("login.fail")
        .iter()
        .map(|e| e["seq"].clone())
        .collect();
    assert_eq!(details(a)["seqs"], json!(fails));
    // The 5th failure also locked the account: that is its own alert.
    let locks = audited(&b, "alert.lockout", 1, Duration::from_secs(20)).await;
    assert_eq!(locks[0]["target"], "user:vera");

    // More failures inside the window add no alert (no storm): wait until the watcher has
    // read past them (another change's alert), then count.
    for i in 5..9 {
        bad_login(&b, "vera", i).await;
    }
    admin(&data, &["admin", "org", "add", "other"]);
    until(
        &b,
        "alert.config_change",
        |e| e["target"] == "org:other",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(b.audit("alert.login_failures").len(), 1);
    assert!(
        b.metrics()
            .await
            .contains("portcullis_alerts_total{kind=\"login_failures\"} 1\n")
    );
}

/// Connects to the relay with a token bound to `cert`, asks for `device:port` on a data stream,
/// and returns the relay's answer to that.
async fn open_target(plant: &Plant, grant: i64, session: &str, device: &str, port: u16) -> Frame {
    let (cert, key) = devca::ephemeral_client_identity("vera").unwrap();
    let thumb = hex::encode(Sha256::digest(cert.as_ref()));
    let (status, ticket) = plant
        .broker
        .post(
            &format!("/api/v1/grants/{grant}/token"),
            json!({ "client_cert_sha256": thumb }),
            Some(session),
        )
        .await;
    assert_eq!(status, 200, "{ticket}");
    let token = ticket["token"].as_str().unwrap().to_owned();
    let config = quic::client_config(&plant.broker.ca(), cert, key, &[wire::ALPN]).unwrap();
    let relay: SocketAddr = plant.broker.relay.parse().unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(config);
    let conn = ep.connect(relay, "127.0.0.1").unwrap().await.unwrap();
    let (mut control, mut control_rx) = conn.open_bi().await.unwrap();
    let hello = Frame::Hello {
        version: wire::VERSION,
        token: Token::new(token),
    };
    control.write_all(&hello.to_vec().unwrap()).await.unwrap();
    let welcome = next_frame(&mut control_rx).await;
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let open = Frame::Open {
        device: device.to_owned(),
        port,
    };
    send.write_all(&open.to_vec().unwrap()).await.unwrap();
    next_frame(&mut recv).await
}

async fn next_frame(recv: &mut quinn::RecvStream) -> Frame {
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

/// The session token `portcullis login` stored for the vendor.
fn stored_session(plant: &Plant) -> String {
    let path = plant.vera.config.path().join("session.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["session_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outside_the_grant_alerts_once_for_its_vendor() {
    let echo = EchoDevice::start().await;
    let other = EchoDevice::start().await;
    let (port, not_granted) = (echo.addr().port(), other.addr().port());
    let plant = Plant::new(&[port, not_granted], &[]).await;
    // Granted: one port of the two the device has.
    let grant = plant.grant(&port.to_string(), "+1h").await;
    let session = stored_session(&plant);
    let answer = open_target(&plant, grant, &session, "plc-7", not_granted).await;
    let Frame::Refused { code, .. } = answer else {
        panic!("a target outside the grant was opened: {answer:?}")
    };
    assert_eq!(code, RefusalCode::TargetNotGranted);
    assert_eq!(other.accepted(), 0, "a refused target is never dialed");

    let alerts = audited(
        &plant.broker,
        "alert.relay_refusals",
        1,
        Duration::from_secs(20),
    )
    .await;
    let a = &alerts[0];
    assert_eq!(a["target"], "vendor:vera");
    let d = details(a);
    assert_eq!(d["last"]["code"], "target_not_granted");
    assert_eq!(d["last"]["port"], not_granted);
    assert_eq!(d["last"]["grant_id"], grant);
    let refusal = &plant.broker.audit("relay.stream.refuse")[0];
    assert_eq!(d["seqs"], json!([refusal["seq"]]));

    // A second refusal for the same vendor inside the window: suppressed. Wait until the
    // watcher has read past it (a change's alert), then count.
    let again = open_target(&plant, grant, &session, "plc-7", not_granted).await;
    assert!(matches!(again, Frame::Refused { .. }), "{again:?}");
    audited(
        &plant.broker,
        "relay.stream.refuse",
        2,
        Duration::from_secs(10),
    )
    .await;
    admin_on(&plant.broker.data, None, &["admin", "org", "add", "marker"]);
    until(
        &plant.broker,
        "alert.config_change",
        |e| e["target"] == "org:marker",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(plant.broker.audit("alert.relay_refusals").len(), 1);
}

/// `portcullis connector run`, on this machine (loopback), output drained.
#[allow(clippy::zombie_processes)] // reaped by `Reaped`
fn run_connector(state: &Path) -> Reaped {
    let mut child = Command::new(portcullis_bin())
        .args(["connector", "run", "--dir", state.to_str().unwrap()])
        .env("PORTCULLIS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        std::thread::spawn(move || BufReader::new(stream).lines().for_each(drop));
    }
    Reaped(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_killed_past_the_threshold_alerts_and_its_return_alerts_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path());
    let b = Broker::start(&data, None, &["--config", config.to_str().unwrap()]);
    let out = admin(
        &data,
        &["admin", "site", "add", "north", "--format", "json"],
    );
    let token = serde_json::from_str::<Value>(&out).unwrap()["enrollment_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = dir.path().join("connector");
    let enrolled = Command::new(portcullis_bin())
        .args(["connector", "enroll", "--url", &b.base, "--token", &token])
        .args(["--ca", b.ca().to_str().unwrap()])
        .args(["--dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        enrolled.status.success(),
        "connector enroll: {}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    std::fs::write(
        state.join("allowlist.toml"),
        "[[allow]]\nhost = \"127.0.0.1\"\nports = [502]\n",
    )
    .unwrap();

    let mut connector = run_connector(&state);
    audited(&b, "relay.connector.connect", 1, Duration::from_secs(30)).await;
    // Connected: no offline alert, whatever time passes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.audit("alert.connector_offline").is_empty());

    // kill -9: the relay notices at its idle timeout, the alert follows 2 s later.
    connector.0.kill().unwrap();
    connector.0.wait().unwrap();
    let gone = audited(&b, "relay.connector.disconnect", 1, Duration::from_secs(30)).await;
    let off = audited(&b, "alert.connector_offline", 1, Duration::from_secs(20)).await;
    assert_eq!(off[0]["target"], "site:north");
    let d = details(&off[0]);
    assert_eq!(d["threshold_secs"], 2);
    assert_eq!(d["seqs"], json!([gone[0]["seq"]]));
    assert!(b.audit("alert.connector_online").is_empty());

    let _back = run_connector(&state);
    audited(&b, "relay.connector.connect", 2, Duration::from_secs(30)).await;
    let on = audited(&b, "alert.connector_online", 1, Duration::from_secs(20)).await;
    assert_eq!(on[0]["target"], "site:north");
    assert!(details(&on[0])["offline_secs"].as_u64().unwrap() >= 2);
    assert_eq!(
        b.audit("alert.connector_offline").len(),
        1,
        "one outage, one alert"
    );
}
