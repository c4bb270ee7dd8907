//! Relay sessions (issue 14, point 5): who is connected now, from where, through which relay,
//! how much moved each way and what Modbus did; and a supervisor's end of one session.
//!
//! Reading: supervisors, admins and auditors see every session; vendors only their own. With
//! `live=true` only sessions not ended yet; without it the most recent sessions, live and ended
//! (an ended one keeps its final numbers), newest first. `limit` bounds either (default 100, at
//! most 500); `grant` narrows to one grant's.
//!
//! Ending: supervisors and admins (as for a revocation), after a TOTP step-up (as for an
//! approval), with a reason the vendor reads. The relay carrying the session ends it at once
//! with `ended_by_supervisor`; the grant stays approved, so the vendor may connect again (to
//! stop that, revoke the grant).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_api_types::sessions::{EndRequested, ModbusActivity, RelaySession, SessionList};
use portcullis_core::{GrantId, Role};
use portcullis_store::{MAX_SESSION_LIST, RelaySessionId, SessionFilter, SessionRecord};
use serde::Deserialize;

use crate::api::access::ReasonBody;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::state::AppState;

/// Sessions one list returns when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub(crate) live: bool,
    #[serde(default)]
    pub(crate) grant: Option<i64>,
    #[serde(default)]
    pub(crate) limit: Option<u32>,
}

impl ListQuery {
    /// What to read for `who`: vendors only ever their own sessions.
    pub(crate) fn filter(&self, who: &Authed) -> ApiResult<SessionFilter> {
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_SESSION_LIST).contains(&n) => n,
            Some(n) => {
                return Err(ApiError::Invalid(format!(
                    "limit: {n} is not between 1 and {MAX_SESSION_LIST}"
                )));
            }
        };
        Ok(SessionFilter {
            live_only: self.live,
            vendor: (who.user.role == Role::Vendor).then(|| who.user.username.clone()),
            grant: self.grant.map(GrantId::new),
            limit,
        })
    }
}

/// A stored session as the API shows it.
pub(crate) fn view(rec: &SessionRecord) -> RelaySession {
    // Destructured without `..`: a new column is a decision here.
    let SessionRecord {
        id,
        relay,
        grant,
        vendor,
        device,
        source,
        started_at,
        ended_at,
        end_reason,
        open_streams,
        bytes_up,
        bytes_down,
        refused_streams,
        modbus,
        last_reported_at,
        end_request,
    } = rec;
    RelaySession {
        id: id.to_string(),
        grant: *grant,
        vendor: vendor.clone(),
        device: device.clone(),
        started_at: *started_at,
        source: source.clone(),
        relay: relay.clone(),
        open_streams: *open_streams,
        bytes_up: *bytes_up,
        bytes_down: *bytes_down,
        modbus: modbus.as_ref().and_then(|m| modbus_view(id, m)),
        refused: *refused_streams,
        last_reported_at: *last_reported_at,
        ended_at: *ended_at,
        end_reason: end_reason.clone(),
        end_requested: end_request.as_ref().map(|r| EndRequested {
            by: r.by.clone(),
            reason: r.reason.clone(),
            at: r.at,
        }),
    }
}

/// The relay's Modbus JSON (`activity.rs`) in the API's type; a shape this build does not know
/// is logged and shown as none rather than failing the list.
fn modbus_view(id: &RelaySessionId, json: &serde_json::Value) -> Option<ModbusActivity> {
    match serde_json::from_value(json.clone()) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(session = %id, "unreadable Modbus activity: {e}");
            None
        }
    }
}

#[utoipa::path(get, path = "/api/v1/sessions",
    summary = "Relay sessions: live ones with live=true, else the most recent (vendors: their own)",
    params(
        ("live" = Option<bool>, Query, description = "only sessions not ended yet"),
        ("grant" = Option<i64>, Query, description = "only this grant's sessions"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500,
            description = "at most this many, newest first (default 100)"),
    ),
    responses((status = 200, description = "sessions, newest first", body = SessionList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    authed: Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<SessionList>> {
    authed.require(&[Role::Vendor, Role::Supervisor, Role::Auditor, Role::Admin])?;
    let filter = q.filter(&authed)?;
    let list = state.0.store.relay_sessions(&filter).await?;
    Ok(Json(SessionList {
        sessions: list.iter().map(view).collect(),
    }))
}

/// Whether `who` may end a session now: supervisors and admins, with a step-up as fresh as an
/// approval needs (or one made just now, `stepped_up`: the page's form carries the code).
pub(crate) fn may_end(state: &AppState, who: &Authed, stepped_up: bool) -> ApiResult<()> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    if !stepped_up && !who.mfa_fresh(state.0.clock.now(), state.0.config.step_up_max_age) {
        return Err(ApiError::StepUpRequired);
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/sessions/{id}/end",
    summary = "End one live session (after a step-up); the grant stays approved",
    params(("id" = String, Path, pattern = "^rs_[A-Za-z0-9_-]{16}$")),
    request_body = ReasonBody,
    responses((status = 202,
        description = "The end is recorded; the relay ends the session within moments",
        body = RelaySession)),
    security(("bearer" = [])))]
#[tracing::instrument(name = "session_end", skip_all, fields(session = %id, by = %authed.user.username))]
pub async fn end(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<(StatusCode, Json<RelaySession>)> {
    authed.require(&[Role::Supervisor, Role::Admin])?;
    let id: RelaySessionId = id.parse()?;
    may_end(&state, &authed, false)?;
    let rec = state
        .0
        .store
        .request_session_end(&authed.actor(), &id, &body.reason)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view(&rec))))
}
