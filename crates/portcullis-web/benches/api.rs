//! Approval web service benchmark, over HTTPS on loopback against the real router served by
//! `portcullis_web::serve::serve_https`, with the stores on disk:
//!
//! - **API latency under load**: an open-loop load generator sends requests on a fixed schedule
//!   (not when the previous answer arrives) and measures each latency from the request's
//!   *scheduled* time, so a stalled server is charged for every request it delays (no
//!   coordinated omission). Three loads, each at `--rate` requests/s in total (default 500):
//!   `GET /api/v1/requests` alone (one vendor's list, through 16 sessions in turn),
//!   `POST /api/v1/requests/{id}/approve` alone (a fresh pending request each time, by 8
//!   supervisors in turn, each after a TOTP step-up), and both at once (4/5 GET, 1/5
//!   approve). On SQLite and PostgreSQL. Besides latencies, the server's CPU time per request
//!   is reported (from /proc), which the machine's other jobs disturb much less.
//! - **Login under the bound on concurrent hashing**: `--clients` clients (default 16) each
//!   posting `POST /api/v1/auth/login` (argon2id) back to back, while probes send
//!   `GET /healthz` and `GET /api/v1/requests` at 20/s each; with `hash_concurrency` 2 (the
//!   default) and 16 (no effective bound), and the probes alone as the baseline. SQLite only:
//!   argon2 is the cost, not the database.
//!
//! ```text
//! cargo bench -p portcullis-web --bench api -- [--backend sqlite|postgres|both]
//!     [--part api|login|all] [--load get|approve|mixed|all] [--runs N] [--secs S] [--rate R]
//!     [--clients C] [--listed N]
//! ```
//!
//! Runs are interleaved (run r of every configuration before run r + 1 of any) and every cell
//! is the median over runs, with the spread beside it: the machine is shared and noisy. The
//! server runs on its own tokio runtime with 2 worker threads (what `portcullis serve` gets on
//! a 2-core machine); the load generator runs on a separate single-threaded runtime in the same
//! process, so it competes with the server for the same cores. Prints Markdown tables on
//! stdout; progress goes to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis_auth::token::KeyRing;
use portcullis_auth::totp::{TotpKey, TotpSecret};
use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::{
    Clock, Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName,
    Port, Role, Timestamp, Username,
};
use portcullis_net::{devca, tls};
use portcullis_store::{AuditActor, Backend, NewUser, Store, StoreConfig, SystemClock};
use portcullis_testkit::TestDb;
use portcullis_testkit::stats::{fsync_ms, median, percentile};
use portcullis_web::{AppState, WebConfig, WebKeys, router};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::runtime::{Handle, Runtime};

const PASSWORD: &str = "correct horse plant seven";
/// Users that the login flood cycles through.
const LOGIN_USERS: usize = 4;
/// Each probe's rate during the login flood, requests/s.
const PROBE_RATE: f64 = 20.0;
/// The target: p99 below this at 500 requests/s.
const TARGET_P99_MS: f64 = 20.0;
/// A request not answered within this is counted as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last request of a load is sent, answers are awaited this long at most; the rest
/// are abandoned and counted as errors, so an overloaded configuration cannot stretch the run.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Args {
    backends: Vec<Backend>,
    api: bool,
    login: bool,
    /// Indices into [`LOADS`].
    loads: Vec<usize>,
    runs: usize,
    secs: f64,
    rate: f64,
    clients: usize,
    /// Requests the listing vendor has: what `GET /api/v1/requests` returns.
    listed: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        backends: vec![Backend::Sqlite, Backend::Postgres],
        api: true,
        login: true,
        loads: vec![0, 1, 2],
        runs: 3,
        secs: 3.0,
        rate: 500.0,
        clients: 16,
        listed: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| {
            v.replace('_', "")
                .parse::<f64>()
                .ok()
                .filter(|n| *n > 0.0)
                .unwrap_or_else(|| usage(&format!("{name}: '{v}' is not a positive number")))
        };
        match arg.as_str() {
            "--backend" => {
                a.backends = match value("--backend").as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    other => usage(&format!("unknown backend '{other}'")),
                }
            }
            "--part" => {
                (a.api, a.login) = match value("--part").as_str() {
                    "api" => (true, false),
                    "login" => (false, true),
                    "all" => (true, true),
                    other => usage(&format!("unknown part '{other}'")),
                }
            }
            "--load" => {
                a.loads = match value("--load").as_str() {
                    "get" => vec![0],
                    "approve" => vec![1],
                    "mixed" => vec![2],
                    "all" => vec![0, 1, 2],
                    other => usage(&format!("unknown load '{other}'")),
                }
            }
            "--runs" => a.runs = number("--runs", value("--runs")) as usize,
            "--secs" => a.secs = number("--secs", value("--secs")),
            "--rate" => a.rate = number("--rate", value("--rate")),
            "--clients" => a.clients = number("--clients", value("--clients")) as usize,
            "--listed" => a.listed = number("--listed", value("--listed")) as usize,
            // `cargo bench` passes `--bench` to every harness=false target.
            "--bench" => {}
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument '{other}'")),
        }
    }
    a
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "usage: cargo bench -p portcullis-web --bench api -- [--backend sqlite|postgres|both] \
         [--part api|login|all] [--load get|approve|mixed|all] [--runs N (default 3)] \
         [--secs S (per load and run, default 3)] \
         [--rate R (requests/s, default 500)] [--clients C (login clients, default 16)] \
         [--listed N (requests in the vendor's list, default 20)]"
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

/// The wall clock plus an offset that only grows. Moving it 30 s on gives a fresh TOTP step,
/// as a person waiting for the next code would get, without the benchmark waiting.
#[derive(Debug, Default)]
struct OffsetClock(AtomicU64);

impl OffsetClock {
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    fn unix(&self) -> u64 {
        u64::try_from(self.now().unix_micros() / 1_000_000).unwrap()
    }
    fn at(&self, from_now: Duration) -> String {
        self.now().saturating_add(from_now).to_rfc3339()
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        SystemClock
            .now()
            .saturating_add(Duration::from_secs(self.0.load(Ordering::SeqCst)))
    }
}

/// What every server of the process shares: the development CA and server certificate, and the
/// relay-token key ring, made as `portcullis serve` makes them.
struct Pki {
    _dir: tempfile::TempDir,
    tls: Arc<rustls::ServerConfig>,
    ca_pem: Vec<u8>,
    ring: KeyRing,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("api-bench-pki-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let files = devca::ensure_dev_pki(&dir.path().join("tls"), &["127.0.0.1".into()]).unwrap();
        let (certs, key) = tls::load_certified_key(&files.cert, &files.key).unwrap();
        let tls = tls::https_server_config(certs, key).unwrap();
        let ca_pem = std::fs::read(&files.ca_cert).unwrap();
        let ring = KeyRing::load_or_create(&dir.path().join("relay-signing")).unwrap();
        Pki {
            _dir: dir,
            tls,
            ca_pem,
            ring,
        }
    }
}

/// One store with its fixture, and the HTTPS servers in front of it.
struct Site {
    backend: Backend,
    store: Store,
    clock: Arc<OffsetClock>,
    /// `hash_concurrency` -> base URL of a server with that bound.
    servers: Vec<(usize, String)>,
    /// Dropping these stops the servers.
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _db: TestDb,
}

impl Site {
    fn url(&self) -> &str {
        &self.servers[0].1
    }
}

fn admin() -> AuditActor {
    AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

/// Opens a fresh store with an org and a device on `rt`, and serves it once per hashing bound.
fn start_site(rt: &Runtime, pki: &Pki, backend: Backend, bounds: &[usize]) -> Site {
    rt.block_on(async {
        let db = fresh_db(backend).await;
        let clock = Arc::new(OffsetClock::default());
        let mut config = StoreConfig::new(MacKey::new([1; 32]));
        config.clock = clock.clone();
        let store = Store::open(db.url(), config).await.unwrap();
        let acme = OrgName::parse("acme").unwrap();
        store.add_org(&admin(), &acme).await.unwrap();
        let device = Device {
            name: DeviceName::parse("plc-7").unwrap(),
            address: NetworkAddress::parse("127.0.0.1").unwrap(),
            criticality: Criticality::High,
            profile: DeviceProfile {
                site: "Plant 2".into(),
                ..Default::default()
            },
            policy: DevicePolicy::new(
                Port::parse_list("502,80").unwrap(),
                Duration::from_secs(4 * 3600),
                1,
                [acme].into(),
            )
            .unwrap(),
        };
        store.add_device(&admin(), &device).await.unwrap();

        let mut servers = Vec::new();
        let mut stops = Vec::new();
        for &bound in bounds {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let origin = format!("https://{addr}");
            let mut web = WebConfig::new(origin.clone(), "127.0.0.1:4433");
            web.hash_concurrency = bound;
            // The rate limiter would otherwise be what the login benchmark measures: every
            // client here comes from 127.0.0.1.
            web.login_rate_per_minute = 1_000_000;
            let keys = WebKeys {
                totp: TotpKey::from_bytes(zeroize::Zeroizing::new([2; 32])),
                signer: pki.ring.signer(&web.token_issuer, &web.token_audience),
                jwks: pki.ring.jwks(),
                audit_mac: MacKey::new([1; 32]),
                checkpoints: None,
            };
            let state = AppState::new(store.clone(), clock.clone(), keys, web);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(portcullis_web::serve::serve_https(
                listener,
                pki.tls.clone(),
                router(state),
                async move {
                    let _ = stopped.await;
                },
            ));
            servers.push((bound, origin));
            stops.push(stop);
        }
        Site {
            backend,
            store,
            clock,
            servers,
            _stops: stops,
            _db: db,
        }
    })
}

fn client(pki: &Pki) -> Client {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .https_only(true)
        // One keep-alive connection per request in flight, like separate clients.
        .http1_only()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

async fn call(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Sessions of the listing vendor used in turn by the GET load, and supervisors approving in
/// turn: 500 requests/s come from many people, and every request writes its session's idle
/// timer, so one session for all would queue them on one row.
const SESSIONS: usize = 16;
const SUPERVISORS: usize = 8;

/// A logged-in user: the session token and the TOTP secret.
#[derive(Clone)]
struct User {
    name: String,
    token: String,
    secret: Arc<TotpSecret>,
}

/// Logs `who` in once more (password, then the next step's TOTP code): another session.
async fn login(site: &Site, c: &Client, who: &User) -> User {
    let url = site.url();
    site.clock.advance(30);
    let (s, body) = call(
        c.post(format!("{url}/api/v1/auth/login"))
            .json(&json!({ "username": who.name, "password": PASSWORD })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = call(c.post(format!("{url}/api/v1/auth/mfa")).json(&json!({
        "mfa_token": body["mfa_token"], "totp": who.secret.code_at(site.clock.unix())
    })))
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    User {
        token: body["session_token"].as_str().unwrap().to_owned(),
        ..who.clone()
    }
}

/// Creates users of `role` named `names`, enrolls them through the API (password, TOTP), and
/// logs them in (password, then TOTP).
/// The store is used on the server's runtime (`server`), where its connections live.
async fn users(site: &Site, server: &Handle, c: &Client, names: &[&str], role: Role) -> Vec<User> {
    let store = site.store.clone();
    let new: Vec<NewUser> = names
        .iter()
        .map(|name| NewUser {
            username: Username::parse(name).unwrap(),
            role,
            org: (role == Role::Vendor).then(|| OrgName::parse("acme").unwrap()),
        })
        .collect();
    let codes: Vec<String> = server
        .spawn(async move {
            let mut codes = Vec::new();
            for new in &new {
                let (_, code) = store.add_user(&admin(), new).await.unwrap();
                codes.push(code.code);
            }
            codes
        })
        .await
        .unwrap();
    let url = site.url();
    let clock = &site.clock;
    let mut secrets = Vec::new();
    for code in &codes {
        let (s, body) = call(
            c.post(format!("{url}/api/v1/enroll"))
                .json(&json!({ "code": code, "password": PASSWORD })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let secret = TotpSecret::from_base32(body["secret"].as_str().unwrap()).unwrap();
        let (s, body) = call(
            c.post(format!("{url}/api/v1/enroll/confirm"))
                .json(&json!({ "code": code, "totp": secret.code_at(clock.unix()) })),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
        secrets.push(secret);
    }
    // The enrollment used this step's code; login needs the next one.
    clock.advance(30);
    let mut out = Vec::new();
    for (name, secret) in names.iter().zip(secrets) {
        let (s, body) = call(
            c.post(format!("{url}/api/v1/auth/login"))
                .json(&json!({ "username": name, "password": PASSWORD })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let (s, body) = call(c.post(format!("{url}/api/v1/auth/mfa")).json(&json!({
            "mfa_token": body["mfa_token"], "totp": secret.code_at(clock.unix())
        })))
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        out.push(User {
            name: (*name).to_owned(),
            token: body["session_token"].as_str().unwrap().to_owned(),
            secret: Arc::new(secret),
        });
    }
    out
}

async fn create_request(site: &Site, c: &Client, vendor: &User) -> i64 {
    let body = json!({
        "device": "plc-7", "ports": [502],
        "start": site.clock.at(Duration::from_secs(3600)),
        "end": site.clock.at(Duration::from_secs(3 * 3600)),
        "reason": "recipe update on line 3", "ticket": "CHG-4711",
    });
    let (s, body) = call(
        c.post(format!("{}/api/v1/requests", site.url()))
            .bearer_auth(&vendor.token)
            .json(&body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["id"].as_i64().unwrap()
}

/// `n` more pending requests like `template`, by the same vendor, inserted in one statement
/// (through the API they would take minutes of durable commits); returns all pending ids of
/// that vendor, oldest first.
async fn clone_requests(store: &Store, template: i64, n: i64) -> VecDeque<i64> {
    let cols = "requester_id, org_id, device_id, ports, window_start, window_end, reason, ticket, \
                state, created_at, updated_at";
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
         INSERT INTO access_requests ({cols}) SELECT {cols} FROM n, access_requests WHERE id = $1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(template)
        .bind(n)
        .execute(store.pool())
        .await
        .unwrap();
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM access_requests WHERE state = 'requested' AND requester_id = \
         (SELECT requester_id FROM access_requests WHERE id = $1) ORDER BY id",
    )
    .bind(template)
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(id,)| id).collect()
}

/// One kind of request sent at a fixed rate.
struct Stream {
    rate: f64,
    make: Box<dyn FnMut() -> RequestBuilder>,
}

/// The outcome of one open-loop load.
struct Outcome {
    /// Per stream: latencies in ms (from the scheduled time) of the successful requests.
    latencies: Vec<Vec<f64>>,
    errors: Vec<usize>,
    /// Latest a request left after its scheduled time, in ms: the load generator's own lag.
    max_lag_ms: f64,
}

/// Sends each stream's requests at its rate for `secs` seconds, on schedule whatever the
/// answers do, and waits for the answers.
async fn open_loop(mut streams: Vec<Stream>, secs: f64) -> Outcome {
    // The merged schedule: (offset from start, stream).
    let mut plan: Vec<(Duration, usize)> = Vec::new();
    for (k, s) in streams.iter().enumerate() {
        let n = (s.rate * secs).round() as u64;
        for i in 0..n {
            plan.push((Duration::from_secs_f64(i as f64 / s.rate), k));
        }
    }
    plan.sort();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = tokio::task::JoinSet::new();
    let mut max_lag = Duration::ZERO;
    let mut sent = vec![0usize; streams.len()];
    for (offset, k) in plan {
        sent[k] += 1;
        let at = start + offset;
        tokio::time::sleep_until(at).await;
        max_lag = max_lag.max(at.elapsed());
        let req = (streams[k].make)();
        tasks.spawn(async move {
            let ok = match req.send().await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    resp.bytes().await.is_ok() && ok
                }
                Err(_) => false,
            };
            (k, ok, at.elapsed())
        });
    }
    let mut out = Outcome {
        latencies: vec![Vec::new(); streams.len()],
        errors: vec![0; streams.len()],
        max_lag_ms: max_lag.as_secs_f64() * 1000.0,
    };
    let deadline = tokio::time::Instant::now() + DRAIN;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        let (k, ok, latency) = done.unwrap();
        if ok {
            out.latencies[k].push(latency.as_secs_f64() * 1000.0);
        } else {
            out.errors[k] += 1;
        }
    }
    // Abandoned: unanswered within the drain time.
    tasks.abort_all();
    for (k, sent) in sent.into_iter().enumerate() {
        out.errors[k] = sent - out.latencies[k].len();
    }
    out
}

fn spread(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.digits$} - {hi:.digits$}")
}

/// Per-run results of one row of a table.
#[derive(Default)]
struct Row {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
    count: usize,
    errors: usize,
    /// Per run: server and load-generator CPU ms per answered request (of the whole load).
    server_cpu: Vec<f64>,
    client_cpu: Vec<f64>,
}

impl Row {
    fn add(&mut self, lat: &[f64], errors: usize, secs: f64) {
        self.p50.push(percentile(lat, 50.0));
        self.p99.push(percentile(lat, 99.0));
        self.rate.push(lat.len() as f64 / secs);
        self.count += lat.len();
        self.errors += errors;
    }
}

/// Fixture of one site for the API loads.
struct ApiFixture {
    /// [`SESSIONS`] sessions of one vendor.
    listers: Vec<User>,
    supervisors: Vec<User>,
    pending: Arc<std::sync::Mutex<VecDeque<i64>>>,
}

/// The loads: (label, GET share of the rate, approve share).
const LOADS: [(&str, f64, f64); 3] = [
    ("GET only", 1.0, 0.0),
    ("approve only", 0.0, 1.0),
    ("mixed 4:1", 0.8, 0.2),
];

fn api_streams(site: &Site, c: &Client, fx: &ApiFixture, get: f64, approve: f64) -> Vec<Stream> {
    let url = site.url().to_owned();
    let mut streams = Vec::new();
    let tokens =
        |users: &[User]| -> Vec<String> { users.iter().map(|u| u.token.clone()).collect() };
    if get > 0.0 {
        let (c, url, tokens) = (c.clone(), url.clone(), tokens(&fx.listers));
        let mut turn = 0;
        streams.push(Stream {
            rate: get,
            make: Box::new(move || {
                turn += 1;
                c.get(format!("{url}/api/v1/requests"))
                    .bearer_auth(&tokens[turn % tokens.len()])
            }),
        });
    }
    if approve > 0.0 {
        let (c, tokens, pending) = (c.clone(), tokens(&fx.supervisors), fx.pending.clone());
        let mut turn = 0;
        streams.push(Stream {
            rate: approve,
            make: Box::new(move || {
                let id = pending
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("enough pending requests were made");
                turn += 1;
                c.post(format!("{url}/api/v1/requests/{id}/approve"))
                    .bearer_auth(&tokens[turn % tokens.len()])
                    .json(&json!({}))
            }),
        });
    }
    streams
}

/// Waits (up to 10 s) until `GET /readyz`, one database query, answers within 20 ms: the work
/// left queued by an overloaded load is done before the next load starts.
async fn settle(site: &Site, c: &Client) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let t = Instant::now();
        let ok = matches!(
            c.get(format!("{}/readyz", site.url())).send().await,
            Ok(r) if r.status().is_success()
        );
        if ok && t.elapsed() < Duration::from_millis(20) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TOTP step-up for each supervisor, on the next 30 s step: approvals need one within 5 min.
async fn step_up(site: &Site, c: &Client, supervisors: &[User]) {
    site.clock.advance(30);
    for who in supervisors {
        let (s, body) = call(
            c.post(format!("{}/api/v1/auth/step-up", site.url()))
                .bearer_auth(&who.token)
                .json(&json!({ "totp": who.secret.code_at(site.clock.unix()) })),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    }
}

/// CPU seconds (user + system) used so far by this process and by this thread (the load
/// generator's), from /proc. The rest of the process is the server: its runtime, its blocking
/// threads and the SQLite threads. PostgreSQL's own processes are not counted.
fn cpu_secs() -> (f64, f64) {
    fn ticks(path: &str) -> f64 {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Clock ticks are 1/100 s on Linux.
        (field(11) + field(12)) / 100.0
    }
    let me = std::process::id();
    (
        ticks("/proc/self/stat"),
        ticks(&format!("/proc/self/task/{me}/stat")),
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fsync_before = fsync_ms(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let load_before = loadavg();
    eprintln!("fdatasync (8 KiB, median of 200): {fsync_before:.2} ms; load average {load_before}");

    // The server's runtime: what `#[tokio::main]` gives `portcullis serve` on this machine.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The load generator's, on this thread.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new();

    let t = Instant::now();
    let mut api_sites = Vec::new();
    if args.api {
        for &b in &args.backends {
            let site = start_site(&server_rt, &pki, b, &[2]);
            let c = client_rt.block_on(async { client(&pki) });
            let fx = client_rt.block_on(async {
                let mut vendors = users(
                    &site,
                    server_rt.handle(),
                    &c,
                    &["vic", "vera"],
                    Role::Vendor,
                )
                .await;
                let names: Vec<String> = (1..=SUPERVISORS).map(|i| format!("sam{i}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let supervisors =
                    users(&site, server_rt.handle(), &c, &names, Role::Supervisor).await;
                let vera = vendors.pop().unwrap();
                let vic = vendors.pop().unwrap();
                for _ in 0..args.listed {
                    create_request(&site, &c, &vic).await;
                }
                let template = create_request(&site, &c, &vera).await;
                let mut listers = vec![vic.clone()];
                for _ in 1..SESSIONS {
                    listers.push(login(&site, &c, &vic).await);
                }
                (listers, supervisors, template)
            });
            let (listers, supervisors, template) = fx;
            let approvals: f64 = args.loads.iter().map(|&l| LOADS[l].2).sum();
            let need = (approvals * args.rate * args.secs * args.runs as f64).ceil() as i64 + 200;
            let pending = server_rt.block_on(clone_requests(&site.store, template, need));
            eprintln!(
                "{}: fixture ready ({} pending requests) after {:.1?}",
                b.label(),
                pending.len(),
                t.elapsed()
            );
            let fx = ApiFixture {
                listers,
                supervisors,
                pending: Arc::new(std::sync::Mutex::new(pending)),
            };
            // Warm up: connections opened, statements prepared, caches filled.
            client_rt.block_on(async {
                step_up(&site, &c, &fx.supervisors).await;
                let warm = api_streams(&site, &c, &fx, args.rate * 0.8, 20.0);
                open_loop(warm, 1.0).await;
            });
            api_sites.push((site, c, fx, LOADS.map(|_| [Row::default(), Row::default()])));
        }
        for run in 0..args.runs {
            for (site, c, fx, rows) in &mut api_sites {
                for &l in &args.loads {
                    let (label, get, approve) = LOADS[l];
                    if approve > 0.0 {
                        client_rt.block_on(step_up(site, c, &fx.supervisors));
                    }
                    let cpu = cpu_secs();
                    let out = client_rt.block_on(async {
                        let streams =
                            api_streams(site, c, fx, get * args.rate, approve * args.rate);
                        open_loop(streams, args.secs).await
                    });
                    let (all, generator) = cpu_secs();
                    client_rt.block_on(settle(site, c));
                    let answered: usize = out.latencies.iter().map(Vec::len).sum();
                    let per = |secs: f64| secs * 1000.0 / answered.max(1) as f64;
                    let server_cpu = per(all - cpu.0 - (generator - cpu.1));
                    let client_cpu = per(generator - cpu.1);
                    // Streams are GET first, then approve, each only when its share is > 0.
                    let mut k = 0;
                    for (which, share) in [(0, get), (1, approve)] {
                        if share > 0.0 {
                            let row = &mut rows[l][which];
                            row.add(&out.latencies[k], out.errors[k], args.secs);
                            row.server_cpu.push(server_cpu);
                            row.client_cpu.push(client_cpu);
                            k += 1;
                        }
                    }
                    eprintln!(
                        "run {} {} {label}: {} (CPU per request: server {server_cpu:.2} ms, \
                         generator {client_cpu:.2} ms; generator lag max {:.1} ms)",
                        run + 1,
                        site.backend.label(),
                        out.latencies
                            .iter()
                            .zip(&out.errors)
                            .map(|(lat, e)| format!(
                                "n={} p50={:.2} ms p99={:.2} ms errors={e}",
                                lat.len(),
                                percentile(lat, 50.0),
                                percentile(lat, 99.0)
                            ))
                            .collect::<Vec<_>>()
                            .join("; "),
                        out.max_lag_ms
                    );
                }
            }
        }
    }

    // Login flood.
    let bounds = [2usize, 16];
    let mut login_rows: Vec<(String, Row, Row, Row)> = Vec::new();
    if args.login {
        let site = start_site(&server_rt, &pki, Backend::Sqlite, &bounds);
        let c = client_rt.block_on(async { client(&pki) });
        let names: Vec<String> = (1..=LOGIN_USERS).map(|i| format!("login{i}")).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let lister = client_rt.block_on(async {
            users(&site, server_rt.handle(), &c, &name_refs, Role::Vendor).await;
            let vic = users(&site, server_rt.handle(), &c, &["vic"], Role::Vendor)
                .await
                .pop()
                .unwrap();
            for _ in 0..args.listed {
                create_request(&site, &c, &vic).await;
            }
            vic
        });
        eprintln!("login fixture ready after {:.1?}", t.elapsed());
        // Row 0: probes alone; then one per bound.
        login_rows.push((
            "none (probes alone)".into(),
            Row::default(),
            Row::default(),
            Row::default(),
        ));
        for b in bounds {
            let label = if b == 2 {
                format!("{b} (default)")
            } else {
                format!("{b} (= clients: no bound)")
            };
            login_rows.push((label, Row::default(), Row::default(), Row::default()));
        }
        for run in 0..args.runs {
            for (i, row) in login_rows.iter_mut().enumerate() {
                let url = if i == 0 {
                    site.servers[0].1.clone()
                } else {
                    site.servers[i - 1].1.clone()
                };
                let (logins, login_errors, out) = client_rt.block_on(login_flood(
                    &c,
                    &url,
                    &names,
                    &lister.token,
                    if i == 0 { 0 } else { args.clients },
                    args.secs,
                ));
                let secs = args.secs;
                row.1.add(&logins, login_errors, secs);
                row.2.add(&out.latencies[0], out.errors[0], secs);
                row.3.add(&out.latencies[1], out.errors[1], secs);
                eprintln!(
                    "run {} login, hashing bound {}: {} logins ({:.1}/s, p50 {:.0} ms, errors \
                     {login_errors}); healthz p50 {:.2} p99 {:.2} ms; list p50 {:.2} p99 {:.2} ms",
                    run + 1,
                    row.0,
                    logins.len(),
                    logins.len() as f64 / secs,
                    percentile(&logins, 50.0),
                    percentile(&out.latencies[0], 50.0),
                    percentile(&out.latencies[0], 99.0),
                    percentile(&out.latencies[1], 50.0),
                    percentile(&out.latencies[1], 99.0),
                );
            }
        }
        server_rt.block_on(site.store.close());
        drop(site);
    }

    let fsync_after = fsync_ms(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let load_after = loadavg();
    eprintln!("done in {:.0?}", t.elapsed());

    if args.api {
        println!(
            "| Backend | Load ({} req/s in total) | Endpoint | Answered/s | p50 ms | p99 ms | \
             p99 of each run (min - max) | Errors | p99 < {TARGET_P99_MS} ms | Server CPU ms \
             per request |\n\
             |---|---|---|---:|---:|---:|---|---:|---|---:|",
            args.rate
        );
        for (site, _, _, rows) in &api_sites {
            for &l in &args.loads {
                let (label, get, approve) = LOADS[l];
                for (which, share, endpoint) in [
                    (0, get, "`GET /api/v1/requests`"),
                    (1, approve, "`POST /api/v1/requests/{id}/approve`"),
                ] {
                    if share == 0.0 {
                        continue;
                    }
                    let r = &rows[l][which];
                    let p99 = median(&r.p99);
                    let met = if p99 < TARGET_P99_MS && r.errors == 0 {
                        "yes"
                    } else {
                        "**no**"
                    };
                    println!(
                        "| {} | {label} | {endpoint} | {:.0} | {:.2} | {:.2} | {} | {} | {met} | \
                         {:.2} |",
                        site.backend.label(),
                        median(&r.rate),
                        median(&r.p50),
                        p99,
                        spread(&r.p99, 2),
                        r.errors,
                        median(&r.server_cpu),
                    );
                }
            }
        }
        println!(
            "\nOpen loop, latency from the scheduled send time; {} s per load and run, medians of \
             {} runs. GET lists the {} requests of one vendor, through {SESSIONS} \
             sessions in turn; each approve takes a fresh pending request (one device, one \
             approval needed), by {SUPERVISORS} supervisors in turn, each after a TOTP \
             step-up. HTTP/1.1 keep-alive over TLS 1.3 on loopback. Server CPU: this \
             process less the load generator's thread, per answered request of the whole load \
             (PostgreSQL's own processes not included); the generator used {:.2} ms per \
             request (median).\n",
            args.secs,
            args.runs,
            args.listed,
            median(
                &api_sites
                    .iter()
                    .flat_map(|(.., rows)| rows.iter().flatten())
                    .flat_map(|r| r.client_cpu.iter().copied())
                    .collect::<Vec<_>>()
            )
        );
    }
    if args.login {
        println!(
            "| Hashing bound | Logins/s | Runs (min - max) | Login p50 ms | Login p99 ms | \
             `GET /healthz` p50 / p99 ms | `GET /api/v1/requests` p50 / p99 ms | Errors |\n\
             |---|---:|---|---:|---:|---|---|---:|"
        );
        for (label, logins, health, list) in &login_rows {
            let (rate, range, p50, p99) = if logins.count == 0 {
                ("-".into(), "-".into(), "-".into(), "-".into())
            } else {
                (
                    format!("{:.1}", median(&logins.rate)),
                    spread(&logins.rate, 1),
                    format!("{:.0}", median(&logins.p50)),
                    format!("{:.0}", median(&logins.p99)),
                )
            };
            println!(
                "| {label} | {rate} | {range} | {p50} | {p99} | {:.2} / {:.2} | {:.2} / {:.2} | {} |",
                median(&health.p50),
                median(&health.p99),
                median(&list.p50),
                median(&list.p99),
                logins.errors + health.errors + list.errors,
            );
        }
        println!(
            "\n{} clients posting `POST /api/v1/auth/login` back to back (argon2id m=19 MiB, t=2, \
             p=1; a correct password, so each also writes a session) for {} s per run, while \
             `GET /healthz` and `GET /api/v1/requests` are sent at {PROBE_RATE}/s each (open \
             loop); SQLite; login rate limit raised to 1,000,000/min; medians of {} runs.\n",
            args.clients, args.secs, args.runs
        );
    }
    println!(
        "Disk: 8 KiB write + fdatasync {fsync_before:.2} ms before, {fsync_after:.2} ms after \
         (median of 200). Load average {load_before} before, {load_after} after."
    );

    // Stop the servers and close the stores before the databases are dropped.
    for (site, ..) in &api_sites {
        server_rt.block_on(site.store.close());
    }
    drop(api_sites);
    server_rt.shutdown_timeout(Duration::from_secs(2));
}

/// `clients` tasks post logins back to back for `secs` seconds while the probes run; returns
/// the login latencies (ms), the failed logins, and the probes' outcome (healthz, then list).
async fn login_flood(
    c: &Client,
    url: &str,
    names: &[String],
    list_token: &str,
    clients: usize,
    secs: f64,
) -> (Vec<f64>, usize, Outcome) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (c, url) = (c.clone(), url.to_owned());
        let user = names[i % names.len()].clone();
        flood.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < end {
                let t = Instant::now();
                let resp = c
                    .post(format!("{url}/api/v1/auth/login"))
                    .json(&json!({ "username": user, "password": PASSWORD }))
                    .send()
                    .await;
                let ok = match resp {
                    Ok(r) => r.status() == StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let probes = {
        let (c1, u1) = (c.clone(), url.to_owned());
        let (c2, u2, token) = (c.clone(), url.to_owned(), list_token.to_owned());
        vec![
            Stream {
                rate: PROBE_RATE,
                make: Box::new(move || c1.get(format!("{u1}/healthz"))),
            },
            Stream {
                rate: PROBE_RATE,
                make: Box::new(move || c2.get(format!("{u2}/api/v1/requests")).bearer_auth(&token)),
            },
        ]
    };
    let out = open_loop(probes, secs).await;
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(done) = flood.join_next().await {
        let (l, e) = done.unwrap();
        lat.extend(l);
        errors += e;
    }
    (lat, errors, out)
}

/// A throwaway database, removed when dropped; SQLite on disk under the target directory.
async fn fresh_db(b: Backend) -> TestDb {
    match b {
        Backend::Sqlite => TestDb::sqlite_in(Path::new(env!("CARGO_TARGET_TMPDIR"))),
        Backend::Postgres => TestDb::postgres().await,
    }
}
