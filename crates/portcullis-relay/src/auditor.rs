//! The relay's audit writer: fail closed, lose nothing.
//!
//! A session starts only after its start event is durable. An end event (or a refusal) that
//! cannot be written is kept in memory, retried on every reconciliation tick and before the next
//! session start, and until it is written nothing new starts: the relay refuses with
//! `audit_unavailable`. Live sessions are not cut for it: they end on time from the window end
//! the relay already holds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use portcullis_core::audit::AuditDraft;
use portcullis_store::{RelaySessionEnd, RelaySessionStart, Store, StoreError};
use tokio::sync::Mutex;

use crate::metrics::Metrics;

#[derive(Debug)]
enum Pending {
    End(RelaySessionEnd),
    Event(AuditDraft),
}

#[derive(Debug)]
pub(crate) struct Auditor {
    store: Store,
    pending: Mutex<VecDeque<Pending>>,
    healthy: AtomicBool,
    metrics: Arc<Metrics>,
}

/// Why a session could not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The token id was used before.
    Reused,
    /// The audit log cannot be written.
    Unavailable(StoreError),
}

impl Auditor {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            pending: Mutex::new(VecDeque::new()),
            healthy: AtomicBool::new(true),
            metrics,
        }
    }

    /// False after a failed write until a write succeeds again, and while the store knows the
    /// audit log cannot be written (a failed write elsewhere in the process, or its write
    /// probe, e.g. on a full disk): new streams are refused.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.store.audit_writable().is_ok()
    }

    /// [`Auditor::healthy`], but when only our own mark stands in the way and the store says
    /// the log takes writes again, probes at once (writing what is pending) instead of waiting
    /// for the next reconciliation tick: a vendor's next connection after the disk is freed
    /// works, and is not refused for up to one more period.
    pub async fn ready(&self) -> bool {
        if self.healthy() {
            return true;
        }
        if self.store.audit_writable().is_err() {
            return false;
        }
        self.probe().await;
        self.healthy()
    }

    /// A read or write against the database failed: treat the audit log as unavailable.
    pub fn mark_unhealthy(&self) {
        self.healthy.store(false, Ordering::Release);
    }

    fn failed(&self, e: &StoreError) {
        tracing::error!("audit write failed: {e}");
        self.metrics
            .audit_write_failures
            .fetch_add(1, Ordering::Relaxed);
        self.mark_unhealthy();
    }

    /// Writes what is pending, in order. True when nothing is left.
    pub async fn flush(&self) -> bool {
        let mut q = self.pending.lock().await;
        while let Some(item) = q.front() {
            let r = match item {
                Pending::End(e) => self.store.end_relay_session(e).await,
                Pending::Event(d) => self.store.append(d.clone()).await.map(|_| ()),
            };
            match r {
                Ok(()) => {
                    q.pop_front();
                }
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
        }
        true
    }

    /// Checks the database answers; clears the unhealthy mark when it does and nothing is
    /// pending.
    pub async fn probe(&self) {
        if !self.flush().await {
            return;
        }
        match self.store.audit_head().await {
            // Reads work on a full disk: healthy again only when writes do too.
            Ok(_) if self.store.audit_writable().is_ok() => {
                self.healthy.store(true, Ordering::Release);
            }
            Ok(_) => self.mark_unhealthy(),
            Err(e) => self.failed(&e),
        }
    }

    pub async fn session_start(&self, s: &RelaySessionStart) -> Result<(), StartError> {
        if !self.flush().await {
            return Err(StartError::Unavailable(StoreError::Unavailable(
                "earlier audit events are still waiting to be written".into(),
            )));
        }
        match self.store.start_relay_session(s).await {
            Ok(()) => {
                self.healthy.store(true, Ordering::Release);
                Ok(())
            }
            Err(StoreError::TokenReused) => Err(StartError::Reused),
            Err(e) => {
                self.failed(&e);
                Err(StartError::Unavailable(e))
            }
        }
    }

    pub async fn session_end(&self, e: RelaySessionEnd) {
        if self.flush().await {
            match self.store.end_relay_session(&e).await {
                Ok(()) => return,
                Err(err) => self.failed(&err),
            }
        }
        self.pending.lock().await.push_back(Pending::End(e));
    }

    /// An event that must not be lost but does not gate anything (refusals). While the audit
    /// log is known to be unavailable it is queued at once (the next probe writes it): waiting
    /// for another database timeout would only delay the refusal the client is owed.
    pub async fn event(&self, draft: AuditDraft) {
        if self.healthy() && self.flush().await {
            match self.store.append(draft.clone()).await {
                Ok(_) => return,
                Err(err) => self.failed(&err),
            }
        }
        self.pending.lock().await.push_back(Pending::Event(draft));
    }
}
