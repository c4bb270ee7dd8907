//! What the SIEM stream costs and how fast it is (issue 15): two `portcullis serve` brokers on
//! SQLite, one streaming to a TCP syslog collector on loopback, one without `[syslog]`. In each
//! round, for each broker in turn (order alternating), a burst of `--events` audit events is
//! committed while `GET /healthz` and `GET /readyz` are sent open loop at `--rate` per second
//! each for `--secs`. Reports, for the streaming broker, the delay from each event's commit
//! time to its arrival at the collector (median, p99), and for both brokers the API latency
//! (p50, p99), side by side. Results: docs/BENCHMARKS.md, "SIEM stream (issue 15)".
//!
//! ```text
//! PORTCULLIS_BIN=$PWD/target/debug/portcullis \
//!     cargo bench --workspace --bench siem -- [--rounds N] [--events N] [--rate R] [--secs S]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Broker;
use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
use portcullis_store::{Store, StoreConfig};
use portcullis_testkit::stats::{median, percentile};
use portcullis_testkit::syslog::{Kind, Receiver};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The broker's own store, opened from this process as the admin command line does.
async fn store_of(b: &Broker) -> Store {
    let key = portcullis_auth::keyfile::load(&b.data.join("keys/audit-mac.key")).unwrap();
    let url = format!("sqlite://{}", b.data.join("portcullis.db").display());
    Store::open(&url, StoreConfig::new(MacKey::new(*key)))
        .await
        .unwrap()
}

/// Commits `n` events as fast as the store takes them; returns seq -> commit time (µs).
async fn burst(store: &Store, n: usize) -> HashMap<i64, i64> {
    let mut out = HashMap::with_capacity(n);
    for i in 0..n {
        let ev = store
            .append(
                AuditDraft::new("bench", ActorRole::System, "bench.event")
                    .target(format!("thing:{i}"))
                    .details(serde_json::json!({ "i": i })),
            )
            .await
            .unwrap();
        out.insert(ev.seq, ev.ts.unix_micros());
    }
    out
}

/// Open-loop GETs of `path` at `rate`/s for `secs`: latencies in ms.
async fn load(b: &Broker, path: &str, rate: usize, secs: usize) -> Vec<f64> {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::new();
    for _ in 0..rate * secs {
        tick.tick().await;
        let (http, url, lat) = (b.http.clone(), format!("{}{path}", b.base), lat.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http.get(url).send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
            lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(lat).unwrap().into_inner().unwrap()
}

fn seq_of(msg: &str) -> i64 {
    let rest = msg.split("seq=\"").nth(1).unwrap();
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = arg("--rounds", 5);
    let events = arg("--events", 1000);
    let rate = arg("--rate", 50);
    let secs = arg("--secs", 4);

    let mut rx = Receiver::start(Kind::Tcp).await;
    let conf = tempfile::tempdir().unwrap();
    let config = conf.path().join("portcullis.toml");
    std::fs::write(&config, format!("[syslog]\nserver = \"{}\"\n", rx.url())).unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with = Broker::start(d1.path(), None, &["--config", config.to_str().unwrap()]);
    let without = Broker::start(d2.path(), None, &[]);
    let (s_with, s_without) = (store_of(&with).await, store_of(&without).await);
    // Let the stream catch up with the brokers' start-up events.
    while rx.next_within(Duration::from_millis(500)).await.is_some() {}

    // Map Instant (the collector's) to wall-clock µs (the commit times').
    let (i0, w0) = (Instant::now(), unix_micros_now());
    let wall = |i: Instant| w0 + i.duration_since(i0).as_micros() as i64;

    let mut delays: Vec<f64> = Vec::new();
    let mut delay_p99s: Vec<f64> = Vec::new();
    let mut api: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    let mut p99s: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        let order: [(&str, &Broker, &Store); 2] = if round % 2 == 0 {
            [("with", &with, &s_with), ("without", &without, &s_without)]
        } else {
            [("without", &without, &s_without), ("with", &with, &s_with)]
        };
        for (name, b, store) in order {
            let (commits, h, r) = tokio::join!(
                burst(store, events),
                load(b, "/healthz", rate, secs),
                load(b, "/readyz", rate, secs),
            );
            for (path, lat) in [("/healthz", h), ("/readyz", r)] {
                p99s.entry((name, path))
                    .or_default()
                    .push(percentile(&lat, 99.0));
                api.entry((name, path)).or_default().extend(lat);
            }
            if name == "with" {
                let mut round_delays = Vec::new();
                let mut seen = 0;
                while seen < commits.len() {
                    let (at, msg) = rx
                        .next_within(Duration::from_secs(30))
                        .await
                        .expect("every event of the burst");
                    if let Some(ts) = commits.get(&seq_of(&msg)) {
                        round_delays.push((wall(at) - ts) as f64 / 1e3);
                        seen += 1;
                    }
                }
                delay_p99s.push(percentile(&round_delays, 99.0));
                delays.extend(round_delays);
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!(
        "burst of {events} events x {rounds} rounds: delay commit -> collector median {:.1} ms, \
         p99 {:.1} ms (p99 per round {:.1} - {:.1} ms)",
        median(&delays),
        percentile(&delays, 99.0),
        delay_p99s.iter().cloned().fold(f64::INFINITY, f64::min),
        delay_p99s.iter().cloned().fold(0.0, f64::max),
    );
    println!("| Endpoint | Broker | Requests | p50 ms | p99 ms | median of round p99s ms |");
    println!("|---|---|---|---|---|---|");
    for path in ["/healthz", "/readyz"] {
        for name in ["without", "with"] {
            let lat = &api[&(name, path)];
            println!(
                "| `GET {path}` | {name} stream | {} | {:.2} | {:.2} | {:.2} |",
                lat.len(),
                median(lat),
                percentile(lat, 99.0),
                median(&p99s[&(name, path)]),
            );
        }
        let ratio = median(&p99s[&("with", path)]) / median(&p99s[&("without", path)]);
        println!("`GET {path}`: median round p99, with / without the stream: {ratio:.2}");
    }
}
