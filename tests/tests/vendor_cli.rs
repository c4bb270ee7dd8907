//! The vendor's commands through the real binary: `login` (password and code on stdin),
//! `devices`, `request`, `grants`, against `portcullis serve`; a supervisor approves over the
//! API with a step-up, and `grants` shows the grant active with its time left. Bad input and a
//! missing or expired session give plain messages, before any network call where possible.
//!
//! `connect` end to end (through the relay to a device) lives with the relay's tests; here it is
//! only checked up to the broker refusing a token for a grant that is not active yet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Broker, PASSWORD, admin};
use portcullis_testkit::portcullis_bin;
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs a vendor command with `cfg` as its config directory and `stdin` as its input.
fn vendor(cfg: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(portcullis_bin())
        .args(args)
        .env("PORTCULLIS_CONFIG_DIR", cfg)
        .env_remove("PORTCULLIS_DATA_DIR")
        .env_remove("PORTCULLIS_DATABASE_URL")
        .env_remove("PORTCULLIS_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs and insists on success.
fn vendor_ok(cfg: &Path, args: &[&str]) -> String {
    let r = vendor(cfg, args, "");
    assert_eq!(r.code, 0, "{args:?} failed: {}", r.stderr);
    r.stdout
}

/// Runs and insists on failure (exit 1) with `says` on stderr.
fn vendor_fails(cfg: &Path, args: &[&str], says: &str) -> String {
    let r = vendor(cfg, args, "");
    assert_eq!(r.code, 1, "{args:?} should fail; stdout: {}", r.stdout);
    assert!(
        r.stderr.contains(says),
        "{args:?}: expected {says:?} in: {}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    r.stderr
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The table row whose first cell is `id`.
fn row<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row {id} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vendor_logs_in_requests_and_sees_the_grant_go_active_after_approval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    admin(&data, &["admin", "org", "add", "acme"]);
    admin(
        &data,
        &[
            "admin",
            "device",
            "add",
            "plc-7",
            "--address",
            "10.1.2.7",
            "--ports",
            "502,80",
            "--orgs",
            "acme",
            "--type",
            "PLC",
            "--site",
            "Plant 2",
        ],
    );
    let broker = Broker::start(&data, None, &[]);
    let base = broker.base.clone();
    let mut vera = broker.enroll("vera", "vendor", Some("acme")).await;
    let mut sam = broker.enroll("sam", "supervisor", None).await;

    // A config directory that does not exist yet: login creates it, private.
    let cfg = dir.path().join("home/.config/portcullis");
    let ca = data.join("tls/ca.pem");
    let ca = ca.to_str().unwrap();

    // A wrong password fails with the broker's generic sentence and stores nothing.
    let r = vendor(
        &cfg,
        &["login", &base, "--username", "vera", "--ca", ca],
        "not the password of vera at all\n000000\n",
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("wrong username, password or code"),
        "{}",
        r.stderr
    );
    assert!(!cfg.join("session.json").exists());

    // Username, password and code as lines on stdin (no --username).
    let code = vera.auth.next_code().await;
    let r = vendor(
        &cfg,
        &["login", &format!("{base}/"), "--ca", ca],
        &format!("vera\n{PASSWORD}\n{code}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with(&format!("logged in to {base} as vera (vendor)")),
        "{}",
        r.stdout
    );
    let session_file = cfg.join("session.json");
    assert_eq!(mode(&session_file), 0o600);
    assert_eq!(mode(&cfg), 0o700);
    let stored: Value = serde_json::from_slice(&std::fs::read(&session_file).unwrap()).unwrap();
    assert_eq!(stored["broker_url"], base.as_str());
    assert_eq!(
        stored["ca_pem"].as_str().unwrap(),
        std::fs::read_to_string(ca).unwrap(),
        "the CA is kept with the session"
    );

    // What vera may request: a table, and JSON.
    let devices = vendor_ok(&cfg, &["devices"]);
    assert!(devices.starts_with("DEVICE"), "{devices}");
    let plc = row(&devices, "plc-7");
    assert!(plc.contains("PLC") && plc.contains("80,502"), "{plc}");
    assert!(!devices.contains("10.1.2.7"), "vendors never see addresses");
    let json_devices: Value =
        serde_json::from_str(&vendor_ok(&cfg, &["devices", "--format", "json"])).unwrap();
    assert_eq!(json_devices[0]["name"], "plc-7");
    assert_eq!(json_devices[0]["ports"], json!([80, 502]));

    // A request from now for an hour.
    let out = vendor_ok(
        &cfg,
        &[
            "request",
            "--device",
            "plc-7",
            "--port",
            "502",
            "--from",
            "now",
            "--until",
            "+1h",
            "--reason",
            "firmware update",
            "--ticket",
            "CHG-42",
        ],
    );
    let id = out
        .strip_prefix("request ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("request output: {out}"))
        .to_owned();
    assert!(
        out.starts_with(&format!("request {id}: requested")),
        "{out}"
    );
    let grants = vendor_ok(&cfg, &["grants"]);
    assert!(grants.starts_with("ID"), "{grants}");
    let line = row(&grants, &id);
    assert!(
        line.contains("plc-7") && line.contains("502") && line.contains("requested"),
        "{line}"
    );

    // Not active yet: connect gets no token, and says why.
    let r = vendor(&cfg, &["connect", &id], "");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cannot get a relay token")
            && r.stderr.contains(&format!("grant {id} is requested")),
        "{}",
        r.stderr
    );

    // Sam approves over the API, with a fresh code (step-up) first.
    let sam_session = broker.login(&mut sam).await;
    let totp = sam.auth.next_code().await;
    let (s, body) = broker
        .post(
            "/api/v1/auth/step-up",
            json!({ "totp": totp }),
            Some(&sam_session),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    broker.approve(&sam_session, id.parse().unwrap()).await;

    // Active now, with the time left.
    let grants = vendor_ok(&cfg, &["grants"]);
    let line = row(&grants, &id);
    assert!(line.contains("active") && line.contains("min"), "{line}");
    let json_grants: Value =
        serde_json::from_str(&vendor_ok(&cfg, &["grants", "--format", "json"])).unwrap();
    let g = &json_grants[0];
    assert_eq!(g["id"].to_string(), id);
    assert_eq!(g["state"], "active");
    assert_eq!(g["ticket"], "CHG-42");
    let left = g["seconds_left"].as_u64().unwrap();
    assert!((3000..=3600).contains(&left), "{left}");

    // A session the broker no longer knows: plain words, not a 401.
    let mut stored = stored;
    stored["session_token"] = "not-a-session-any-more".into();
    std::fs::write(&session_file, serde_json::to_vec(&stored).unwrap()).unwrap();
    assert_eq!(mode(&session_file), 0o600);
    vendor_fails(
        &cfg,
        &["grants"],
        &format!("the session expired: log in again with `portcullis login {base}`"),
    );
}

#[test]
fn without_a_login_the_commands_say_how_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    for args in [
        &["devices"][..],
        &["grants"],
        &["connect", "7"],
        &[
            "request", "--device", "plc-7", "--port", "502", "--from", "now", "--until", "+1h",
            "--reason", "r",
        ],
    ] {
        vendor_fails(
            &cfg,
            args,
            "not logged in: run `portcullis login <broker-url>` first",
        );
    }
    assert!(!cfg.exists(), "nothing is created by failing commands");
}

#[test]
fn bad_input_is_refused_in_plain_words_before_any_network_call() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let req = |from: &str, until: &str, port: &str| -> Vec<String> {
        [
            "request", "--device", "plc-7", "--port", port, "--from", from, "--until", until,
            "--reason", "r",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Not logged in either: the input is checked first.
    for (args, says) in [
        (
            req("tomorrow", "+1h", "502"),
            "--from: 'tomorrow' is not a time",
        ),
        (req("now", "+1h", "502"), "not logged in"),
        (req("now", "2h", "502"), "--until: '2h' is not a time"),
        (req("+2h", "+1h", "502"), "must be after --from"),
        (
            req("now", "+1h", "70000"),
            "--port: '70000' is not a TCP port",
        ),
        (req("now", "+1h", "502,x"), "--port: 'x' is not a TCP port"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vendor_fails(&cfg, &args, says);
    }
    vendor_fails(
        &cfg,
        &["connect", "7", "-L", "8502"],
        "-L 8502: expected [ADDR:]LOCAL_PORT:REMOTE_PORT",
    );
    vendor_fails(
        &cfg,
        &["login", "http://broker.example", "--username", "v"],
        "must start with https://",
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    vendor_fails(
        &cfg,
        &[
            "login",
            "https://127.0.0.1:1",
            "--username",
            "v",
            "--ca",
            junk.to_str().unwrap(),
        ],
        "holds no certificate",
    );
    // Stdin ends before the password: asked before anything is sent.
    vendor_fails(
        &cfg,
        &["login", "https://127.0.0.1:1", "--username", "v"],
        "standard input ended before the password",
    );
    assert!(!cfg.exists());
}
