//! Modbus/TCP decoder benchmark (issue 14: at least 2 million ADUs a second on one core): a
//! stream of read-holding-registers requests (FC 3, 12-byte ADUs) fed to `AduDecoder` in 64 KiB
//! chunks, each ADU read as a `Request`, as the relay's filter will.
//!
//! ```text
//! cargo bench -p portcullis-core --bench modbus -- [--runs N]
//! ```
//!
//! One thread. Each run decodes 1,000,000 ADUs; the figure is the median of `--runs` runs
//! (default 9) with the spread, in ADUs per wall-clock second. Prints a Markdown table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::hint::black_box;
use std::time::Instant;

use portcullis_core::modbus::{Adu, AduDecoder, Request};

const ADUS: usize = 1_000_000;
const CHUNK: usize = 64 * 1024;

fn main() {
    let mut runs = 9usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(runs)
                    .max(1)
            }
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other}; usage: -- [--runs N]");
                std::process::exit(2);
            }
        }
    }
    let mut stream = Vec::with_capacity(ADUS * 12);
    for i in 0..ADUS {
        let address = u16::try_from(i % 10_000).unwrap();
        let mut pdu = vec![3];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&10u16.to_be_bytes());
        Adu {
            transaction: u16::try_from(i % 65_536).unwrap(),
            unit: 1,
            pdu,
        }
        .encode(&mut stream);
    }
    let mut rates = Vec::with_capacity(runs);
    for run in 0..runs {
        let start = Instant::now();
        let mut decoder = AduDecoder::new();
        let mut seen = 0usize;
        for chunk in stream.chunks(CHUNK) {
            decoder.push(chunk);
            while let Some(adu) = decoder.next_adu().unwrap() {
                black_box(Request::parse(&adu).unwrap());
                seen += 1;
            }
        }
        assert_eq!(seen, ADUS);
        let rate = ADUS as f64 / start.elapsed().as_secs_f64();
        eprintln!("run {}/{runs}: {:.2} M ADUs/s", run + 1, rate / 1e6);
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!("| Modbus decoder (FC 3 requests, 64 KiB chunks) | median | min - max | runs |");
    println!("|---|---:|---:|---:|");
    println!(
        "| ADUs decoded and read as requests, per second | {:.2} M | {:.2} - {:.2} M | {runs} |",
        median / 1e6,
        rates[0] / 1e6,
        rates[rates.len() - 1] / 1e6
    );
}
