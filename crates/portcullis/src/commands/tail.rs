//! `portcullis audit tail [--format jsonl|text] [--from-seq N] [--no-follow]`: the audit log on
//! the command line, like `tail -f`. Reads the database directly, as `audit verify` does (so it
//! works on the broker's host or against a copy of its data directory), and changes nothing:
//! it writes no audit event of its own, which would otherwise show up in what it follows.
//!
//! Without `--from-seq` it starts with the last [`LAST`] events. It asks for new events every
//! [`POLL`], writes and flushes each line as it goes, and ends with success on SIGINT/SIGTERM
//! or when its reader goes away (a closed pipe: `audit tail | head -3`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use portcullis_core::audit::{AuditEvent, ExportRecord, csv_cell};
use portcullis_store::AuditQuery;

use crate::cli::{TailArgs, TailFormat};
use crate::commands::parts;
use crate::context::Context;

/// Events shown before following when no --from-seq is given.
const LAST: i64 = 10;
/// How often a follower asks for new events: the delay a person sees, at one small query.
const POLL: Duration = Duration::from_millis(200);
const PAGE: i64 = 1_000;

pub async fn run(ctx: &Context, args: TailArgs) -> anyhow::Result<ExitCode> {
    if args.from_seq.is_some_and(|n| n < 1) {
        anyhow::bail!("--from-seq must be 1 or more (seq numbers start at 1)");
    }
    let stop = parts::shutdown_token()?;
    let store = ctx.open_store_for_inspection().await?;
    let mut after = match args.from_seq {
        Some(n) => n - 1,
        None => (store.audit_head().await?.seq - LAST).max(0),
    };
    let mut out = std::io::stdout().lock();
    loop {
        let page = store
            .audit_events(&AuditQuery {
                after: Some(after),
                limit: Some(PAGE),
                ..Default::default()
            })
            .await?;
        for ev in &page {
            let line = match args.format {
                TailFormat::Jsonl => ExportRecord::from(ev).jsonl_line(),
                TailFormat::Text => text_line(ev),
            };
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => {}
                // Whoever read us has gone (`| head`): that is the end, not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    store.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(anyhow::anyhow!("writing to standard output: {e}")),
            }
            after = ev.seq;
        }
        if page.len() as i64 == PAGE {
            continue;
        }
        if args.no_follow {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(POLL) => {}
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// One event for a person: `seq time actor (role) action target details`, free text made
/// one-line safe as in CSV exports.
fn text_line(ev: &AuditEvent) -> String {
    let mut line = format!(
        "{} {} {} ({}) {} {}",
        ev.seq,
        ev.ts,
        csv_cell(&ev.actor),
        ev.role,
        csv_cell(&ev.action),
        csv_cell(&ev.target),
    );
    if let Some(s) = &ev.source {
        line += &format!(" from {}", csv_cell(s));
    }
    if ev.details != "{}" {
        line += " ";
        line += &csv_cell(&ev.details);
    }
    line
}
