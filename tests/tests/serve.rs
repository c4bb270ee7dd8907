//! `portcullis serve` through the real binary and a real HTTPS client: development TLS, the
//! one-time bootstrap of the first admin, MFA login over the wire, and a clean stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_auth::totp::TotpSecret;
use portcullis_testkit::portcullis_bin;
use serde_json::{Value, json};

const PASSWORD: &str = "first keeper of plant two";

struct Served {
    child: Child,
    url: String,
    bootstrap: Option<String>,
}

/// A failing test must not leave a broker running.
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on a free port and reads its first lines.
#[allow(clippy::zombie_processes)] // the child is waited for by `Served`'s Drop
fn start(data: &std::path::Path) -> Served {
    let mut child = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(data)
        .args([
            "serve",
            "--web-listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ])
        .env_remove("PORTCULLIS_DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut bootstrap = None;
    loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("bootstrap: open ") {
            let code = rest
                .split("code=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            bootstrap = Some(code.to_owned());
        }
        if let Some(rest) = line.strip_prefix("web: ") {
            let url = rest.split_whitespace().next().unwrap().to_owned();
            // Keep reading so the broker never writes into a full or closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Served {
                child,
                url,
                bootstrap,
            };
        }
    }
}

fn stop(mut s: Served) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    s.child.wait().unwrap()
}

fn client(data: &std::path::Path) -> reqwest::Client {
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .https_only(true)
        .build()
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
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

#[tokio::test]
async fn serve_bootstraps_the_first_admin_once_over_https_and_stops_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = start(&data);
    let code = served
        .bootstrap
        .clone()
        .expect("a fresh data dir prints a bootstrap link");
    let base = served.url.clone();
    for (file, mode) in [
        ("tls/ca.pem", 0o644),
        ("tls/server.key", 0o600),
        ("keys/totp.key", 0o600),
    ] {
        let m = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{file}");
    }
    let c = client(&data);
    let health = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        health.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(
        c.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Enroll the bootstrap admin with the printed code, then log in with password and TOTP.
    let (s, body) = post(
        &c,
        &format!("{base}/api/v1/enroll"),
        json!({ "code": code, "password": PASSWORD }),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let secret = TotpSecret::from_base32(body["secret"].as_str().unwrap()).unwrap();
    let (s, _) = post(
        &c,
        &format!("{base}/api/v1/enroll/confirm"),
        json!({ "code": code, "totp": secret.code_at(now()) }),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = post(
        &c,
        &format!("{base}/api/v1/enroll"),
        json!({ "code": code, "password": PASSWORD }),
        None,
    )
    .await;
    assert_eq!(s, 404, "the bootstrap code works once");
    let (_, login) = post(
        &c,
        &format!("{base}/api/v1/auth/login"),
        json!({ "username": "admin", "password": PASSWORD }),
        None,
    )
    .await;
    // Browsers send `Origin`: the broker's own (the address it bound, here a port picked by
    // the system) is accepted, a foreign one refused.
    for (origin, refused) in [(base.as_str(), false), ("https://evil.example", true)] {
        let r = c
            .post(format!("{base}/api/v1/auth/login"))
            .header("origin", origin)
            .json(&json!({ "username": "admin", "password": "not the password at all" }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status() == 403,
            refused,
            "Origin {origin}: {}",
            r.status()
        );
    }
    // The confirm used the current step; the next code arrives with the next step.
    let wait = 30 - now() % 30;
    tokio::time::sleep(std::time::Duration::from_secs(wait + 1)).await;
    let (s, session) = post(
        &c,
        &format!("{base}/api/v1/auth/mfa"),
        json!({ "mfa_token": login["mfa_token"], "totp": secret.code_at(now()) }),
        None,
    )
    .await;
    assert_eq!(s, 200, "{session}");
    let token = session["session_token"].as_str().unwrap();
    let (s, _) = post(
        &c,
        &format!("{base}/api/v1/admin/orgs"),
        json!({ "name": "acme" }),
        Some(token),
    )
    .await;
    assert_eq!(s, 201);
    // A client that does not trust the development CA is refused by TLS.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(
        stranger
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );

    drop((c, stranger));
    let status = stop(served);
    assert!(status.success(), "SIGTERM ends serve cleanly: {status}");
    // A second start on the same data dir prints no bootstrap link and reuses the CA.
    let ca_before = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let again = start(&data);
    assert!(again.bootstrap.is_none());
    assert_eq!(std::fs::read(data.join("tls/ca.pem")).unwrap(), ca_before);
    assert!(stop(again).success());

    let export = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "export", "--format", "jsonl"])
        .output()
        .unwrap();
    let actions: Vec<String> = String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for a in [
        "user.add",
        "service.start",
        "user.enroll",
        "login.ok",
        "org.add",
        "service.stop",
    ] {
        assert!(actions.contains(&a.to_owned()), "{a}: {actions:?}");
    }
    let verify = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "verify"])
        .status()
        .unwrap();
    assert!(verify.success());
}
