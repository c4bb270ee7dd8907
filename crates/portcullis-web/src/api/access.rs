//! Devices a vendor may request, requests, approvals, denials, revocations and relay tokens.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_api_types::access::{
    Created, DeviceEntry, DeviceList, InventoryDevice, OfferedDevice, RelayToken, Request,
    RequestList,
};
use portcullis_api_types::schema::{Name, Ports, Reason, Time};
use portcullis_api_types::{AccessName, State as StateName};
use portcullis_auth::token::parse_thumbprint;
use portcullis_core::liveness;
use portcullis_core::request::Narrowing;
use portcullis_core::{
    Access, DeviceName, GrantId, Port, RequestState, Role, Timestamp, ValidationError, Window,
};
use portcullis_store::{NewRequest, RequestFilter, RequestRecord};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed, OptionalJson};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schema(value_type = Name)]
    pub(crate) device: String,
    #[schema(value_type = Ports)]
    pub(crate) ports: Vec<u32>,
    #[schema(value_type = Time)]
    pub(crate) start: String,
    #[schema(value_type = Time)]
    pub(crate) end: String,
    #[schema(value_type = Reason)]
    pub(crate) reason: String,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub(crate) ticket: Option<String>,
    /// `read` (the default) or `write`: what the grant allows on the device's Modbus ports.
    #[serde(default)]
    #[schema(value_type = Option<AccessName>)]
    pub(crate) access: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    #[serde(default)]
    #[schema(value_type = Option<Ports>)]
    pub(crate) ports: Option<Vec<u32>>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub(crate) start: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub(crate) end: Option<String>,
    /// `read` narrows a request for `write`; `write` only keeps what was asked.
    #[serde(default)]
    #[schema(value_type = Option<AccessName>)]
    pub(crate) access: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(value_type = Reason)]
    pub(crate) reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// SHA-256 of the client certificate: 64 hex digits, colon-separated hex or base64url
    client_cert_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
}

fn ports(list: &[u32]) -> Result<BTreeSet<Port>, ValidationError> {
    if list.is_empty() {
        return Err(ValidationError::new("ports", "name at least one port"));
    }
    list.iter()
        .map(|p| Port::new(*p).map_err(|e| ValidationError::new("ports", e.message)))
        .collect()
}

/// An `access` field; absent or empty is `None`.
pub(crate) fn access(text: Option<&str>) -> Result<Option<Access>, ValidationError> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::parse)
        .transpose()
}

fn time(field: &'static str, text: &str) -> Result<Timestamp, ValidationError> {
    Timestamp::parse_rfc3339(text).map_err(|e| ValidationError::new(field, e.message))
}

// What the bodies mean, for the API and the pages alike (the pages read their forms into these
// bodies). Errors name core's field, which the pages place at their input.

impl CreateBody {
    pub(crate) fn new_request(self) -> Result<NewRequest, ValidationError> {
        let device = DeviceName::parse(&self.device)?;
        let window = Window::new(time("start", &self.start)?, time("end", &self.end)?)?;
        Ok(NewRequest {
            device,
            ports: ports(&self.ports)?,
            access: access(self.access.as_deref())?,
            window,
            reason: self.reason,
            ticket: self.ticket,
        })
    }
}

impl ApproveBody {
    /// What the approval narrows of a request whose window is `current`: a time left out keeps
    /// the requested one.
    pub(crate) fn narrowing(&self, current: &Window) -> Result<Narrowing, ValidationError> {
        let window = match (&self.start, &self.end) {
            (None, None) => None,
            (start, end) => Some(Window::new(
                start
                    .as_deref()
                    .map(|s| time("start", s))
                    .transpose()?
                    .unwrap_or(current.start),
                end.as_deref()
                    .map(|s| time("end", s))
                    .transpose()?
                    .unwrap_or(current.end),
            )?),
        };
        Ok(Narrowing {
            ports: self.ports.as_deref().map(ports).transpose()?,
            window,
            access: access(self.access.as_deref())?,
        })
    }
}

/// A request as the API shows it, with the time left for a live grant.
fn view(rec: &RequestRecord, now: Timestamp) -> Request {
    let RequestRecord {
        id,
        request: r,
        ended_at,
    } = rec;
    let seconds_left = match r.state {
        RequestState::Active => Some(r.window.remaining(now).as_secs()),
        _ => None,
    };
    Request::from_core(*id, r, *ended_at, seconds_left)
}

#[utoipa::path(get, path = "/api/v1/devices",
    summary = "Devices the caller may see (vendors: only what they may request, without addresses)",
    responses((status = 200, description = "devices", body = DeviceList)),
    security(("bearer" = [])))]
pub async fn devices(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<DeviceList>> {
    let all = state.0.store.list_devices().await?;
    let devices = match (authed.user.role, &authed.user.org) {
        (Role::Vendor, Some(org)) => all
            .iter()
            .filter(|d| d.policy.allowed_orgs.contains(org))
            // Vendors learn what they may ask for, not the plant's addressing.
            .map(|d| DeviceEntry::Offered(OfferedDevice::from_core(d)))
            .collect(),
        (Role::Vendor, None) => Vec::new(),
        _ => all
            .iter()
            .map(|d| DeviceEntry::Inventory(Box::new(InventoryDevice::from(d))))
            .collect(),
    };
    Ok(Json(DeviceList { devices }))
}

#[utoipa::path(post, path = "/api/v1/requests", summary = "Request access",
    request_body = CreateBody,
    responses((status = 201, description = "The new request", body = Created)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    authed.require(&[Role::Vendor])?;
    let new = body.new_request()?;
    let rec = state
        .0
        .store
        .create_request(&authed.actor(), &authed.user, &new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            id: rec.id,
            state: rec.request.state.into(),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/requests", summary = "Requests and grants (vendors: their own)",
    params(("state" = Option<StateName>, Query)),
    responses((status = 200, description = "requests", body = RequestList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    authed: Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<RequestList>> {
    authed.require(&[Role::Vendor, Role::Supervisor, Role::Auditor])?;
    let state_filter = q
        .state
        .as_deref()
        .map(str::parse::<RequestState>)
        .transpose()?;
    let filter = RequestFilter {
        requester: (authed.user.role == Role::Vendor).then(|| authed.user.username.clone()),
        state: state_filter,
    };
    let now = state.0.clock.now();
    let list = state.0.store.list_requests(&filter).await?;
    Ok(Json(RequestList {
        requests: list.iter().map(|r| view(r, now)).collect(),
    }))
}

/// The request, if the caller may see it; vendors see only their own (others are "not found").
async fn visible(state: &AppState, authed: &Authed, id: i64) -> ApiResult<RequestRecord> {
    let rec = state.0.store.request(id).await?;
    match rec {
        Some(r)
            if authed.user.role != Role::Vendor || r.request.requester == authed.user.username =>
        {
            Ok(r)
        }
        _ => Err(ApiError::NotFound(format!("request {id} does not exist"))),
    }
}

#[utoipa::path(get, path = "/api/v1/requests/{id}", summary = "One request",
    params(("id" = i64, Path)),
    responses((status = 200, description = "The request", body = Request)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Request>> {
    authed.require(&[Role::Vendor, Role::Supervisor, Role::Auditor])?;
    let rec = visible(&state, &authed, id).await?;
    Ok(Json(view(&rec, state.0.clock.now())))
}

#[utoipa::path(post, path = "/api/v1/requests/{id}/approve",
    summary = "Approve (after a step-up), optionally narrowing ports or window",
    params(("id" = i64, Path)),
    request_body = Option<ApproveBody>,
    responses((status = 200, description = "The request", body = Request)),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<i64>,
    OptionalJson(body): OptionalJson<ApproveBody>,
) -> ApiResult<Json<Request>> {
    authed.require(&[Role::Supervisor])?;
    let now = state.0.clock.now();
    if !authed.mfa_fresh(now, state.0.config.step_up_max_age) {
        return Err(ApiError::StepUpRequired);
    }
    let current = visible(&state, &authed, id).await?;
    let narrowing = body.narrowing(&current.request.window)?;
    let rec = state
        .0
        .store
        .approve_request(&authed.actor(), &authed.user, id, &narrowing)
        .await?;
    Ok(Json(view(&rec, now)))
}

#[utoipa::path(post, path = "/api/v1/requests/{id}/deny", summary = "Deny with a reason",
    params(("id" = i64, Path)),
    request_body = ReasonBody,
    responses((status = 200, description = "The request", body = Request)),
    security(("bearer" = [])))]
pub async fn deny(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Request>> {
    authed.require(&[Role::Supervisor])?;
    let rec = state
        .0
        .store
        .deny_request(&authed.actor(), &authed.user, id, &body.reason)
        .await?;
    Ok(Json(view(&rec, state.0.clock.now())))
}

#[utoipa::path(post, path = "/api/v1/grants/{id}/revoke", summary = "Revoke a grant",
    params(("id" = i64, Path)),
    request_body = ReasonBody,
    responses((status = 200, description = "The request", body = Request)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<Request>> {
    authed.require(&[Role::Supervisor, Role::Admin])?;
    let rec = state
        .0
        .store
        .revoke_grant(&authed.actor(), &authed.user, id, &body.reason)
        .await?;
    Ok(Json(view(&rec, state.0.clock.now())))
}

/// Mints a relay token: only the grant's vendor, only inside the window, only after a recent
/// MFA, bound to the client's certificate, and audited before it is handed out.
#[utoipa::path(post, path = "/api/v1/grants/{id}/token",
    summary = "Mint a relay token bound to a client certificate",
    params(("id" = i64, Path)),
    request_body = TokenBody,
    responses((status = 200, description = "The relay token", body = RelayToken)),
    security(("bearer" = [])))]
#[tracing::instrument(name = "relay_token", skip_all, fields(grant = id, user = %authed.user.username))]
pub async fn token(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Json<RelayToken>> {
    authed.require(&[Role::Vendor])?;
    let cfg = &state.0.config;
    let now = state.0.clock.now();
    let rec = visible(&state, &authed, id).await?;
    // While the wall clock disagrees with the monotonic clock, "inside the window" cannot be
    // trusted: no token (issue 12). Checked after `visible`, which persists an end it sees.
    if let Some(step) = state.0.store.clock_anomaly() {
        tracing::warn!(
            grant = id,
            step_ms = step.step_ms,
            "token refused: clock anomaly"
        );
        return Err(ApiError::ClockAnomaly);
    }
    // The relay's own decision (portcullis_core::liveness), on the same snapshot: no token for
    // a grant the relay would refuse (a narrowed policy, a disabled account), not only for one
    // outside its window.
    let verdict = match state.0.store.grant_snapshot(id).await? {
        Some(s) => liveness::decide(&s, now),
        None => Err(liveness::Dead::Inactive),
    };
    let allowed = match verdict {
        Ok(a) => a,
        Err(dead) => {
            return Err(ApiError::Conflict(match dead {
                liveness::Dead::UserDisabled | liveness::Dead::PolicyChanged => {
                    format!("grant {id}: {}; no token is issued", dead.refusal().1)
                }
                _ => format!(
                    "grant {id} is {}; tokens are issued only inside an approved window ({} to {})",
                    rec.request.state, rec.request.window.start, rec.request.window.end
                ),
            }));
        }
    };
    if !authed.mfa_fresh(now, cfg.token_mfa_max_age) {
        return Err(ApiError::StepUpRequired);
    }
    let thumb = parse_thumbprint(&body.client_cert_sha256)
        .map_err(|e| ApiError::Invalid(format!("client_cert_sha256: {e}")))?;
    let (token, claims) = state
        .0
        .keys
        .signer
        .mint(
            &authed.user.username,
            GrantId::new(id),
            &thumb,
            now,
            cfg.token_ttl,
            rec.request.window.end,
        )
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let draft = authed
        .actor()
        .draft("token.issue")
        .target(format!("device:{}", rec.request.device))
        .grant(claims.grant)
        .details(serde_json::json!({ "jti": claims.jti, "exp": claims.exp, "cnf": thumb }));
    state.0.store.append(draft).await?;
    let expires_at = claims.expires_at();
    Ok(Json(RelayToken {
        token,
        expires_at,
        relay: cfg.relay_addr.clone(),
        relay_ca: cfg.relay_ca_pem.clone(),
        modes: allowed
            .modes
            .iter()
            .map(|(port, mode)| (*port, mode.as_str().to_owned()))
            .collect(),
    }))
}
