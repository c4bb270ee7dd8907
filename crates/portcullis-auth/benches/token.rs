//! Relay-token benchmark: `TokenSigner::mint` and `TokenVerifier::verify` per second on one
//! thread, with the raw Ed25519 sign and verify of the same bytes beside them as the floor that
//! no JWT code can go below.
//!
//! ```text
//! cargo bench -p portcullis-auth --bench token -- [--runs N] [--secs S]
//! ```
//!
//! Everything runs on the main thread. Rates are given per second of that thread's CPU time
//! (what one core does when it is ours) and per wall-clock second (which on a shared machine
//! also counts the time other jobs held the CPU). Each run of each
//! measurement lasts `--secs` seconds (default 1); runs are interleaved (run r of every
//! measurement before run r + 1 of any) so that a noisy second hurts them alike, and every cell
//! is the median of `--runs` runs (default 7) with the spread beside it. Prints a Markdown table
//! on stdout; progress goes to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use portcullis_testkit::stats::{fmt_rate, median};
use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, Verifier};
use portcullis_auth::token::{KeyRing, TokenSigner, TokenVerifier, thumbprint};
use portcullis_core::{GrantId, Timestamp, Username};

const ISS: &str = "https://broker.plant.example";
const AUD: &str = "portcullis-relay";
/// The minting and verifying time: tokens are valid from 5 s before to 300 s after it.
const NOW_SECS: u64 = 1_790_000_000;

const FIVE_MIN: Duration = Duration::from_secs(300);

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_secs(secs).unwrap()
}
/// Distinct tokens verified in turn, so no cache holds the one token being checked.
const TOKENS: usize = 1_000;

#[derive(Debug, Clone)]
struct Args {
    runs: usize,
    secs: f64,
}

fn parse_args() -> Args {
    let mut a = Args { runs: 7, secs: 1.0 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--runs" => {
                a.runs = value("--runs")
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("--runs: not a positive number"))
            }
            "--secs" => {
                a.secs = value("--secs")
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .unwrap_or_else(|| usage("--secs: not a positive number"))
            }
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
        "usage: cargo bench -p portcullis-auth --bench token -- [--runs N (default 7)] \
         [--secs S (per run and measurement, default 1)]"
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

/// This thread's time on a CPU and time spent runnable but waiting for one, in seconds, from
/// `/proc/thread-self/schedstat` (nanoseconds). On a shared machine the second is other jobs'.
fn sched() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

/// Calls per second of one run.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Per second of this thread's CPU time: what one core does when it is ours.
    cpu: f64,
    /// Per second of wall-clock time, including the time other jobs held the CPU.
    wall: f64,
    /// Share of the run this thread waited for a CPU.
    waited: f64,
}

/// Calls `op(i)` for i = 0, 1, 2, ... for about `secs` seconds. The clock is read once per
/// batch of 64 calls so that reading it costs nothing measurable.
fn rate(secs: f64, mut op: impl FnMut(usize)) -> Rate {
    let budget = Duration::from_secs_f64(secs);
    let (cpu0, wait0) = sched();
    let start = Instant::now();
    let mut n = 0usize;
    loop {
        for _ in 0..64 {
            op(n);
            n += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            let (cpu1, wait1) = sched();
            let wall = elapsed.as_secs_f64();
            // schedstat missing (no CONFIG_SCHED_INFO): fall back to wall-clock time.
            let cpu = if cpu1 > cpu0 { cpu1 - cpu0 } else { wall };
            return Rate {
                cpu: n as f64 / cpu,
                wall: n as f64 / wall,
                waited: (wait1 - wait0) / wall,
            };
        }
    }
}

struct Row {
    what: &'static str,
    rates: Vec<Rate>,
    target: Option<f64>,
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // The services' own path: a key ring directory, its signer and its verifier.
    let dir = tempfile::Builder::new()
        .prefix("token-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let ring = KeyRing::load_or_create(&dir.path().join("relay-signing")).unwrap();
    let signer: TokenSigner = ring.signer(ISS, AUD);
    let verifier: TokenVerifier = ring.verifier(ISS, AUD);
    // Clients' certificates: the relay computes the base64url thumbprint of the presented one.
    let anna = Username::parse("vendor-anna").unwrap();
    let thumbs: Vec<String> = (0..TOKENS)
        .map(|i| thumbprint(format!("client certificate {i}").as_bytes()))
        .collect();
    let tokens: Vec<String> = (0..TOKENS)
        .map(|i| {
            let grant = i64::try_from(i).unwrap() + 1;
            signer
                .mint(
                    &anna,
                    GrantId::new(grant),
                    &thumbs[i],
                    at(NOW_SECS),
                    FIVE_MIN,
                    at(NOW_SECS + 3600),
                )
                .unwrap()
                .0
        })
        .collect();
    for (t, tp) in tokens.iter().zip(&thumbs) {
        verifier.verify(t, at(NOW_SECS), tp).unwrap();
    }
    let len = tokens[0].len();
    // The floor: the same signing input and signature, checked with ed25519-dalek directly.
    let key = signer.verifying_key();
    let (input, sig) = split_signed(&tokens[0]);
    let raw_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);

    let mut rows = vec![
        Row {
            what: "`TokenSigner::mint`",
            rates: vec![],
            target: None,
        },
        Row {
            what: "`TokenVerifier::verify`",
            rates: vec![],
            target: Some(50_000.0),
        },
        Row {
            what: "Ed25519 sign only (ed25519-dalek, same bytes)",
            rates: vec![],
            target: None,
        },
        Row {
            what: "Ed25519 verify only (ed25519-dalek, same bytes)",
            rates: vec![],
            target: None,
        },
    ];
    // Warm up caches, the CPU's clock and the allocator.
    rate(args.secs / 2.0, |i| {
        let i = i % TOKENS;
        black_box(
            verifier
                .verify(&tokens[i], at(NOW_SECS), &thumbs[i])
                .unwrap(),
        );
    });
    for run in 0..args.runs {
        let r = rate(args.secs, |i| {
            let i = i % TOKENS;
            black_box(
                signer
                    .mint(
                        &anna,
                        GrantId::new(7),
                        &thumbs[i],
                        at(NOW_SECS),
                        FIVE_MIN,
                        at(NOW_SECS + 3600),
                    )
                    .unwrap(),
            );
        });
        rows[0].rates.push(r);
        let v = rate(args.secs, |i| {
            let i = i % TOKENS;
            black_box(
                verifier
                    .verify(&tokens[i], at(NOW_SECS), &thumbs[i])
                    .unwrap(),
            );
        });
        rows[1].rates.push(v);
        let s = rate(args.secs, |_| {
            black_box(raw_key.sign(black_box(input.as_bytes())));
        });
        rows[2].rates.push(s);
        let f = rate(args.secs, |_| {
            key.verify(black_box(input.as_bytes()), black_box(&sig))
                .unwrap();
        });
        rows[3].rates.push(f);
        eprintln!(
            "run {}: per CPU-second (wall-clock second; share waiting for a CPU): mint {:.0} \
             ({:.0}; {:.0}%), verify {:.0} ({:.0}; {:.0}%), raw sign {:.0} ({:.0}; {:.0}%), \
             raw verify {:.0} ({:.0}; {:.0}%)",
            run + 1,
            r.cpu,
            r.wall,
            r.waited * 100.0,
            v.cpu,
            v.wall,
            v.waited * 100.0,
            s.cpu,
            s.wall,
            s.waited * 100.0,
            f.cpu,
            f.wall,
            f.waited * 100.0
        );
    }

    println!(
        "| Measurement (one thread) | Median per CPU-second | µs CPU each | Runs (min - max) | \
         Median per wall-clock second | Target (one core) | Met |\n\
         |---|---:|---:|---|---:|---:|---|"
    );
    let mut waited = Vec::new();
    for r in &rows {
        let cpu: Vec<f64> = r.rates.iter().map(|x| x.cpu).collect();
        let wall: Vec<f64> = r.rates.iter().map(|x| x.wall).collect();
        waited.extend(r.rates.iter().map(|x| x.waited));
        let lo = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = cpu.iter().copied().fold(0.0, f64::max);
        let m = median(&cpu);
        let (target, met) = match r.target {
            Some(t) => (
                format!(">= {}", fmt_rate(t)),
                if m >= t { "yes" } else { "**no**" },
            ),
            None => ("-".into(), "-"),
        };
        println!(
            "| {} | {} | {:.1} | {} ({} - {}) | {} | {} | {} |",
            r.what,
            fmt_rate(m),
            1e6 / m,
            r.rates.len(),
            fmt_rate(lo),
            fmt_rate(hi),
            fmt_rate(median(&wall)),
            target,
            met
        );
    }
    println!(
        "\n{TOKENS} distinct tokens of {len} bytes (EdDSA, kid from a key ring), each verified \
         against its own certificate thumbprint at a time inside its validity; {:.1} s per run. \
         CPU time is the thread's own (/proc/thread-self/schedstat); it waited for a CPU {:.0}% \
         of the time (median over runs), which only the wall-clock figure includes.",
        args.secs,
        median(&waited) * 100.0
    );
}

/// A JWT's signing input (`header.payload`) and its decoded signature.
fn split_signed(token: &str) -> (String, Signature) {
    use base64::Engine;
    let (input, sig) = token.rsplit_once('.').unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    (input.to_owned(), Signature::from_slice(&raw).unwrap())
}
