//! Admin endpoints: organisations, users, devices and policies. Admins never approve or audit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_api_types::admin::{
    ContactBody, Delivery, EnrollmentReset, NewUser as NewUserView, Org, OrgList, OutboxCounts,
    OutboxList, User, UserAction, UserList,
};
use portcullis_api_types::schema::{Name, Ports, UserActionName};
use portcullis_api_types::{CriticalityName, ProtocolName, RoleName, WritesName};
use portcullis_core::access::parse_protocols;
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, Email, NetworkAddress, OrgName,
    Port, Role, TimeZoneName, Username, ValidationError, WritePolicy, WriteScope,
};
use portcullis_store::{
    ContactChange, DeliveryFilter, DeliveryRecord, EnrollmentCode, NewUser, UserRecord,
};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authed};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgBody {
    #[schema(value_type = Name)]
    pub(crate) name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    #[schema(value_type = Name)]
    pub(crate) username: String,
    #[schema(value_type = RoleName)]
    pub(crate) role: String,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub(crate) org: Option<String>,
    /// Where notifications go.
    #[serde(default)]
    #[schema(max_length = 254)]
    pub(crate) email: Option<String>,
    /// The IANA zone of this person's pages and e-mails (default: the plant's).
    #[serde(default)]
    pub(crate) time_zone: Option<String>,
}

// The bounds of `DevicePolicy::new` and `DeviceProfile::validate` (`portcullis-core`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    #[schema(value_type = Name)]
    pub(crate) name: String,
    pub(crate) address: String,
    #[schema(value_type = Ports)]
    pub(crate) ports: Vec<u32>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) device_type: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) site: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) owner: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) vendor: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) purpose: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) data_handled: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) access_method: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) firmware: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub(crate) support_contact: String,
    #[serde(default)]
    #[schema(value_type = Option<CriticalityName>)]
    pub(crate) criticality: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2, nullable = false)]
    pub(crate) approvals_required: Option<u8>,
    /// at most a week
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800, nullable = false)]
    pub(crate) max_window_secs: Option<u64>,
    #[serde(default)]
    #[schema(value_type = Vec<Name>)]
    pub(crate) orgs: Vec<String>,
    /// Ports decoded as Modbus/TCP: `{"502": "modbus"}`. Other ports are raw TCP.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, ProtocolName>)]
    pub(crate) protocols: BTreeMap<String, String>,
    /// `allowed` (the default) or `never`: whether `write` access may be granted.
    #[serde(default)]
    #[schema(value_type = Option<WritesName>)]
    pub(crate) writes: Option<String>,
    /// Unit ids granted writes may go to; empty: any.
    #[serde(default)]
    pub(crate) write_units: Vec<u8>,
    /// Holding registers granted writes may go to (`"100-199"`, `"300"`); empty: any.
    #[serde(default)]
    pub(crate) write_registers: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    #[schema(value_type = Ports)]
    pub(crate) ports: Vec<u32>,
    #[schema(minimum = 1, maximum = 2)]
    pub(crate) approvals_required: u8,
    /// at most a week
    #[schema(minimum = 1, maximum = 604_800)]
    pub(crate) max_window_secs: u64,
    #[schema(value_type = Vec<Name>)]
    pub(crate) orgs: Vec<String>,
    /// Ports decoded as Modbus/TCP: `{"502": "modbus"}`. Other ports are raw TCP.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, ProtocolName>)]
    pub(crate) protocols: BTreeMap<String, String>,
    /// `allowed` (the default) or `never`: whether `write` access may be granted.
    #[serde(default)]
    #[schema(value_type = Option<WritesName>)]
    pub(crate) writes: Option<String>,
    /// Unit ids granted writes may go to; empty: any.
    #[serde(default)]
    pub(crate) write_units: Vec<u8>,
    /// Holding registers granted writes may go to (`"100-199"`, `"300"`); empty: any.
    #[serde(default)]
    pub(crate) write_registers: Vec<String>,
}

fn port_set(list: &[u32]) -> Result<BTreeSet<Port>, ValidationError> {
    list.iter()
        .map(|p| Port::new(*p).map_err(|e| ValidationError::new("ports", e.message)))
        .collect()
}

fn org_set(list: &[String]) -> Result<BTreeSet<OrgName>, ValidationError> {
    list.iter().map(|o| OrgName::parse(o)).collect()
}

fn policy(
    ports: &[u32],
    approvals: u8,
    max_window_secs: u64,
    orgs: &[String],
) -> Result<DevicePolicy, ValidationError> {
    DevicePolicy::new(
        port_set(ports)?,
        Duration::from_secs(max_window_secs),
        approvals,
        org_set(orgs)?,
    )
}

/// `policy` with the bodies' Modbus fields: the same spellings as the CLI's `--protocol`,
/// `--writes`, `--write-units` and `--write-registers`.
fn with_modbus(
    policy: DevicePolicy,
    protocols: &BTreeMap<String, String>,
    writes: Option<&str>,
    units: &[u8],
    registers: &[String],
) -> Result<DevicePolicy, ValidationError> {
    let text: Vec<String> = protocols.iter().map(|(p, v)| format!("{p}={v}")).collect();
    let writes = writes
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::parse::<WritePolicy>)
        .transpose()?
        .unwrap_or_default();
    policy.with_protocols(
        parse_protocols(&text.join(","))?,
        writes,
        WriteScope {
            units: units.iter().copied().collect(),
            registers: WriteScope::parse_registers(&registers.join(","))?,
        },
    )
}

// What the bodies mean, for the API and the admin pages alike (the pages read their forms into
// these bodies). Errors name core's field, which the pages place at their input.

impl UserBody {
    pub(crate) fn new_user(&self) -> Result<NewUser, ValidationError> {
        Ok(NewUser {
            username: Username::parse(&self.username)?,
            role: self.role.parse::<Role>()?,
            org: self.org.as_deref().map(OrgName::parse).transpose()?,
        })
    }
}

impl DeviceBody {
    pub(crate) fn device(self) -> Result<Device, ValidationError> {
        Ok(Device {
            name: DeviceName::parse(&self.name)?,
            address: NetworkAddress::parse(&self.address)?,
            criticality: self
                .criticality
                .as_deref()
                .unwrap_or("medium")
                .parse::<Criticality>()?,
            profile: DeviceProfile {
                device_type: self.device_type,
                site: self.site,
                owner: self.owner,
                vendor: self.vendor,
                purpose: self.purpose,
                data_handled: self.data_handled,
                access_method: self.access_method,
                firmware: self.firmware,
                support_contact: self.support_contact,
            },
            policy: with_modbus(
                policy(
                    &self.ports,
                    self.approvals_required.unwrap_or(1),
                    self.max_window_secs.unwrap_or(8 * 3600),
                    &self.orgs,
                )?,
                &self.protocols,
                self.writes.as_deref(),
                &self.write_units,
                &self.write_registers,
            )?,
        })
    }
}

impl PolicyBody {
    pub(crate) fn policy(&self) -> Result<DevicePolicy, ValidationError> {
        with_modbus(
            policy(
                &self.ports,
                self.approvals_required,
                self.max_window_secs,
                &self.orgs,
            )?,
            &self.protocols,
            self.writes.as_deref(),
            &self.write_units,
            &self.write_registers,
        )
    }
}

/// A user as the API shows it; `status` only where lists show it.
fn user_view(u: UserRecord, status: Option<&str>) -> User {
    // Destructured without `..`: a new column is not shown until someone decides it may be.
    let UserRecord {
        id,
        username,
        role,
        org,
        enrolled,
        failed_logins,
        locked_until,
        disabled_at,
        created_at,
        email,
        time_zone,
        notify_sessions,
        notify_alerts,
    } = u;
    User {
        id,
        username,
        role: role.into(),
        org,
        enrolled,
        failed_logins,
        locked_until,
        disabled_at,
        created_at,
        email: email.map(String::from),
        time_zone: time_zone.map(String::from),
        notify_sessions,
        notify_alerts: notify_alerts || role == Role::Admin,
        status: status.map(str::to_owned),
    }
}

fn reset_view(username: Username, code: EnrollmentCode) -> EnrollmentReset {
    EnrollmentReset {
        username,
        enrollment_code: code.code.clone(),
        expires_at: code.expires_at,
    }
}

#[utoipa::path(get, path = "/api/v1/admin/orgs", summary = "Vendor organisations",
    responses((status = 200, description = "orgs", body = OrgList)),
    security(("bearer" = [])))]
pub async fn orgs(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<OrgList>> {
    authed.require(&[Role::Admin])?;
    let orgs = state.0.store.list_orgs().await?;
    Ok(Json(OrgList {
        orgs: orgs
            .into_iter()
            .map(|(name, created_at)| Org { name, created_at })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/admin/orgs", summary = "Add an organisation",
    request_body = OrgBody,
    responses((status = 201, description = "created")),
    security(("bearer" = [])))]
pub async fn add_org(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(b): ApiJson<OrgBody>,
) -> ApiResult<StatusCode> {
    authed.require(&[Role::Admin])?;
    state
        .0
        .store
        .add_org(&authed.actor(), &OrgName::parse(&b.name)?)
        .await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(get, path = "/api/v1/admin/users", summary = "Users",
    responses((status = 200, description = "users", body = UserList)),
    security(("bearer" = [])))]
pub async fn users(State(state): State<AppState>, authed: Authed) -> ApiResult<Json<UserList>> {
    authed.require(&[Role::Admin])?;
    let now = state.0.clock.now();
    let users = state.0.store.list_users().await?;
    Ok(Json(UserList {
        users: users
            .into_iter()
            .map(|u| {
                let status = u.status(now);
                user_view(u, Some(status))
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/admin/users",
    summary = "Add a user (returns the one-time enrollment code)",
    request_body = UserBody,
    responses((status = 201, description = "The user and the enrollment code", body = NewUserView)),
    security(("bearer" = [])))]
pub async fn add_user(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(b): ApiJson<UserBody>,
) -> ApiResult<(StatusCode, Json<NewUserView>)> {
    authed.require(&[Role::Admin])?;
    let contact = contact_change(&ContactBody {
        email: b.email.clone(),
        time_zone: b.time_zone.clone(),
        ..Default::default()
    })?;
    let (rec, code) = state
        .0
        .store
        .add_user_with_contact(&authed.actor(), &b.new_user()?, &contact)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewUserView {
            username: rec.username,
            role: rec.role.into(),
            org: rec.org,
            enrollment_code: code.code.clone(),
            expires_at: code.expires_at,
        }),
    ))
}

/// A contact body as a store change: an empty `email` or `time_zone` removes it.
pub(crate) fn contact_change(b: &ContactBody) -> Result<ContactChange, ValidationError> {
    let clearable = |v: &Option<String>| {
        v.as_ref()
            .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
    };
    Ok(ContactChange {
        email: clearable(&b.email)
            .map(|e| e.as_deref().map(Email::parse).transpose())
            .transpose()?,
        time_zone: clearable(&b.time_zone)
            .map(|t| t.as_deref().map(TimeZoneName::parse).transpose())
            .transpose()?,
        notify_sessions: b.notify_sessions,
        notify_alerts: b.notify_alerts,
    })
}

#[utoipa::path(patch, path = "/api/v1/admin/users/{name}",
    summary = "Change a user's e-mail address, time zone or notification settings",
    params(("name" = Name, Path)),
    request_body = ContactBody,
    responses((status = 200, description = "the user as changed", body = User)),
    security(("bearer" = [])))]
pub async fn set_user(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<ContactBody>,
) -> ApiResult<Json<User>> {
    authed.require(&[Role::Admin])?;
    let name = Username::parse(&name)?;
    let change = contact_change(&b)?;
    let u = state
        .0
        .store
        .set_contact(&authed.actor(), &name, &change)
        .await?;
    Ok(Json(user_view(u, None)))
}

#[utoipa::path(get, path = "/api/v1/me",
    summary = "The signed-in account, with its contact details and notification settings",
    responses((status = 200, description = "you", body = User)),
    security(("bearer" = [])))]
pub async fn me(authed: Authed) -> ApiResult<Json<User>> {
    Ok(Json(user_view(authed.user, None)))
}

#[utoipa::path(patch, path = "/api/v1/me",
    summary = "Change your own e-mail address, time zone or notification settings (after a step-up)",
    request_body = ContactBody,
    responses((status = 200, description = "you, as changed", body = User)),
    security(("bearer" = [])))]
pub async fn set_me(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(b): ApiJson<ContactBody>,
) -> ApiResult<Json<User>> {
    // Where a person's notices go is where an attacker holding a stolen session would redirect
    // them: the same fresh step-up as an approval.
    if !authed.mfa_fresh(state.0.clock.now(), state.0.config.step_up_max_age) {
        return Err(ApiError::StepUpRequired);
    }
    let change = contact_change(&b)?;
    let u = state
        .0
        .store
        .set_contact(&authed.actor(), &authed.user.username, &change)
        .await?;
    Ok(Json(user_view(u, None)))
}

#[utoipa::path(post, path = "/api/v1/admin/users/{name}/{action}",
    summary = "disable, unlock, reset (password, TOTP, sessions and relay tokens; returns a new enrollment code) or reset-enrollment",
    params(
        ("name" = Name, Path),
        ("action" = UserActionName, Path),
    ),
    responses((status = 200, description = "The user, or the new enrollment code", body = UserAction)),
    security(("bearer" = [])))]
pub async fn user_action(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath((name, action)): ApiPath<(String, String)>,
) -> ApiResult<Json<UserAction>> {
    authed.require(&[Role::Admin])?;
    let name = Username::parse(&name)?;
    let store = &state.0.store;
    let by = authed.actor();
    let out = match action.as_str() {
        "disable" => UserAction::User(user_view(store.disable_user(&by, &name).await?, None)),
        "unlock" => UserAction::User(user_view(store.unlock_user(&by, &name).await?, None)),
        "reset" => {
            let code = store.reset_user(&by, &name).await?;
            UserAction::Reset(reset_view(name, code))
        }
        "reset-enrollment" => {
            let code = store.reset_enrollment(&by, &name).await?;
            UserAction::Reset(reset_view(name, code))
        }
        // The document lists these as `UserActionName`.
        other => return Err(ApiError::NotFound(format!("no user action '{other}'"))),
    };
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/v1/admin/devices", summary = "Add a device",
    request_body = DeviceBody,
    responses((status = 201, description = "created")),
    security(("bearer" = [])))]
pub async fn add_device(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(b): ApiJson<DeviceBody>,
) -> ApiResult<StatusCode> {
    authed.require(&[Role::Admin])?;
    let device = b.device()?;
    state.0.store.add_device(&authed.actor(), &device).await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(post, path = "/api/v1/admin/devices/{name}/policy",
    summary = "Replace a device's policy",
    params(("name" = Name, Path)),
    request_body = PolicyBody,
    responses((status = 204, description = "done")),
    security(("bearer" = [])))]
pub async fn set_policy(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<PolicyBody>,
) -> ApiResult<StatusCode> {
    authed.require(&[Role::Admin])?;
    let p = b.policy()?;
    state
        .0
        .store
        .set_device_policy(&authed.actor(), &DeviceName::parse(&name)?, &p)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    /// `pending`, `failed` or `delivered` (default: all).
    #[serde(default)]
    pub state: Option<String>,
    /// At most this many, newest first (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

pub(crate) fn delivery_filter(state: Option<&str>) -> ApiResult<DeliveryFilter> {
    Ok(match state.unwrap_or("") {
        "" | "all" => DeliveryFilter::All,
        "pending" => DeliveryFilter::Pending,
        "failed" => DeliveryFilter::Failed,
        "delivered" => DeliveryFilter::Delivered,
        other => {
            return Err(ApiError::Invalid(format!(
                "state '{other}': expected pending, failed or delivered"
            )));
        }
    })
}

pub(crate) fn delivery_view(d: DeliveryRecord) -> Delivery {
    Delivery {
        id: d.id,
        action: d.action,
        event_seq: d.event_seq,
        channel: d.channel.as_str().to_owned(),
        recipient: d.recipient,
        recipient_user: d.recipient_user,
        subject: d.subject,
        state: d.state,
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at,
        last_error: d.last_error,
        created_at: d.created_at,
        delivered_at: d.delivered_at,
    }
}

#[utoipa::path(get, path = "/api/v1/admin/outbox",
    summary = "Notification deliveries (pending, failed, delivered) and their counts",
    params(OutboxQuery),
    responses((status = 200, description = "deliveries, newest first", body = OutboxList)),
    security(("bearer" = [])))]
pub async fn outbox(
    State(state): State<AppState>,
    authed: Authed,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> ApiResult<Json<OutboxList>> {
    authed.require(&[Role::Admin])?;
    let filter = delivery_filter(q.state.as_deref())?;
    let store = &state.0.store;
    let s = store.outbox_stats().await?;
    let list = store
        .deliveries(filter, i64::from(q.limit.unwrap_or(100).clamp(1, 1000)))
        .await?;
    Ok(Json(OutboxList {
        counts: OutboxCounts {
            unrouted: s.unrouted,
            pending: s.pending,
            retrying: s.retrying,
            delivered: s.delivered,
            failed: s.failed,
        },
        deliveries: list.into_iter().map(delivery_view).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/admin/outbox/{id}/retry",
    summary = "Try a failed or waiting delivery again now",
    params(("id" = i64, Path)),
    responses((status = 204, description = "queued for the next pass")),
    security(("bearer" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    authed.require(&[Role::Admin])?;
    state.0.store.retry_delivery(&authed.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
