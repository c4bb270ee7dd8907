//! The audit log for auditors: filter and page, export, verify. Auditors read; nothing here
//! changes the log except the record that an export happened.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use portcullis_api_types::audit::{AuditEvent, AuditPage, ChainCheck};
use portcullis_api_types::schema::{ExportFormat, Time};
use portcullis_core::Role;
use portcullis_core::audit::ExportRecord;
use portcullis_core::{Timestamp, ValidationError};
use portcullis_store::AuditQuery;
use serde::Deserialize;

use crate::audit_check::{self, AuditCheck};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Authed};
use crate::state::AppState;

const PAGE_MAX: i64 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    device: Option<String>,
    action: Option<String>,
    grant: Option<i64>,
    limit: Option<i64>,
    after: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    format: String,
    since: Option<String>,
    until: Option<String>,
}

/// A text filter: empty means none. Control characters cannot match anything in the log, and a
/// NUL byte is not even valid in a PostgreSQL query parameter, so they are refused (422), not
/// passed to the database (which would answer a 503).
pub(crate) fn filter(
    field: &'static str,
    t: Option<&str>,
) -> Result<Option<String>, ValidationError> {
    match t {
        Some(t) if t.chars().any(char::is_control) => Err(ValidationError::new(
            field,
            "must not contain control characters",
        )),
        Some(t) if !t.is_empty() => Ok(Some(t.to_owned())),
        _ => Ok(None),
    }
}

fn ts(field: &str, t: Option<&str>) -> ApiResult<Option<Timestamp>> {
    t.map(|t| {
        Timestamp::parse_rfc3339(t)
            .map_err(|e| ApiError::Invalid(format!("{field}: {}", e.message)))
    })
    .transpose()
}

impl AuditParams {
    pub fn query(&self) -> ApiResult<AuditQuery> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(ApiError::Invalid(format!(
                "limit: must be between 1 and {PAGE_MAX}"
            )));
        }
        Ok(AuditQuery {
            since: ts("since", self.since.as_deref())?,
            until: ts("until", self.until.as_deref())?,
            actor: filter("actor", self.actor.as_deref())?,
            action: filter("action", self.action.as_deref())?,
            device: filter("device", self.device.as_deref())?,
            grant_id: self.grant,
            after: self.after,
            limit: Some(limit),
        })
    }
}

#[utoipa::path(get, path = "/api/v1/audit", summary = "Audit events, filtered and paged",
    params(
        ("since" = Option<Time>, Query), ("until" = Option<Time>, Query),
        ("actor" = Option<String>, Query), ("device" = Option<String>, Query),
        ("action" = Option<String>, Query), ("grant" = Option<i64>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000),
        ("after" = Option<i64>, Query),
    ),
    responses((status = 200, description = "events", body = AuditPage)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    authed: Authed,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<AuditPage>> {
    authed.require(&[Role::Auditor])?;
    let q = p.query()?;
    let events = state.0.store.audit_events(&q).await?;
    let next = (events.len() as i64 == q.limit.unwrap_or(0))
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        events: events
            .iter()
            .map(|e| AuditEvent::from(ExportRecord::from(e)))
            .collect(),
        next_after: next,
    }))
}

#[utoipa::path(get, path = "/api/v1/audit/export", summary = "Export as CSV or JSON Lines",
    params(
        ("format" = ExportFormat, Query),
        ("since" = Option<Time>, Query), ("until" = Option<Time>, Query),
    ),
    responses((status = 200, description = "The events as a file",
        content((String = "text/csv"), (String = "application/x-ndjson")))),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    authed: Authed,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> ApiResult<Response> {
    authed.require(&[Role::Auditor])?;
    let csv = match p.format.as_str() {
        "csv" => true,
        "jsonl" => false,
        other => {
            return Err(ApiError::Invalid(format!(
                "format: '{other}' is not csv or jsonl"
            )));
        }
    };
    let (since, until) = (
        ts("since", p.since.as_deref())?,
        ts("until", p.until.as_deref())?,
    );
    let mut body = Vec::new();
    let mut after = 0;
    let mut count = 0usize;
    let mut w = csv.then(csv_writer);
    loop {
        let q = AuditQuery {
            since,
            until,
            after: Some(after),
            limit: Some(5000),
            ..Default::default()
        };
        let page = state.0.store.audit_events(&q).await?;
        for ev in &page {
            let rec = ExportRecord::from(ev);
            match &mut w {
                Some(w) => w
                    .write_record(rec.csv_row())
                    .map_err(|_| ApiError::Internal)?,
                None => {
                    body.extend_from_slice(rec.jsonl_line().as_bytes());
                    body.push(b'\n');
                }
            }
        }
        count += page.len();
        match page.last() {
            Some(last) if page.len() == 5000 => after = last.seq,
            _ => break,
        }
    }
    if let Some(w) = w {
        body = w.into_inner().map_err(|_| ApiError::Internal)?;
    }
    let draft = authed
        .actor()
        .draft("audit.export")
        .target("audit")
        .details(serde_json::json!({ "format": p.format, "since": since, "until": until, "events": count }));
    state.0.store.append(draft).await?;
    let (ctype, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "jsonl")
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"portcullis-audit.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Invariant: writing to a Vec cannot fail.
    let _ = w.write_record(ExportRecord::CSV_HEADER);
    w
}

#[utoipa::path(get, path = "/api/v1/audit/verify",
    summary = "Verify the hash chain and the append-only guards",
    responses((status = 200, description = "result", body = ChainCheck)),
    security(("bearer" = [])))]
pub async fn verify(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<ChainCheck>> {
    authed.require(&[Role::Auditor])?;
    let broken = |message: String, first_bad_seq, guards| ChainCheck {
        intact: false,
        first_bad_seq,
        message,
        guards,
        events: None,
        head_seq: None,
        head_hash: None,
        newest_checkpoint_seq: None,
    };
    Ok(Json(match audit_check::run(&state).await? {
        AuditCheck::BadCheckpoint(why) => broken(why, None, true),
        AuditCheck::Chain {
            outcome: Ok(v),
            guards,
            newest_checkpoint,
        } => ChainCheck {
            intact: guards,
            first_bad_seq: None,
            message: if guards {
                "audit log intact"
            } else {
                "append-only guard missing"
            }
            .to_owned(),
            guards,
            events: Some(v.events),
            head_seq: Some(v.head.seq),
            head_hash: Some(v.head.hash.to_hex()),
            newest_checkpoint_seq: newest_checkpoint,
        },
        AuditCheck::Chain {
            outcome: Err(b),
            guards,
            ..
        } => broken(b.to_string(), Some(b.seq), guards),
    }))
}
