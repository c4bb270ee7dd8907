//! The relay's counters, rendered as Prometheus text (exposition format 0.0.4).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::wire::RefusalCode;

/// Counters and gauges. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) sessions_active: AtomicU64,
    pub(crate) sessions_total: AtomicU64,
    pub(crate) streams_active: AtomicU64,
    pub(crate) streams_total: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) audit_write_failures: AtomicU64,
    refusals: Mutex<Vec<(RefusalCode, u64)>>,
}

impl Metrics {
    pub(crate) fn refused(&self, code: RefusalCode) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match r.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => r.push((code, 1)),
        }
    }

    /// Refusals so far with this code.
    pub fn refusals(&self, code: RefusalCode) -> u64 {
        let r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().find(|(c, _)| *c == code).map_or(0, |(_, n)| *n)
    }

    pub fn sessions_active(&self) -> u64 {
        self.sessions_active.load(Ordering::Relaxed)
    }

    pub fn streams_active(&self) -> u64 {
        self.streams_active.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        one(
            "portcullis_relay_sessions_active",
            "gauge",
            "Vendor sessions open now.",
            get(&self.sessions_active),
        );
        one(
            "portcullis_relay_sessions_total",
            "counter",
            "Vendor sessions accepted since start.",
            get(&self.sessions_total),
        );
        one(
            "portcullis_relay_streams_active",
            "gauge",
            "Tunnelled TCP connections open now.",
            get(&self.streams_active),
        );
        one(
            "portcullis_relay_streams_total",
            "counter",
            "Tunnelled TCP connections opened since start.",
            get(&self.streams_total),
        );
        one(
            "portcullis_relay_bytes_up_total",
            "counter",
            "Bytes from vendors to devices.",
            get(&self.bytes_up),
        );
        one(
            "portcullis_relay_bytes_down_total",
            "counter",
            "Bytes from devices to vendors.",
            get(&self.bytes_down),
        );
        one(
            "portcullis_relay_audit_write_failures_total",
            "counter",
            "Audit events the relay could not write at the first attempt.",
            get(&self.audit_write_failures),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_relay_refusals_total Handshakes and streams refused, by reason.\n# TYPE portcullis_relay_refusals_total counter"
        );
        let r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        for code in RefusalCode::ALL {
            let n = r.iter().find(|(c, _)| c == code).map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "portcullis_relay_refusals_total{{reason=\"{}\"}} {n}",
                code.as_str()
            );
        }
        out
    }
}
