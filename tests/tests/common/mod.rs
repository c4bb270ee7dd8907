//! The end-to-end harness: a real `portcullis serve` (web + relay) in a temporary data
//! directory, people enrolled through the real API with real TOTP codes, and the vendor's real
//! `portcullis login/request/connect` commands. Shared by the relay test files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod zones;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_auth::totp::TotpSecret;
use portcullis_testkit::portcullis_bin;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const PASSWORD: &str = "long enough and not on any list";

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A person's authenticator app: codes for strictly increasing 30 s steps (the broker refuses
/// a step twice), waiting for the next step only when the accepted ones are used up.
pub struct Authenticator {
    secret: TotpSecret,
    last_step: Option<u64>,
}

impl Authenticator {
    /// The app after scanning the key the broker showed (base32).
    pub fn from_base32(key: &str) -> Self {
        Self {
            secret: TotpSecret::from_base32(key.trim()).unwrap(),
            last_step: None,
        }
    }

    pub async fn next_code(&mut self) -> String {
        let now = now_unix();
        let current = now / 30;
        let oldest_safe = if now % 30 < 25 { current - 1 } else { current };
        let step = self
            .last_step
            .map_or(oldest_safe, |l| (l + 1).max(oldest_safe));
        let starts = step * 30;
        if starts > now {
            tokio::time::sleep(Duration::from_secs(starts - now + 1)).await;
        }
        self.last_step = Some(step);
        self.secret.code_at(starts)
    }
}

pub struct Person {
    pub name: String,
    pub auth: Authenticator,
}

/// Kills the child when dropped, so a failing test leaves nothing running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `portcullis --data-dir <data> [--database-url <db>] <args>` and returns stdout; panics
/// with stderr on failure.
pub fn admin_on(data: &Path, db: Option<&str>, args: &[&str]) -> String {
    migrate_once(data, db);
    let out = broker_cmd(data, db).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "portcullis {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn admin(data: &Path, args: &[&str]) -> String {
    admin_on(data, None, args)
}

/// On PostgreSQL only `portcullis migrate` (the owner's job) changes the schema; the services
/// and the admin command line refuse an unmigrated database. Runs it once per database URL in
/// this test process, as an operator would before the first start. SQLite migrates by itself.
pub fn migrate_once(data: &Path, db: Option<&str>) {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let Some(url) = db.filter(|u| u.starts_with("postgres")) else {
        return;
    };
    let mut done = DONE.lock().unwrap();
    if done.iter().any(|u| u == url) {
        return;
    }
    let out = broker_cmd(data, Some(url)).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "portcullis migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    done.push(url.to_owned());
}

fn broker_cmd(data: &Path, db: Option<&str>) -> Command {
    let mut c = Command::new(portcullis_bin());
    c.arg("--data-dir").arg(data);
    match db {
        Some(url) => c.env("PORTCULLIS_DATABASE_URL", url),
        None => c.env_remove("PORTCULLIS_DATABASE_URL"),
    };
    c
}

/// A free loopback TCP port and a free UDP port (free when asked; the caller binds them next).
pub fn free_ports() -> (u16, u16) {
    let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (
        t.local_addr().unwrap().port(),
        u.local_addr().unwrap().port(),
    )
}

/// Reads a child's stdout until a line starting with `prefix`; returns its first word after the
/// prefix and keeps draining the rest.
fn read_until(child: &mut Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the process ended before printing {prefix:?}"))
            .unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            std::thread::spawn(move || lines.for_each(drop));
            return rest.split_whitespace().next().unwrap().to_owned();
        }
    }
}

pub struct Broker {
    pub child: Option<Reaped>,
    /// `portcullis relay` when web and relay run as separate processes.
    pub relay_child: Option<Reaped>,
    pub base: String,
    pub relay: String,
    pub data: PathBuf,
    pub db: Option<String>,
    pub http: reqwest::Client,
    extra: Vec<String>,
}

impl Broker {
    /// Starts `serve` on `data` (web and relay on free loopback ports) with `extra` flags.
    pub fn start(data: &Path, db: Option<&str>, extra: &[&str]) -> Broker {
        Self::start_at(data, db, extra, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// `start` with web and relay on free ports of `ip` instead of loopback (the development
    /// certificate covers the listening addresses).
    pub fn start_at(data: &Path, db: Option<&str>, extra: &[&str], ip: IpAddr) -> Broker {
        let mut b = Broker {
            child: None,
            relay_child: None,
            base: String::new(),
            relay: String::new(),
            data: data.to_owned(),
            db: db.map(str::to_owned),
            http: reqwest::Client::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        let any_port = SocketAddr::new(ip, 0).to_string();
        migrate_once(data, db);
        b.spawn(&any_port, &any_port);
        b
    }

    /// Starts `portcullis web` and `portcullis relay` as two processes on `db` (PostgreSQL):
    /// grant changes reach the relay only through the database.
    #[allow(clippy::zombie_processes)] // reaped by `Reaped`
    pub fn start_split(data: &Path, db: &str) -> Broker {
        let (web_port, relay_port) = free_ports();
        let web_addr = format!("127.0.0.1:{web_port}");
        let relay_addr = format!("127.0.0.1:{relay_port}");
        migrate_once(data, Some(db));
        let mut web = broker_cmd(data, Some(db))
            .args([
                "web",
                "--web-listen",
                &web_addr,
                "--relay-addr",
                &relay_addr,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let base = read_until(&mut web, "web: ");
        let mut relay = broker_cmd(data, Some(db))
            .args([
                "relay",
                "--relay-listen",
                &relay_addr,
                "--public-url",
                &base,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let relay_bound = read_until(&mut relay, "relay: ");
        let mut b = Broker {
            child: Some(Reaped(web)),
            relay_child: Some(Reaped(relay)),
            base,
            relay: relay_bound,
            data: data.to_owned(),
            db: Some(db.to_owned()),
            http: reqwest::Client::new(),
            extra: Vec::new(),
        };
        b.http = b.client();
        b
    }

    fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.data.join("tls/ca.pem")).unwrap();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    #[allow(clippy::zombie_processes)] // reaped by `Reaped`
    fn spawn(&mut self, web_listen: &str, relay_listen: &str) {
        let mut child = broker_cmd(&self.data, self.db.as_deref())
            .args(["serve", "--web-listen", web_listen])
            .args(["--relay-listen", relay_listen])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        loop {
            let line = lines.next().expect("serve printed its addresses").unwrap();
            if let Some(rest) = line.strip_prefix("web: ") {
                base = Some(rest.split_whitespace().next().unwrap().to_owned());
            }
            if let Some(rest) = line.strip_prefix("relay: ") {
                self.relay = rest.split_whitespace().next().unwrap().to_owned();
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        self.base = base.expect("web line before relay line");
        self.http = self.client();
        self.child = Some(Reaped(child));
    }

    /// `kill -9` (no chance to close anything), then `serve` again on the same addresses.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.0.kill().unwrap();
            c.0.wait().unwrap();
        }
        let web = self.base.trim_start_matches("https://").to_owned();
        let relay = self.relay.clone();
        self.spawn(&web, &relay);
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &c.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        c.0.wait().unwrap()
    }

    pub fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.pem")
    }

    pub async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates the account with the admin CLI and enrolls it through the API.
    pub async fn enroll(&self, name: &str, role: &str, org: Option<&str>) -> Person {
        let mut args = vec![
            "admin", "user", "add", name, "--role", role, "--format", "json",
        ];
        if let Some(o) = org {
            args.extend(["--org", o]);
        }
        let out: Value =
            serde_json::from_str(&admin_on(&self.data, self.db.as_deref(), &args)).unwrap();
        let code = out["enrollment_code"].as_str().unwrap().to_owned();
        let (s, body) = self
            .post(
                "/api/v1/enroll",
                json!({ "code": code, "password": PASSWORD }),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let mut auth = Authenticator::from_base32(body["secret"].as_str().unwrap());
        let (s, body) = self
            .post(
                "/api/v1/enroll/confirm",
                json!({ "code": code, "totp": auth.next_code().await }),
                None,
            )
            .await;
        assert_eq!(s, 204, "{body}");
        Person {
            name: name.to_owned(),
            auth,
        }
    }

    /// Logs in through the API; returns the bearer session token (fresh MFA).
    pub async fn login(&self, p: &mut Person) -> String {
        let (s, body) = self
            .post(
                "/api/v1/auth/login",
                json!({ "username": p.name, "password": PASSWORD }),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let mfa = body["mfa_token"].as_str().unwrap().to_owned();
        let (s, body) = self
            .post(
                "/api/v1/auth/mfa",
                json!({ "mfa_token": mfa, "totp": p.auth.next_code().await }),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        body["session_token"].as_str().unwrap().to_owned()
    }

    pub async fn approve(&self, supervisor: &str, id: i64) {
        let (s, body) = self
            .post(
                &format!("/api/v1/requests/{id}/approve"),
                json!({}),
                Some(supervisor),
            )
            .await;
        assert_eq!(s, 200, "approve {id}: {body}");
    }

    pub async fn revoke(&self, supervisor: &str, id: i64) {
        let (s, body) = self
            .post(
                &format!("/api/v1/grants/{id}/revoke"),
                json!({ "reason": "end of the job" }),
                Some(supervisor),
            )
            .await;
        assert_eq!(s, 200, "revoke {id}: {body}");
    }

    /// Audit events with `action`, oldest first (through the CLI export, as an auditor would).
    pub fn audit(&self, action: &str) -> Vec<Value> {
        self.audit_all()
            .into_iter()
            .filter(|e| e["action"] == action)
            .collect()
    }

    /// Every audit event, oldest first.
    pub fn audit_all(&self) -> Vec<Value> {
        let out = admin_on(
            &self.data,
            self.db.as_deref(),
            &["audit", "export", "--format", "jsonl"],
        );
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect()
    }
}

/// The vendor's machine: its own config directory for `portcullis login`.
pub struct Vendor {
    pub config: tempfile::TempDir,
    pub person: Person,
    /// Program and arguments run in front of every `portcullis` command of the vendor's (see
    /// `Placement::vendor_prefix`); empty: the binary itself.
    pub prefix: Vec<String>,
}

impl Vendor {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match self.prefix.split_first() {
            None => Command::new(portcullis_bin()),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(portcullis_bin());
                c
            }
        };
        c.args(args)
            .env("PORTCULLIS_CONFIG_DIR", self.config.path())
            .env_remove("PORTCULLIS_DATABASE_URL")
            .env_remove("PORTCULLIS_DATA_DIR");
        c
    }

    /// `portcullis <args>`; panics with stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "portcullis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `portcullis login` with password and code on stdin, as a script would.
    pub async fn login(&mut self, broker: &Broker) {
        self.login_to(&broker.base, &broker.ca(), PASSWORD).await;
    }

    /// [`Vendor::login`] to the broker at `base` whose CA certificate is in `ca`, with
    /// `password`.
    pub async fn login_to(&mut self, base: &str, ca: &Path, password: &str) {
        let code = self.person.auth.next_code().await;
        let mut child = self
            .cmd(&[
                "login",
                base,
                "--username",
                &self.person.name,
                "--ca",
                ca.to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}\n{code}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `portcullis request ...`; returns the new request's id.
    pub fn request(&self, device: &str, ports: &str, until: &str) -> i64 {
        let out = self.run(&[
            "request",
            "--device",
            device,
            "--port",
            ports,
            "--from",
            "now",
            "--until",
            until,
            "--reason",
            "firmware check",
            "--format",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["id"].as_i64().unwrap()
    }

    /// Starts `portcullis connect <grant> <extra>` and waits for its `listeners` listeners.
    #[allow(clippy::zombie_processes)] // reaped by `Reaped`
    pub async fn connect(&self, grant: i64, extra: &[&str], listeners: usize) -> Tunnel {
        let id = grant.to_string();
        let mut args = vec!["connect", id.as_str()];
        args.extend(extra);
        let mut child = self
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let mut t = Tunnel {
            child: Reaped(child),
            lines: rx,
            seen: Vec::new(),
            listeners: Vec::new(),
        };
        t.wait_listening(listeners).await;
        t
    }
}

/// A running `portcullis connect`.
pub struct Tunnel {
    pub child: Reaped,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line printed so far (stdout and stderr).
    pub seen: Vec<String>,
    /// `(local address, device, port)` per listener.
    pub listeners: Vec<(SocketAddr, String, u16)>,
}

impl Tunnel {
    async fn wait_listening(&mut self, n: usize) {
        while self.listeners.len() < n {
            let line = self
                .next_line()
                .await
                .unwrap_or_else(|| panic!("connect ended before listening: {:?}", self.seen));
            if let Some(rest) = line.strip_prefix("listening ") {
                let (local, target) = rest.split_once(" -> ").unwrap();
                let (device, port) = target.rsplit_once(':').unwrap();
                self.listeners.push((
                    local.parse().unwrap(),
                    device.to_owned(),
                    port.parse().unwrap(),
                ));
            }
        }
    }

    /// The local address that reaches `port`.
    pub fn local(&self, port: u16) -> SocketAddr {
        self.listeners
            .iter()
            .find(|l| l.2 == port)
            .unwrap_or_else(|| panic!("no listener for port {port}: {:?}", self.listeners))
            .0
    }

    pub async fn next_line(&mut self) -> Option<String> {
        let line = self.lines.recv().await?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits for a line containing `text` (panics if the process ends first).
    pub async fn wait_for(&mut self, text: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        loop {
            let line = self.next_line().await.unwrap_or_else(|| {
                panic!("connect ended without printing {text:?}: {:?}", self.seen)
            });
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits for the process to exit by itself.
    pub async fn exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        while self.next_line().await.is_some() {}
        let status = tokio::task::spawn_blocking(move || {
            let mut c = self.child;
            let s = c.0.wait().unwrap();
            (s, c)
        })
        .await
        .unwrap()
        .0;
        (status, self.seen)
    }
}

/// Where a plant's processes run. The default, everything on loopback in this network
/// namespace, is what the tests use. The veth benchmark (`bench/tunnel-compare --veth`) runs in
/// the server side's namespace, puts `serve` on that side's address, and runs the vendor's
/// commands in the client side's namespace (`ip netns exec <ns>` as the prefix).
#[derive(Debug, Clone)]
pub struct Placement {
    /// The address `serve` listens on, web and relay (free ports).
    pub listen_ip: IpAddr,
    /// Program and arguments put in front of every vendor `portcullis` command.
    pub vendor_prefix: Vec<String>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            vendor_prefix: Vec::new(),
        }
    }
}

/// One broker with one device (address 127.0.0.1, the given ports) that vendor `vera` of
/// `acme` may request and supervisor `sam` approves.
pub struct Plant {
    pub dir: tempfile::TempDir,
    pub broker: Broker,
    pub vera: Vendor,
    /// Supervisor `sam`'s API session (fresh MFA).
    pub sam: String,
}

impl Plant {
    pub async fn new(ports: &[u16], serve_flags: &[&str]) -> Plant {
        Self::on(None, false, ports, serve_flags).await
    }

    /// On database `db` (SQLite in the data dir when `None`); `split`: `portcullis web` and
    /// `portcullis relay` as two processes instead of `serve`.
    pub async fn on(db: Option<&str>, split: bool, ports: &[u16], serve_flags: &[&str]) -> Plant {
        Self::placed(db, split, ports, serve_flags, &Placement::default()).await
    }

    /// `on`, with the processes placed as `at` says (`split` keeps web and relay on loopback).
    pub async fn placed(
        db: Option<&str>,
        split: bool,
        ports: &[u16],
        serve_flags: &[&str],
        at: &Placement,
    ) -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ports = ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        admin_on(&data, db, &["admin", "org", "add", "acme"]);
        admin_on(
            &data,
            db,
            &[
                "admin",
                "device",
                "add",
                "plc-7",
                "--address",
                "127.0.0.1",
                "--ports",
                &ports,
                "--orgs",
                "acme",
            ],
        );
        let broker = match (split, db) {
            (true, Some(db)) => Broker::start_split(&data, db),
            _ => Broker::start_at(&data, db, serve_flags, at.listen_ip),
        };
        let mut sam = broker.enroll("sam", "supervisor", None).await;
        let vera = broker.enroll("vera", "vendor", Some("acme")).await;
        let sam = broker.login(&mut sam).await;
        let mut vera = Vendor {
            config: tempfile::tempdir().unwrap(),
            person: vera,
            prefix: at.vendor_prefix.clone(),
        };
        vera.login(&broker).await;
        Plant {
            dir,
            broker,
            vera,
            sam,
        }
    }

    /// Vera requests `ports` until `until`; Sam approves. Returns the grant id.
    pub async fn grant(&self, ports: &str, until: &str) -> i64 {
        let id = self.vera.request("plc-7", ports, until);
        self.broker.approve(&self.sam, id).await;
        id
    }
}

impl Broker {
    /// `serve` on SQLite in `data` with `env` set for the broker process only (e.g.
    /// libfaketime's variables, so the broker's wall clock can be stepped while the test's and
    /// the CLI's are not).
    #[allow(clippy::zombie_processes)] // reaped by `Reaped`
    pub fn start_with_env(data: &Path, env: &[(String, String)]) -> Broker {
        let mut child = broker_cmd(data, None)
            .args(["serve", "--web-listen", "127.0.0.1:0"])
            .args(["--relay-listen", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut relay) = (None, None);
        while relay.is_none() {
            let line = lines.next().expect("serve printed its addresses").unwrap();
            let word = |rest: &str| rest.split_whitespace().next().unwrap().to_owned();
            if let Some(rest) = line.strip_prefix("web: ") {
                base = Some(word(rest));
            }
            if let Some(rest) = line.strip_prefix("relay: ") {
                relay = Some(word(rest));
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let mut b = Broker {
            child: Some(Reaped(child)),
            relay_child: None,
            base: base.expect("web line before relay line"),
            relay: relay.unwrap_or_default(),
            data: data.to_owned(),
            db: None,
            http: reqwest::Client::new(),
            extra: Vec::new(),
        };
        b.http = b.client();
        b
    }
}

impl Plant {
    /// `Plant::new` on SQLite, with `env` set for the broker process only (see
    /// [`Broker::start_with_env`]).
    pub async fn with_broker_env(ports: &[u16], env: &[(String, String)]) -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ports = ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        admin(&data, &["admin", "org", "add", "acme"]);
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
                &ports,
                "--orgs",
                "acme",
            ],
        );
        let broker = Broker::start_with_env(&data, env);
        let mut sam = broker.enroll("sam", "supervisor", None).await;
        let vera = broker.enroll("vera", "vendor", Some("acme")).await;
        let sam = broker.login(&mut sam).await;
        let mut vera = Vendor {
            config: tempfile::tempdir().unwrap(),
            person: vera,
            prefix: Vec::new(),
        };
        vera.login(&broker).await;
        Plant {
            dir,
            broker,
            vera,
            sam,
        }
    }
}
