//! Signed checkpoints of the chain head.
//!
//! A checkpoint is the head `(seq, hash, ts)` signed with the broker's Ed25519 key and kept
//! outside the database (a file, a ticket, an e-mail to the auditor). Verifying the chain against
//! it detects a rewrite of everything up to `seq` and a tail cut off after it.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::chain::{ChainHead, Digest};
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    pub seq: i64,
    /// Hex SHA-256 of event `seq`.
    pub hash: String,
    /// Timestamp of event `seq`.
    pub ts: Timestamp,
    pub signed_at: Timestamp,
    /// Hex Ed25519 public key that made the signature (for the reader; trust comes from the
    /// key the verifier already holds, never from this field).
    pub public_key: String,
    /// Hex Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint signature does not verify with the broker's checkpoint key")]
    BadSignature,
}

impl Checkpoint {
    const VERSION: u32 = 1;

    fn message(seq: i64, hash: &Digest, ts: Timestamp, signed_at: Timestamp) -> Vec<u8> {
        let mut m = b"portcullis.checkpoint.v1\0".to_vec();
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&hash.0);
        m.extend_from_slice(&ts.unix_micros().to_be_bytes());
        m.extend_from_slice(&signed_at.unix_micros().to_be_bytes());
        m
    }

    pub fn sign(head: &ChainHead, signed_at: Timestamp, key: &SigningKey) -> Checkpoint {
        let sig = key.sign(&Self::message(head.seq, &head.hash, head.ts, signed_at));
        Checkpoint {
            version: Self::VERSION,
            seq: head.seq,
            hash: head.hash.to_hex(),
            ts: head.ts,
            signed_at,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// Checks the signature against `key` and returns the (seq, hash) it vouches for.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(i64, Digest), CheckpointError> {
        if self.version != Self::VERSION {
            return Err(CheckpointError::Malformed(format!(
                "unknown version {}",
                self.version
            )));
        }
        let hash =
            Digest::from_hex(&self.hash).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig)
            .map_err(|_| CheckpointError::Malformed("signature is not 128 hex digits".into()))?;
        key.verify(
            &Self::message(self.seq, &hash, self.ts, self.signed_at),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| CheckpointError::BadSignature)?;
        Ok((self.seq, hash))
    }
}
