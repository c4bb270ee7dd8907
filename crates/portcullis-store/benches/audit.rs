//! Audit log benchmark: durable append rate (1 and 8 concurrent writers) and `verify_chain`
//! speed, on SQLite (a file on disk, WAL + synchronous=FULL) and PostgreSQL (fsync on).
//!
//! ```text
//! cargo bench -p portcullis-store --bench audit -- [--backend sqlite|postgres|both]
//!     [--events N] [--verify-events N] [--runs N]
//! ```
//!
//! Every number is the median of several runs (5 for appends, 3 for verify): the machine is
//! shared and noisy. Append runs of both backends are interleaved in one process so that a noisy
//! minute hurts them alike. Prints a Markdown table on stdout; progress goes to stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_core::Timestamp;
use portcullis_core::audit::{ActorRole, AuditDraft, AuditEvent, ChainHead, MacKey};
use portcullis_store::{Backend, Store, StoreConfig};
use portcullis_testkit::TestDb;
use portcullis_testkit::stats::{fmt_rate, fsync_ms, median};
use sqlx::AssertSqlSafe;

const APPEND_RUNS: usize = 5;
const VERIFY_RUNS: usize = 3;
const WRITERS: [usize; 2] = [1, 8];
/// Events per transaction while filling the verify database, and rows per INSERT statement
/// (13 binds each). Statements stay small for two reasons: sqlx-sqlite looks every bind up by
/// name, at a cost growing with the number of binds; and sqlx 0.9.0 does not set TCP_NODELAY
/// (transact-rs/sqlx#4335), so a PostgreSQL message longer than one 16 KiB TLS record waits
/// ~40 ms for a delayed ACK. 24 of these rows are about 11 KiB.
const FILL_TX_EVENTS: usize = 50_000;
const FILL_ROWS_PER_INSERT: usize = 24;

fn key() -> MacKey {
    MacKey::new([42; 32])
}

/// A typical event: a vendor's stream opening on a device, with a small JSON body.
fn draft(i: u64) -> AuditDraft {
    AuditDraft::new(
        format!("vendor{}", i % 50),
        ActorRole::Vendor,
        "stream.open",
    )
    .target(format!("device:plc-{}", i % 200))
    .grant(portcullis_core::GrantId::new(
        i64::try_from(i % 1000).unwrap() + 1,
    ))
    .session(format!("s-{:016x}", i / 16))
    .source("203.0.113.17")
    .details(serde_json::json!({ "device": format!("plc-{}", i % 200), "port": 502, "n": i }))
}

#[derive(Debug, Clone)]
struct Args {
    backends: Vec<Backend>,
    events: u64,
    verify_events: u64,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        backends: vec![Backend::Sqlite, Backend::Postgres],
        events: 10_000,
        verify_events: 1_000_000,
        runs: APPEND_RUNS,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
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
            "--events" => a.events = number("--events", value("--events")),
            "--verify-events" => {
                a.verify_events = number("--verify-events", value("--verify-events"))
            }
            "--runs" => a.runs = number("--runs", value("--runs")) as usize,
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
        "usage: cargo bench -p portcullis-store --bench audit -- [--backend sqlite|postgres|both] \
         [--events N (per append run, default 10000)] [--verify-events N (default 1000000)] \
         [--runs N (append runs, default 5)]"
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

async fn open(db: &TestDb) -> Store {
    Store::open(db.url(), StoreConfig::new(key()))
        .await
        .expect("open store")
}

/// Appends `events` events from `writers` concurrent tasks; returns events per second.
async fn append_rate(b: Backend, writers: usize, events: u64) -> f64 {
    let db = fresh_db(b).await;
    let store = open(&db).await;
    // Warm up: connections opened, statements prepared, file and tables created.
    for i in 0..100 {
        store.append(draft(i)).await.unwrap();
    }
    let per_writer = events / writers as u64;
    let total = per_writer * writers as u64;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers as u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    store.append(draft(w * per_writer + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let out = store.verify_chain(Some(key()), vec![]).await.unwrap();
    assert_eq!(out.expect("appended chain verifies").events, total + 100);
    store.close().await;
    rate
}

/// Fills a fresh database with `n` sealed events through raw multi-row INSERTs.
async fn fill(store: &Store, n: u64) {
    let mk = key();
    let base = Timestamp::parse_rfc3339("2026-11-25T08:00:00Z")
        .unwrap()
        .unix_micros();
    let mut head = ChainHead::GENESIS;
    let mut i = 0u64;
    while i < n {
        let take = (n - i).min(FILL_TX_EVENTS as u64);
        let events: Vec<AuditEvent> = (i..i + take)
            .map(|j| {
                let now =
                    Timestamp::from_unix_micros(base + i64::try_from(j).unwrap() * 250).unwrap();
                let ev = AuditEvent::seal(&head, &draft(j), now, &mk);
                head = ev.head();
                ev
            })
            .collect();
        let mut tx = store.pool().begin().await.unwrap();
        for chunk in events.chunks(FILL_ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO audit_events (seq, ts, actor, role, action, target, grant_id, \
                 session_id, source, details, prev_hash, hash, mac) VALUES ",
            );
            for r in 0..chunk.len() {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..13 {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql += &format!("${}", r * 13 + c + 1);
                }
                sql.push(')');
            }
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for ev in chunk {
                q = q
                    .bind(ev.seq)
                    .bind(ev.ts.to_rfc3339())
                    .bind(ev.actor.clone())
                    .bind(ev.role.clone())
                    .bind(ev.action.clone())
                    .bind(ev.target.clone())
                    .bind(ev.grant_id.map(portcullis_core::GrantId::get))
                    .bind(ev.session_id.clone())
                    .bind(ev.source.clone())
                    .bind(ev.details.clone())
                    .bind(ev.prev_hash.to_hex())
                    .bind(ev.hash.to_hex())
                    .bind(ev.mac.to_hex());
            }
            q.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        i += take;
    }
}

/// Fills `n` events, then verifies the chain `runs` times; returns each run's events/s.
async fn verify_rates(b: Backend, n: u64, runs: usize) -> Vec<f64> {
    let db = fresh_db(b).await;
    let store = open(&db).await;
    let t = Instant::now();
    fill(&store, n).await;
    if b == Backend::Postgres {
        // Fresh statistics and hint bits, as a long-lived database would have.
        sqlx::raw_sql("VACUUM ANALYZE audit_events")
            .execute(store.pool())
            .await
            .unwrap();
    }
    eprintln!(
        "  filled {n} events on {} in {:.1?}",
        b.label(),
        t.elapsed()
    );
    let mut rates = Vec::with_capacity(runs);
    for run in 0..runs {
        let t = Instant::now();
        let out = store.verify_chain(Some(key()), vec![]).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let v = out.expect("the filled chain verifies");
        assert_eq!(v.events, n);
        assert_eq!(v.head.seq, i64::try_from(n).unwrap());
        rates.push(n as f64 / secs);
        eprintln!(
            "  verify {} run {}: {:.0} events/s ({:.2?})",
            b.label(),
            run + 1,
            n as f64 / secs,
            Duration::from_secs_f64(secs)
        );
    }
    store.close().await;
    rates
}

struct Row {
    backend: Backend,
    what: String,
    rates: Vec<f64>,
    target: Option<f64>,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fsync_before = fsync_ms(Path::new(env!("CARGO_TARGET_TMPDIR")));
    eprintln!("fdatasync (8 KiB, median of 200): {fsync_before:.2} ms");

    let mut rows: Vec<Row> = Vec::new();
    for &b in &args.backends {
        for w in WRITERS {
            let target = match (b, w) {
                (Backend::Sqlite, 8) => Some(10_000.0),
                (Backend::Postgres, 8) => Some(5_000.0),
                _ => None,
            };
            rows.push(Row {
                backend: b,
                what: format!("append, {w} writer{}", if w == 1 { "" } else { "s" }),
                rates: Vec::new(),
                target,
            });
        }
    }
    // Interleave: run r of every configuration before run r + 1 of any.
    for run in 0..args.runs {
        let mut k = 0;
        for &b in &args.backends {
            for w in WRITERS {
                let rate = append_rate(b, w, args.events).await;
                eprintln!(
                    "append {} {w} writer(s) run {}: {:.0} events/s",
                    b.label(),
                    run + 1,
                    rate
                );
                rows[k].rates.push(rate);
                k += 1;
            }
        }
    }
    for &b in &args.backends {
        eprintln!(
            "verify {}: filling {} events",
            b.label(),
            args.verify_events
        );
        let rates = verify_rates(b, args.verify_events, VERIFY_RUNS).await;
        rows.push(Row {
            backend: b,
            what: format!(
                "verify_chain, {} events",
                fmt_rate(args.verify_events as f64)
            ),
            rates,
            target: Some(500_000.0),
        });
    }

    let fsync_after = fsync_ms(Path::new(env!("CARGO_TARGET_TMPDIR")));
    println!(
        "| Backend | Measurement | Median events/s | Runs (min - max) | Target | Met |\n\
         |---|---|---:|---|---:|---|"
    );
    for r in &rows {
        let lo = r.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.rates.iter().copied().fold(0.0, f64::max);
        let m = median(&r.rates);
        let (target, met) = match r.target {
            Some(t) => (
                format!(">= {}", fmt_rate(t)),
                if m >= t { "yes" } else { "**no**" },
            ),
            None => ("-".into(), "-"),
        };
        println!(
            "| {} | {} | {} | {} ({} - {}) | {} | {} |",
            r.backend.label(),
            r.what,
            fmt_rate(m),
            r.rates.len(),
            fmt_rate(lo),
            fmt_rate(hi),
            target,
            met
        );
    }
    println!(
        "\nDurable: SQLite WAL + synchronous=FULL, PostgreSQL fsync=on synchronous_commit=on; \
         {} events per append run; verify with the MAC key. Disk: 8 KiB write + fdatasync \
         {fsync_before:.2} ms before, {fsync_after:.2} ms after (median of 200).",
        args.events
    );
}

/// A throwaway database, removed when dropped; SQLite on disk under the target directory.
async fn fresh_db(b: Backend) -> TestDb {
    match b {
        Backend::Sqlite => TestDb::sqlite_in(Path::new(env!("CARGO_TARGET_TMPDIR"))),
        Backend::Postgres => TestDb::postgres().await,
    }
}
