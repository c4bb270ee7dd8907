//! What a session's Modbus connections did, for the live view (`GET /api/v1/sessions?live=true`):
//! counts of reads, writes and refused requests, and the last few operations. Reads are not
//! audited one by one (a poll loop makes thousands); this is where a supervisor sees them.

use std::collections::VecDeque;
use std::sync::Mutex;

use portcullis_core::Timestamp;

/// How many operations the live view keeps per session.
pub(crate) const LAST_OPS: usize = 8;

// Constructed by the Modbus filter (issue 14, point 2), which is not on this branch yet; the live
// view already reports what it records.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read,
    Write,
    Refused,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Refused => "refused",
        }
    }
}

/// One decoded Modbus request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Op {
    pub at: Timestamp,
    pub kind: OpKind,
    pub unit: u8,
    pub function: u8,
    pub address: Option<u16>,
    pub quantity: Option<u16>,
}

#[derive(Debug, Default)]
pub(crate) struct ModbusActivity {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    reads: u64,
    writes: u64,
    refused: u64,
    last: VecDeque<Op>,
}

impl ModbusActivity {
    #[allow(dead_code)] // called by the Modbus filter (see `OpKind`)
    pub fn record(&self, op: Op) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match op.kind {
            OpKind::Read => g.reads += 1,
            OpKind::Write => g.writes += 1,
            OpKind::Refused => g.refused += 1,
        }
        if g.last.len() == LAST_OPS {
            g.last.pop_front();
        }
        g.last.push_back(op);
    }

    /// `null` when the session made no Modbus request, else
    /// `{"reads", "writes", "refused", "last": [{"at", "kind", "unit", "function", "address",
    /// "quantity"}]}`, newest last.
    pub fn to_json(&self) -> serde_json::Value {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.reads + g.writes + g.refused == 0 {
            return serde_json::Value::Null;
        }
        let last: Vec<_> = g
            .last
            .iter()
            .map(|op| {
                serde_json::json!({
                    "at": op.at.to_string(),
                    "kind": op.kind.as_str(),
                    "unit": op.unit,
                    "function": op.function,
                    "address": op.address,
                    "quantity": op.quantity,
                })
            })
            .collect();
        serde_json::json!({
            "reads": g.reads, "writes": g.writes, "refused": g.refused, "last": last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, address: u16) -> Op {
        Op {
            at: Timestamp::from_unix_secs(1_800_000_000).unwrap(),
            kind,
            unit: 1,
            function: 3,
            address: Some(address),
            quantity: Some(10),
        }
    }

    #[test]
    fn counts_every_kind_and_keeps_only_the_last_operations() {
        let a = ModbusActivity::default();
        assert_eq!(a.to_json(), serde_json::Value::Null);
        for i in 0..10 {
            a.record(op(OpKind::Read, i));
        }
        a.record(op(OpKind::Write, 100));
        a.record(op(OpKind::Refused, 200));
        let j = a.to_json();
        assert_eq!(j["reads"], 10);
        assert_eq!(j["writes"], 1);
        assert_eq!(j["refused"], 1);
        let last = j["last"].as_array().unwrap();
        assert_eq!(last.len(), LAST_OPS);
        assert_eq!(last[LAST_OPS - 1]["kind"], "refused");
        assert_eq!(last[LAST_OPS - 2]["address"], 100);
        assert_eq!(last[0]["address"], 4, "the oldest ones are dropped");
    }
}
