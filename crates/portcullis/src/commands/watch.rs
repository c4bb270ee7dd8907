//! What `serve`, `web` and `relay` watch besides requests: how full the data directory's
//! filesystem is, and whether the audit log can be written.
//!
//! Disk: every [`DISK_CHECK_EVERY`] the filesystem holding the data directory is measured
//! (statvfs). Passing 80 % and 90 % (and falling back) is logged once per crossing, written to
//! the audit log as `disk.usage` (the stand-in for the alert a later issue adds), and the share
//! used is a gauge on `/metrics`. A `disk.usage` event that cannot be written (the disk is full)
//! is kept and written once the log takes writes again.
//!
//! Writes: the store's write probe runs every [`WRITE_PROBE_EVERY`]; `/readyz` and the relay
//! read its mark, so readiness follows a full disk within that period, both ways.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portcullis_core::disk::{self, DiskLevels};
use portcullis_store::Store;
use tokio_util::sync::CancellationToken;

use crate::commands::parts;
use crate::context::Context;

/// How often the data directory's filesystem is measured.
pub const DISK_CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often the store proves it can write. Short: it bounds how long `/readyz` lags a full
/// disk, and how long after space returns it says ready again. One small write each time.
pub const WRITE_PROBE_EVERY: Duration = Duration::from_secs(2);
/// Most `disk.usage` events kept while the audit log cannot take them (each crossing is one;
/// the oldest is dropped beyond this, and the log says so).
const PENDING_EVENTS: usize = 16;

/// The latest measurements, for `/metrics`.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    /// `f64` bits of the share used; NaN until the first measurement works.
    ratio: AtomicU64,
    store: Store,
}

impl Watch {
    fn ratio(&self) -> f64 {
        f64::from_bits(self.ratio.load(Ordering::Relaxed))
    }

    /// Prometheus text: the disk gauge (once measured) and whether the audit log is writable.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ratio = self.ratio();
        if !ratio.is_nan() {
            out += "# HELP portcullis_data_disk_used_ratio Share of the data directory's filesystem in use (0 to 1); warnings at 0.8 and 0.9.\n";
            out += "# TYPE portcullis_data_disk_used_ratio gauge\n";
            out += &format!(
                "portcullis_data_disk_used_ratio{{path=\"{}\"}} {ratio:.4}\n",
                label_value(&self.path.display().to_string())
            );
        }
        let writable = u8::from(self.store.audit_writable().is_ok());
        out += "# HELP portcullis_audit_writable 1 while the audit log can be written, 0 while it cannot (new actions are refused).\n";
        out += "# TYPE portcullis_audit_writable gauge\n";
        out += &format!("portcullis_audit_writable {writable}\n");
        out
    }
}

/// Starts the disk watcher and the store's write probe; both stop with `stop`.
pub fn start(ctx: &Context, store: &Store, stop: CancellationToken) -> Arc<Watch> {
    let watch = Arc::new(Watch {
        path: ctx.settings.data_dir.clone(),
        ratio: AtomicU64::new(f64::NAN.to_bits()),
        store: store.clone(),
    });
    let probe = store.spawn_write_probe(WRITE_PROBE_EVERY);
    let w = watch.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = watch_disk(&w) => {}
        }
        probe.abort();
    });
    watch
}

async fn watch_disk(w: &Watch) {
    let mut levels = DiskLevels::new();
    let mut pending: VecDeque<portcullis_core::audit::AuditDraft> = VecDeque::new();
    let mut measure_failing = false;
    let mut tick = tokio::time::interval(DISK_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match measure(&w.path).await {
            Ok(ratio) => {
                measure_failing = false;
                w.ratio.store(ratio.to_bits(), Ordering::Relaxed);
                if let Some(c) = levels.observe(ratio) {
                    let percent = (ratio * 1000.0).round() / 10.0;
                    let path = w.path.display().to_string();
                    if c.rising() {
                        tracing::warn!(
                            level = %c.to, percent, path = %path,
                            "the data directory's filesystem is {percent} % full"
                        );
                    } else {
                        tracing::info!(
                            level = %c.to, percent, path = %path,
                            "the data directory's filesystem is back to {percent} % full"
                        );
                    }
                    if pending.len() == PENDING_EVENTS {
                        pending.pop_front();
                        tracing::warn!("dropped the oldest unwritten disk.usage event");
                    }
                    pending.push_back(parts::system(
                        "disk.usage",
                        serde_json::json!({
                            "level": c.to.as_str(),
                            "previous": c.from.as_str(),
                            "percent": percent,
                            "path": path,
                        }),
                    ));
                }
            }
            Err(e) => {
                if !measure_failing {
                    tracing::warn!("cannot measure the filesystem of {}: {e}", w.path.display());
                }
                measure_failing = true;
            }
        }
        while let Some(draft) = pending.front() {
            match w.store.append(draft.clone()).await {
                Ok(_) => {
                    pending.pop_front();
                }
                Err(e) => {
                    tracing::debug!("disk.usage event not written yet: {e}");
                    break;
                }
            }
        }
    }
}

/// The share of `path`'s filesystem in use. statvfs may block (a network filesystem): off the
/// async workers.
async fn measure(path: &Path) -> Result<f64, String> {
    let p = path.to_owned();
    let st = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&p))
        .await
        .map_err(|e| format!("the measuring task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    // statvfs counts `f_blocks`, `f_bfree` and `f_bavail` in units of `f_frsize`: the ratio
    // needs no conversion.
    disk::used_ratio(st.f_blocks, st.f_bfree, st.f_bavail)
        .ok_or_else(|| "the filesystem reports no size".to_owned())
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("/srv/a\"b\\c\nd"), "/srv/a\\\"b\\\\c\\nd");
    }

    #[tokio::test]
    async fn measures_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let r = measure(dir.path()).await.unwrap();
        assert!((0.0..=1.0).contains(&r), "{r}");
        let e = measure(&dir.path().join("missing")).await.unwrap_err();
        assert!(e.contains("No such file") || e.contains("ENOENT"), "{e}");
    }
}
