//! The vendor's commands through the real binary: `login` (password and code on stdin),
//! `devices`, `request`, `grants`, against `portcullis serve`; a supervisor approves over the
//! API with a step-up, and `grants` shows the grant active with its time left. Bad input and a
//! missing or expired session give plain messages, before any network call where possible.
//!
//! `connect` end to end (through the relay to a device) lives with the relay's tests; here it is
//! only checked up to the broker refusing a token for a grant that is not active yet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Authenticator, Reaped};
use portcullis_testkit::portcullis_bin;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple on line 3";

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

fn admin(data: &Path, args: &[&str]) -> String {
    let out = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(data)
        .arg("admin")
        .args(args)
        .env_remove("PORTCULLIS_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn add_user(data: &Path, name: &str, role: &str, org: Option<&str>) -> String {
    let mut args = vec!["user", "add", name, "--role", role, "--format", "json"];
    if let Some(org) = org {
        args.extend(["--org", org]);
    }
    let v: Value = serde_json::from_str(&admin(data, &args)).unwrap();
    v["enrollment_code"].as_str().unwrap().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[allow(clippy::zombie_processes)] // reaped by `Reaped`'s Drop
fn start_broker(data: &Path) -> (Reaped, String) {
    let mut child = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--web-listen", "127.0.0.1:0"])
        .args(["--relay-listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("PORTCULLIS_DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Reaped(child);
    loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("web: ") {
            let base = rest.split_whitespace().next().unwrap().to_owned();
            // Keep reading so the broker never writes into a full or closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, base);
        }
    }
}

fn https(data: &Path) -> reqwest::Client {
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .https_only(true)
        .build()
        .unwrap()
}

async fn post(c: &reqwest::Client, url: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let mut req = c.post(url).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Enrolls with the one-time code and returns the user's authenticator.
async fn enroll(c: &reqwest::Client, base: &str, code: &str) -> Authenticator {
    let (s, body) = post(
        c,
        &format!("{base}/api/v1/enroll"),
        json!({ "code": code, "password": PASSWORD }),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let mut app = Authenticator::from_base32(body["secret"].as_str().unwrap());
    let totp = app.next_code().await;
    let (s, body) = post(
        c,
        &format!("{base}/api/v1/enroll/confirm"),
        json!({ "code": code, "totp": totp }),
        None,
    )
    .await;
    assert_eq!(s, 204, "{body}");
    app
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
    admin(&data, &["org", "add", "acme"]);
    let vera_code = add_user(&data, "vera", "vendor", Some("acme"));
    let sam_code = add_user(&data, "sam", "supervisor", None);
    admin(
        &data,
        &[
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
    let (_broker, base) = start_broker(&data);
    let c = https(&data);
    let mut vera_app = enroll(&c, &base, &vera_code).await;
    let mut sam_app = enroll(&c, &base, &sam_code).await;

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
    let code = vera_app.next_code().await;
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
    let (s, login) = post(
        &c,
        &format!("{base}/api/v1/auth/login"),
        json!({ "username": "sam", "password": PASSWORD }),
        None,
    )
    .await;
    assert_eq!(s, 200, "{login}");
    let totp = sam_app.next_code().await;
    let (s, session) = post(
        &c,
        &format!("{base}/api/v1/auth/mfa"),
        json!({ "mfa_token": login["mfa_token"], "totp": totp }),
        None,
    )
    .await;
    assert_eq!(s, 200, "{session}");
    let sam = session["session_token"].as_str().unwrap().to_owned();
    let totp = sam_app.next_code().await;
    let (s, body) = post(
        &c,
        &format!("{base}/api/v1/auth/step-up"),
        json!({ "totp": totp }),
        Some(&sam),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = post(
        &c,
        &format!("{base}/api/v1/requests/{id}/approve"),
        json!({}),
        Some(&sam),
    )
    .await;
    assert_eq!(s, 200, "{body}");

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
