//! What read-only Modbus costs a poll (issue 14): a Modbus read (FC 3, 10 registers)
//! request/response through `portcullis connect` and the relay, to a port the device's policy
//! names Modbus (filtered, `read` access) and to a raw TCP port of the same kind of device, in
//! the same run, alternating in rounds so that the shared machine's noise falls on both alike.
//! Results: docs/BENCHMARKS.md, "Read-only Modbus through the tunnel (issue 14)".
//!
//! ```text
//! PORTCULLIS_BIN=target/release/portcullis \
//!     cargo bench -p portcullis-e2e --bench modbus -- [--rounds N] [--requests N]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{Plant, admin};
use portcullis_testkit::devices::ModbusDevice;
use portcullis_testkit::stats::{median, percentile};
use tokio_modbus::prelude::*;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// Microseconds per FC 3 read of 10 registers, `n` in turn on one connection (after a warm-up).
async fn polls(addr: SocketAddr, n: usize) -> Vec<f64> {
    let mut ctx = tcp::connect(addr).await.unwrap();
    for _ in 0..100 {
        ctx.read_holding_registers(0, 10).await.unwrap().unwrap();
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let regs = ctx.read_holding_registers(0, 10).await.unwrap().unwrap();
        out.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(regs.len(), 10);
    }
    ctx.disconnect().await.unwrap();
    out
}

fn main() {
    let rounds = arg("--rounds", 5);
    let requests = arg("--requests", 2000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let filtered = ModbusDevice::start().await;
            let raw = ModbusDevice::start().await;
            let (fp, rp) = (filtered.addr().port(), raw.addr().port());
            let plant = Plant::new(&[fp, rp], &[]).await;
            admin(
                &plant.broker.data,
                &["admin", "device", "set-policy", "plc-7", "--protocol", &format!("{fp}=modbus")],
            );
            let grant = plant.grant(&format!("{fp},{rp}"), "+2h").await;
            let tunnel = plant.vera.connect(grant, &[], 2).await;
            let (mut f_all, mut r_all) = (Vec::new(), Vec::new());
            let (mut p50_diff, mut p99_diff) = (Vec::new(), Vec::new());
            println!("round | raw p50 | read p50 | raw p99 | read p99 (µs)");
            for round in 0..rounds {
                // Alternate which goes first, so neither always runs on a warmer machine.
                let (r, f) = if round % 2 == 0 {
                    let r = polls(tunnel.local(rp), requests).await;
                    (r, polls(tunnel.local(fp), requests).await)
                } else {
                    let f = polls(tunnel.local(fp), requests).await;
                    (polls(tunnel.local(rp), requests).await, f)
                };
                let (r50, f50) = (median(&r), median(&f));
                let (r99, f99) = (percentile(&r, 99.0), percentile(&f, 99.0));
                println!("{round} | {r50:.1} | {f50:.1} | {r99:.1} | {f99:.1}");
                p50_diff.push(f50 - r50);
                p99_diff.push(f99 - r99);
                r_all.extend(r);
                f_all.extend(f);
            }
            println!(
                "all {} requests each: raw p50 {:.1} µs p99 {:.1} µs; read-only p50 {:.1} µs p99 {:.1} µs",
                r_all.len(),
                median(&r_all),
                percentile(&r_all, 99.0),
                median(&f_all),
                percentile(&f_all, 99.0)
            );
            println!(
                "added by the filter, median of the per-round differences: p50 {:+.1} µs, p99 {:+.1} µs",
                median(&p50_diff),
                median(&p99_diff)
            );
            assert!(filtered.functions_seen().iter().all(|f| *f == 3));
        });
}
