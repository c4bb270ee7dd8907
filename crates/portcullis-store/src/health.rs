//! Can the audit log be written right now?
//!
//! Reads keep working on a full disk, so reading the chain head says nothing about writes. The
//! truth comes from writes themselves: every write transaction that commits marks the log
//! writable, every one that fails to begin, to insert its audit rows or to commit marks it not.
//! A periodic probe that really writes (it rewrites the one row of `health_probe`, about a page)
//! keeps the answer current when no one else writes: it turns the mark to "not writable" before
//! the next login would fail, and back to "writable" within one period of space returning.
//! Readiness (`/readyz`) and the relay's fail-closed auditor read the mark.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::{Shared, Store, StoreError};

/// Bytes the probe writes each time: about one SQLite page, so the write needs the room a
/// small audit event needs.
const PROBE_BYTES: usize = 1024;

/// Whether the last write worked, and why not when it did not.
#[derive(Debug)]
pub(crate) struct WriteHealth {
    writable: AtomicBool,
    /// The error of the last failed write, for readiness answers and logs.
    failure: Mutex<Option<String>>,
}

impl Default for WriteHealth {
    fn default() -> Self {
        Self {
            writable: AtomicBool::new(true),
            failure: Mutex::new(None),
        }
    }
}

impl WriteHealth {
    pub(crate) fn ok(&self) {
        if !self.writable.swap(true, Ordering::AcqRel) {
            tracing::info!("the audit log is writable again");
        }
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
    }

    pub(crate) fn failed(&self, e: &StoreError) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(e.to_string());
        }
        if self.writable.swap(false, Ordering::AcqRel) {
            tracing::error!(error = %e, "the audit log cannot be written; new actions are refused");
        }
    }

    fn state(&self) -> Result<(), String> {
        if self.writable.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "the last write failed".to_owned());
        Err(why)
    }
}

impl Store {
    /// `Ok` while the last write (or write probe) worked; the failure otherwise. Callers that
    /// would start something needing an audit row refuse while this is an error.
    pub fn audit_writable(&self) -> Result<(), String> {
        self.shared.write_health.state()
    }

    /// Writes the probe row once and records the outcome in [`Store::audit_writable`].
    pub async fn probe_writes(&self) -> Result<(), StoreError> {
        probe(&self.shared).await
    }

    /// Runs [`Store::probe_writes`] every `every` until the last `Store` handle is dropped.
    pub fn spawn_write_probe(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Holding only a weak handle between probes: the probe never keeps a store
                // (and its pool) alive that everyone else has dropped.
                let Some(shared) = weak.upgrade() else { return };
                if shared.pool.is_closed() {
                    return;
                }
                // The outcome is recorded in the health mark; the first failure is logged there.
                let _ = probe(&shared).await;
            }
        })
    }
}

async fn probe(shared: &Shared) -> Result<(), StoreError> {
    let now = shared.clock.now();
    // Different bytes each time, so no layer can skip the write as a no-op.
    let fill = char::from(b'a' + u8::try_from(now.unix_micros().rem_euclid(26)).unwrap_or(0));
    let pad: String = std::iter::repeat_n(fill, PROBE_BYTES).collect();
    let r = sqlx::query("UPDATE health_probe SET n = n + 1, pad = $1, at = $2 WHERE id = 1")
        .bind(pad)
        .bind(now.to_rfc3339())
        .execute(&shared.pool)
        .await
        .map_err(StoreError::from);
    match &r {
        Ok(_) => shared.write_health.ok(),
        Err(e) => shared.write_health.failed(e),
    }
    r.map(|_| ())
}
