//! Issue 16's comparisons with iperf3 (docs/BENCHMARKS.md, "Shaped links (issue 16)"). Both
//! are opt-in (named in `--only`).
//!
//! - `shaped`: across the shaped link `bash bench/tunnel-compare --link` builds (two network
//!   namespaces, a TUN device in each, `link-shaper` between them): direct TCP, `ssh -L` and
//!   Portcullis once per congestion controller (`--congestion bbr,cubic,newreno`; a `serve` and
//!   a `connect` of their own each, both sides set alike). Per path and round: an iperf3 bulk
//!   download (`-R`, `--secs` seconds), then the same download again with a 1-byte echo every
//!   20 ms on another connection through the same tunnel (the same ssh connection, the same
//!   QUIC connection), started 2 s into the download so the queue has filled. Before the
//!   rounds, the echo's round trip on the idle path.
//! - `iperf`: on loopback (or across a veth pair): iperf3 through direct TCP, `ssh -L` and
//!   Portcullis (BBR), 1 and 4 streams (`-P`), download and upload, `--secs` seconds each.
//!
//! The paths take turns, rotated each round, so no path always goes first; medians of the
//! rounds are reported, with every run's number below each table.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use portcullis_testkit::stats::{median, percentile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::common::{Placement, Plant, Reaped, Tunnel};
use super::{Opts, SshConf, client_cmd, machine, open, run_device};

/// One way through to the two devices: iperf3's server and the echo device.
struct Path {
    name: String,
    iperf: SocketAddr,
    echo: SocketAddr,
}

/// What keeps a path up: the plants and tunnels, the ssh process. Dropped at the end.
#[derive(Default)]
struct Keep {
    plants: Vec<Plant>,
    tunnels: Vec<Tunnel>,
    procs: Vec<Reaped>,
}

/// iperf3's server on a free port of every address of this namespace (`-s` serves one test
/// at a time: the paths take turns).
fn iperf_server() -> (Reaped, u16) {
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Reaped(
        std::process::Command::new("iperf3")
            .args(["-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("iperf3 (apt-get install iperf3): {e}")),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("iperf3 -s on port {port} did not come up");
}

/// iperf3's client on the client side: received bits/s of a `secs`-second test to `to` with
/// `streams` streams, download (`-R`: the device's side sends) or upload.
async fn iperf(to: SocketAddr, streams: usize, download: bool, secs: u64) -> f64 {
    // The server takes one test at a time and may still be finishing the previous path's
    // (a lossy link drains slowly): wait for it rather than measure nothing.
    let mut tries = 0;
    let json = loop {
        let mut c = client_cmd("iperf3");
        c.args(["-c", &to.ip().to_string(), "-p", &to.port().to_string()])
            .args(["-t", &secs.to_string(), "-P", &streams.to_string(), "-J"]);
        if download {
            c.arg("-R");
        }
        let out = tokio::task::spawn_blocking(move || c.stderr(Stdio::inherit()).output().unwrap())
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 to {to}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let busy = json["error"]
            .as_str()
            .is_some_and(|e| e.contains("server is busy"));
        tries += 1;
        if !busy || tries == 30 {
            break json;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 to {to} measured nothing: {json}"))
}

/// Milliseconds per 1-byte echo on a fresh connection to `echo`, one every `every`, for `for_`.
async fn echo_rtts(echo: SocketAddr, every: Duration, for_: Duration) -> Vec<f64> {
    let mut s = open(echo, b'E').await;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + for_;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out
}

/// A plant whose `serve` and vendor `connect` both use `congestion`, granted both devices.
async fn portcullis_path(
    congestion: &str,
    ports: [u16; 2],
    placement: &Placement,
    keep: &mut Keep,
) -> (SocketAddr, SocketAddr) {
    let plant = Plant::placed(
        None,
        false,
        &ports,
        &["--congestion", congestion, "--idle-timeout", "1h"],
        placement,
    )
    .await;
    let grant = plant
        .grant(&format!("{},{}", ports[0], ports[1]), "+2h")
        .await;
    let tunnel = plant
        .vera
        .connect(grant, &["--congestion", congestion], 2)
        .await;
    let addrs = (tunnel.local(ports[0]), tunnel.local(ports[1]));
    keep.plants.push(plant);
    keep.tunnels.push(tunnel);
    addrs
}

/// Direct TCP, `ssh -L` (when configured) and a Portcullis path per controller in
/// `congestion`, to iperf3 and the echo device on this side (`server_ip`).
async fn paths(congestion: &[String], server_ip: Option<IpAddr>, keep: &mut Keep) -> Vec<Path> {
    let (iperf_proc, iperf_port) = iperf_server();
    keep.procs.push(iperf_proc);
    let l = TcpListener::bind(match server_ip {
        Some(_) => "0.0.0.0:0",
        None => "127.0.0.1:0",
    })
    .await
    .unwrap();
    let echo_port = l.local_addr().unwrap().port();
    tokio::spawn(run_device(l));

    let ip = server_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut out = vec![Path {
        name: "direct TCP".into(),
        iperf: SocketAddr::new(ip, iperf_port),
        echo: SocketAddr::new(ip, echo_port),
    }];
    match SshConf::from_env() {
        Some(ssh) => {
            let (child, locals) = ssh.forward_ports(&[echo_port, iperf_port]).await;
            keep.procs.push(child);
            out.push(Path {
                name: "ssh -L".into(),
                iperf: locals[1],
                echo: locals[0],
            });
        }
        None => println!("no PORTCULLIS_BENCH_SSH_*: the ssh -L column is left out"),
    }
    let placement = super::placement(server_ip);
    for c in congestion {
        let (iperf, echo) = portcullis_path(c, [iperf_port, echo_port], &placement, keep).await;
        out.push(Path {
            name: format!("Portcullis {c}"),
            iperf,
            echo,
        });
    }
    out
}

/// The paths' turn in round `round`: rotated each round so no path always goes first.
fn order(round: usize, n: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..n).collect();
    o.rotate_left(round % n);
    o
}

fn header(paths: &[Path], ratio_of: &str) -> String {
    let names: Vec<&str> = paths.iter().map(|p| p.name.as_str()).collect();
    format!(
        "\n| Measurement | {} | {ratio_of} |\n|---|{}---:|",
        names.join(" | "),
        "---:|".repeat(paths.len())
    )
}

/// `Portcullis <first controller>` over ssh -L (or over direct TCP without ssh).
fn ratio(paths: &[Path], med: &[f64], higher_is_better: bool) -> String {
    let first_pc = paths.iter().position(|p| p.name.starts_with("Portcullis"));
    let base = paths.iter().position(|p| p.name == "ssh -L").unwrap_or(0);
    match first_pc {
        Some(pc) if higher_is_better => format!("{:.2} x", med[pc] / med[base]),
        Some(pc) => format!("{:.2} x", med[base] / med[pc]),
        None => "-".into(),
    }
}

/// The shaped-link comparison (`--only shaped`).
pub async fn shaped(opts: &Opts, server_ip: IpAddr) {
    let link = std::env::var("PORTCULLIS_BENCH_LINK").unwrap_or_else(|_| "(not named)".into());
    println!("\n# Shaped link: {link} ({})", machine());
    let mut keep = Keep::default();
    let paths = paths(&opts.congestion, Some(server_ip), &mut keep).await;
    eprintln!("shaped: {} paths up", paths.len());

    // The idle round trip first: 50 echoes, 20 ms apart, per path.
    let mut idle: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for (i, p) in paths.iter().enumerate() {
        idle[i] = echo_rtts(p.echo, Duration::from_millis(20), Duration::from_secs(1)).await;
    }
    let secs = opts.secs;
    let mut bulk: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut loaded: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut loaded_bulk: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..opts.rounds {
        for i in order(round, paths.len()) {
            let p = &paths[i];
            bulk[i].push(iperf(p.iperf, 1, true, secs).await);
            let load = tokio::spawn(iperf(p.iperf, 1, true, secs));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let window = Duration::from_secs(secs.saturating_sub(3).max(1));
            loaded[i].extend(echo_rtts(p.echo, Duration::from_millis(20), window).await);
            loaded_bulk[i].push(load.await.unwrap());
        }
        eprintln!("  shaped: round {}/{} done", round + 1, opts.rounds);
    }

    println!("{}", header(&paths, "Portcullis / ssh -L"));
    let mbit = |v: &[f64]| median(v) / 1e6;
    let row = |label: &str, cells: Vec<f64>, unit: &str, higher: bool| {
        let r = ratio(&paths, &cells, higher);
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:.1} {unit}")).collect();
        println!("| {label} | {} | {r} |", cells.join(" | "));
    };
    row(
        "bulk download (iperf3 -R), median",
        bulk.iter().map(|v| mbit(v)).collect(),
        "Mbit/s",
        true,
    );
    row(
        "echo p50, idle",
        idle.iter().map(|v| percentile(v, 50.0)).collect(),
        "ms",
        false,
    );
    row(
        "echo p50 during a download in the same tunnel",
        loaded.iter().map(|v| percentile(v, 50.0)).collect(),
        "ms",
        false,
    );
    row(
        "echo p99 during a download in the same tunnel",
        loaded.iter().map(|v| percentile(v, 99.0)).collect(),
        "ms",
        false,
    );
    row(
        "that download, median",
        loaded_bulk.iter().map(|v| mbit(v)).collect(),
        "Mbit/s",
        true,
    );
    println!("\nRuns (Mbit/s; echo samples):");
    for (i, p) in paths.iter().enumerate() {
        let runs: Vec<String> = bulk[i].iter().map(|b| format!("{:.1}", b / 1e6)).collect();
        let under: Vec<String> = loaded_bulk[i]
            .iter()
            .map(|b| format!("{:.1}", b / 1e6))
            .collect();
        println!(
            "  {}: bulk {}; under echo {}; {} echo samples under load, max {:.0} ms",
            p.name,
            runs.join(", "),
            under.join(", "),
            loaded[i].len(),
            loaded[i].iter().copied().fold(0.0, f64::max)
        );
    }
    drop(keep);
}

/// The iperf3 throughput comparison (`--only iperf`): 1 and 4 streams, both directions.
pub async fn iperf_compare(opts: &Opts, server_ip: Option<IpAddr>) {
    let place = if server_ip.is_some() {
        "across the veth pair"
    } else {
        "loopback"
    };
    println!(
        "\n# iperf3 through each path, {place}, {} s per test ({})",
        opts.secs,
        machine()
    );
    let mut keep = Keep::default();
    let paths = paths(&opts.congestion[..1], server_ip, &mut keep).await;
    let tests: [(&str, usize, bool); 4] = [
        ("download, 1 stream", 1, true),
        ("upload, 1 stream", 1, false),
        ("download, 4 streams", 4, true),
        ("upload, 4 streams", 4, false),
    ];
    let mut res: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    let secs = opts.secs;
    for round in 0..opts.rounds {
        for i in order(round, paths.len()) {
            for (t, &(_, streams, down)) in tests.iter().enumerate() {
                let got = iperf(paths[i].iperf, streams, down, secs).await;
                res.entry((t, i)).or_default().push(got);
            }
        }
        eprintln!("  iperf: round {}/{} done", round + 1, opts.rounds);
    }
    println!("{}", header(&paths, "Portcullis / ssh -L"));
    for (t, (label, _, _)) in tests.iter().enumerate() {
        let med: Vec<f64> = (0..paths.len()).map(|i| median(&res[&(t, i)])).collect();
        let cells: Vec<String> = med
            .iter()
            .map(|m| format!("{:.2} Gbit/s", m / 1e9))
            .collect();
        println!(
            "| {label} | {} | {} |",
            cells.join(" | "),
            ratio(&paths, &med, true)
        );
    }
    println!("\nRuns (Gbit/s):");
    for (t, (label, _, _)) in tests.iter().enumerate() {
        for (i, p) in paths.iter().enumerate() {
            let runs: Vec<String> = res[&(t, i)]
                .iter()
                .map(|b| format!("{:.2}", b / 1e9))
                .collect();
            println!("  {label} / {}: {}", p.name, runs.join(", "));
        }
    }
    drop(keep);
}
