//! Audit events, their canonical byte encoding and the tamper-evident chain.
//!
//! Each stored event carries `prev_hash` and `hash = SHA-256(prev_hash || canonical(event))`, so
//! anyone holding the rows can check their order and content. Two more layers catch an attacker
//! who can rewrite the database and recompute SHA-256: a per-event `mac = HMAC-SHA256(key, hash)`
//! with a key kept outside the database, and Ed25519-signed checkpoints of the chain head, which
//! also reveal a truncated tail. See docs/decisions/0002-audit-chain-encoding.md.

mod chain;
mod checkpoint;
mod event;
mod export;

pub use chain::{BreakReason, ChainBreak, ChainHead, ChainVerifier, Digest, MacKey, VerifiedChain};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use event::{ActorRole, AuditDraft, AuditEvent, EventView};
pub use export::{ExportRecord, csv_cell};

#[cfg(test)]
mod tests;
