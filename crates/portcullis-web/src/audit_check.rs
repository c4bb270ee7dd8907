//! The auditor's verify (page and API): the hash chain and its MACs, checked against the signed
//! checkpoints the broker keeps, and the append-only guards.

use std::fmt;
use std::sync::Arc;

use portcullis_core::audit::{ChainBreak, Digest, VerifiedChain};
use portcullis_store::StoreError;

use crate::state::AppState;

/// What the signed checkpoints vouch for, (seq, hash) each, read and signature-checked by
/// whoever knows where they are kept (the binary: `<data-dir>/checkpoints`). An error names the
/// checkpoint that does not verify.
pub type LoadCheckpoints = dyn Fn() -> Result<Vec<(i64, Digest)>, String> + Send + Sync;

#[derive(Clone)]
pub struct CheckpointSource(pub Arc<LoadCheckpoints>);

impl fmt::Debug for CheckpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckpointSource")
    }
}

/// The result of one check.
pub(crate) enum AuditCheck {
    /// A checkpoint file is unreadable or its signature is bad: the evidence itself is suspect.
    BadCheckpoint(String),
    Chain {
        outcome: Result<VerifiedChain, ChainBreak>,
        guards: bool,
        /// The newest checkpoint checked against, if any.
        newest_checkpoint: Option<i64>,
    },
}

pub(crate) async fn run(state: &AppState) -> Result<AuditCheck, StoreError> {
    let vouched = match &state.0.keys.checkpoints {
        Some(source) => {
            let load = source.0.clone();
            match tokio::task::spawn_blocking(move || load()).await {
                Ok(Ok(v)) => v,
                Ok(Err(why)) => return Ok(AuditCheck::BadCheckpoint(why)),
                Err(e) => return Ok(AuditCheck::BadCheckpoint(e.to_string())),
            }
        }
        None => Vec::new(),
    };
    let newest_checkpoint = vouched.iter().map(|(seq, _)| *seq).max();
    let outcome = state
        .0
        .store
        .verify_chain(Some(state.0.keys.audit_mac.clone()), vouched)
        .await?;
    let guards = state.0.store.check_guards().await.is_ok();
    Ok(AuditCheck::Chain {
        outcome,
        guards,
        newest_checkpoint,
    })
}
