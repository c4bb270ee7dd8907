//! Live sessions, by id and by grant: what the enforcement task cancels, and the per-grant
//! count of open streams the connection limit is checked against.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use portcullis_core::wire::EndReason;
use portcullis_core::{GrantId, Timestamp};
use portcullis_store::{EndRequest, LiveCounters};
use tokio_util::sync::CancellationToken;

use crate::activity::ModbusActivity;
use crate::budget::AuditBudget;
use crate::grant::LiveGrant;

/// One vendor session (one QUIC connection) while it lasts.
#[derive(Debug)]
pub(crate) struct LiveSession {
    pub id: String,
    pub grant: LiveGrant,
    pub started_at: Timestamp,
    /// The relay token's issue time (`iat`, Unix seconds): a "log out everywhere" ends the
    /// sessions whose token predates it.
    pub token_iat: u64,
    /// Cancelled when the session must end; every stream holds a child token.
    pub cancel: CancellationToken,
    /// The first reason given for ending wins.
    end: OnceLock<Ending>,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Streams opened (spliced to the device) in the session...
    pub streams: AtomicU64,
    /// ...and those of them open now.
    pub open_streams: AtomicU64,
    /// Streams refused, and how many of those are audited one by one.
    pub refused: AtomicU64,
    pub refusal_audits: AuditBudget,
    /// Decoded Modbus requests of its streams, for the live view.
    pub modbus: ModbusActivity,
    /// Site-connector connections that carried its streams, in first-use order.
    connectors: Mutex<Vec<String>>,
}

impl LiveSession {
    pub fn new(
        id: String,
        grant: LiveGrant,
        started_at: Timestamp,
        token_iat: u64,
        refusal_audits: (u32, Duration),
    ) -> Self {
        Self {
            id,
            grant,
            started_at,
            token_iat,
            cancel: CancellationToken::new(),
            end: OnceLock::new(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            open_streams: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refusal_audits: AuditBudget::new(refusal_audits),
            modbus: ModbusActivity::default(),
            connectors: Mutex::new(Vec::new()),
        }
    }

    /// Notes that connector connection `id` carried one of its streams.
    pub fn carried_by(&self, id: &str) {
        let mut c = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        if !c.iter().any(|x| x == id) {
            c.push(id.to_owned());
        }
    }

    pub fn connectors(&self) -> Vec<String> {
        self.connectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends the session (and every stream of it) for `reason`, unless it is already ending.
    pub fn end(&self, reason: EndReason) {
        self.end_as(Ending { reason, by: None });
    }

    /// Ends the session because a supervisor asked (`ended_by_supervisor`), unless it is
    /// already ending for another reason.
    pub fn end_by_supervisor(&self, request: EndRequest) {
        self.end_as(Ending {
            reason: EndReason::EndedBySupervisor,
            by: Some(request),
        });
    }

    fn end_as(&self, ending: Ending) {
        let _ = self.end.set(ending);
        self.cancel.cancel();
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        self.end.get().map(|e| e.reason)
    }

    /// The supervisor's request, when that is what ended the session.
    pub fn ended_by(&self) -> Option<&EndRequest> {
        self.end.get().and_then(|e| e.by.as_ref())
    }

    /// Its counters now, for the live view.
    pub fn counters(&self) -> LiveCounters {
        LiveCounters {
            id: self.id.clone(),
            open_streams: Self::total(&self.open_streams),
            bytes_up: Self::total(&self.bytes_up),
            bytes_down: Self::total(&self.bytes_down),
            refused_streams: Self::total(&self.refused),
            modbus: self.modbus.to_json(),
        }
    }

    pub fn total(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// Why a session ends, and who asked when a supervisor did.
#[derive(Debug)]
struct Ending {
    reason: EndReason,
    by: Option<EndRequest>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Arc<LiveSession>>,
    /// Open streams per grant, across all its sessions.
    streams: HashMap<GrantId, usize>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, s: Arc<LiveSession>) {
        self.lock().sessions.insert(s.id.clone(), s);
    }

    pub fn remove(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.lock().sessions.get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<LiveSession>> {
        self.lock().sessions.values().cloned().collect()
    }

    pub fn matching(&self, f: impl Fn(&LiveSession) -> bool) -> Vec<Arc<LiveSession>> {
        self.lock()
            .sessions
            .values()
            .filter(|s| f(s))
            .cloned()
            .collect()
    }

    /// Takes one of the grant's stream slots; false when all `limit` are in use.
    pub fn acquire_stream(&self, grant: GrantId, limit: usize) -> bool {
        let mut g = self.lock();
        let n = g.streams.entry(grant).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release_stream(&self, grant: GrantId) {
        let mut g = self.lock();
        if let Some(n) = g.streams.get_mut(&grant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.streams.remove(&grant);
            }
        }
    }
}

/// Gives a stream slot back when dropped, however the stream ends.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    pub registry: Arc<Registry>,
    pub grant: GrantId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.registry.release_stream(self.grant);
    }
}
