//! `portcullis admin clock ack|status` (issue 12). The running broker's monitors hold the live
//! clock state; this command runs in another process, so `ack` writes a `clock.ack` event that
//! they look for, and `status` reads the clock events from the audit log.

use portcullis_store::{Store, probe_time_sync};

use crate::cli::{ClockCommand, OutFormat};
use crate::context::cli_actor;

pub async fn run(store: &Store, cmd: ClockCommand) -> anyhow::Result<()> {
    match cmd {
        ClockCommand::Ack => {
            let ev = store.acknowledge_clock(&cli_actor()).await?;
            println!(
                "acknowledged the clock as it is now ({}; event {}): a running broker in a clock \
                 anomaly starts new tokens and sessions again within a second; grants that \
                 already ended stay ended",
                store.now(),
                ev.seq
            );
        }
        ClockCommand::Status { format } => {
            let sync = tokio::task::spawn_blocking(probe_time_sync).await?;
            let events = store.clock_events(10).await?;
            // The newest anomaly is still open when nothing resolved or acknowledged it since
            // (events are newest first).
            let open = events
                .iter()
                .take_while(|e| e.action != "clock.resolved" && e.action != "clock.ack")
                .find(|e| e.action == "clock.anomaly");
            match format {
                OutFormat::Json => {
                    let list: Vec<serde_json::Value> = events
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "seq": e.seq, "ts": e.ts, "actor": e.actor, "action": e.action,
                                "details": serde_json::from_str::<serde_json::Value>(&e.details)
                                    .unwrap_or_default(),
                            })
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "wall_clock": store.now(), "time_sync": sync,
                            "anomaly_open": open.map(|e| e.seq), "events": list,
                        })
                    );
                }
                OutFormat::Text => {
                    println!("wall clock: {}", store.now());
                    let synced = match sync.synchronised {
                        Some(true) => "synchronised",
                        Some(false) => "NOT synchronised",
                        None => "unknown",
                    };
                    println!("time sync: {synced} ({}: {})", sync.source, sync.detail);
                    match open {
                        Some(e) => println!(
                            "clock anomaly open since event {} ({}): new tokens and sessions are \
                             refused; check the time, then run `portcullis admin clock ack`",
                            e.seq, e.ts
                        ),
                        None => println!("no open clock anomaly in the audit log"),
                    }
                    for e in &events {
                        println!(
                            "{:>8}  {}  {:<20} {}  {}",
                            e.seq, e.ts, e.action, e.actor, e.details
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
