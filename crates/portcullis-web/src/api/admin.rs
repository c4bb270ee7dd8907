//! Admin endpoints: organisations, users, devices and policies. Admins never approve or audit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_api_types::admin::{
    EnrollmentReset, NewUser as NewUserView, Org, OrgList, User, UserAction, UserList,
};
use portcullis_api_types::schema::{Name, Ports, UserActionName};
use portcullis_api_types::{CriticalityName, ProtocolName, RoleName, WritesName};
use portcullis_core::access::parse_protocols;
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    Role, Username, ValidationError, WritePolicy, WriteScope,
};
use portcullis_store::{EnrollmentCode, NewUser, UserRecord};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, Authed};
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
    let (rec, code) = state
        .0
        .store
        .add_user(&authed.actor(), &b.new_user()?)
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
