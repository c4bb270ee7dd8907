//! One audit event: what is hashed, and how.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::chain::{ChainHead, Digest, MacKey};
use crate::{Role, Timestamp, ValidationError};

/// The role an event's actor held, or `system` for the broker itself (window ends, restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorRole {
    Vendor,
    Supervisor,
    Auditor,
    Admin,
    System,
    /// Someone not (yet) authenticated, e.g. a failed login for an unknown name.
    Anonymous,
}

impl ActorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::Vendor => "vendor",
            ActorRole::Supervisor => "supervisor",
            ActorRole::Auditor => "auditor",
            ActorRole::Admin => "admin",
            ActorRole::System => "system",
            ActorRole::Anonymous => "anonymous",
        }
    }
}

impl From<Role> for ActorRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Vendor => ActorRole::Vendor,
            Role::Supervisor => ActorRole::Supervisor,
            Role::Auditor => ActorRole::Auditor,
            Role::Admin => ActorRole::Admin,
        }
    }
}

impl fmt::Display for ActorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActorRole {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        [
            ActorRole::Vendor,
            ActorRole::Supervisor,
            ActorRole::Auditor,
            ActorRole::Admin,
            ActorRole::System,
            ActorRole::Anonymous,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| ValidationError::new("role", format!("'{s}' is not an actor role")))
    }
}

/// An event about to be appended: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub actor: String,
    pub role: ActorRole,
    /// Dotted verb such as `user.add`, `device.add`, `grant.revoke`, `login.fail`.
    pub action: String,
    /// What the action was about, e.g. `user:alice`, `device:plc-7`.
    pub target: String,
    pub grant_id: Option<i64>,
    pub session_id: Option<String>,
    /// Where the actor came from: an IP address, or `cli` for the local command line.
    pub source: Option<String>,
    pub details: serde_json::Value,
}

impl AuditDraft {
    pub fn new(actor: impl Into<String>, role: ActorRole, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            role,
            action: action.into(),
            target: String::new(),
            grant_id: None,
            session_id: None,
            source: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }
    pub fn grant(mut self, id: i64) -> Self {
        self.grant_id = Some(id);
        self
    }
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored event, exactly as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub seq: i64,
    pub ts: Timestamp,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub grant_id: Option<i64>,
    pub session_id: Option<String>,
    pub source: Option<String>,
    /// JSON text, hashed byte for byte as stored.
    pub details: String,
    pub prev_hash: Digest,
    pub hash: Digest,
    pub mac: Digest,
}

const DOMAIN: &[u8] = b"portcullis.audit.v1\0";

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Invariant: fields are far below 4 GiB; length-prefixing makes the encoding unambiguous
    // (no two different rows share bytes, whatever the fields contain).
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

impl AuditEvent {
    /// Places `draft` after `head`. The timestamp never goes backwards, even if the wall clock
    /// does: it is `max(now, head.ts)`.
    pub fn seal(head: &ChainHead, draft: &AuditDraft, now: Timestamp, key: &MacKey) -> AuditEvent {
        let mut ev = AuditEvent {
            seq: head.seq + 1,
            ts: now.max(head.ts),
            actor: draft.actor.clone(),
            role: draft.role.as_str().to_owned(),
            action: draft.action.clone(),
            target: draft.target.clone(),
            grant_id: draft.grant_id,
            session_id: draft.session_id.clone(),
            source: draft.source.clone(),
            details: draft.details.to_string(),
            prev_hash: head.hash,
            hash: Digest::ZERO,
            mac: Digest::ZERO,
        };
        ev.hash = ev.compute_hash();
        ev.mac = key.mac(&ev.hash);
        ev
    }

    /// The canonical encoding: a domain tag, then every field in a fixed order, integers as
    /// big-endian, strings length-prefixed, optional fields tagged.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.details.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ts.unix_micros().to_be_bytes());
        put_bytes(&mut out, self.actor.as_bytes());
        put_bytes(&mut out, self.role.as_bytes());
        put_bytes(&mut out, self.action.as_bytes());
        put_bytes(&mut out, self.target.as_bytes());
        match self.grant_id {
            None => out.push(0),
            Some(g) => {
                out.push(1);
                out.extend_from_slice(&g.to_be_bytes());
            }
        }
        put_opt_bytes(&mut out, self.session_id.as_deref().map(str::as_bytes));
        put_opt_bytes(&mut out, self.source.as_deref().map(str::as_bytes));
        put_bytes(&mut out, self.details.as_bytes());
        out
    }

    /// `SHA-256(prev_hash || canonical(self))`.
    pub fn compute_hash(&self) -> Digest {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(self.prev_hash.0);
        h.update(self.canonical_bytes());
        Digest(h.finalize().into())
    }

    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
            ts: self.ts,
        }
    }
}
