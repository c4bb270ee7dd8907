//! The command-line contract of issue 2, through the real binary: admin changes, bad input,
//! audit verify against every kind of tampering, export, checkpoints, configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_store::{Store, StoreConfig};
use portcullis_testkit::{TestDb, portcullis_bin};
use sqlx::AssertSqlSafe;

/// One broker data directory and the binary pointed at it.
struct Broker {
    dir: tempfile::TempDir,
    database_url: Option<String>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Broker {
    fn new() -> Self {
        Broker {
            dir: tempfile::tempdir().unwrap(),
            database_url: None,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn db_path(&self) -> PathBuf {
        self.data_dir().join("portcullis.db")
    }

    fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.db_path().display()))
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(portcullis_bin());
        c.arg("--data-dir").arg(self.data_dir());
        if let Some(url) = &self.database_url {
            c.arg("--database-url").arg(url);
        }
        c.env_remove("PORTCULLIS_DATABASE_URL")
            .env_remove("PORTCULLIS_DATA_DIR")
            .env_remove("PORTCULLIS_CONFIG")
            .env_remove("PORTCULLIS_PUBLIC_URL");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        output(self.cmd().args(args).output().unwrap())
    }

    /// Runs and insists on success.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "{args:?} failed: {}", r.stderr);
        r.stdout
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.ok(&["audit", "export", "--format", "jsonl"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn mac_key(&self) -> MacKey {
        let text = std::fs::read_to_string(self.data_dir().join("keys/audit-mac.key")).unwrap();
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).unwrap();
        MacKey::new(key)
    }

    async fn store(&self) -> Store {
        Store::open_unguarded(&self.url(), StoreConfig::new(self.mac_key()))
            .await
            .unwrap()
    }

    /// Raw SQL with the append-only triggers dropped, as an attacker with the owner's rights.
    async fn tamper(&self, sql: &str) {
        let store = self.store().await;
        sqlx::raw_sql("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
    }
}

fn output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

/// A broker with an org, two users and a device: five audit events.
fn seeded() -> Broker {
    let b = Broker::new();
    b.ok(&["admin", "org", "add", "acme"]);
    b.ok(&[
        "admin", "user", "add", "vera", "--role", "vendor", "--org", "acme",
    ]);
    b.ok(&["admin", "user", "add", "sam", "--role", "supervisor"]);
    b.ok(&[
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
    ]);
    b.ok(&["admin", "user", "disable", "sam"]);
    b
}

#[test]
fn admin_flow_writes_inventory_users_and_an_audit_event_each() {
    let b = Broker::new();
    assert_eq!(
        b.ok(&["admin", "org", "add", "acme"]),
        "added organisation 'acme'\n"
    );
    let json = b.ok(&[
        "admin", "user", "add", "vera", "--role", "vendor", "--org", "acme", "--format", "json",
    ]);
    assert_eq!(json.lines().count(), 1, "one line: {json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["username"].as_str(), v["role"].as_str()),
        (Some("vera"), Some("vendor"))
    );
    let code = v["enrollment_code"].as_str().unwrap();
    assert_eq!(code.len(), 32);
    let text = b.ok(&["admin", "user", "add", "sam", "--role", "supervisor"]);
    assert!(text.contains("enrollment code: "), "{text}");
    b.ok(&[
        "admin",
        "device",
        "add",
        "plc-7",
        "--address",
        "10.1.2.7",
        "--ports",
        "502,80",
        "--type",
        "PLC",
        "--site",
        "Plant 2 / line 3",
        "--owner",
        "Line lead",
        "--vendor",
        "Acme Machines",
        "--purpose",
        "Filler control",
        "--data",
        "recipes",
        "--access",
        "Modbus/TCP",
        "--firmware",
        "V4.2",
        "--contact",
        "support@acme.example",
        "--criticality",
        "high",
        "--approvals",
        "2",
        "--max-window",
        "4h",
        "--orgs",
        "acme",
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&b.ok(&["admin", "device", "show", "plc-7", "--format", "json"]))
            .unwrap();
    assert_eq!(shown["address"], "10.1.2.7");
    assert_eq!(shown["site"], "Plant 2 / line 3");
    assert_eq!(shown["firmware"], "V4.2");
    assert_eq!(shown["criticality"], "high");
    assert_eq!(
        shown["policy"]["allowed_ports"],
        serde_json::json!([80, 502])
    );
    assert_eq!(shown["policy"]["approvals_required"], 2);
    assert_eq!(shown["policy"]["max_window"], 4 * 3600);
    assert_eq!(shown["policy"]["allowed_orgs"], serde_json::json!(["acme"]));
    let listed = b.ok(&["admin", "device", "list", "--format", "json"]);
    assert_eq!(listed.lines().count(), 1);
    let table = b.ok(&["admin", "device", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("plc-7  10.1.2.7  80,502"),
        "{table}"
    );
    b.ok(&[
        "admin",
        "device",
        "set-policy",
        "plc-7",
        "--ports",
        "502",
        "--approvals",
        "1",
    ]);
    b.ok(&["admin", "user", "disable", "sam"]);
    b.ok(&["admin", "user", "unlock", "vera"]);
    let users = b.ok(&["admin", "user", "list"]);
    assert!(
        users.contains("sam       supervisor  -     disabled"),
        "{users}"
    );

    let events = b.events();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "org.add",
            "user.add",
            "user.add",
            "device.add",
            "device.set_policy",
            "user.disable",
            "user.unlock"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["role"] == "admin" && e["source"] == "cli")
    );
    assert!(
        !events.iter().any(|e| e.to_string().contains(code)),
        "the enrollment code is never logged"
    );
    // The export itself is a privileged action and was audited (after this listing).
    assert_eq!(b.events().last().unwrap()["action"], "audit.export");
    assert_eq!(b.run(&["audit", "verify"]).code, 0);
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() {
    let b = seeded();
    let before = b.events().len();
    let cases: &[(&[&str], &str)] = &[
        (
            &["admin", "org", "add", "acme"],
            "organisation 'acme' already exists",
        ),
        (
            &["admin", "org", "add", "Bad Name"],
            "org: 'Bad Name' may use only",
        ),
        (
            &[
                "admin", "user", "add", "vera", "--role", "vendor", "--org", "acme",
            ],
            "user 'vera' already exists",
        ),
        (
            &[
                "admin", "user", "add", "otto", "--role", "vendor", "--org", "ghost",
            ],
            "organisation 'ghost' does not exist",
        ),
        (
            &["admin", "user", "add", "otto", "--role", "vendor"],
            "a vendor must belong to an organisation",
        ),
        (
            &[
                "admin", "user", "add", "otto", "--role", "auditor", "--org", "acme",
            ],
            "only vendors belong",
        ),
        (
            &["admin", "user", "disable", "ghost"],
            "user 'ghost' does not exist",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "plc-7",
                "--address",
                "10.1.2.8",
                "--ports",
                "502",
            ],
            "device 'plc-7' already exists",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8:502",
                "--ports",
                "502",
            ],
            "address: '10.1.2.8:502' is not a valid",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "not a host",
                "--ports",
                "502",
            ],
            "address:",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "0",
            ],
            "ports: 0 is not a TCP port",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "70000",
            ],
            "ports: 70000 is not a TCP port",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "ssh",
            ],
            "ports: 'ssh' is not a port number",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "22",
                "--max-window",
                "0s",
            ],
            "max-window: must be longer than zero",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "22",
                "--max-window",
                "-2h",
            ],
            "max-window:",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "22",
                "--approvals",
                "3",
            ],
            "approvals: '3' is not 1 or 2",
        ),
        (
            &[
                "admin",
                "device",
                "add",
                "d",
                "--address",
                "10.1.2.8",
                "--ports",
                "22",
                "--orgs",
                "acme,ghost",
            ],
            "organisation 'ghost' does not exist",
        ),
        (
            &["admin", "device", "show", "ghost"],
            "device 'ghost' does not exist",
        ),
        (
            &["serve", "--time-zone", "Mars/Olympus"],
            "--time-zone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            &[
                "admin",
                "device",
                "set-policy",
                "plc-7",
                "--max-window",
                "30days",
            ],
            "longer than the limit",
        ),
        (
            &["audit", "export", "--format", "csv", "--since", "yesterday"],
            "is not an RFC 3339 time",
        ),
        (
            &[
                "audit",
                "export",
                "--format",
                "csv",
                "--since",
                "2026-02-01T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            "must be later than",
        ),
    ];
    for (args, want) in cases {
        let r = b.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.lines().count(),
            1,
            "{args:?}: one line, got {:?}",
            r.stderr
        );
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains(want),
            "{args:?}: {:?}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?}: {:?}", r.stdout);
    }
    // Only the successful exports of this test were added; every refused change left no trace.
    let after = b.events();
    assert!(
        after[before..]
            .iter()
            .all(|e| e["action"] == "audit.export"),
        "{:?}",
        &after[before..]
    );
    assert_eq!(b.run(&["audit", "verify"]).code, 0);
}

#[tokio::test]
async fn database_urls_that_cannot_work_are_named_clearly() {
    let b = Broker::new();
    let cases = [
        ("mysql://u:secret@h/db", "is not a database URL"),
        ("postgres://nobody@127.0.0.1:1/x", "Connection refused"),
        (
            "postgres://postgres@127.0.0.1:5432/no_such_db_here",
            "no_such_db_here",
        ),
    ];
    for (url, want) in cases {
        let r = output(
            b.cmd()
                .args(["--database-url", url, "admin", "user", "list"])
                .output()
                .unwrap(),
        );
        assert_eq!(r.code, 1, "{url}");
        assert!(
            r.stderr.contains(want) && !r.stderr.contains("secret"),
            "{url}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    let missing = b.run(&["audit", "verify"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no database at") || missing.stderr.contains("audit MAC key"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn verify_names_the_first_bad_seq_for_each_kind_of_tampering() {
    let cases = [
        (
            "edited field",
            "UPDATE audit_events SET target = 'user:mallory' WHERE seq = 2",
            2,
        ),
        ("deleted row", "DELETE FROM audit_events WHERE seq = 3", 3),
        (
            "swapped rows",
            "UPDATE audit_events SET seq = seq + 100 WHERE seq IN (2, 4); \
             UPDATE audit_events SET seq = 4 WHERE seq = 102; UPDATE audit_events SET seq = 2 WHERE seq = 104;",
            2,
        ),
        (
            "truncated tail",
            "DELETE FROM audit_events WHERE seq >= 4",
            4,
        ),
    ];
    for (name, sql, want) in cases {
        let b = seeded();
        let cp = b.ok(&["audit", "checkpoint"]);
        assert!(cp.starts_with("signed checkpoint of seq 5"), "{cp}");
        assert_eq!(b.run(&["audit", "verify"]).code, 0, "{name}: intact before");
        b.tamper(sql).await;
        let r = b.run(&["audit", "verify"]);
        assert_eq!(r.code, 3, "{name}: {}", r.stdout);
        let first = r.stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("first bad seq: {want}:")),
            "{name}: {first}"
        );
        assert!(
            r.stdout.contains("append-only guard missing"),
            "{name}: the dropped guard is reported too"
        );
    }
}

#[tokio::test]
async fn verify_catches_a_forged_row_and_a_cut_tail_against_an_external_checkpoint() {
    let b = seeded();
    let outside = b.dir.path().join("auditor-copy.json");
    b.ok(&["audit", "checkpoint", "--out", outside.to_str().unwrap()]);
    // A row appended by someone with database access but without the MAC key: the hash chain
    // links, the MAC cannot.
    let forger = Store::open(&b.url(), StoreConfig::new(MacKey::new([1; 32])))
        .await
        .unwrap();
    forger
        .append(AuditDraft::new("mallory", ActorRole::Admin, "user.add").target("user:mallory"))
        .await
        .unwrap();
    forger.close().await;
    let r = b.run(&["audit", "verify"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.starts_with("first bad seq: 7: MAC does not match"),
        "{}",
        r.stdout
    );

    // The attacker deletes the tail and the checkpoints in the data dir; the auditor's own
    // copy still shows the log was cut.
    let b = seeded();
    b.ok(&["audit", "checkpoint", "--out", outside.to_str().unwrap()]);
    b.tamper("DELETE FROM audit_events WHERE seq > 2").await;
    std::fs::remove_dir_all(b.data_dir().join("checkpoints")).ok();
    let without = b.run(&["audit", "verify"]);
    assert!(without.stdout.contains("append-only guard missing"));
    let with = b.run(&["audit", "verify", "--checkpoint", outside.to_str().unwrap()]);
    assert_eq!(with.code, 3);
    assert!(
        with.stdout
            .starts_with("first bad seq: 3: missing: a signed checkpoint covers up to seq 5"),
        "{}",
        with.stdout
    );

    // A checkpoint file that was edited does not verify.
    let mut cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outside).unwrap()).unwrap();
    cp["seq"] = 2.into();
    std::fs::write(&outside, cp.to_string()).unwrap();
    let r = b.run(&["audit", "verify", "--checkpoint", outside.to_str().unwrap()]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains("signature does not verify"),
        "{}",
        r.stdout
    );
}

/// `serve` on this broker's data directory until it says where the web is; then SIGTERM, and
/// its exit status.
fn serve_and_stop(b: &Broker, extra: &[&str]) -> std::process::ExitStatus {
    use std::io::BufRead;
    let mut child = b
        .cmd()
        .args([
            "serve",
            "--web-listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("relay: ") {
            break;
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    lines.for_each(drop);
    child.wait().unwrap()
}

#[tokio::test]
async fn the_broker_signs_a_checkpoint_at_shutdown_so_a_cut_tail_is_caught_unasked() {
    let b = seeded();
    let dir = b.data_dir().join("checkpoints");
    // The newest checkpoint's seq, read from the file (listing events would add an export).
    let newest = || {
        let files = std::fs::read_dir(&dir).unwrap();
        let mut seqs: Vec<i64> = files
            .map(|f| {
                let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        seqs.sort();
        (seqs.len(), *seqs.last().unwrap())
    };
    assert!(serve_and_stop(&b, &["--checkpoint-every", "1h"]).success());
    let events = b.events();
    let last = events.last().unwrap();
    assert_eq!(last["action"], "service.stop", "the last event is the stop");
    assert_eq!(
        newest(),
        (1, last["seq"].as_i64().unwrap()),
        "one checkpoint, signed at shutdown, covering the stop itself"
    );
    let ok = b.ok(&["audit", "verify"]);
    assert!(
        ok.contains(&format!(
            "1 of 1 checkpoint(s) matched, the newest of seq {}",
            last["seq"]
        )),
        "{ok}"
    );
    // A second start and stop adds one more.
    assert!(serve_and_stop(&b, &["--checkpoint-every", "off"]).success());
    let (count, last) = newest();
    assert_eq!(count, 2);
    // Nobody ran `audit checkpoint`, yet cutting the last two events is caught.
    b.tamper(&format!(
        "DELETE FROM audit_events WHERE seq >= {}",
        last - 1
    ))
    .await;
    let r = b.run(&["audit", "verify"]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout.starts_with(&format!(
            "first bad seq: {}: missing: a signed checkpoint covers up to seq {last}",
            last - 1
        )),
        "{}",
        r.stdout
    );
}

#[test]
fn a_checkpoint_period_shorter_than_a_minute_is_refused_plainly() {
    let b = Broker::new();
    let r = b.run(&["serve", "--checkpoint-every", "5s"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("5s is shorter than a minute (or `off`)"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn commands_refuse_to_run_on_a_database_without_its_guards() {
    let b = seeded();
    b.tamper("SELECT 1").await;
    let r = b.run(&["admin", "org", "add", "globex"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("append-only guard is missing") && r.stderr.contains("refusing to start"),
        "{}",
        r.stderr
    );
    let store = b.store().await;
    assert!(
        store
            .list_orgs()
            .await
            .unwrap()
            .iter()
            .all(|(o, _)| o.as_str() != "globex")
    );
}

#[tokio::test]
async fn exports_keep_one_event_per_line_whatever_the_fields_hold() {
    let b = seeded();
    let store = Store::open(&b.url(), StoreConfig::new(b.mac_key()))
        .await
        .unwrap();
    let nasty = "a\nforged,line\r\n\"quoted\"\u{1b}[31m\u{0}=cmd|' /C calc'!A0";
    store
        .append(
            AuditDraft::new(nasty, ActorRole::Anonymous, "login.fail")
                .source("127.0.0.1")
                .details(serde_json::json!({ "username": nasty, "note": "\u{2028}" })),
        )
        .await
        .unwrap();
    store.close().await;
    let jsonl = b.ok(&["audit", "export", "--format", "jsonl"]);
    let lines: Vec<&str> = jsonl.split('\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 6, "six events, one line each");
    let last: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
    assert_eq!(last["actor"], nasty, "JSON keeps the exact text");
    let csv = b.ok(&["audit", "export", "--format", "csv"]);
    let rows: Vec<&str> = csv.split('\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(
        rows.len(),
        1 + 7,
        "header + six events + the jsonl export, one line each: {csv}"
    );
    assert!(
        rows[6].contains("a\\nforged,line\\r\\n") && !rows[6].contains('\r'),
        "{}",
        rows[6]
    );
    assert!(!csv.contains("\u{1b}"));

    // Time filters: since inclusive, until exclusive.
    let all = b.events();
    let ts = all[2]["ts"].as_str().unwrap();
    let since = b.ok(&["audit", "export", "--format", "jsonl", "--since", ts]);
    let first: serde_json::Value = serde_json::from_str(since.lines().next().unwrap()).unwrap();
    assert!(first["seq"].as_i64().unwrap() <= 3 && first["ts"].as_str().unwrap() >= ts);
    let until = b.ok(&["audit", "export", "--format", "jsonl", "--until", ts]);
    assert!(until.lines().all(|l| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
            .as_str()
            .unwrap()
            < ts
    }));

    // --out writes the file whole.
    let out = b.dir.path().join("export.jsonl");
    b.ok(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&out).unwrap().lines().count() >= 7);
}

#[test]
fn keys_are_private_and_settings_come_from_flags_env_or_a_config_file() {
    use std::os::unix::fs::PermissionsExt;
    let b = seeded();
    let mode = std::fs::metadata(b.data_dir().join("keys/audit-mac.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    b.ok(&["audit", "checkpoint"]);
    let mode = std::fs::metadata(b.data_dir().join("keys/checkpoint.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Environment.
    let r = output(
        Command::new(portcullis_bin())
            .env("PORTCULLIS_DATA_DIR", b.data_dir())
            .args(["admin", "org", "list", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert!(r.stdout.contains("\"acme\""), "{}", r.stderr);
    // Config file, and a typo in it is an error, not a silent default.
    let cfg = b.dir.path().join("portcullis.toml");
    std::fs::write(
        &cfg,
        format!("data_dir = {:?}\n", b.data_dir().display().to_string()),
    )
    .unwrap();
    let r = output(
        Command::new(portcullis_bin())
            .arg("--config")
            .arg(&cfg)
            .args(["admin", "org", "list"])
            .output()
            .unwrap(),
    );
    assert!(r.stdout.contains("acme"), "{}", r.stderr);
    std::fs::write(&cfg, "data_dri = \"/tmp\"\n").unwrap();
    let r = output(
        Command::new(portcullis_bin())
            .arg("--config")
            .arg(&cfg)
            .args(["admin", "org", "list"])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("unknown field `data_dri`"),
        "{}",
        r.stderr
    );
    // A world-readable key is refused.
    let key = b.data_dir().join("keys/audit-mac.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = b.run(&["admin", "org", "list"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
}

#[tokio::test]
async fn the_same_commands_work_on_postgresql() {
    let db = TestDb::postgres().await;
    let mut b = Broker::new();
    b.database_url = Some(db.url().to_owned());
    // On PostgreSQL only `portcullis migrate` changes the schema; everything else says so.
    let r = b.run(&["admin", "org", "add", "acme"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no Portcullis schema yet") && r.stderr.contains("portcullis migrate"),
        "{}",
        r.stderr
    );
    assert!(b.ok(&["migrate"]).contains("schema is up to date"));
    b.ok(&["admin", "org", "add", "acme"]);
    b.ok(&[
        "admin", "user", "add", "vera", "--role", "vendor", "--org", "acme",
    ]);
    b.ok(&[
        "admin",
        "device",
        "add",
        "plc-7",
        "--address",
        "10.1.2.7",
        "--ports",
        "502",
        "--orgs",
        "acme",
    ]);
    let dup = b.run(&["admin", "org", "add", "acme"]);
    assert!(dup.code == 1 && dup.stderr.contains("already exists"));
    b.ok(&["audit", "checkpoint"]);
    let r = b.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.starts_with("audit log intact: 4 events"),
        "{}",
        r.stdout
    );
    // Tamper as the owner would on PostgreSQL.
    let store = b.store().await;
    sqlx::raw_sql("ALTER TABLE audit_events DISABLE TRIGGER USER; UPDATE audit_events SET actor = 'x' WHERE seq = 2; ALTER TABLE audit_events ENABLE TRIGGER USER;")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let r = b.run(&["audit", "verify"]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.starts_with("first bad seq: 2:"), "{}", r.stdout);
}

#[test]
fn sites_are_registered_tokened_revoked_and_device_add_says_how_it_is_reached() {
    let b = Broker::new();
    let text = b.ok(&[
        "admin",
        "site",
        "add",
        "plant-2",
        "--public-url",
        "https://broker.test:8443/",
    ]);
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("enrollment token: "))
        .unwrap_or_else(|| panic!("no token line: {text}"))
        .to_owned();
    assert!(token.starts_with("pcs_"), "{token}");
    assert!(text.starts_with("registered site 'plant-2'\n"), "{text}");
    assert!(
        text.contains(&format!(
            "on the connector, run: portcullis connector enroll --url https://broker.test:8443 --token {token}\n"
        )),
        "{text}"
    );
    let json = b.ok(&["admin", "site", "add", "plant-3", "--format", "json"]);
    assert_eq!(json.lines().count(), 1, "one line: {json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["site"], "plant-3");
    let t3 = v["enrollment_token"].as_str().unwrap();
    assert!(t3.starts_with("pcs_") && v["expires_at"].is_string());
    assert_eq!(
        v["enroll_command"],
        format!("portcullis connector enroll --url <broker-url> --token {t3}")
    );

    let table = b.ok(&["admin", "site", "list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in ["NAME", "STATUS", "LAST SEEN", "ENROLLED", "FINGERPRINT"] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("plant-2") && row.contains("not enrolled"),
        "{row}"
    );
    let listed: Vec<serde_json::Value> = b
        .ok(&["admin", "site", "list", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["status"], "not enrolled");
    assert_eq!(listed[0]["last_seen"], serde_json::Value::Null);

    // `device add` says which of the two a device gets.
    let via = b.ok(&[
        "admin",
        "device",
        "add",
        "plc-7",
        "--address",
        "10.1.2.7",
        "--ports",
        "502",
        "--site",
        "plant-2",
    ]);
    assert!(
        via.contains("routing: reached through the connector of registered site 'plant-2'"),
        "{via}"
    );
    let direct = b.ok(&[
        "admin",
        "device",
        "add",
        "rtu-9",
        "--address",
        "10.1.2.9",
        "--ports",
        "502",
        "--site",
        "Plant 2 / line 3",
    ]);
    assert!(
        direct.contains(
            "routing: dialed directly by the relay (its --site 'Plant 2 / line 3' names no registered site)"
        ),
        "{direct}"
    );

    let again = b.ok(&["admin", "site", "token", "plant-2"]);
    assert!(
        again.starts_with("new enrollment token for site 'plant-2'"),
        "{again}"
    );
    assert!(!again.contains(&token), "a new token");
    assert!(
        b.ok(&["admin", "site", "revoke", "plant-2"])
            .starts_with("revoked site 'plant-2'")
    );
    for (args, want) in [
        (
            &["admin", "site", "revoke", "plant-2"][..],
            "already revoked",
        ),
        (&["admin", "site", "token", "plant-2"][..], "revoked"),
        (
            &["admin", "site", "add", "plant-3"][..],
            "site 'plant-3' already exists",
        ),
        (
            &["admin", "site", "add", "Plant 3"][..],
            "site: 'Plant 3' may use only",
        ),
        (
            &["admin", "site", "revoke", "ghost"][..],
            "site 'ghost' does not exist",
        ),
    ] {
        let r = b.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {:?}", r.stderr);
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains(want),
            "{args:?}: {:?}",
            r.stderr
        );
    }
    let revoked = b.ok(&["admin", "site", "list"]);
    assert!(
        revoked
            .lines()
            .any(|l| l.starts_with("plant-2") && l.contains("revoked"))
    );

    let actions: Vec<String> = b
        .events()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .filter(|a| a.starts_with("site."))
        .collect();
    assert_eq!(
        actions,
        ["site.add", "site.add", "site.token", "site.revoke"]
    );
    for e in b.events() {
        assert!(
            !e.to_string().contains(&token),
            "tokens never reach the log"
        );
    }
    assert_eq!(b.run(&["audit", "verify"]).code, 0);
}
