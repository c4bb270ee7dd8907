//! Issue 15, point 5, through the real binary: `portcullis serve --config` with `[syslog]`
//! streams every audit event to a collector started here on loopback (TCP, TLS with a test CA,
//! UDP; JSON and CEF), in order and exactly once, across a collector restart; `audit tail`
//! prints what `audit export --format jsonl` prints, and follows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Broker, Reaped, admin_on};
use portcullis_testkit::syslog::{Kind, Receiver};
use portcullis_testkit::{TestDb, portcullis_bin};
use serde_json::json;

/// Only so a broken build fails instead of hanging; the stream's target is 1 s.
const DEADLINE: Duration = Duration::from_secs(30);

fn write_config(dir: &Path, server: &str, format: &str, ca: Option<&Path>) -> String {
    let mut text = format!("[syslog]\nserver = \"{server}\"\nformat = \"{format}\"\n");
    if let Some(ca) = ca {
        text += &format!("ca_file = \"{}\"\n", ca.display());
    }
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `seq` from a message's structured data.
fn seq_of(msg: &str) -> i64 {
    let rest = msg.split("seq=\"").nth(1).expect("a seq parameter");
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

/// MSG of an RFC 5424 message whose structured data is our one element.
fn msg_of(msg: &str) -> &str {
    let at = msg.find("\"] ").expect("structured data then MSG");
    &msg[at + 3..]
}

/// `audit export --format jsonl` lines, as an auditor gets them.
fn export(b: &Broker) -> Vec<String> {
    admin_on(
        &b.data,
        b.db.as_deref(),
        &["audit", "export", "--format", "jsonl"],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Waits until the alert watcher has recorded its `alert.config_change` for `target` (it runs
/// beside the web service and appends a moment after the change), so later exports do not
/// race it.
fn settle(b: &Broker, target: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !export(b).iter().any(|line| {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        ev["action"] == "alert.config_change" && ev["target"] == target
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert.config_change for {target}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Receives messages until `lines` (export lines from seq `from`) have all arrived; asserts
/// that they arrive in order, each once, with MSG equal to the export line.
async fn receive_exactly(rx: &mut Receiver, lines: &[String]) {
    for line in lines {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        let (_, msg) = rx
            .next_within(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("seq {} never reached the collector", want["seq"]));
        assert_eq!(seq_of(&msg), want["seq"].as_i64().unwrap(), "{msg}");
        assert_eq!(
            msg_of(&msg),
            line,
            "the stream's JSON differs from the export's"
        );
        assert!(msg.starts_with('<') && msg.contains(">1 "), "{msg}");
    }
}

async fn failed_login(b: &Broker, user: &str) {
    let (s, _) = b
        .post(
            "/api/v1/auth/login",
            json!({ "username": user, "password": "not the password at all" }),
            None,
        )
        .await;
    assert_eq!(s, 401);
}

async fn every_event_once_in_order_across_a_restart(db: Option<&str>, kind: Kind) {
    let data = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    let mut rx = Receiver::start(kind).await;
    let config = write_config(conf.path(), &rx.url(), "json", None);
    let b = Broker::start(data.path(), db, &["--config", &config]);

    // The scenario: a supervisor and an auditor are added and enrol, someone fails a login.
    b.enroll("sam", "supervisor", None).await;
    admin_on(
        &b.data,
        db,
        &["admin", "user", "add", "ada", "--role", "auditor"],
    );
    failed_login(&b, "sam").await;
    settle(&b, "user:ada");
    let first = export(&b);
    assert!(first.len() >= 5, "{first:?}");
    receive_exactly(&mut rx, &first).await;

    // The collector goes away; the broker keeps committing; it comes back on the same port.
    rx.stop();
    admin_on(
        &b.data,
        db,
        &["admin", "user", "add", "kim", "--role", "supervisor"],
    );
    failed_login(&b, "kim").await;
    failed_login(&b, "nobody").await;
    settle(&b, "user:kim");
    rx.restart().await;
    let all = export(&b);
    // What it missed (from the first export's own audit.export event on), once, in order.
    receive_exactly(&mut rx, &all[first.len()..]).await;
    // Nothing twice: the next message is the second export's audit.export, a new event.
    let (_, next) = rx.next_within(DEADLINE).await.expect("the next event");
    assert_eq!(seq_of(&next), all.len() as i64 + 1, "{next}");
    assert!(
        msg_of(&next).contains("\"action\":\"audit.export\""),
        "{next}"
    );

    let metrics = b.metrics().await;
    assert!(
        metrics.contains("portcullis_siem_connected 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_siem_forwarded_total "),
        "{metrics}"
    );
}

fn tls_collector(dir: &Path) -> Kind {
    let files = portcullis_net::ensure_dev_pki(dir, &["127.0.0.1".into()]).unwrap();
    let (certs, key) = portcullis_net::load_certified_key(&files.cert, &files.key).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(
        portcullis_net::crypto_provider(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    Kind::Tls(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_gets_every_event_once_in_order_across_a_restart_on_sqlite() {
    every_event_once_in_order_across_a_restart(None, Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_gets_every_event_once_in_order_across_a_restart_on_postgresql() {
    let db = TestDb::postgres().await;
    every_event_once_in_order_across_a_restart(Some(db.url()), Kind::Tcp).await;
}

/// The collector's certificate is from a test CA (rcgen, through portcullis-net's development
/// PKI) that only `ca_file` makes trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_gets_every_event_once_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    let kind = tls_collector(&conf.path().join("tls"));
    let mut rx = Receiver::start(kind).await;
    let ca = conf.path().join("tls/ca.pem");
    let config = write_config(conf.path(), &rx.url(), "json", Some(&ca));
    let b = Broker::start(data.path(), None, &["--config", &config]);
    admin_on(
        &b.data,
        None,
        &["admin", "user", "add", "ada", "--role", "auditor"],
    );
    failed_login(&b, "ada").await;
    settle(&b, "user:ada");
    let first = export(&b);
    receive_exactly(&mut rx, &first).await;
    rx.stop();
    admin_on(
        &b.data,
        None,
        &["admin", "user", "add", "kim", "--role", "supervisor"],
    );
    settle(&b, "user:kim");
    rx.restart().await;
    let all = export(&b);
    receive_exactly(&mut rx, &all[first.len()..]).await;
    let (_, next) = rx.next_within(DEADLINE).await.expect("the next event");
    assert_eq!(seq_of(&next), all.len() as i64 + 1, "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_cef_reach_the_collector() {
    let data = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    let mut rx = Receiver::start(Kind::Udp).await;
    let config = write_config(conf.path(), &rx.url(), "cef", None);
    let b = Broker::start(data.path(), None, &["--config", &config]);
    failed_login(&b, "nobody").await;
    let events = export(&b);
    let fail: serde_json::Value = events
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["action"] == "login.fail")
        .expect("a login.fail event");
    let seq = fail["seq"].as_i64().unwrap();
    loop {
        let (_, msg) = rx.next_within(DEADLINE).await.expect("login.fail by UDP");
        if seq_of(&msg) != seq {
            continue;
        }
        // authpriv (10) x 8 + notice (5) = 85; CEF severity 4 for a notice.
        assert!(msg.starts_with("<85>1 "), "{msg}");
        let cef = msg_of(&msg);
        assert!(cef.starts_with("CEF:0|Portcullis|Portcullis|"), "{cef}");
        assert!(cef.contains("|login.fail|login.fail|4|"), "{cef}");
        assert!(cef.contains(&format!(" cn1Label=seq cn1={seq} ")), "{cef}");
        assert!(cef.contains(" act=login.fail "), "{cef}");
        break;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_syslog_setting_stops_serve_with_the_key_named() {
    let data = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    for (server, ca, want) in [
        (
            "syslog://h:514",
            None,
            "syslog.server: 'syslog://h:514' has the scheme 'syslog'",
        ),
        ("tcp://h", None, "syslog.server: 'tcp://h' has no port"),
        (
            "tcp+tls://127.0.0.1:6514",
            Some(conf.path().join("missing.pem")),
            "syslog.ca_file: cannot read",
        ),
    ] {
        let config = write_config(conf.path(), server, "json", ca.as_deref());
        let out = Command::new(portcullis_bin())
            .args(["--data-dir"])
            .arg(data.path())
            .args(["--config", &config, "serve", "--web-listen", "127.0.0.1:0"])
            .args(["--relay-listen", "127.0.0.1:0"])
            .env_remove("PORTCULLIS_DATABASE_URL")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{server}: {err}");
    }
}

async fn tail_prints_export_lines_and_follows(db: Option<&str>) {
    let data = tempfile::tempdir().unwrap();
    let b = Broker::start(data.path(), db, &[]);
    for name in ["ada", "bo", "cy"] {
        admin_on(
            &b.data,
            db,
            &["admin", "user", "add", name, "--role", "auditor"],
        );
    }
    settle(&b, "user:cy");
    let all = export(&b);
    let from = 3;
    let tail = admin_on(
        &b.data,
        db,
        &[
            "audit",
            "tail",
            "--format",
            "jsonl",
            "--from-seq",
            &from.to_string(),
            "--no-follow",
        ],
    );
    let tail: Vec<&str> = tail.lines().collect();
    // The export's lines from seq 3 on, plus the audit.export event of the export itself.
    let want: Vec<&str> = all[(from - 1) as usize..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(&tail[..want.len()], &want[..]);
    assert_eq!(tail.len(), want.len() + 1);
    assert!(tail[want.len()].contains("\"action\":\"audit.export\""));

    // Following: the last 10 events, then a new one as it is committed. The tail starts once
    // `before` events and that export's own audit.export exist, and before the export after its
    // ten lines, so its ten end in between.
    let before = export(&b).len() as i64;
    let mut cmd = Command::new(portcullis_bin());
    cmd.arg("--data-dir").arg(&b.data);
    match db {
        Some(url) => cmd.env("PORTCULLIS_DATABASE_URL", url),
        None => cmd.env_remove("PORTCULLIS_DATABASE_URL"),
    };
    let mut child = Reaped(
        cmd.args(["audit", "tail", "--format", "jsonl"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let shown: Vec<i64> = (0..10)
        .map(|_| {
            let line = rx.recv_timeout(DEADLINE).expect("the last events");
            serde_json::from_str::<serde_json::Value>(&line).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let after = export(&b).len() as i64;
    let start: i64 = shown[0];
    assert_eq!(shown, (start..start + 10).collect::<Vec<_>>());
    assert!(
        (before + 1..=after).contains(&shown[9]),
        "{shown:?}, {before}..{after}"
    );
    admin_on(
        &b.data,
        db,
        &["admin", "user", "add", "dee", "--role", "auditor"],
    );
    let new = loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("the new event while following");
        if line.contains("\"target\":\"user:dee\"") {
            break line;
        }
    };
    let exported = export(&b);
    assert!(exported.contains(&new), "{new}");
    // SIGTERM ends it with success.
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(child.0.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_export_lines_and_follows_on_sqlite() {
    tail_prints_export_lines_and_follows(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_export_lines_and_follows_on_postgresql() {
    let db = TestDb::postgres().await;
    tail_prints_export_lines_and_follows(Some(db.url())).await;
}
