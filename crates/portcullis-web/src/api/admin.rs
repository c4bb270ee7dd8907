//! Admin endpoints: organisations, users, devices and policies. Admins never approve or audit.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    Role, Username,
};
use portcullis_store::NewUser;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, Authed};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgBody {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    username: String,
    role: String,
    #[serde(default)]
    org: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    name: String,
    address: String,
    ports: Vec<u32>,
    #[serde(default)]
    device_type: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    data_handled: String,
    #[serde(default)]
    access_method: String,
    #[serde(default)]
    firmware: String,
    #[serde(default)]
    support_contact: String,
    #[serde(default)]
    criticality: Option<String>,
    #[serde(default)]
    approvals_required: Option<u8>,
    #[serde(default)]
    max_window_secs: Option<u64>,
    #[serde(default)]
    orgs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    ports: Vec<u32>,
    approvals_required: u8,
    max_window_secs: u64,
    orgs: Vec<String>,
}

fn port_set(list: &[u32]) -> ApiResult<BTreeSet<Port>> {
    list.iter()
        .map(|p| Port::new(*p).map_err(|e| ApiError::Invalid(format!("ports: {}", e.message))))
        .collect()
}

fn org_set(list: &[String]) -> ApiResult<BTreeSet<OrgName>> {
    Ok(list
        .iter()
        .map(|o| OrgName::parse(o))
        .collect::<Result<_, _>>()?)
}

fn policy(
    ports: &[u32],
    approvals: u8,
    max_window_secs: u64,
    orgs: &[String],
) -> ApiResult<DevicePolicy> {
    Ok(DevicePolicy::new(
        port_set(ports)?,
        Duration::from_secs(max_window_secs),
        approvals,
        org_set(orgs)?,
    )?)
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
    let new = NewUser {
        username: Username::parse(&b.username)?,
        role: b.role.parse::<Role>()?,
        org: b.org.as_deref().map(OrgName::parse).transpose()?,
    };
    let (rec, code) = state.0.store.add_user(&authed.actor(), &new).await?;
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
    let device = Device {
        name: DeviceName::parse(&b.name)?,
        address: NetworkAddress::parse(&b.address)?,
        criticality: b
            .criticality
            .as_deref()
            .unwrap_or("medium")
            .parse::<Criticality>()?,
        profile: DeviceProfile {
            device_type: b.device_type,
            site: b.site,
            owner: b.owner,
            vendor: b.vendor,
            purpose: b.purpose,
            data_handled: b.data_handled,
            access_method: b.access_method,
            firmware: b.firmware,
            support_contact: b.support_contact,
        },
        policy: policy(
            &b.ports,
            b.approvals_required.unwrap_or(1),
            b.max_window_secs.unwrap_or(8 * 3600),
            &b.orgs,
        )?,
    };
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
    let p = policy(&b.ports, b.approvals_required, b.max_window_secs, &b.orgs)?;
    state
        .0
        .store
        .set_device_policy(&authed.actor(), &DeviceName::parse(&name)?, &p)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
