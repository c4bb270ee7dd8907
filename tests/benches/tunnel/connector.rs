//! The site-connector benchmark of issue 5 (docs/BENCHMARKS.md, "Site connector (issue 5)").
//! Opt-in: not part of a run without `--only`.
//!
//! - `--only connector` (loopback): one `portcullis serve` with two devices on the same device
//!   server, `plc-7` (no site: the relay dials it, direct relay mode) and `plc-9` (site
//!   `plant-2`: the relay carries its streams through an enrolled `portcullis connector run`),
//!   one `portcullis connect` for each. Throughput (one stream each way) and request/response
//!   and new-stream latency of the two side by side, interleaved round by round, with the CPU
//!   time each process spent per GiB moved. Then the reconnect trials: the relay killed with
//!   SIGKILL and started again on the same addresses (`Broker::kill_and_restart`), and stopped
//!   with SIGTERM and started again, `--reconnects` times each.
//! - `--only connector-link` (root: Linux network namespaces, `common/zones.rs`): the broker in a
//!   `dmz` namespace, the connector in an `ot` namespace behind a veth pair; the dmz's end of
//!   the pair is taken down for `--link-down` seconds (default 8; a range `8-12` spreads the
//!   durations evenly over the trials) and up again, `--reconnects` times.
//!
//! "Back" is the moment the connector logs `connected to relay`: it prints that after the relay
//! has accepted its certificate, recorded the connection (database row and
//! `relay.connector.connect` audit event) and sent its first `Ping`, so the site is usable from
//! then on. Each line of the connector's stderr is stamped by this process as it arrives (a
//! reader thread per pipe). The relay's side is cross-checked on every trial: the new
//! `relay.connector.connect` audit event must be there, and its timestamp is reported too.
//!
//! Each fault comes 10.5 s + i/n x 2 s after the connection in place came up (trial i of n):
//! older than the connector's 10 s `stable_after`, so its backoff starts from the first wait, and
//! spread over the 2 s cycle of the relay's pings and the connector's keep-alives, which sets
//! when a dead link is noticed (a fault at the same phase every time gave the same 5.50 s each
//! time).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_core::Timestamp;
use portcullis_testkit::portcullis_bin;
use portcullis_testkit::stats::{median, percentile};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::common::zones::{self, DMZ, OT, Zones};
use super::common::{Placement, Plant, Reaped, admin};
use super::{
    Opts, download, gbit, pct_row, request_response, rss_kib, run_device, setup_first_byte, upload,
};

const SITE: &str = "plant-2";
/// The connector's `stable_after` is 10 s: a connection that lasted that long resets its
/// backoff. Every trial starts from a connection older than this, so from the first wait
/// (125-250 ms), as after any real outage of a link that had been up for a while.
const SETTLE: Duration = Duration::from_millis(10_500);
/// `portcullis connector run`'s own default log filter (info for the connector, warn else).
const CONNECTOR_LOG: &str = "warn,portcullis_connector=info,portcullis::commands::connector=info";
const CONNECTED: &str = "connected to relay";
const LOST: &str = "lost the connection to relay";

// ---------------------------------------------------------------------------------------------
// The connector process.

/// A running `portcullis connector run`, every output line stamped on arrival.
struct ConnectorProc {
    child: Reaped,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl ConnectorProc {
    /// `portcullis connector run --dir <state>`, behind `prefix` (e.g. `ip netns exec ot`).
    #[allow(clippy::zombie_processes)] // reaped by `Reaped`
    fn start(prefix: &[String], state: &Path) -> ConnectorProc {
        let mut child = portcullis(prefix)
            .args(["connector", "run", "--dir", state.to_str().unwrap()])
            .env("PORTCULLIS_LOG", CONNECTOR_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if tx.send((Instant::now(), line)).is_err() {
                        return;
                    }
                }
            });
        }
        ConnectorProc {
            child: Reaped(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// The arrival time of the first line containing `text` that arrived at or after `since`;
    /// panics after `within`.
    async fn line_after(&mut self, text: &str, since: Instant, within: Duration) -> Instant {
        if let Some((t, _)) = self
            .seen
            .iter()
            .find(|(t, l)| *t >= since && l.contains(text))
        {
            return *t;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.recv()).await;
            let (t, line) = match next {
                Ok(Some(l)) => l,
                Ok(None) => panic!("the connector ended: {:?}", self.tail()),
                Err(_) => panic!("no {text:?} from the connector within {within:?}: {:?}", {
                    self.tail()
                }),
            };
            self.seen.push((t, line.clone()));
            if t >= since && line.contains(text) {
                return t;
            }
        }
    }

    /// Takes in the lines printed so far (without waiting).
    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    fn count(&mut self, text: &str) -> usize {
        self.drain();
        self.seen.iter().filter(|(_, l)| l.contains(text)).count()
    }

    /// Why the connector said it lost the connection, from its line that arrived at `at`.
    fn loss_reason(&self, at: Instant) -> String {
        let line = self
            .seen
            .iter()
            .find(|(t, l)| *t == at && l.contains(LOST))
            .map_or("", |(_, l)| l.as_str());
        let detail = line.split_once(LOST).map_or(line, |(_, d)| d);
        let detail = detail.split_once(": ").map_or(detail, |(_, d)| d);
        detail.trim_end_matches("; reconnecting").to_owned()
    }

    /// The lines that arrived after `from` and before `to`.
    fn lines_between(&self, from: Instant, to: Instant) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(t, _)| *t > from && *t < to)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Waits until the current connection (the last `connected to relay`) is `SETTLE` + `phase`
    /// old.
    async fn settle(&mut self, phase: Duration) {
        self.drain();
        let since = self
            .seen
            .iter()
            .rev()
            .find(|(_, l)| l.contains(CONNECTED))
            .map(|(t, _)| *t)
            .expect("the connector is connected");
        if let Some(left) = (since + SETTLE + phase).checked_duration_since(Instant::now()) {
            tokio::time::sleep(left).await;
        }
    }

    fn tail(&self) -> Vec<&str> {
        let from = self.seen.len().saturating_sub(12);
        self.seen[from..].iter().map(|(_, l)| l.as_str()).collect()
    }
}

/// The `portcullis` binary behind `prefix`.
fn portcullis(prefix: &[String]) -> Command {
    match prefix.split_first() {
        None => Command::new(portcullis_bin()),
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(portcullis_bin());
            c
        }
    }
}

/// Registers `SITE`, adds device `plc-9` (`address`, `port`) behind it, enrolls a connector
/// (its commands behind `prefix`) in `<plant dir>/connector` with an allowlist of exactly that
/// address and port, and starts it.
fn site_connector(plant: &Plant, prefix: &[String], address: &str, port: u16) -> ConnectorProc {
    let data = &plant.broker.data;
    let out = admin(data, &["admin", "site", "add", SITE, "--format", "json"]);
    let token = serde_json::from_str::<Value>(&out).unwrap()["enrollment_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = admin(
        data,
        &[
            "admin",
            "device",
            "add",
            "plc-9",
            "--address",
            address,
            "--ports",
            &port.to_string(),
            "--site",
            SITE,
            "--orgs",
            "acme",
        ],
    );
    assert!(
        added.contains("through the connector"),
        "plc-9 is routed through the site: {added}"
    );
    let state = plant.dir.path().join("connector");
    let enrolled = portcullis(prefix)
        .args(["connector", "enroll", "--url", &plant.broker.base])
        .args([
            "--token",
            &token,
            "--ca",
            plant.broker.ca().to_str().unwrap(),
        ])
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
        format!("[[allow]]\nhost = \"{address}\"\nports = [{port}]\n"),
    )
    .unwrap();
    ConnectorProc::start(prefix, &state)
}

// ---------------------------------------------------------------------------------------------
// CPU time.

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// Loopback: throughput, latency, relay restarts.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// Direct TCP to the device: the floor, latency only.
    Tcp,
    /// plc-7: the relay dials the device itself.
    Direct,
    /// plc-9: relay -> connector -> device.
    Connector,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "direct TCP (no tunnel)",
            Mode::Direct => "relay, direct mode (plc-7)",
            Mode::Connector => "relay + connector (plc-9)",
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The `relay.connector.connect` audit events so far.
fn connects(plant: &Plant) -> Vec<Value> {
    plant.broker.audit("relay.connector.connect")
}

/// Milliseconds from `wall_from` (unix µs) to the audit event's `ts`.
fn audit_ms_since(event: &Value, wall_from: i64) -> f64 {
    let ts = Timestamp::parse_rfc3339(event["ts"].as_str().unwrap()).unwrap();
    (ts.unix_micros() - wall_from) as f64 / 1e3
}

/// The `relay.connector.connect` audit events after the first `before`, waiting (up to 10 s)
/// for at least one. Usually one per reconnect; more when the relay accepted an attempt the
/// connector had already given up on (its 3 s attempt timeout) before the one it kept.
async fn new_connects(plant: &Plant, before: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = connects(plant);
        if events.len() > before {
            return events[before..].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "the relay recorded no new connector connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where trial `i` of `n` falls in the connection's 2 s cycle (the relay pings every 2 s, the
/// connector sends keep-alives every 1 s, both counted from the connection's start): spread
/// evenly, so that the trials sample every phase instead of hitting the same one each time.
fn phase(i: usize, n: usize) -> Duration {
    Duration::from_secs_f64(2.0 * i as f64 / n.max(1) as f64)
}

/// One reconnect trial's times, ms.
#[derive(Debug, Default, Clone)]
struct Trial {
    /// What the connector's `lost the connection` line said.
    reason: String,
    /// Connections the relay accepted (`relay.connector.connect`) for this one reconnect.
    accepts: usize,
    /// The connector's lines between the loss and `connected to relay` (attempts that failed).
    between: Vec<String>,
    /// From the fault (kill, SIGTERM, link down) to the connector logging the loss.
    noticed: f64,
    /// From the relay being back (printed its address) or the link being up again.
    back: f64,
    /// From the same moment to the relay's `relay.connector.connect` audit timestamp.
    relay_recorded: f64,
    /// From the fault to the relay printing its address (restarts); the outage (link drops).
    restart: f64,
    /// From the connector logging the loss to `connected to relay`.
    after_notice: f64,
}

fn stats_row(label: &str, v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "| {label} | {:.0} | {min:.0} | {max:.0} | {} |",
        median(v),
        v.len()
    )
}

fn print_trials(title: &str, from: &str, trials: &[Trial], restart: bool) {
    println!("\n### {title} ({} trials, ms)", trials.len());
    println!("\n| Interval | median | min | max | n |\n|---|---:|---:|---:|---:|");
    let col = |f: fn(&Trial) -> f64| trials.iter().map(f).collect::<Vec<_>>();
    if restart {
        println!(
            "{}",
            stats_row(
                "fault -> new relay printed its address",
                &col(|t| t.restart)
            )
        );
    }
    println!(
        "{}",
        stats_row("fault -> connector logged the loss", &col(|t| t.noticed))
    );
    if restart {
        // After a link drop this would only be the rest of the outage.
        println!(
            "{}",
            stats_row(
                "connector logged the loss -> `connected to relay`",
                &col(|t| t.after_notice)
            )
        );
    }
    println!(
        "{}",
        stats_row(
            &format!("**{from} -> `connected to relay`** (back)"),
            &col(|t| t.back)
        )
    );
    println!(
        "{}",
        stats_row(
            &format!("{from} -> relay's `relay.connector.connect` timestamp"),
            &col(|t| t.relay_recorded)
        )
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for t in trials {
        *reasons.entry(t.reason.as_str()).or_default() += 1;
    }
    println!("\nthe connector's loss lines said: {reasons:?}");
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for t in trials {
        for l in &t.between {
            // The message, without the log line's timestamp and level.
            let msg = l.split_once(": ").map_or(l.as_str(), |(_, m)| m);
            *failed.entry(msg.to_owned()).or_default() += 1;
        }
    }
    println!("the connector's lines between the loss and `connected to relay`: {failed:?}");
    let extra: Vec<String> = trials
        .iter()
        .enumerate()
        .filter(|(_, t)| t.accepts > 1)
        .map(|(i, t)| format!("trial {}: {}", i + 1, t.accepts))
        .collect();
    println!(
        "relay-side accepts for one reconnect: {} trial(s) with more than one{}",
        extra.len(),
        if extra.is_empty() {
            String::new()
        } else {
            format!(
                " ({}; the relay's timestamp above is the last one's)",
                extra.join(", ")
            )
        }
    );
    let raw: Vec<String> = if restart {
        trials.iter().map(|t| format!("{:.0}", t.back)).collect()
    } else {
        trials
            .iter()
            .map(|t| format!("{:.0} (down {:.1} s)", t.back, t.restart / 1e3))
            .collect()
    };
    println!("\nback, each trial: {}", raw.join(", "));
}

pub(super) async fn loopback(opts: &Opts) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(run_device(l));
    let tcp = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);

    let t0 = Instant::now();
    let mut plant = Plant::new(
        &[port],
        &["--max-streams-per-grant", "5000", "--idle-timeout", "1h"],
    )
    .await;
    let mut conn = site_connector(&plant, &[], "127.0.0.1", port);
    conn.line_after(CONNECTED, t0, Duration::from_secs(30))
        .await;
    new_connects(&plant, 0).await;
    let g7 = plant.grant(&port.to_string(), "+2h").await;
    let g9 = plant.vera.request("plc-9", &port.to_string(), "+2h");
    plant.broker.approve(&plant.sam, g9).await;
    let t7 = plant.vera.connect(g7, &[], 1).await;
    let t9 = plant.vera.connect(g9, &[], 1).await;
    eprintln!(
        "broker, connector and two tunnels up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let modes = [
        (Mode::Direct, t7.local(port)),
        (Mode::Connector, t9.local(port)),
    ];

    // Warm-up, and proof of the paths: plc-9's streams are dialed by the connector, plc-7's not.
    let opened = format!("opened 127.0.0.1:{port}");
    let before = conn.count(&opened);
    download(modes[0].1, 1, 16 << 20).await;
    upload(modes[0].1, 1, 16 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        conn.count(&opened),
        before,
        "a plc-7 stream went through the connector"
    );
    download(modes[1].1, 1, 16 << 20).await;
    upload(modes[1].1, 1, 16 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        conn.count(&opened),
        before + 2,
        "plc-9's streams did not go through the connector: {:?}",
        conn.tail()
    );

    println!(
        "\n## Site connector (issue 5), loopback: relay direct mode vs relay + connector, same \
         device server"
    );

    // Throughput, with the CPU time of each process.
    let hz = ticks_per_second();
    let serve_pid = plant.broker.child.as_ref().unwrap().0.id();
    let conn_pid = conn.child.0.id();
    let procs = |m: Mode| {
        let connect = match m {
            Mode::Connector => t9.child.0.id(),
            _ => t7.child.0.id(),
        };
        [
            ("serve (relay)", serve_pid),
            ("connect (vendor)", connect),
            ("connector", conn_pid),
            ("bench (device + load)", std::process::id()),
        ]
    };
    let bytes = opts.mib * 1024 * 1024;
    let mut tput: BTreeMap<(&str, Mode), Vec<f64>> = BTreeMap::new();
    let mut paired: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<(Mode, &str), u64> = BTreeMap::new();
    let mut moved: BTreeMap<Mode, u64> = BTreeMap::new();
    for round in 0..opts.rounds {
        let mut order = modes;
        order.rotate_left(round % 2);
        let mut this: BTreeMap<(&str, Mode), f64> = BTreeMap::new();
        for (mode, addr) in order {
            let ps = procs(mode);
            let c0: Vec<u64> = ps.iter().map(|p| cpu_ticks(p.1)).collect();
            let d = download(addr, 1, bytes).await;
            let u = upload(addr, 1, bytes).await;
            for (p, c) in ps.iter().zip(c0) {
                *cpu.entry((mode, p.0)).or_default() += cpu_ticks(p.1) - c;
            }
            *moved.entry(mode).or_default() += 2 * bytes;
            this.insert(("download, 1 stream", mode), d);
            this.insert(("upload, 1 stream", mode), u);
        }
        for ((what, mode), v) in &this {
            tput.entry((what, *mode)).or_default().push(*v);
        }
        for what in ["download, 1 stream", "upload, 1 stream"] {
            paired
                .entry(what)
                .or_default()
                .push(this[&(what, Mode::Connector)] / this[&(what, Mode::Direct)]);
        }
        eprintln!("  throughput round {}/{} done", round + 1, opts.rounds);
    }
    println!(
        "\n### Throughput ({} MiB per measurement, {} interleaved rounds, medians, Gbit/s)",
        opts.mib, opts.rounds
    );
    println!(
        "\n| Measurement | {} | {} | ratio of medians | paired ratio, median (min - max) |",
        Mode::Direct.name(),
        Mode::Connector.name()
    );
    println!("|---|---:|---:|---:|---|");
    for what in ["download, 1 stream", "upload, 1 stream"] {
        let d = median(&tput[&(what, Mode::Direct)]);
        let c = median(&tput[&(what, Mode::Connector)]);
        let p = &paired[what];
        let (lo, hi) = (
            p.iter().copied().fold(f64::INFINITY, f64::min),
            p.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} x | {:.2} x ({lo:.2} - {hi:.2}) |",
            gbit(d),
            gbit(c),
            c / d,
            median(p)
        );
    }
    println!("\nRuns per cell (Gbit/s, in round order):");
    for ((what, mode), v) in &tput {
        let g: Vec<String> = v.iter().map(|x| format!("{:.2}", gbit(*x))).collect();
        println!("  {what} / {}: {}", mode.name(), g.join(", "));
    }
    println!(
        "\nCPU seconds per GiB moved (all throughput measurements of the mode, download + upload; \
         {:.2} GiB per mode; clock ticks of {hz:.0} Hz):",
        moved[&Mode::Direct] as f64 / (1u64 << 30) as f64
    );
    println!(
        "\n| Process | {} | {} |\n|---|---:|---:|",
        Mode::Direct.name(),
        Mode::Connector.name()
    );
    let mut total: BTreeMap<Mode, f64> = BTreeMap::new();
    for (name, _) in procs(Mode::Direct) {
        let mut per = |m: Mode| {
            let s = cpu[&(m, name)] as f64 / hz / (moved[&m] as f64 / (1u64 << 30) as f64);
            *total.entry(m).or_default() += s;
            s
        };
        let (d, c) = (per(Mode::Direct), per(Mode::Connector));
        println!("| {name} | {d:.2} | {c:.2} |");
    }
    println!(
        "| all four | {:.2} | {:.2} |",
        total[&Mode::Direct],
        total[&Mode::Connector]
    );

    // Latency, with direct TCP to the device as the floor.
    let paths = [(Mode::Tcp, tcp), modes[0], modes[1]];
    let mut rr: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut setup: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    for round in 0..opts.rounds {
        let mut order = paths;
        order.rotate_left(round % paths.len());
        for (mode, addr) in order {
            rr.entry(mode)
                .or_default()
                .extend(request_response(addr, opts.rr / opts.rounds.max(1)).await);
            setup
                .entry(mode)
                .or_default()
                .extend(setup_first_byte(addr, opts.setups / opts.rounds.max(1)).await);
        }
    }
    println!(
        "\n### Latency, microseconds ({} interleaved rounds)",
        opts.rounds
    );
    println!("\n| Path | p50 | p99 | max | n |\n|---|---:|---:|---:|---:|");
    for (m, _) in paths {
        println!(
            "{}",
            pct_row(&format!("1-byte request/response, {}", m.name()), &rr[&m])
        );
    }
    for (m, _) in paths {
        println!(
            "{}",
            pct_row(
                &format!("new connection to first byte, {}", m.name()),
                &setup[&m]
            )
        );
    }
    let p = |v: &BTreeMap<Mode, Vec<f64>>, m: Mode, q: f64| percentile(&v[&m], q);
    println!(
        "\nrequest/response: the connector adds {:.0} us at p50 ({:.2} x direct mode's), \
         {:.0} us at p99; direct mode adds {:.0} us at p50 over direct TCP",
        p(&rr, Mode::Connector, 50.0) - p(&rr, Mode::Direct, 50.0),
        p(&rr, Mode::Connector, 50.0) / p(&rr, Mode::Direct, 50.0),
        p(&rr, Mode::Connector, 99.0) - p(&rr, Mode::Direct, 99.0),
        p(&rr, Mode::Direct, 50.0) - p(&rr, Mode::Tcp, 50.0),
    );
    println!(
        "new stream to first byte: the connector adds {:.0} us at p50 ({:.2} x), {:.0} us at p99",
        p(&setup, Mode::Connector, 50.0) - p(&setup, Mode::Direct, 50.0),
        p(&setup, Mode::Connector, 50.0) / p(&setup, Mode::Direct, 50.0),
        p(&setup, Mode::Connector, 99.0) - p(&setup, Mode::Direct, 99.0),
    );
    println!(
        "memory after the measurements (VmRSS): serve {} KiB, connector {} KiB",
        rss_kib(serve_pid),
        rss_kib(conn_pid)
    );
    drop(t7);
    drop(t9);

    if opts.reconnects == 0 {
        return;
    }
    // The relay killed (SIGKILL: no close reaches the connector) and started again.
    let mut killed = Vec::new();
    for i in 0..opts.reconnects {
        conn.settle(phase(i, opts.reconnects)).await;
        let before = connects(&plant).len();
        let fault = Instant::now();
        tokio::task::block_in_place(|| plant.broker.kill_and_restart());
        let (up, up_wall) = (Instant::now(), wall_micros());
        let lost = conn.line_after(LOST, fault, Duration::from_secs(30)).await;
        let back = conn
            .line_after(CONNECTED, lost, Duration::from_secs(30))
            .await;
        let evs = new_connects(&plant, before).await;
        let ev = evs.last().unwrap();
        killed.push(Trial {
            reason: conn.loss_reason(lost),
            accepts: evs.len(),
            between: conn.lines_between(lost, back),
            noticed: ms(lost - fault),
            back: ms(back.saturating_duration_since(up)),
            relay_recorded: audit_ms_since(ev, up_wall),
            restart: ms(up - fault),
            after_notice: ms(back - lost),
        });
        eprintln!(
            "  relay kill -9 {}/{}: back {:.0} ms after the restart",
            i + 1,
            opts.reconnects,
            killed[i].back
        );
    }
    print_trials(
        "Reconnect after the relay is killed (SIGKILL) and started again",
        "new relay printed its address",
        &killed,
        true,
    );

    // The relay stopped (SIGTERM: it closes the connector's connection) and started again.
    let mut stopped = Vec::new();
    for i in 0..opts.reconnects {
        conn.settle(phase(i, opts.reconnects)).await;
        let before = connects(&plant).len();
        let fault = Instant::now();
        tokio::task::block_in_place(|| {
            let status = plant.broker.stop();
            assert!(status.success(), "serve on SIGTERM: {status}");
            // No child left: this only starts `serve` again on the same addresses.
            plant.broker.kill_and_restart();
        });
        let (up, up_wall) = (Instant::now(), wall_micros());
        let lost = conn.line_after(LOST, fault, Duration::from_secs(30)).await;
        let back = conn
            .line_after(CONNECTED, lost, Duration::from_secs(30))
            .await;
        let evs = new_connects(&plant, before).await;
        let ev = evs.last().unwrap();
        stopped.push(Trial {
            reason: conn.loss_reason(lost),
            accepts: evs.len(),
            between: conn.lines_between(lost, back),
            noticed: ms(lost - fault),
            back: ms(back.saturating_duration_since(up)),
            relay_recorded: audit_ms_since(ev, up_wall),
            restart: ms(up - fault),
            after_notice: ms(back - lost),
        });
        eprintln!(
            "  relay SIGTERM {}/{}: back {:.0} ms after the restart",
            i + 1,
            opts.reconnects,
            stopped[i].back
        );
    }
    print_trials(
        "Reconnect after the relay is stopped (SIGTERM) and started again",
        "new relay printed its address",
        &stopped,
        true,
    );
}

// ---------------------------------------------------------------------------------------------
// The plant's link drops (network namespaces).

/// Runs on its own thread and runtime inside the `dmz` namespace (not on the bench's runtime).
pub(super) fn link_drop(opts: &Opts) {
    let Some(z) = zones::zones_or_skip("b") else {
        println!("\n## Site connector, link drop: skipped (needs root for network namespaces)");
        return;
    };
    let z = &z;
    let opts = opts.clone();
    zones::run_in_zone(&z.dmz, move || async move {
        let at = Placement {
            listen_ip: DMZ.parse().unwrap(),
            vendor_prefix: Zones::exec(&z.it),
        };
        let t0 = Instant::now();
        let plant = Plant::placed(None, false, &[1], &[], &at).await;
        // No device is needed: only the connector's connection is watched.
        let mut conn = site_connector(&plant, &Zones::exec(&z.ot), OT, 502);
        conn.line_after(CONNECTED, t0, Duration::from_secs(30))
            .await;
        new_connects(&plant, 0).await;
        let (short, long) = opts.link_down;
        let mut trials = Vec::new();
        for i in 0..opts.reconnects {
            let step = if opts.reconnects > 1 {
                (long - short) * i as f64 / (opts.reconnects - 1) as f64
            } else {
                0.0
            };
            let down = Duration::from_secs_f64(short + step);
            conn.settle(phase(i, opts.reconnects)).await;
            let before = connects(&plant).len();
            let fault = Instant::now();
            z.ot_link(false);
            let lost = conn.line_after(LOST, fault, down * 2).await;
            assert!(
                lost - fault < down,
                "the connector noticed the loss only after the link was back"
            );
            if let Some(left) = (fault + down).checked_duration_since(Instant::now()) {
                tokio::time::sleep(left).await;
            }
            z.ot_link(true);
            let (up, up_wall) = (Instant::now(), wall_micros());
            let back = conn
                .line_after(CONNECTED, up, Duration::from_secs(30))
                .await;
            let evs = new_connects(&plant, before).await;
            let ev = evs.last().unwrap();
            trials.push(Trial {
                reason: conn.loss_reason(lost),
                accepts: evs.len(),
                between: conn.lines_between(lost, back),
                noticed: ms(lost - fault),
                back: ms(back - up),
                relay_recorded: audit_ms_since(ev, up_wall),
                restart: ms(up - fault),
                after_notice: ms(back - lost),
            });
            eprintln!(
                "  link drop {}/{}: back {:.0} ms after the link came up",
                i + 1,
                opts.reconnects,
                trials[i].back
            );
        }
        let secs = if short == long {
            format!("{short} s")
        } else {
            format!("{short}-{long} s (evenly spread over the trials)")
        };
        println!(
            "\n## Site connector (issue 5), the plant's link drops: broker in namespace {} \
             ({DMZ}), connector in {} ({OT}), veth pair; the dmz's end down for {secs}, then up",
            z.dmz, z.ot
        );
        print_trials(
            &format!("Reconnect after a link drop of {secs}"),
            "`ip link set up`",
            &trials,
            false,
        );
        drop(conn);
        drop(plant);
    });
}
