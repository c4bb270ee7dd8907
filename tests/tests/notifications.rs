//! Issue 15, points 1 to 3, through a real `portcullis serve`: notices reach real receivers the
//! test starts (aiosmtpd with STARTTLS required, an HTTPS webhook receiver that checks the HMAC
//! signature), an unreachable receiver never fails the action and is retried where admins see
//! it, and a notice committed before a `kill -9` is delivered after the restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, Plant, Reaped, admin_on};
use serde_json::{Value, json};

const SECRET: &str = "a webhook secret of some length";

/// A receiver script (tests/notify/receivers.py) on a free loopback port, and what it got.
struct Receiver {
    _child: Reaped,
    out: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("notify/receivers.py")
}

impl Receiver {
    /// `kind` is `smtp` or `webhook`; `pki` holds ca.pem, server.pem, server.key.
    fn start(kind: &str, port: u16, dir: &Path, pki: &Path) -> Receiver {
        let out = dir.join(format!("{kind}-received.jsonl"));
        let mut cmd = Command::new("python3");
        cmd.arg(script())
            .arg(kind)
            .arg(port.to_string())
            .arg(&out)
            .arg(pki.join("server.pem"))
            .arg(pki.join("server.key"));
        if kind == "webhook" {
            cmd.arg(dir.join("webhook.secret"));
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the {kind} receiver did not start (the SMTP one needs `pip install aiosmtpd`, which .ci/run does)"
        );
        Receiver {
            _child: Reaped(child),
            out,
        }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (a deadline, polling an outside process's file) for a message `pick` accepts.
    async fn wait_for(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self.received().into_iter().find(|m| pick(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 30 s; received: {:#?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A CA and a certificate for 127.0.0.1, made the way `serve` makes its development PKI.
fn pki(dir: &Path) -> PathBuf {
    let tls = dir.join("receiver-tls");
    portcullis_net::devca::ensure_dev_pki(&tls, &[]).unwrap();
    tls
}

/// The config file: SMTP and one webhook on loopback, retries after 1 s.
fn config(dir: &Path, pki: &Path, smtp_port: u16, hook_port: u16) -> PathBuf {
    std::fs::write(dir.join("webhook.secret"), format!("{SECRET}\n")).unwrap();
    let path = dir.join("portcullis.toml");
    let ca = pki.join("ca.pem");
    std::fs::write(
        &path,
        format!(
            r#"
[smtp]
server = "127.0.0.1:{smtp_port}"
from = "portcullis@plant.example"
tls = "starttls"
ca_file = "{ca}"

[[webhook]]
url = "https://127.0.0.1:{hook_port}/portcullis"
secret_file = "{secret}"
events = ["request.create", "request.approve", "alert.*"]
ca_file = "{ca}"

[notifications]
retry_first_secs = 1
retry_max_secs = 2
attempts = 100
"#,
            ca = ca.display(),
            secret = dir.join("webhook.secret").display(),
        ),
    )
    .unwrap();
    path
}

/// One test's receivers-to-be and config file: a CA, two free ports, `portcullis.toml`.
struct Setup {
    dir: tempfile::TempDir,
    pki: PathBuf,
    smtp_port: u16,
    hook_port: u16,
    cfg: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let (smtp_port, hook_port) = (free_port(), free_port());
        let cfg = config(dir.path(), &pki, smtp_port, hook_port);
        Setup {
            dir,
            pki,
            smtp_port,
            hook_port,
            cfg,
        }
    }

    fn smtp(&self) -> Receiver {
        Receiver::start("smtp", self.smtp_port, self.dir.path(), &self.pki)
    }

    fn hook(&self) -> Receiver {
        Receiver::start("webhook", self.hook_port, self.dir.path(), &self.pki)
    }

    /// The plant of `common` (sam, vera, plc-7 on 502), its broker reading the config file.
    async fn plant(&self) -> Plant {
        Plant::new(&[502], &["--config", self.cfg.to_str().unwrap()]).await
    }
}

fn set_contact(b: &Broker, user: &str, args: &[&str]) -> String {
    let mut all = vec!["admin", "user", "set", user];
    all.extend(args);
    admin_on(&b.data, b.db.as_deref(), &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_hear_of_requests_and_decisions_by_email_and_webhook() {
    let setup = Setup::new();
    let smtp = setup.smtp();
    let hook = setup.hook();
    let plant = setup.plant().await;
    let b = &plant.broker;
    let out = set_contact(b, "sam", &["--email", "sam@plant.example"]);
    assert!(out.contains("sam@plant.example"), "{out}");
    set_contact(
        b,
        "vera",
        &[
            "--email",
            "vera@acme.example",
            "--time-zone",
            "Europe/Berlin",
        ],
    );

    // A new request: the supervisor gets an e-mail with the request's link, the hook a post.
    let id = plant.vera.request("plc-7", "502", "+1h");
    let mail = smtp
        .wait_for("new-request e-mail", |m| {
            m["subject"]
                .as_str()
                .unwrap()
                .contains(&format!("Request #{id}:"))
        })
        .await;
    assert_eq!(mail["rcpt_tos"], json!(["sam@plant.example"]));
    assert_eq!(mail["mail_from"], "portcullis@plant.example");
    assert_eq!(mail["tls"], true, "STARTTLS was required and used");
    let body = mail["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("{}/requests/{id}", b.base)),
        "{body}"
    );
    assert!(
        body.contains("vera of acme asks for access to plc-7"),
        "{body}"
    );
    assert!(!body.contains("token"), "links only, never secrets: {body}");
    let post = hook
        .wait_for("request.create post", |m| m["event"] == "request.create")
        .await;
    assert_eq!(post["valid"], true, "the HMAC signature checks: {post}");
    assert_eq!(post["body"]["grant_id"], id);
    assert_eq!(post["body"]["link"], format!("{}/requests/{id}", b.base));
    let seq = post["body"]["event"]["seq"].as_i64().unwrap();
    let logged = b.audit("request.create");
    assert_eq!(
        logged.last().unwrap()["seq"],
        seq,
        "the post names the audit event"
    );

    // The decision reaches the vendor, in her own time zone.
    b.approve(&plant.sam, id).await;
    let mail = smtp
        .wait_for("decision e-mail", |m| {
            m["rcpt_tos"] == json!(["vera@acme.example"])
        })
        .await;
    let subject = mail["subject"].as_str().unwrap();
    assert!(
        subject.contains(&format!("Request #{id} for plc-7 was approved")),
        "{subject}"
    );
    let body = mail["body"].as_str().unwrap();
    assert!(
        body.contains("Europe/Berlin") && body.contains("CET"),
        "{body}"
    );
    hook.wait_for("request.approve post", |m| m["event"] == "request.approve")
        .await;

    // A denial carries its reason; the hook does not subscribe to request.deny.
    let denied = plant.vera.request("plc-7", "502", "+1h");
    let (s, body) = b
        .post(
            &format!("/api/v1/requests/{denied}/deny"),
            json!({ "reason": "not during the night shift" }),
            Some(&plant.sam),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let mail = smtp
        .wait_for("denial e-mail", |m| {
            m["subject"]
                .as_str()
                .unwrap()
                .contains(&format!("Request #{denied} for plc-7 was denied"))
        })
        .await;
    assert!(
        mail["body"]
            .as_str()
            .unwrap()
            .contains("not during the night shift")
    );

    // A revoke reaches the vendor.
    b.revoke(&plant.sam, id).await;
    smtp.wait_for("revoke e-mail", |m| {
        m["subject"].as_str().unwrap().contains("was revoked")
    })
    .await;
    assert!(
        hook.received()
            .iter()
            .all(|m| m["event"] != "request.deny" && m["event"] != "grant.revoke"),
        "a hook gets only the events it subscribed to"
    );
    assert!(hook.received().iter().all(|m| m["valid"] == true));
    // Everyone else heard nothing: no e-mail went to an address not concerned.
    for m in smtp.received() {
        let to = m["rcpt_tos"][0].as_str().unwrap().to_owned();
        assert!(
            to == "sam@plant.example" || to == "vera@acme.example",
            "{m}"
        );
    }
    let metrics = b.metrics().await;
    let sent: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("portcullis_notifications_delivered_total{channel=\"email\"} ")
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent >= 4, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_approval_is_asked_of_the_other_supervisors() {
    let setup = Setup::new();
    let smtp = setup.smtp();
    let plant = setup.plant().await;
    let b = &plant.broker;
    admin_on(
        &b.data,
        None,
        &["admin", "device", "set-policy", "plc-7", "--approvals", "2"],
    );
    let _sue = b.enroll("sue", "supervisor", None).await;
    set_contact(b, "sam", &["--email", "sam@plant.example"]);
    set_contact(b, "sue", &["--email", "sue@plant.example"]);
    let id = plant.vera.request("plc-7", "502", "+1h");
    b.approve(&plant.sam, id).await;
    let mail = smtp
        .wait_for("second-approval e-mail", |m| {
            m["subject"]
                .as_str()
                .unwrap()
                .contains("a second approval is needed")
        })
        .await;
    assert_eq!(
        mail["rcpt_tos"],
        json!(["sue@plant.example"]),
        "not to sam, who approved first"
    );
    let asked: Vec<_> = smtp
        .received()
        .into_iter()
        .filter(|m| m["subject"].as_str().unwrap().contains("second approval"))
        .collect();
    assert_eq!(asked.len(), 1, "{asked:#?}");
}

/// An admin's API session, for the outbox list.
async fn admin_session(b: &Broker) -> String {
    let mut ada = b.enroll("ada", "admin", None).await;
    b.login(&mut ada).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_never_fails_the_action_and_is_retried_visibly() {
    // Nothing listens on either port yet.
    let setup = Setup::new();
    let plant = setup.plant().await;
    let b = &plant.broker;
    set_contact(b, "sam", &["--email", "sam@plant.example"]);
    let ada = admin_session(b).await;

    // The request is taken at once, whatever the mail server does.
    let id = plant.vera.request("plc-7", "502", "+1h");
    let (s, r) = b.get(&format!("/api/v1/requests/{id}"), &plant.sam).await;
    assert_eq!(s, 200, "{r}");

    // Both deliveries fail, are retried, and say why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let (s, list) = b.get("/api/v1/admin/outbox?state=pending", &ada).await;
        assert_eq!(s, 200, "{list}");
        let tried = list["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["action"] == "request.create" && d["attempts"].as_i64().unwrap() >= 2)
            .count();
        if tried == 2 {
            break list;
        }
        assert!(Instant::now() < deadline, "not retried: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        list["counts"]["retrying"].as_i64().unwrap() >= 2,
        "{list:#}"
    );
    for d in list["deliveries"].as_array().unwrap() {
        assert!(!d["last_error"].as_str().unwrap().is_empty(), "{d}");
    }
    let metrics = b.metrics().await;
    assert!(
        !metrics.contains("portcullis_notification_tries_failed_total 0\n"),
        "{metrics}"
    );
    // (Alerts go to the hook too: a start, the enrolments; they retry alike.)
    let retrying: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_outbox_deliveries{state=\"retrying\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(retrying >= 2, "{metrics}");

    // The receivers come up: the next retries deliver, nothing was dropped.
    let smtp = setup.smtp();
    let hook = setup.hook();
    smtp.wait_for("the retried e-mail", |m| {
        m["subject"]
            .as_str()
            .unwrap()
            .contains(&format!("Request #{id}:"))
    })
    .await;
    hook.wait_for("the retried post", |m| {
        m["event"] == "request.create" && m["valid"] == true
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = b.get("/api/v1/admin/outbox", &ada).await;
        if list["counts"]["pending"] == 0 && list["counts"]["failed"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{list:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(smtp.received().len(), 1, "delivered once, not once per try");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_committed_before_kill_9_is_delivered_after_the_restart() {
    let setup = Setup::new();
    let mut plant = setup.plant().await;
    set_contact(&plant.broker, "sam", &["--email", "sam@plant.example"]);
    // Committed while no mail server is up: the notice waits in the outbox.
    let id = plant.vera.request("plc-7", "502", "+1h");
    plant.broker.kill_and_restart();
    let smtp = setup.smtp();
    smtp.wait_for("the e-mail of before the crash", |m| {
        m["subject"]
            .as_str()
            .unwrap()
            .contains(&format!("Request #{id}:"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_who_ask_hear_of_sessions_and_a_lockout_reaches_its_owner_and_the_admins() {
    let setup = Setup::new();
    let smtp = setup.smtp();
    let plant = setup.plant().await;
    let b = &plant.broker;
    let _ada = b.enroll("ada", "admin", None).await;
    let _sue = b.enroll("sue", "supervisor", None).await;
    set_contact(
        b,
        "sam",
        &["--email", "sam@plant.example", "--notify-sessions", "on"],
    );
    set_contact(b, "sue", &["--email", "sue@plant.example"]);
    set_contact(b, "ada", &["--email", "ada@plant.example"]);
    set_contact(b, "vera", &["--email", "vera@acme.example"]);

    let grant = plant.grant("502", "+1h").await;
    let tunnel = plant.vera.connect(grant, &[], 1).await;
    let started = smtp
        .wait_for("session-start e-mail", |m| {
            m["subject"].as_str().unwrap().contains("Session started")
        })
        .await;
    assert_eq!(
        started["rcpt_tos"],
        json!(["sam@plant.example"]),
        "only the supervisor who asked"
    );
    b.revoke(&plant.sam, grant).await;
    let (_, _) = tunnel.exit().await;
    let ended = smtp
        .wait_for("session-end e-mail", |m| {
            m["subject"].as_str().unwrap().contains("Session ended")
        })
        .await;
    assert_eq!(ended["rcpt_tos"], json!(["sam@plant.example"]));
    smtp.wait_for("revoke e-mail", |m| {
        m["rcpt_tos"] == json!(["vera@acme.example"])
            && m["subject"].as_str().unwrap().contains("revoked")
    })
    .await;

    // Five wrong passwords lock vera: she and the admin hear of it, the supervisors do not.
    for i in 0..5 {
        let (s, _) = b
            .post(
                "/api/v1/auth/login",
                json!({ "username": "vera", "password": format!("wrong guess number {i}") }),
                None,
            )
            .await;
        assert_eq!(s, 401);
    }
    let to_vera = smtp
        .wait_for("lockout e-mail to vera", |m| {
            m["subject"].as_str().unwrap().contains("is locked")
                && m["rcpt_tos"] == json!(["vera@acme.example"])
        })
        .await;
    assert!(
        to_vera["body"]
            .as_str()
            .unwrap()
            .contains("5 failed logins"),
        "{to_vera}"
    );
    smtp.wait_for("lockout e-mail to ada", |m| {
        m["subject"].as_str().unwrap().contains("is locked")
            && m["rcpt_tos"] == json!(["ada@plant.example"])
    })
    .await;
    let locks: Vec<_> = smtp
        .received()
        .into_iter()
        .filter(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with("[Portcullis] Account 'vera' is locked")
        })
        .collect();
    assert_eq!(locks.len(), 2, "{locks:#?}");
    // The alert watcher's alerts reach the admin too (and nobody else).
    let alert = smtp
        .wait_for("lockout alert to ada", |m| {
            m["rcpt_tos"] == json!(["ada@plant.example"])
                && m["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("[Portcullis] Alert:")
                && m["body"].as_str().unwrap().contains("alert.lockout")
        })
        .await;
    assert!(
        alert["body"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/audit?action=alert.lockout", b.base)),
        "{alert}"
    );
    for m in smtp.received() {
        if m["subject"].as_str().unwrap().contains("Alert:") {
            assert_eq!(m["rcpt_tos"], json!(["ada@plant.example"]), "{m}");
        }
    }
}
