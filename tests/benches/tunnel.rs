//! The relay tunnel benchmark of issue 4: direct TCP (the limit), OpenSSH `ssh -L` and
//! Portcullis (`portcullis serve` + `portcullis connect`, release build), side by side in one
//! run against the same device. Run it through `bash bench/tunnel-compare`, which starts the
//! throwaway sshd and passes its details in `PORTCULLIS_BENCH_SSH_*`; without them the ssh
//! column is left out. Results and their reading: docs/BENCHMARKS.md, "Relay tunnel (issue 4)".
//!
//! ```text
//! cargo bench -p portcullis-e2e --bench tunnel -- [--rounds N] [--mib N] [--rr N] [--setups N]
//!     [--idle N] [--busy N] [--trials N] [--batch N] [--reconnects N] [--link-down S[-S2]]
//!     [--secs N] [--congestion bbr,cubic,newreno]
//!     [--only memory,throughput,latency,enforcement,enforcement-pg,connector,connector-link,
//!             shaped,iperf]
//! ```
//!
//! `shaped` (across the link `bench/tunnel-compare --link` shapes) and `iperf` (iperf3 through
//! each path, 1 and 4 streams, both directions): issue 16, `tunnel/shaped.rs`; opt-in too.
//!
//! `connector` and `connector-link` (the site connector of issue 5, `tunnel/connector.rs`) run
//! only when named in `--only`; a run without `--only` is the issue-4 comparison as before.
//! `connector`: relay direct mode against relay + site connector on loopback (throughput with
//! `--mib`/`--rounds`, latency with `--rr`/`--setups`), then `--reconnects` relay restarts
//! (SIGKILL, then SIGTERM). `connector-link` (root): `--reconnects` drops of the plant's link
//! for `--link-down` seconds (`8`, or a range `8-12` spread evenly over the trials) between
//! network namespaces.
//!
//! The device speaks a one-byte mode first: `D` + u64 length (it sends that many bytes, then
//! FIN), `U` (it reads to EOF, then answers the u64 count), `E` (it answers `!`, then echoes).
//!
//! `enforcement-pg` runs the enforcement trials again with `portcullis web` and `portcullis
//! relay` as two processes on a fresh PostgreSQL database (a revoke reaches the relay through
//! LISTEN/NOTIFY); it is skipped, with a line saying so, when PostgreSQL
//! (`PORTCULLIS_TEST_POSTGRES_URL`, default 127.0.0.1:5432) does not answer.
//!
//! Across a veth pair (`bash bench/tunnel-compare --veth`): this process runs in the server
//! side's network namespace with the device, sshd and `serve` on `PORTCULLIS_BENCH_SERVER_IP`;
//! `PORTCULLIS_BENCH_CLIENT_NETNS` names the client side's namespace, where `ssh -L`, the
//! vendor's `portcullis` commands and every client-side socket of the load generator live.
//! Only throughput and latency are measured there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "tunnel/connector.rs"]
mod connector;
#[path = "tunnel/shaped.rs"]
mod shaped;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Placement, Plant, Reaped, Tunnel};
use portcullis_core::Timestamp;
use portcullis_testkit::devices::EchoDevice;
use portcullis_testkit::stats::{median, percentile};
use portcullis_testkit::{TestDb, postgres_admin_url};
use sqlx::Connection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
struct Opts {
    rounds: usize,
    /// MiB per throughput measurement (one stream, or split over 8).
    mib: u64,
    rr: usize,
    setups: usize,
    idle: usize,
    busy: usize,
    trials: usize,
    batch: usize,
    /// Relay restarts of each kind, and link drops, for the site connector's reconnect time.
    reconnects: usize,
    /// Seconds the plant's link stays down in `connector-link`: `8`, or `8-12` for durations
    /// evenly spread over that range across the trials (the first at 8, the last at 12).
    link_down: (f64, f64),
    /// Seconds per iperf3 test (`shaped`, `iperf`).
    secs: u64,
    /// The congestion controllers `shaped` compares, a Portcullis path each (`iperf`: the first).
    congestion: Vec<String>,
    only: Vec<String>,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            rounds: 5,
            mib: 512,
            rr: 2000,
            setups: 200,
            idle: 1000,
            busy: 100,
            trials: 200,
            batch: 25,
            reconnects: 10,
            link_down: (8.0, 8.0),
            secs: 10,
            congestion: ["bbr", "cubic", "newreno"].map(str::to_owned).to_vec(),
            only: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = || args.next().and_then(|v| v.parse::<usize>().ok()).unwrap();
            match a.as_str() {
                "--rounds" => o.rounds = num(),
                "--mib" => o.mib = num() as u64,
                "--rr" => o.rr = num(),
                "--setups" => o.setups = num(),
                "--idle" => o.idle = num(),
                "--busy" => o.busy = num(),
                "--trials" => o.trials = num(),
                "--batch" => o.batch = num(),
                "--reconnects" => o.reconnects = num(),
                "--link-down" => {
                    let v = args.next().unwrap();
                    let secs = |t: &str| t.parse::<f64>().unwrap();
                    o.link_down = match v.split_once('-') {
                        Some((a, b)) => (secs(a), secs(b)),
                        None => (secs(&v), secs(&v)),
                    };
                }
                "--secs" => o.secs = num() as u64,
                "--congestion" => {
                    o.congestion = args.next().unwrap().split(',').map(str::to_owned).collect();
                }
                "--only" => {
                    o.only = args.next().unwrap().split(',').map(str::to_owned).collect();
                }
                "--bench" => {}
                other => panic!("unknown option {other}"),
            }
        }
        o
    }

    fn wants(&self, part: &str) -> bool {
        if self.only.is_empty() {
            !OPT_IN_PARTS.contains(&part)
        } else {
            self.only.iter().any(|p| p == part)
        }
    }
}

/// The parts a veth run measures; the rest are loopback-only.
const VETH_PARTS: [&str; 4] = ["throughput", "latency", "shaped", "iperf"];
/// The parts that run only when `--only` names them (the site connector, issue 5; the iperf3
/// comparisons, issue 16).
const OPT_IN_PARTS: [&str; 4] = ["connector", "connector-link", "shaped", "iperf"];

// ---------------------------------------------------------------------------------------------
// The client side's network namespace (veth runs only).

/// A thread that has moved into the client side's network namespace and runs jobs there: a
/// socket belongs to the namespace of the thread that creates it, and tokio's own threads stay
/// in the server side's. Blocking calls are fine on it (a `connect()` on the client side's
/// loopback or across the veth takes microseconds); the cost, one channel hop each way per
/// new connection, is paid by every path alike.
struct ClientNs {
    name: String,
    jobs: mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

/// Set once in `run` from `PORTCULLIS_BENCH_CLIENT_NETNS`; unset on loopback.
static CLIENT_NS: OnceLock<ClientNs> = OnceLock::new();

impl ClientNs {
    fn enter(name: &str) -> ClientNs {
        let path = format!("/run/netns/{name}");
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (jobs, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                let moved = rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                );
                let ok = moved.is_ok();
                ready_tx.send(moved).unwrap();
                if ok {
                    for job in rx {
                        job();
                    }
                }
            })
            .unwrap();
        ready
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
        ClientNs {
            name: name.to_owned(),
            jobs,
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .unwrap();
        rx.await.unwrap()
    }
}

/// A client-side TCP connection to `addr` (in the client side's namespace on a veth run).
async fn dial(addr: SocketAddr) -> std::io::Result<TcpStream> {
    match CLIENT_NS.get() {
        None => TcpStream::connect(addr).await,
        Some(ns) => {
            let s = ns.run(move || std::net::TcpStream::connect(addr)).await?;
            s.set_nonblocking(true)?;
            TcpStream::from_std(s)
        }
    }
}

/// A loopback address with a port free on the client side (free when asked).
async fn client_free_addr() -> SocketAddr {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    match CLIENT_NS.get() {
        None => free(),
        Some(ns) => ns.run(free).await,
    }
}

/// `program`, to run on the client side (behind `ip netns exec` on a veth run).
fn client_cmd(program: &str) -> Command {
    match CLIENT_NS.get() {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, program]);
            c
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The device.

/// A 256 KiB block of non-repeating-looking bytes for downloads (content does not matter to
/// the tunnel, but it keeps anything from compressing it).
fn block() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    Arc::new(
        (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    )
}

async fn device_conn<S: AsyncRead + AsyncWrite + Unpin>(mut c: S, block: Arc<Vec<u8>>) {
    let mut mode = [0u8; 1];
    if c.read_exact(&mut mode).await.is_err() {
        return;
    }
    match mode[0] {
        b'D' => {
            let Ok(mut left) = c.read_u64().await else {
                return;
            };
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if c.write_all(&block[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = c.shutdown().await;
            let mut sink = [0u8; 64];
            while let Ok(n) = c.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
        b'U' => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match c.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = c.write_u64(total).await;
            let _ = c.shutdown().await;
        }
        b'E' => {
            if c.write_all(b"!").await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if c.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

async fn run_device(listener: TcpListener) {
    let block = block();
    loop {
        if let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(device_conn(s, block.clone()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client-side measurements, identical for every path.

async fn open(addr: SocketAddr, mode: u8) -> TcpStream {
    let mut s = dial(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&[mode]).await.unwrap();
    s
}

/// Bytes/s of downloading `bytes` on each of `streams` connections at once.
async fn download(addr: SocketAddr, streams: usize, bytes: u64) -> f64 {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            let mut s = open(addr, b'D').await;
            s.write_u64(bytes).await.unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            assert_eq!(got, bytes, "download through {addr} cut short");
        });
    }
    while set.join_next().await.transpose().unwrap().is_some() {}
    (streams as u64 * bytes) as f64 / t.elapsed().as_secs_f64()
}

/// Bytes/s of uploading `bytes` on each of `streams` connections at once (until the device has
/// counted them all).
async fn upload(addr: SocketAddr, streams: usize, bytes: u64) -> f64 {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            let s = open(addr, b'U').await;
            let (mut rd, mut wr) = s.into_split();
            let block = block();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                wr.write_all(&block[..n]).await.unwrap();
                left -= n as u64;
            }
            wr.shutdown().await.unwrap();
            let counted = rd.read_u64().await.unwrap();
            assert_eq!(counted, bytes, "upload through {addr} cut short");
        });
    }
    while set.join_next().await.transpose().unwrap().is_some() {}
    (streams as u64 * bytes) as f64 / t.elapsed().as_secs_f64()
}

/// Microseconds per 1-byte request/response on one established connection.
async fn request_response(addr: SocketAddr, n: usize) -> Vec<f64> {
    let mut s = open(addr, b'E').await;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    for _ in 0..50 {
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut b).await.unwrap();
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

/// Microseconds from `connect()` to the device's first byte, for `n` new connections in turn.
async fn setup_first_byte(addr: SocketAddr, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = open(addr, b'E').await;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Paths.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Direct,
    Ssh,
    Portcullis,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct TCP",
            Via::Ssh => "ssh -L",
            Via::Portcullis => "Portcullis",
        }
    }
}

#[derive(Debug, Clone)]
struct SshConf {
    host: String,
    port: String,
    user: String,
    key: String,
    /// The sshd master whose children serve our connections (for memory).
    sshd_pid: Option<u32>,
}

impl SshConf {
    fn from_env() -> Option<SshConf> {
        let var = |k: &str| std::env::var(k).ok();
        let (host, port, pid) = (
            var("PORTCULLIS_BENCH_SSH_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
            var("PORTCULLIS_BENCH_SSH_PORT")?,
            var("PORTCULLIS_BENCH_SSHD_PID"),
        );
        Some(SshConf {
            host,
            port,
            user: var("PORTCULLIS_BENCH_SSH_USER")?,
            key: var("PORTCULLIS_BENCH_SSH_KEY")?,
            sshd_pid: pid.and_then(|p| p.parse().ok()),
        })
    }

    /// `ssh -N -L` to `device_port` on the sshd's side; returns the process and local address.
    async fn forward(&self, device_port: u16) -> (Reaped, SocketAddr) {
        let (child, locals) = self.forward_ports(&[device_port]).await;
        (child, locals[0])
    }

    /// One `ssh -N` forwarding each of `ports` (one `-L` each, all in the one ssh connection);
    /// the first must be a device of `device_conn`'s kind, which is how readiness is checked.
    async fn forward_ports(&self, ports: &[u16]) -> (Reaped, Vec<SocketAddr>) {
        let mut locals = Vec::new();
        for _ in ports {
            locals.push(client_free_addr().await);
        }
        let mut cmd = client_cmd("ssh");
        cmd.args([
            "-N",
            "-T",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "BatchMode=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-o", "Compression=no"])
        .args([
            "-c",
            "aes128-gcm@openssh.com",
            "-i",
            &self.key,
            "-p",
            &self.port,
        ]);
        for (local, port) in locals.iter().zip(ports) {
            cmd.arg("-L").arg(format!("{local}:127.0.0.1:{port}"));
        }
        let child = cmd
            .arg(format!("{}@{}", self.user, self.host))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let child = Reaped(child);
        let local = locals[0];
        for _ in 0..100 {
            if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(1), dial(local)).await {
                let mut b = [0u8; 1];
                if s.write_all(b"E").await.is_ok()
                    && tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
                        .await
                        .is_ok_and(|r| r.is_ok())
                {
                    return (child, locals);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ssh -L to {}:{} did not come up", self.host, self.port);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory.

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// RSS of `pid` and all its descendants, KiB.
fn tree_rss_kib(pid: u32) -> u64 {
    descendants(pid).into_iter().map(rss_kib).sum()
}

#[derive(Debug, Default, Clone)]
struct MemResult {
    /// (server side KiB before, with idle, client side before, with idle)
    idle: (u64, u64, u64, u64),
    /// Peak server-side and client-side KiB over the busy phase.
    busy: (u64, u64),
}

/// Opens `idle` connections (each through to the device), measures, closes them; then `busy`
/// connections echoing 16 KiB blocks for 3 s, sampling RSS every 50 ms.
async fn memory(
    addr: SocketAddr,
    server: impl Fn() -> u64,
    client: impl Fn() -> u64,
    idle: usize,
    busy: usize,
) -> MemResult {
    let mut r = MemResult::default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s0, c0) = (server(), client());
    let mut conns = Vec::with_capacity(idle);
    for _ in 0..idle {
        let mut s = open(addr, b'E').await;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.idle = (s0, server(), c0, client());
    drop(conns);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop = Instant::now() + Duration::from_secs(3);
    let mut set = JoinSet::new();
    for _ in 0..busy {
        set.spawn(async move {
            let s = open(addr, b'E').await;
            let (mut rd, mut wr) = s.into_split();
            let mut ack = [0u8; 1];
            rd.read_exact(&mut ack).await.unwrap();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while rd.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
            let block = vec![7u8; 16 * 1024];
            while Instant::now() < stop {
                if wr.write_all(&block).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
            let _ = reader.await;
        });
    }
    let (mut sp, mut cp) = (0, 0);
    while Instant::now() < stop {
        sp = sp.max(server());
        cp = cp.max(client());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while set.join_next().await.transpose().unwrap().is_some() {}
    r.busy = (sp, cp);
    tokio::time::sleep(Duration::from_secs(1)).await;
    r
}

// ---------------------------------------------------------------------------------------------
// Enforcement.

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Opens one stream through `t` to the echo device and waits until it is through.
async fn live_stream(t: &Tunnel, port: u16) -> TcpStream {
    let mut s = dial(t.local(port)).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    s
}

async fn connect_all(plant: &Arc<Plant>, ids: &[i64]) -> Vec<Tunnel> {
    let mut set = JoinSet::new();
    for (i, &id) in ids.iter().enumerate() {
        let p = Arc::clone(plant);
        set.spawn(async move { (i, p.vera.connect(id, &[], 1).await) });
    }
    let mut out: Vec<(usize, Tunnel)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Revoke -> device-side close, ms (from sending the revoke request), and the revoke API call's
/// own duration, ms.
async fn revoke_trials(
    plant: &Arc<Plant>,
    echo: &EchoDevice,
    port: u16,
    trials: usize,
    batch: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut lat, mut api) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < trials {
        let n = batch.min(trials - done);
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(plant.grant(&port.to_string(), "+1h").await);
        }
        let tunnels = connect_all(plant, &ids).await;
        let mut streams = Vec::new();
        for t in &tunnels {
            streams.push(live_stream(t, port).await);
        }
        while echo.try_next_close().is_some() {}
        for id in ids {
            let t0 = Instant::now();
            plant.broker.revoke(&plant.sam, id).await;
            api.push(t0.elapsed().as_secs_f64() * 1e3);
            let ev = tokio::time::timeout(Duration::from_secs(10), echo.next_close())
                .await
                .expect("the device saw the revoked stream close");
            lat.push(ev.at.saturating_duration_since(t0).as_secs_f64() * 1e3);
        }
        drop(streams);
        drop(tunnels);
        done += n;
        eprintln!("  revoke: {done}/{trials}");
    }
    (lat, api)
}

/// Window end -> device-side close, ms. A batch's grants all end at the same whole second.
async fn window_trials(
    plant: &Arc<Plant>,
    echo: &EchoDevice,
    port: u16,
    trials: usize,
    batch: usize,
) -> Vec<f64> {
    let mut lat = Vec::new();
    let mut done = 0;
    while done < trials {
        let n = batch.min(trials - done);
        // Enough time to request, approve and connect the batch (measured ~0.3 s each).
        let end = (unix_now() + 6.0 + 0.4 * n as f64).ceil();
        let until = Timestamp::from_unix_micros((end as i64) * 1_000_000)
            .unwrap()
            .to_rfc3339();
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(plant.grant(&port.to_string(), &until).await);
        }
        let tunnels = connect_all(plant, &ids).await;
        let mut streams = Vec::new();
        for t in &tunnels {
            streams.push(live_stream(t, port).await);
        }
        assert!(
            unix_now() < end,
            "setting up {n} grants took past their window end: use a smaller --batch"
        );
        while echo.try_next_close().is_some() {}
        let end_at = Instant::now() + Duration::from_secs_f64(end - unix_now());
        for _ in 0..n {
            let ev = tokio::time::timeout(Duration::from_secs(30), echo.next_close())
                .await
                .expect("the device saw the stream close at window end");
            let ms = if ev.at >= end_at {
                ev.at.duration_since(end_at).as_secs_f64() * 1e3
            } else {
                -(end_at.duration_since(ev.at).as_secs_f64() * 1e3)
            };
            lat.push(ms);
        }
        drop(streams);
        for t in tunnels {
            let _ = tokio::time::timeout(Duration::from_secs(10), t.exit()).await;
        }
        done += n;
        eprintln!("  window end: {done}/{trials}");
    }
    lat
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn gbit(bps: f64) -> f64 {
    bps * 8.0 / 1e9
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({min:.2} - {max:.2})", v.len())
}

fn print_throughput(results: &BTreeMap<(String, Via), Vec<f64>>, vias: &[Via]) {
    println!(
        "\n| Measurement | {} | Portcullis / ssh -L | Portcullis / direct |",
        vias.iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}---:|---:|", "---:|".repeat(vias.len()));
    let names: Vec<String> = {
        let mut seen = Vec::new();
        for (k, _) in results.keys() {
            if !seen.contains(k) {
                seen.push(k.clone());
            }
        }
        seen
    };
    for name in names {
        let med = |v: Via| results.get(&(name.clone(), v)).map(|x| median(x));
        let cells: Vec<String> = vias
            .iter()
            .map(|&v| med(v).map_or("-".into(), |m| format!("{:.2} Gbit/s", gbit(m))))
            .collect();
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2} x", a / b),
            _ => "-".into(),
        };
        println!(
            "| {name} | {} | {} | {} |",
            cells.join(" | "),
            ratio(med(Via::Portcullis), med(Via::Ssh)),
            ratio(med(Via::Portcullis), med(Via::Direct)),
        );
    }
    println!("\nRuns per cell (min - max, Gbit/s):");
    for ((name, via), v) in results {
        let g: Vec<f64> = v.iter().map(|&x| gbit(x)).collect();
        println!("  {name} / {}: {}", via.name(), spread(&g));
    }
}

fn pct_row(label: &str, v: &[f64]) -> String {
    format!(
        "| {label} | {:.0} | {:.0} | {:.0} | {} |",
        percentile(v, 50.0),
        percentile(v, 99.0),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        v.len()
    )
}

/// The UDP `RcvbufErrors` counter of this network namespace, plus the client side's on a veth
/// run (each namespace counts its own).
async fn udp_rcvbuf_errors() -> u64 {
    let here = rcvbuf_errors_in("/proc/net/snmp");
    match CLIENT_NS.get() {
        None => here,
        // The calling thread's namespace, not the process's.
        Some(ns) => {
            here + ns
                .run(|| rcvbuf_errors_in("/proc/thread-self/net/snmp"))
                .await
        }
    }
}

/// Bytes received and sent by this network namespace's interfaces other than `lo` (on a veth
/// run: the server side's end of the pair; `ip netns exec` mounts that namespace's /sys).
fn link_bytes() -> u64 {
    let Ok(links) = std::fs::read_dir("/sys/class/net") else {
        return 0;
    };
    let count = |dir: &std::path::Path, f: &str| -> u64 {
        std::fs::read_to_string(dir.join("statistics").join(f))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    links
        .flatten()
        .filter(|l| l.file_name() != "lo")
        .map(|l| count(&l.path(), "rx_bytes") + count(&l.path(), "tx_bytes"))
        .sum()
}

fn rcvbuf_errors_in(snmp: &str) -> u64 {
    let snmp = std::fs::read_to_string(snmp).unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let opts = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(opts.clone()));
    // In network namespaces of its own, on a thread and runtime of its own.
    if opts.wants("connector-link") && std::env::var_os("PORTCULLIS_BENCH_CLIENT_NETNS").is_none() {
        connector::link_drop(&opts);
    }
    drop(rt);
}

async fn run(opts: Opts) {
    println!("# Relay tunnel benchmark ({})", machine());
    println!("options: {opts:?}");
    let server_ip = std::env::var("PORTCULLIS_BENCH_SERVER_IP").ok().map(|v| {
        v.parse::<IpAddr>()
            .expect("PORTCULLIS_BENCH_SERVER_IP is an IP address")
    });
    let veth = match (
        server_ip,
        std::env::var("PORTCULLIS_BENCH_CLIENT_NETNS").ok(),
    ) {
        (Some(ip), Some(ns)) => {
            let _ = CLIENT_NS.set(ClientNs::enter(&ns));
            println!(
                "veth run: server side (device, sshd, `portcullis serve`) on {ip} in this \
                 process's network namespace; client side (`ssh -L`, `portcullis connect`, the \
                 load generator's sockets) in namespace {ns}"
            );
            if let Ok(link) = std::env::var("PORTCULLIS_BENCH_LINK") {
                println!("link: {link}");
            }
            println!("memory and enforcement are measured on loopback only: not run here");
            Some(ip)
        }
        (None, None) => None,
        _ => panic!("PORTCULLIS_BENCH_SERVER_IP and PORTCULLIS_BENCH_CLIENT_NETNS go together"),
    };
    let wants = |part: &str| opts.wants(part) && (veth.is_none() || VETH_PARTS.contains(&part));

    let echo = EchoDevice::start().await;
    if ["memory", "throughput", "latency", "enforcement"]
        .iter()
        .any(|p| wants(p))
    {
        tunnel_parts(&opts, &wants, veth, &echo).await;
    }
    if wants("enforcement-pg") {
        enforcement_pg(&opts, &echo).await;
    }
    if wants("connector") {
        connector::loopback(&opts).await;
    }
    if wants("iperf") {
        shaped::iperf_compare(&opts, veth).await;
    }
    if wants("shaped") {
        match veth {
            Some(ip) => shaped::shaped(&opts, ip).await,
            None => {
                println!("shaped: not run (it needs the link of `bench/tunnel-compare --link`)")
            }
        }
    }
}

/// Everything measured against the one `serve` plant: memory, throughput, latency and
/// in-process enforcement. `veth`: the server side's address on a veth run.
async fn tunnel_parts(
    opts: &Opts,
    wants: &dyn Fn(&str) -> bool,
    veth: Option<IpAddr>,
    echo: &EchoDevice,
) {
    let ssh = SshConf::from_env();
    if ssh.is_none() {
        println!(
            "no PORTCULLIS_BENCH_SSH_*: the ssh -L column is left out (run bench/tunnel-compare)"
        );
    }

    // On a veth run the device listens on every address of the server side's namespace: the
    // client side reaches it across the veth (direct TCP), the relay and sshd on loopback.
    let bind = match veth {
        Some(_) => "0.0.0.0:0",
        None => "127.0.0.1:0",
    };
    let l = TcpListener::bind(bind).await.unwrap();
    let device_port = l.local_addr().unwrap().port();
    let direct = SocketAddr::new(veth.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), device_port);
    tokio::spawn(run_device(l));
    let echo_port = echo.addr().port();

    let t = Instant::now();
    let placement = placement(veth);
    let plant = Arc::new(
        Plant::placed(
            None,
            false,
            &[device_port, echo_port],
            &["--max-streams-per-grant", "5000", "--idle-timeout", "1h"],
            &placement,
        )
        .await,
    );
    let grant = plant
        .grant(&format!("{device_port},{echo_port}"), "+2h")
        .await;
    let tunnel = plant.vera.connect(grant, &[], 2).await;
    let pc = tunnel.local(device_port);
    eprintln!(
        "broker up, vendor connected in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (ssh_child, ssh_addr) = match &ssh {
        Some(s) => {
            let (c, a) = s.forward(device_port).await;
            (Some(c), Some(a))
        }
        None => (None, None),
    };
    let mut vias = vec![(Via::Direct, direct)];
    if let Some(a) = ssh_addr {
        vias.push((Via::Ssh, a));
    }
    vias.push((Via::Portcullis, pc));
    let via_list: Vec<Via> = vias.iter().map(|v| v.0).collect();

    // Memory first, on a fresh relay: after bulk transfers the allocator keeps freed buffers,
    // which new streams would reuse unseen.
    if wants("memory") {
        println!(
            "\n## Memory ({} idle connections, then {} busy ones echoing for 3 s; VmRSS)",
            opts.idle, opts.busy
        );
        println!(
            "\n| Path | server side before | with idle | per idle conn | busy peak | per busy conn | \
             client side before | with idle | per idle conn | busy peak |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let serve_pid = plant.broker.child.as_ref().unwrap().0.id();
        let connect_pid = tunnel.child.0.id();
        let mut rows = vec![(
            Via::Portcullis,
            memory(
                pc,
                move || rss_kib(serve_pid),
                move || rss_kib(connect_pid),
                opts.idle,
                opts.busy,
            )
            .await,
        )];
        if let (Some(sshd), Some(c), Some(a)) =
            (ssh.as_ref().and_then(|s| s.sshd_pid), &ssh_child, ssh_addr)
        {
            let ssh_pid = c.0.id();
            // Everything the sshd master forked (the session's privileged and unprivileged
            // processes), without the master itself.
            let server = move || tree_rss_kib(sshd) - rss_kib(sshd);
            rows.push((
                Via::Ssh,
                memory(a, server, move || rss_kib(ssh_pid), opts.idle, opts.busy).await,
            ));
        }
        for (via, m) in rows {
            let (s0, s1, c0, c1) = m.idle;
            let per = |a: u64, b: u64, n: usize| (b as f64 - a as f64) / n as f64;
            println!(
                "| {} | {} KiB | {} KiB | {:.1} KiB | {} KiB | {:.1} KiB | {} KiB | {} KiB | {:.1} KiB | {} KiB |",
                via.name(),
                s0,
                s1,
                per(s0, s1, opts.idle),
                m.busy.0,
                per(s0, m.busy.0, opts.busy),
                c0,
                c1,
                per(c0, c1, opts.idle),
                m.busy.1
            );
        }
    }
    if wants("throughput") {
        let bytes = opts.mib * 1024 * 1024;
        let mut res: BTreeMap<(String, Via), Vec<f64>> = BTreeMap::new();
        let mut drops: BTreeMap<Via, u64> = BTreeMap::new();
        let mut crossed: BTreeMap<Via, u64> = BTreeMap::new();
        // Warm-up: one small transfer each way on every path.
        for &(_, a) in &vias {
            download(a, 1, 16 << 20).await;
            upload(a, 1, 16 << 20).await;
        }
        for round in 0..opts.rounds {
            // Rotate the order each round so no path always goes first.
            let mut order = vias.clone();
            order.rotate_left(round % vias.len());
            for &(via, a) in &order {
                let mut put = |k: &str, v: f64| {
                    res.entry((k.to_owned(), via)).or_default().push(v);
                };
                let drops0 = udp_rcvbuf_errors().await;
                let crossed0 = link_bytes();
                put("1. download, 1 stream", download(a, 1, bytes).await);
                put("2. upload, 1 stream", upload(a, 1, bytes).await);
                put("3. download, 8 streams", download(a, 8, bytes / 8).await);
                put("4. upload, 8 streams", upload(a, 8, bytes / 8).await);
                *drops.entry(via).or_default() += udp_rcvbuf_errors().await - drops0;
                *crossed.entry(via).or_default() += link_bytes() - crossed0;
            }
            eprintln!("  throughput round {}/{} done", round + 1, opts.rounds);
        }
        println!(
            "\n## Throughput ({} MiB per measurement, {} interleaved rounds, medians, {})",
            opts.mib,
            opts.rounds,
            if veth.is_some() {
                "across the veth pair"
            } else {
                "loopback"
            }
        );
        print_throughput(&res, &via_list);
        println!(
            "UDP datagrams dropped for a full socket receive buffer (RcvbufErrors) during the \
             measurements of: {drops:?}"
        );
        if veth.is_some() {
            let mib: BTreeMap<&str, u64> = crossed
                .iter()
                .map(|(v, b)| (v.name(), b / (1024 * 1024)))
                .collect();
            println!(
                "MiB through the veth (received + sent at the server side's end) during the \
                 measurements of: {mib:?}"
            );
        }
    }

    if wants("latency") {
        let mut rr: BTreeMap<Via, Vec<f64>> = BTreeMap::new();
        let mut setup: BTreeMap<Via, Vec<f64>> = BTreeMap::new();
        for round in 0..opts.rounds {
            let mut order = vias.clone();
            order.rotate_left(round % vias.len());
            for &(via, a) in &order {
                rr.entry(via)
                    .or_default()
                    .extend(request_response(a, opts.rr / opts.rounds.max(1)).await);
                setup
                    .entry(via)
                    .or_default()
                    .extend(setup_first_byte(a, opts.setups / opts.rounds.max(1)).await);
            }
        }
        println!(
            "\n## Latency, microseconds ({} interleaved rounds)",
            opts.rounds
        );
        println!("\n| Path | p50 | p99 | max | n |\n|---|---:|---:|---:|---:|");
        for &v in &via_list {
            println!(
                "{}",
                pct_row(&format!("1-byte request/response, {}", v.name()), &rr[&v])
            );
        }
        for &v in &via_list {
            println!(
                "{}",
                pct_row(
                    &format!("new connection to first byte, {}", v.name()),
                    &setup[&v]
                )
            );
        }
        let d = percentile(&rr[&Via::Direct], 50.0);
        let p = percentile(&rr[&Via::Portcullis], 50.0);
        print!("\nadded request/response p50: Portcullis {:.0} us", p - d);
        if rr.contains_key(&Via::Ssh) {
            print!(", ssh -L {:.0} us", percentile(&rr[&Via::Ssh], 50.0) - d);
        }
        println!();
    }

    drop(ssh_child);

    if wants("enforcement") {
        let t = Instant::now();
        let plant = Arc::into_inner(plant).expect("no other holder of the plant");
        let (revoke, api, window) = enforcement(plant, echo, opts).await;
        print_enforcement(
            "in one process (`portcullis serve`, SQLite; revoke over the in-process channel)",
            t.elapsed(),
            &revoke,
            &api,
            &window,
        );
    }
    drop(tunnel);
}

/// Revoke and window-end trials on `plant`'s echo-device grants (the device is `echo`):
/// (revoke -> close, the revoke call itself, window end -> close), ms.
async fn enforcement(
    plant: Plant,
    echo: &EchoDevice,
    opts: &Opts,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let port = echo.addr().port();
    // Approvals accept a step-up no older than 5 minutes, which the plant's supervisor's may be
    // by now, and each phase can take minutes: a new supervisor logs in before each.
    let plant = with_fresh_supervisor(plant, "sue").await;
    let (revoke, api) = revoke_trials(&plant, echo, port, opts.trials, opts.batch).await;
    let plant = Arc::into_inner(plant).expect("no other holder of the plant");
    let plant = with_fresh_supervisor(plant, "sid").await;
    let window = window_trials(&plant, echo, port, opts.trials, opts.batch).await;
    (revoke, api, window)
}

/// `plant` with a new supervisor `name`, just logged in, as the approver.
async fn with_fresh_supervisor(mut plant: Plant, name: &str) -> Arc<Plant> {
    let mut sup = plant.broker.enroll(name, "supervisor", None).await;
    plant.sam = plant.broker.login(&mut sup).await;
    Arc::new(plant)
}

/// Enforcement with `portcullis web` and `portcullis relay` as two processes on a fresh
/// PostgreSQL database: a revoke reaches the relay only through LISTEN/NOTIFY, a window end
/// through the relay's own timer on what the database told it.
async fn enforcement_pg(opts: &Opts, echo: &EchoDevice) {
    let admin = postgres_admin_url();
    // Host and port, without any credentials the URL may hold.
    let server = admin
        .rsplit('@')
        .next()
        .and_then(|s| s.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let title = "across processes (PostgreSQL NOTIFY)";
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
        }
        Ok(Err(e)) => {
            println!("\n## Enforcement {title}: skipped, PostgreSQL at {server} refused: {e}");
            return;
        }
        Err(_) => {
            println!("\n## Enforcement {title}: skipped, PostgreSQL at {server} did not answer");
            return;
        }
    }
    let t = Instant::now();
    let db = TestDb::postgres().await;
    let plant = Plant::on(Some(db.url()), true, &[echo.addr().port()], &[]).await;
    eprintln!(
        "web + relay on PostgreSQL up in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (revoke, api, window) = enforcement(plant, echo, opts).await;
    print_enforcement(
        &format!("{title}: `portcullis web` + `portcullis relay`, a fresh database on {server}"),
        t.elapsed(),
        &revoke,
        &api,
        &window,
    );
    // The plant's processes are gone by now (`enforcement` dropped it); `db` drops the database.
    drop(db);
}

fn print_enforcement(what: &str, took: Duration, revoke: &[f64], api: &[f64], window: &[f64]) {
    println!(
        "\n## Enforcement {what}, milliseconds to the device-side close ({:.0} s)",
        took.as_secs_f64()
    );
    println!("\n| From | p50 | p99 | max | trials |\n|---|---:|---:|---:|---:|");
    let f = |label: &str, v: &[f64]| {
        format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {} |",
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            v.len()
        )
    };
    println!("{}", f("revoke request sent", revoke));
    println!("{}", f("(the revoke API call itself)", api));
    println!("{}", f("window end", window));
}

/// Where the brokers listen and how the vendor's commands run: on `server_ip` with the vendor in
/// the client namespace for a veth or shaped run; on loopback otherwise.
fn placement(server_ip: Option<IpAddr>) -> Placement {
    match (server_ip, CLIENT_NS.get()) {
        (Some(ip), Some(ns)) => Placement {
            listen_ip: ip,
            vendor_prefix: ["ip", "netns", "exec", &ns.name]
                .map(str::to_owned)
                .to_vec(),
        },
        _ => Placement::default(),
    }
}
