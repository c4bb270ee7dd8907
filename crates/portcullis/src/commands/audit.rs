//! `portcullis audit verify | checkpoint | export`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use portcullis_core::Timestamp;
use portcullis_core::audit::ExportRecord;
use portcullis_store::{AuditQuery, StoreError};

use crate::checkpoints;
use crate::cli::{AuditCommand, ExportFormat};
use crate::context::{Context, cli_actor};

/// Exit code when the log is not intact (tampered), distinct from 1 (could not check).
pub const EXIT_TAMPERED: u8 = 3;

const EXPORT_PAGE: i64 = 5_000;

pub async fn run(ctx: &Context, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { checkpoint } => verify(ctx, &checkpoint).await,
        AuditCommand::Checkpoint { out } => checkpoint(ctx, out).await,
        AuditCommand::Export {
            format,
            since,
            until,
            out,
        } => {
            let since = since.as_deref().map(Timestamp::parse_rfc3339).transpose()?;
            let until = until.as_deref().map(Timestamp::parse_rfc3339).transpose()?;
            if let (Some(s), Some(u)) = (since, until)
                && u <= s
            {
                anyhow::bail!("--until ({u}) must be later than --since ({s})");
            }
            export(ctx, format, since, until, out.as_deref()).await
        }
        AuditCommand::Tail(args) => crate::commands::tail::run(ctx, args).await,
    }
}

async fn verify(ctx: &Context, extra: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store_for_inspection().await?;
    let mut files = checkpoints::files(&ctx.checkpoints_dir())?;
    files.extend(extra.iter().cloned());
    let mut vouched = Vec::new();
    if !files.is_empty() {
        let key = ctx
            .checkpoint_key(false)
            .context("checkpoints are present but the checkpoint key is not")?
            .verifying_key();
        match checkpoints::vouched(&files, &key) {
            Ok(v) => vouched = v,
            Err(bad) => {
                println!("{bad}");
                return Ok(ExitCode::from(EXIT_TAMPERED));
            }
        }
    }
    let newest = vouched.iter().map(|(seq, _)| *seq).max();
    let outcome = store
        .verify_chain(Some(ctx.mac_key(false)?), vouched)
        .await?;
    let guards = store.check_guards().await;
    store.close().await;
    let mut code = ExitCode::SUCCESS;
    match outcome {
        Ok(v) => println!(
            "audit log intact: {} events, head seq {} ({}), {} of {} checkpoint(s) matched{}",
            v.events,
            v.head.seq,
            v.head.hash,
            v.checkpoints_checked,
            files.len(),
            match newest {
                Some(seq) => format!(", the newest of seq {seq}"),
                None => String::new(),
            }
        ),
        Err(b) => {
            println!("{b}");
            code = ExitCode::from(EXIT_TAMPERED);
        }
    }
    match guards {
        Ok(()) => {}
        Err(StoreError::GuardMissing(why)) => {
            println!("append-only guard missing: {why}");
            code = ExitCode::from(EXIT_TAMPERED);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(code)
}

async fn checkpoint(ctx: &Context, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    let key = ctx.checkpoint_key(true)?;
    let head = store.audit_head().await?;
    if head.seq == 0 {
        anyhow::bail!("the audit log is empty: there is nothing to checkpoint yet");
    }
    let path = match out {
        Some(p) => p,
        None => {
            let dir = ctx.checkpoints_dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.join(checkpoints::file_name(head.seq))
        }
    };
    checkpoints::write(&path, &head, store.now(), &key)?;
    let details = serde_json::json!({ "seq": head.seq, "hash": head.hash.to_hex(), "file": path.display().to_string() });
    store
        .append(
            cli_actor()
                .draft("audit.checkpoint")
                .target("audit")
                .details(details),
        )
        .await?;
    store.close().await;
    println!(
        "signed checkpoint of seq {} ({}) written to {}",
        head.seq,
        head.hash,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn export(
    ctx: &Context,
    format: ExportFormat,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    let mut sink = Sink::open(out)?;
    if format == ExportFormat::Csv {
        sink.writer().write_all(&csv_lines(std::iter::once(
            ExportRecord::CSV_HEADER.map(String::from),
        ))?)?;
    }
    // Page by seq so memory stays bounded however long the log is.
    let (mut after, mut count) = (0, 0u64);
    loop {
        let q = AuditQuery {
            since,
            until,
            after: Some(after),
            limit: Some(EXPORT_PAGE),
            ..Default::default()
        };
        let page = store.audit_events(&q).await?;
        let records = page.iter().map(ExportRecord::from);
        match format {
            ExportFormat::Csv => sink
                .writer()
                .write_all(&csv_lines(records.map(|r| r.csv_row()))?)?,
            ExportFormat::Jsonl => {
                for rec in records {
                    writeln!(sink.writer(), "{}", rec.jsonl_line())?;
                }
            }
        }
        count += page.len() as u64;
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => after = last.seq,
            _ => break,
        }
    }
    sink.finish()?;
    let details = serde_json::json!({
        "format": match format { ExportFormat::Csv => "csv", ExportFormat::Jsonl => "jsonl" },
        "since": since,
        "until": until,
        "events": count,
    });
    store
        .append(
            cli_actor()
                .draft("audit.export")
                .target("audit")
                .details(details),
        )
        .await?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// CSV text for `rows` (quoting as RFC 4180 needs; the cells are already one-line safe).
fn csv_lines<const N: usize>(rows: impl Iterator<Item = [String; N]>) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(row)?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {}", e.error()))
}

/// Standard output, or a temporary file renamed onto the requested path only once complete.
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File {
        tmp: std::io::BufWriter<tempfile::NamedTempFile>,
        path: PathBuf,
    },
}

impl Sink {
    fn open(out: Option<&Path>) -> anyhow::Result<Sink> {
        Ok(match out {
            None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Some(path) => {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = tempfile::NamedTempFile::new_in(dir)
                    .with_context(|| format!("cannot write in {}", dir.display()))?;
                Sink::File {
                    tmp: std::io::BufWriter::new(tmp),
                    path: path.to_path_buf(),
                }
            }
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File { tmp, .. } => tmp,
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut w) => Ok(w.flush()?),
            Sink::File { tmp, path } => {
                let tmp = tmp.into_inner().map_err(|e| e.into_error())?;
                tmp.as_file().sync_all()?;
                tmp.persist(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(())
            }
        }
    }
}
