//! The audit log (auditors).

use portcullis_core::GrantId;
use portcullis_core::audit::ExportRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::Time;

/// `GET /api/v1/audit`: one page of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_after: Option<i64>,
}

/// One event, as the JSON Lines export writes it (`portcullis_core::audit::ExportRecord`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    #[schema(value_type = Time)]
    pub ts: String,
    pub actor: String,
    /// The actor's role, or `anonymous`/`system`.
    pub role: String,
    pub action: String,
    pub target: String,
    #[schema(required = true, value_type = Option<i64>)]
    pub grant_id: Option<GrantId>,
    #[schema(required = true)]
    pub session_id: Option<String>,
    #[schema(required = true)]
    pub source: Option<String>,
    /// The details object, or the raw text if it is not JSON.
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<ExportRecord> for AuditEvent {
    fn from(r: ExportRecord) -> Self {
        // Destructured without `..`: the API shows what the export shows.
        let ExportRecord {
            seq,
            ts,
            actor,
            role,
            action,
            target,
            grant_id,
            session_id,
            source,
            details,
            prev_hash,
            hash,
        } = r;
        Self {
            seq,
            ts,
            actor,
            role,
            action,
            target,
            grant_id,
            session_id,
            source,
            details,
            prev_hash,
            hash,
        }
    }
}

/// `GET /api/v1/audit/verify`: the hash chain and the append-only guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainCheck {
    /// The chain verifies and the guards are in place.
    pub intact: bool,
    /// The first event that does not verify; null when the chain does.
    #[schema(required = true)]
    pub first_bad_seq: Option<i64>,
    pub message: String,
    /// The database's append-only guards are in place.
    pub guards: bool,
    /// How many events verified; only when the chain does (also `head_seq`, `head_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub head_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub head_hash: Option<String>,
    /// The newest signed checkpoint the chain was checked against; absent when there is none
    /// (then a cut tail cannot be seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub newest_checkpoint_seq: Option<i64>,
}
