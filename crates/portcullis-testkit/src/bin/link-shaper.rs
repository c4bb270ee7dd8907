//! A shaped link between two network namespaces, for benchmarks (this kernel has no
//! `sch_netem`): one TUN device in each, and this process moving IP packets between them with
//! a one-way delay, random loss, a rate limit and a drop-tail queue bounded in time, each way
//! (`portcullis_testkit::shaper`). Used by `bench/tunnel-compare --link`.
//!
//! ```text
//! link-shaper NETNS_A:DEV_A NETNS_B:DEV_B 'rtt=40ms,rate=50mbit,queue=500ms,loss=1%' [SEED]
//! ```
//!
//! It creates both devices (root), prints `ready` once they exist, and leaves addressing and
//! bringing them up to the caller (`ip -n NETNS addr add ... dev DEV`). Each line on its
//! standard input is a new shape: it prints what it did each way under the old one and applies
//! the new one to the packets that come after. When its standard input closes it prints the
//! last counts and exits; the devices go with it.
//! Each direction is two threads: one reads packets as they come and gives each its verdict,
//! one writes them out when they are due; neither waits on the other except for the queue.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench tool: failing loudly is the point

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use portcullis_testkit::shaper::{Link, Shape, Verdict};
use rand::{Rng, SeedableRng};

/// A TUN device's largest packet with MTU 1500 is 1500 bytes; room for a larger MTU.
const MAX_PACKET: usize = 65_536;

/// Packets in flight one way: (due, bytes), in due order (the delay is fixed and the
/// bottleneck is FIFO, so arrival order is due order).
#[derive(Default)]
struct Pipe {
    queue: Mutex<VecDeque<(Instant, Vec<u8>)>>,
    ready: Condvar,
}

/// The shape in force, and how many times it has changed (readers check the count per packet).
struct Current {
    shape: Mutex<Shape>,
    changes: AtomicU64,
}

#[derive(Default)]
struct Counts {
    offered: AtomicU64,
    lost: AtomicU64,
    queue_full: AtomicU64,
    delivered: AtomicU64,
    bytes: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("link-shaper: {e}");
        std::process::exit(2);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: link-shaper NETNS_A:DEV_A NETNS_B:DEV_B 'rtt=40ms,rate=50mbit,queue=500ms,loss=1%' [SEED]";
    let (a, b, shape) = match args {
        [a, b, s] | [a, b, s, _] => (a, b, s.parse::<Shape>()?),
        _ => return Err(usage.to_owned()),
    };
    let seed: u64 = match args.get(3) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("'{s}' is not a seed (a number)"))?,
        None => 16,
    };
    let dev_a = Arc::new(open(a)?);
    let dev_b = Arc::new(open(b)?);
    println!("ready: {a} <-> {b}, each way {shape}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;

    let current = Arc::new(Current {
        shape: Mutex::new(shape),
        changes: AtomicU64::new(0),
    });
    let ab = direction(&dev_a, &dev_b, &current, seed);
    let ba = direction(&dev_b, &dev_a, &current, seed.wrapping_add(1));
    let report = |shape: Shape| {
        for (name, c) in [(format!("{a} -> {b}"), &ab), (format!("{b} -> {a}"), &ba)] {
            let take = |x: &AtomicU64| x.swap(0, Ordering::Relaxed);
            let (offered, lost, full) = (take(&c.offered), take(&c.lost), take(&c.queue_full));
            let (delivered, bytes) = (take(&c.delivered), take(&c.bytes));
            let pct = |n: u64| 100.0 * n as f64 / offered.max(1) as f64;
            println!(
                "{name} ({shape}): {offered} packets offered, {lost} lost at random ({:.2} %), \
                 {full} dropped at the full queue ({:.2} %), {delivered} delivered ({} MiB)",
                pct(lost),
                pct(full),
                bytes >> 20
            );
        }
        let _ = std::io::stdout().flush();
    };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match line.trim().parse::<Shape>() {
            Ok(next) => {
                let was = std::mem::replace(&mut *current.shape.lock().unwrap(), next);
                current.changes.fetch_add(1, Ordering::Release);
                report(was);
                println!("shape: each way {next}");
            }
            Err(e) => println!(
                "link-shaper: {e} (the shape stays {})",
                current.shape.lock().unwrap()
            ),
        }
        let _ = std::io::stdout().flush();
    }
    report(*current.shape.lock().unwrap());
    Ok(())
}

/// `NETNS:DEV`: a TUN device named DEV made in namespace NETNS (this thread moves there to
/// open it: a TUN device belongs to the namespace that opened `/dev/net/tun`).
fn open(spec: &str) -> Result<tun::Device, String> {
    let (ns, dev) = spec
        .split_once(':')
        .ok_or_else(|| format!("'{spec}': write NETNS:DEV, e.g. pcs-srv:pcs0"))?;
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| format!("setns into {path}: {e}"))?;
    let mut config = tun::Configuration::default();
    config.tun_name(dev).layer(tun::Layer::L3);
    // Addresses and state are the caller's (`ip`): this only makes the device.
    config.platform_config(|p| {
        p.ensure_root_privileges(false);
    });
    tun::create(&config).map_err(|e| format!("TUN device {dev} in {ns}: {e}"))
}

/// Starts forwarding `from` -> `to` through a link of `shape`; returns its counters.
fn direction(
    from: &Arc<tun::Device>,
    to: &Arc<tun::Device>,
    current: &Arc<Current>,
    seed: u64,
) -> Arc<Counts> {
    let pipe = Arc::new(Pipe::default());
    let counts = Arc::new(Counts::default());
    {
        let (from, pipe, counts) = (from.clone(), pipe.clone(), counts.clone());
        let current = current.clone();
        std::thread::spawn(move || {
            let mut seen = current.changes.load(Ordering::Acquire);
            let mut link = Link::new(*current.shape.lock().unwrap());
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut buf = vec![0u8; MAX_PACKET];
            while let Ok(n) = from.recv(&mut buf) {
                let changes = current.changes.load(Ordering::Acquire);
                if changes != seen {
                    seen = changes;
                    link = Link::new(*current.shape.lock().unwrap());
                }
                counts.offered.fetch_add(1, Ordering::Relaxed);
                match link.offer(Instant::now(), n, rng.r#gen::<f64>()) {
                    Verdict::Deliver(due) => {
                        pipe.queue
                            .lock()
                            .unwrap()
                            .push_back((due, buf[..n].to_vec()));
                        pipe.ready.notify_one();
                    }
                    Verdict::Lost => {
                        counts.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::QueueFull => {
                        counts.queue_full.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    {
        let (to, counts) = (to.clone(), counts.clone());
        std::thread::spawn(move || {
            loop {
                let mut due = Vec::new();
                {
                    let mut q = pipe.queue.lock().unwrap();
                    loop {
                        let now = Instant::now();
                        match q.front() {
                            Some((at, _)) if *at <= now => {
                                while let Some((at, _)) = q.front() {
                                    if *at > now {
                                        break;
                                    }
                                    due.push(q.pop_front().unwrap().1);
                                }
                                break;
                            }
                            Some((at, _)) => {
                                let wait = *at - now;
                                q = pipe.ready.wait_timeout(q, wait).unwrap().0;
                            }
                            None => q = pipe.ready.wait(q).unwrap(),
                        }
                    }
                }
                for p in due {
                    // A packet the far side's kernel refuses (its device down) is lost, as
                    // on a wire.
                    if to.send(&p).is_ok() {
                        counts.delivered.fetch_add(1, Ordering::Relaxed);
                        counts.bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    counts
}
