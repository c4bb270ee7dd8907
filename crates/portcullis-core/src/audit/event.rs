//! One audit event: what is hashed, and how.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::chain::{ChainHead, Digest, MacKey};
use crate::{GrantId, Role, Timestamp, ValidationError};

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
    pub grant_id: Option<GrantId>,
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
    pub fn grant(mut self, id: GrantId) -> Self {
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
    pub grant_id: Option<GrantId>,
    pub session_id: Option<String>,
    pub source: Option<String>,
    /// JSON text, hashed byte for byte as stored.
    pub details: String,
    pub prev_hash: Digest,
    pub hash: Digest,
    pub mac: Digest,
}

/// An event's fields borrowed from where they already are (a row just read), so that checking a
/// long log does not copy every string of every row. Hashes exactly as the owned event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    pub seq: i64,
    pub ts: Timestamp,
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub grant_id: Option<i64>,
    pub session_id: Option<&'a str>,
    pub source: Option<&'a str>,
    pub details: &'a str,
    pub prev_hash: Digest,
    pub hash: Digest,
    pub mac: Digest,
}

const DOMAIN: &[u8] = b"portcullis.audit.v1\0";

/// Where the canonical encoding goes: a buffer (to show or compare it) or straight into the hash
/// (verifying a million events then allocates nothing per event). Both see the same bytes.
trait Sink {
    fn put(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl Sink for sha2::Sha256 {
    fn put(&mut self, b: &[u8]) {
        sha2::Digest::update(self, b);
    }
}

fn put_bytes(out: &mut impl Sink, b: &[u8]) {
    // Invariant: fields are far below 4 GiB; length-prefixing makes the encoding unambiguous
    // (no two different rows share bytes, whatever the fields contain).
    out.put(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.put(b);
}

fn put_opt_bytes(out: &mut impl Sink, b: Option<&[u8]>) {
    match b {
        None => out.put(&[0]),
        Some(b) => {
            out.put(&[1]);
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
        self.view().canonical_bytes()
    }

    /// `SHA-256(prev_hash || canonical(self))`.
    pub fn compute_hash(&self) -> Digest {
        self.view().compute_hash()
    }

    pub fn view(&self) -> EventView<'_> {
        EventView {
            seq: self.seq,
            ts: self.ts,
            actor: &self.actor,
            role: &self.role,
            action: &self.action,
            target: &self.target,
            grant_id: self.grant_id.map(GrantId::get),
            session_id: self.session_id.as_deref(),
            source: self.source.as_deref(),
            details: &self.details,
            prev_hash: self.prev_hash,
            hash: self.hash,
            mac: self.mac,
        }
    }

    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
            ts: self.ts,
        }
    }
}

impl EventView<'_> {
    /// See [`AuditEvent::canonical_bytes`].
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.details.len());
        self.encode(&mut out);
        out
    }

    fn encode(&self, out: &mut impl Sink) {
        out.put(DOMAIN);
        out.put(&self.seq.to_be_bytes());
        out.put(&self.ts.unix_micros().to_be_bytes());
        put_bytes(out, self.actor.as_bytes());
        put_bytes(out, self.role.as_bytes());
        put_bytes(out, self.action.as_bytes());
        put_bytes(out, self.target.as_bytes());
        match self.grant_id {
            None => out.put(&[0]),
            Some(g) => {
                out.put(&[1]);
                out.put(&g.to_be_bytes());
            }
        }
        put_opt_bytes(out, self.session_id.map(str::as_bytes));
        put_opt_bytes(out, self.source.map(str::as_bytes));
        put_bytes(out, self.details.as_bytes());
    }

    /// `SHA-256(prev_hash || canonical(self))`, hashed as it is encoded (no buffer).
    pub fn compute_hash(&self) -> Digest {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(self.prev_hash.0);
        self.encode(&mut h);
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

#[cfg(test)]
mod known_answers {
    use super::*;

    /// Pins the canonical encoding, the hash and the MAC to values computed independently (by
    /// a few lines of Python following the encoding rule), so no optimisation of the hashing
    /// can silently change what a stored chain means.
    #[test]
    fn hashes_and_macs_match_values_computed_independently() {
        let key = MacKey::new([42; 32]);
        let now = Timestamp::from_unix_micros(1_700_000_000_123_456).unwrap();
        let d1 = AuditDraft::new("alice", ActorRole::Admin, "user.add")
            .target("user:bob")
            .grant(GrantId::new(7))
            .session("s-1")
            .details(serde_json::json!({ "a": 1 }));
        let e1 = AuditEvent::seal(&ChainHead::GENESIS, &d1, now, &key);
        assert_eq!(
            e1.hash.to_hex(),
            "a361a5a4158e422d358e225d0b4a2b288057c28f211d1ab7f250fb9412c19154"
        );
        assert_eq!(
            e1.mac.to_hex(),
            "fdacb77eb41b3e27dbf8291b171f2603de83fec181675d85f54d5413f3fb407d"
        );
        let d2 = AuditDraft::new("zoë", ActorRole::System, "window.end").source("203.0.113.9");
        let e2 = AuditEvent::seal(&e1.head(), &d2, now, &key);
        assert_eq!(
            e2.hash.to_hex(),
            "918fd7226a9e5659a42c0e77074e8bdd7125c8377cceb95eb4f7257d861c810c"
        );
        assert_eq!(
            e2.mac.to_hex(),
            "d1fdb924a2c0638cc49969fe074afbed273ffbfd0a7d988b65306d2abb28286b"
        );
        // Hashing while encoding sees exactly the bytes `canonical_bytes` shows.
        for e in [&e1, &e2] {
            use sha2::{Digest as _, Sha256};
            let mut h = Sha256::new();
            h.update(e.prev_hash.0);
            h.update(e.canonical_bytes());
            assert_eq!(e.compute_hash().0, <[u8; 32]>::from(h.finalize()));
        }
    }
}
