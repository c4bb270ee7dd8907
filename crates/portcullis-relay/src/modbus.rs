//! A Modbus stream's record: what the filter ([`portcullis_net::modbus_filter`]) saw, turned
//! into audit events and the live view's activity.
//!
//! - Every refused request is audited (`relay.modbus.refuse`: unit, function, address,
//!   quantity, why, the exception sent), and every forwarded write once the device answered
//!   (`relay.modbus.write`: the values and the answer). Both are bounded per session by a
//!   token bucket ([`crate::budget`]); what it holds back is counted, and the next event let
//!   through says how many (`suppressed_before`).
//! - Reads are counted, not audited one by one.
//! - Each Modbus connection ends with one `relay.modbus.stream_end` event carrying its totals
//!   (reads, writes, refused, and how many of those were not audited one by one) and how it
//!   ended, `protocol_violation` included: the counts are never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::Clock;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::modbus::{Judgement, Request};
use portcullis_net::modbus_filter::{ModbusObserver, PendingWrite, WriteAnswer};
use portcullis_net::splice::SpliceEnd;
use tokio::sync::mpsc;

use crate::Shared;
use crate::activity::{Op, OpKind};
use crate::registry::LiveSession;

/// Audit events queued per stream before they are counted as not audited: the filter runs
/// inline in the splice and never waits for the database.
const QUEUE: usize = 256;

/// The observer the relay gives a stream's filter.
pub(crate) struct StreamRecord {
    session: Arc<LiveSession>,
    clock: Arc<dyn Clock>,
    port: u16,
    events: mpsc::Sender<AuditDraft>,
    reads: AtomicU64,
    writes: AtomicU64,
    refused: AtomicU64,
    /// Writes and refusals held back by the budget or a full queue.
    writes_unaudited: AtomicU64,
    refusals_unaudited: AtomicU64,
}

impl StreamRecord {
    /// The record, and the task that writes its events; await the task after the splice (and
    /// the filter) are done, then call [`finish`].
    pub fn start(
        shared: &Arc<Shared>,
        session: Arc<LiveSession>,
        port: u16,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (events, mut rx) = mpsc::channel::<AuditDraft>(QUEUE);
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(draft) = rx.recv().await {
                    shared.auditor.event(draft).await;
                }
            })
        };
        let record = Arc::new(Self {
            session,
            clock: shared.clock.clone(),
            port,
            events,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            writes_unaudited: AtomicU64::new(0),
            refusals_unaudited: AtomicU64::new(0),
        });
        (record, writer)
    }

    fn draft(&self, action: &str, details: serde_json::Value) -> AuditDraft {
        let s = &self.session;
        AuditDraft::new(s.grant.vendor.clone(), ActorRole::Vendor, action)
            .target(format!("device:{}", s.grant.device))
            .grant(s.grant.id)
            .details(details)
    }

    /// Queues `details` as `action` if the budget allows; counts it in `unaudited` otherwise.
    fn audit(
        &self,
        action: &str,
        budget: Option<u64>,
        mut details: serde_json::Value,
        unaudited: &AtomicU64,
    ) {
        let Some(suppressed_before) = budget else {
            unaudited.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if suppressed_before > 0 {
            details["suppressed_before"] = suppressed_before.into();
        }
        if self.events.try_send(self.draft(action, details)).is_err() {
            unaudited.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn request_details(&self, r: &Request) -> serde_json::Value {
        serde_json::json!({
            "session": self.session.id,
            "port": self.port,
            "unit": r.unit,
            "function": r.function,
            "address": r.address,
            "quantity": r.quantity,
        })
    }
}

impl ModbusObserver for StreamRecord {
    fn request(&self, r: &Request, judgement: Judgement, _values: &[u16]) {
        let kind = match judgement {
            Judgement::Read => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                OpKind::Read
            }
            Judgement::Write => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                OpKind::Write
            }
            Judgement::Refused(why) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let mut details = self.request_details(r);
                details["reason"] = why.as_str().into();
                details["exception"] = why.exception_code().into();
                let budget = self.session.modbus.refusal_budget.take();
                self.audit(
                    "relay.modbus.refuse",
                    budget,
                    details,
                    &self.refusals_unaudited,
                );
                OpKind::Refused
            }
        };
        self.session.modbus.record(Op {
            at: self.clock.now(),
            kind,
            unit: r.unit,
            function: r.function,
            address: r.address,
            quantity: r.quantity,
        });
    }

    fn write_answered(&self, w: &PendingWrite, answer: WriteAnswer) {
        let mut details = self.request_details(&w.request);
        details["values"] = w.values.clone().into();
        match answer {
            WriteAnswer::Done => details["response"] = "ok".into(),
            WriteAnswer::Exception(code) => {
                details["response"] = "exception".into();
                details["exception"] = code.into();
            }
            WriteAnswer::None => details["response"] = "none".into(),
        }
        let budget = self.session.modbus.write_budget.take();
        self.audit(
            "relay.modbus.write",
            budget,
            details,
            &self.writes_unaudited,
        );
    }
}

/// Waits for the stream's queued events to be written, then writes its end event.
pub(crate) async fn finish(
    shared: &Shared,
    record: Arc<StreamRecord>,
    writer: tokio::task::JoinHandle<()>,
    end: &SpliceEnd,
) {
    let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut details = serde_json::json!({
        "session": record.session.id,
        "port": record.port,
        "reads": count(&record.reads),
        "writes": count(&record.writes),
        "refused": count(&record.refused),
        "writes_unaudited": count(&record.writes_unaudited),
        "refusals_unaudited": count(&record.refusals_unaudited),
        "end": end_name(end),
    });
    if let SpliceEnd::Dropped { reason, .. } = end {
        details["detail"] = reason.clone().into();
    }
    let draft = record.draft("relay.modbus.stream_end", details);
    // The filter's inspectors (and their handles on the record) are gone with the splice;
    // this is the last sender, so the writer ends once it has written what was queued.
    drop(record);
    let _ = writer.await;
    shared.auditor.event(draft).await;
}

/// `closed`, `reset`, `idle_timeout`, `protocol_violation`, ...: how the connection ended.
fn end_name(end: &SpliceEnd) -> &'static str {
    match end {
        SpliceEnd::Dropped { reason, .. }
            if reason.starts_with(portcullis_net::modbus_filter::PROTOCOL_VIOLATION) =>
        {
            "protocol_violation"
        }
        other => other.as_str(),
    }
}
