//! Admin endpoints: organisations, users, devices and policies. Admins never approve or audit.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    Role, Username, ValidationError,
};
use portcullis_store::NewUser;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, Authed};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgBody {
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub(crate) username: String,
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) org: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) ports: Vec<u32>,
    #[serde(default)]
    pub(crate) device_type: String,
    #[serde(default)]
    pub(crate) site: String,
    #[serde(default)]
    pub(crate) owner: String,
    #[serde(default)]
    pub(crate) vendor: String,
    #[serde(default)]
    pub(crate) purpose: String,
    #[serde(default)]
    pub(crate) data_handled: String,
    #[serde(default)]
    pub(crate) access_method: String,
    #[serde(default)]
    pub(crate) firmware: String,
    #[serde(default)]
    pub(crate) support_contact: String,
    #[serde(default)]
    pub(crate) criticality: Option<String>,
    #[serde(default)]
    pub(crate) approvals_required: Option<u8>,
    #[serde(default)]
    pub(crate) max_window_secs: Option<u64>,
    #[serde(default)]
    pub(crate) orgs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    pub(crate) ports: Vec<u32>,
    pub(crate) approvals_required: u8,
    pub(crate) max_window_secs: u64,
    pub(crate) orgs: Vec<String>,
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
            policy: policy(
                &self.ports,
                self.approvals_required.unwrap_or(1),
                self.max_window_secs.unwrap_or(8 * 3600),
                &self.orgs,
            )?,
        })
    }
}

impl PolicyBody {
    pub(crate) fn policy(&self) -> Result<DevicePolicy, ValidationError> {
        policy(
            &self.ports,
            self.approvals_required,
            self.max_window_secs,
            &self.orgs,
        )
    }
}

pub async fn orgs(
    State(state): State<AppState>,
    authed: Authed,
) -> ApiResult<Json<serde_json::Value>> {
    authed.require(&[Role::Admin])?;
    let orgs = state.0.store.list_orgs().await?;
    let list: Vec<_> = orgs
        .iter()
        .map(|(n, c)| serde_json::json!({ "name": n, "created_at": c }))
        .collect();
    Ok(Json(serde_json::json!({ "orgs": list })))
}

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

pub async fn users(
    State(state): State<AppState>,
    authed: Authed,
) -> ApiResult<Json<serde_json::Value>> {
    authed.require(&[Role::Admin])?;
    let now = state.0.clock.now();
    let users = state.0.store.list_users().await?;
    let list: Vec<_> = users
        .iter()
        .map(|u| {
            let mut v = serde_json::to_value(u).unwrap_or_default();
            v["status"] = u.status(now).into();
            v
        })
        .collect();
    Ok(Json(serde_json::json!({ "users": list })))
}

pub async fn add_user(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(b): ApiJson<UserBody>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    authed.require(&[Role::Admin])?;
    let (rec, code) = state
        .0
        .store
        .add_user(&authed.actor(), &b.new_user()?)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "username": rec.username, "role": rec.role, "org": rec.org,
            "enrollment_code": code.code, "expires_at": code.expires_at,
        })),
    ))
}

pub async fn user_action(
    State(state): State<AppState>,
    authed: Authed,
    ApiPath((name, action)): ApiPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    authed.require(&[Role::Admin])?;
    let name = Username::parse(&name)?;
    let store = &state.0.store;
    let by = authed.actor();
    let out = match action.as_str() {
        "disable" => serde_json::to_value(store.disable_user(&by, &name).await?),
        "unlock" => serde_json::to_value(store.unlock_user(&by, &name).await?),
        "reset" => {
            let code = store.reset_user(&by, &name).await?;
            Ok(
                serde_json::json!({ "username": name, "enrollment_code": code.code, "expires_at": code.expires_at }),
            )
        }
        "reset-enrollment" => {
            let code = store.reset_enrollment(&by, &name).await?;
            Ok(
                serde_json::json!({ "username": name, "enrollment_code": code.code, "expires_at": code.expires_at }),
            )
        }
        other => return Err(ApiError::NotFound(format!("no user action '{other}'"))),
    };
    Ok(Json(out.map_err(|_| ApiError::Internal)?))
}

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
