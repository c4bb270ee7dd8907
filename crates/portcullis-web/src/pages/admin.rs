//! The admin's pages: users (add, disable, unlock, reset enrollment), organisations, and the
//! device inventory with each device's policy. Enrollment codes are shown once, in the answer
//! to the POST that made them (never in a URL).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_core::window::{format_duration, parse_window_length};
use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    Role, Timestamp, Username,
};
use portcullis_store::{EnrollmentCode, NewUser};

use super::error::{PageResult, rerender};
use super::form::{Fields, Posted};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use super::views::ports;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A fresh enrollment code to hand over, shown on this one page.
struct Issued<'a> {
    username: &'a str,
    code: EnrollmentCode,
}

async fn users_page(
    state: &AppState,
    who: &Browser,
    flash: Flash,
    issued: Option<Issued<'_>>,
    error: Option<ApiError>,
) -> PageResult {
    let users = state.0.store.list_users().await?;
    let orgs = state.0.store.list_orgs().await?;
    let tz = PlantTime::of(state);
    let now = state.0.clock.now();
    let origin = &state.0.config.public_origin;
    let render = |msg: Option<&str>| {
        let body = html! {
            (error_box(msg))
            @if let Some(i) = &issued {
                @let link = format!("{origin}/enroll?code={}", i.code.code);
                div.flash data-testid="enrollment" {
                    p { "Enrollment for " strong { (i.username) } " — give this to the person by a trusted channel. It is shown only now and works once, until " (tz.show(i.code.expires_at)) "." }
                    p { "Code: " span.secret data-testid="enrollment-code" { (i.code.code) } }
                    p { "Link: " a href=(link) data-testid="enrollment-link" { (link) } }
                }
            }
            table data-testid="users" {
                thead { tr { th { "User" } th { "Role" } th { "Organisation" } th { "Status" } th { "Created" } th { "Actions" } } }
                tbody { @for u in &users {
                    @let name = u.username.as_str();
                    tr data-testid="user-row" data-user=(name) {
                        td { (name) }
                        td { (u.role) }
                        td { (u.org.as_ref().map_or("", |o| o.as_str())) }
                        td data-testid="user-status" { (u.status(now)) }
                        td { (tz.show(u.created_at)) }
                        td {
                            @for (action, label) in [("unlock", "Unlock"), ("reset", "Reset password and MFA"), ("disable", "Disable")] {
                                @if !(action == "disable" && u.disabled_at.is_some()) {
                                    form.inline method="post" action={ "/admin/users/" (name) "/" (action) } {
                                        (csrf(who))
                                        button.danger[action == "disable"] type="submit"
                                            data-testid={ (action) "-" (name) } { (label) }
                                    }
                                    " "
                                }
                            }
                        }
                    }
                } }
            }
            h2 { "Add a user" }
            form.stack method="post" action="/admin/users" data-testid="add-user-form" {
                (csrf(who))
                label { "Username" input type="text" name="username" required data-testid="new-username"; }
                label { "Role"
                    select name="role" data-testid="new-role" {
                        @for r in Role::ALL { option value=(r) { (r) } }
                    }
                }
                label { "Organisation (vendors only)"
                    select name="org" data-testid="new-org" {
                        option value="" { "—" }
                        @for (o, _) in &orgs { option value=(o.as_str()) { (o.as_str()) } }
                    }
                }
                button type="submit" data-testid="add-user-submit" { "Add user" }
            }
        };
        page("Users", who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some(e) => rerender(e, |m| render(Some(m))),
    })
}

pub(crate) async fn users(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Admin])?;
    users_page(&state, &who, flash, None, None).await
}

fn new_user(f: &Fields) -> ApiResult<NewUser> {
    let role = f.get("role").parse::<Role>()?;
    // The organisation select only means something for vendors.
    let org = match role {
        Role::Vendor => f.opt("org").map(OrgName::parse).transpose()?,
        _ => None,
    };
    Ok(NewUser {
        username: Username::parse(f.get("username"))?,
        role,
        org,
    })
}

pub(crate) async fn add_user(State(state): State<AppState>, p: Posted) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = match new_user(&p.fields) {
        Ok(new) => state
            .0
            .store
            .add_user(&who.0.actor(), &new)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((rec, code)) => {
            let issued = Issued {
                username: rec.username.as_str(),
                code,
            };
            users_page(&state, who, Flash::default(), Some(issued), None).await
        }
        Err(e) => users_page(&state, who, Flash::default(), None, Some(e)).await,
    }
}

pub(crate) async fn user_action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    p: Posted,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let store = &state.0.store;
    let by = who.0.actor();
    let outcome = async {
        let name = Username::parse(&name)?;
        Ok(match action.as_str() {
            "disable" => store.disable_user(&by, &name).await.map(|_| None)?,
            "unlock" => store.unlock_user(&by, &name).await.map(|_| None)?,
            "reset" => Some(store.reset_user(&by, &name).await?),
            "reset-enrollment" => Some(store.reset_enrollment(&by, &name).await?),
            other => return Err(ApiError::NotFound(format!("no user action '{other}'"))),
        })
    }
    .await;
    match outcome {
        Ok(None) => {
            let done = if action == "disable" {
                "user_disabled"
            } else {
                "user_unlocked"
            };
            Ok(Flash::redirect("/admin/users", done).into_response())
        }
        Ok(Some(code)) => {
            let issued = Issued {
                username: &name,
                code,
            };
            users_page(&state, who, Flash::default(), Some(issued), None).await
        }
        Err(e) => users_page(&state, who, Flash::default(), None, Some(e)).await,
    }
}

fn orgs_page(
    who: &Browser,
    orgs: &[(OrgName, Timestamp)],
    tz: &PlantTime,
    flash: Flash,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        (error_box(error))
        table data-testid="orgs" {
            thead { tr { th { "Organisation" } th { "Added" } } }
            tbody { @for (o, at) in orgs { tr { td { (o.as_str()) } td { (tz.show(*at)) } } } }
        }
        h2 { "Add an organisation" }
        form.stack method="post" action="/admin/orgs" data-testid="add-org-form" {
            (csrf(who))
            label { "Name" input type="text" name="name" required data-testid="org-name"; }
            button type="submit" data-testid="add-org-submit" { "Add" }
        }
    };
    page("Organisations", who, flash, body)
}

pub(crate) async fn orgs(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Admin])?;
    let orgs = state.0.store.list_orgs().await?;
    Ok(orgs_page(&who, &orgs, &PlantTime::of(&state), flash, None).into_response())
}

pub(crate) async fn add_org(State(state): State<AppState>, p: Posted) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = match OrgName::parse(p.fields.get("name")) {
        Ok(name) => state
            .0
            .store
            .add_org(&who.0.actor(), &name)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(()) => Ok(Flash::redirect("/admin/orgs", "org_added").into_response()),
        Err(e) => {
            let orgs = state.0.store.list_orgs().await?;
            let tz = PlantTime::of(&state);
            Ok(rerender(e, |m| {
                orgs_page(who, &orgs, &tz, Flash::default(), Some(m))
            }))
        }
    }
}

/// Policy fields as the forms name them: ports `502, 80`, window `8h`, approvals 1 or 2, orgs.
fn policy(f: &Fields) -> ApiResult<DevicePolicy> {
    let approvals = f
        .get("approvals")
        .trim()
        .parse::<u8>()
        .map_err(|_| ApiError::Invalid("approvals: choose 1 or 2".into()))?;
    let orgs = f
        .all("orgs")
        .map(OrgName::parse)
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(DevicePolicy::new(
        Port::parse_list(f.get("ports"))?,
        parse_window_length(f.get("max_window"))?,
        approvals,
        orgs,
    )?)
}

const PROFILE_FIELDS: [(&str, &str); 9] = [
    ("device_type", "Type (PLC, HMI, engineering workstation…)"),
    ("site", "Site"),
    ("owner", "Owner"),
    ("vendor", "Vendor"),
    ("purpose", "Purpose"),
    ("data_handled", "Data handled"),
    ("access_method", "Access method"),
    ("firmware", "Firmware"),
    ("support_contact", "Support contact"),
];

fn device_from(f: &Fields) -> ApiResult<Device> {
    let text = |k: &str| f.get(k).trim().to_owned();
    Ok(Device {
        name: DeviceName::parse(f.get("name"))?,
        address: NetworkAddress::parse(f.get("address"))?,
        criticality: f
            .opt("criticality")
            .unwrap_or("medium")
            .parse::<Criticality>()?,
        profile: DeviceProfile {
            device_type: text("device_type"),
            site: text("site"),
            owner: text("owner"),
            vendor: text("vendor"),
            purpose: text("purpose"),
            data_handled: text("data_handled"),
            access_method: text("access_method"),
            firmware: text("firmware"),
            support_contact: text("support_contact"),
        },
        policy: policy(f)?,
    })
}

/// The policy inputs, filled from `current` (or what was typed).
fn policy_inputs(
    orgs: &[(OrgName, Timestamp)],
    current: Option<&DevicePolicy>,
    typed: Option<&Fields>,
) -> Markup {
    let value = |k: &str, from_policy: String| typed.map_or(from_policy, |f| f.get(k).to_owned());
    let ports_v = value(
        "ports",
        current.map_or_else(String::new, |p| Port::join(&p.allowed_ports)),
    );
    let window_v = value(
        "max_window",
        current.map_or_else(|| "8h".into(), |p| format_duration(p.max_window)),
    );
    let approvals_v = value(
        "approvals",
        current.map_or_else(|| "1".into(), |p| p.approvals_required.to_string()),
    );
    html! {
        label { "Allowed ports (comma-separated)" input type="text" name="ports" value=(ports_v) required data-testid="policy-ports"; }
        label { "Longest window (e.g. 8h, 30m)" input type="text" name="max_window" value=(window_v) required data-testid="policy-window"; }
        label { "Approvals needed"
            select name="approvals" data-testid="policy-approvals" {
                option value="1" selected[approvals_v == "1"] { "1" }
                option value="2" selected[approvals_v == "2"] { "2 (dual approval)" }
            }
        }
        fieldset { legend { "Organisations that may request it" }
            @for (o, _) in orgs {
                @let on = typed.map_or_else(
                    || current.is_some_and(|p| p.allowed_orgs.contains(o)),
                    |f| f.all("orgs").any(|v| v == o.as_str()));
                label { input type="checkbox" name="orgs" value=(o.as_str()) checked[on]; (o.as_str()) }
            }
        }
    }
}

async fn devices_page(
    state: &AppState,
    who: &Browser,
    flash: Flash,
    error: Option<(ApiError, &Fields)>,
) -> PageResult {
    let devices = state.0.store.list_devices().await?;
    let orgs = state.0.store.list_orgs().await?;
    let typed = error.as_ref().map(|(_, f)| *f);
    let render = |msg: Option<&str>| {
        let v = |k: &str| typed.map_or("", |f| f.get(k));
        let body = html! {
            (error_box(msg))
            table data-testid="devices" {
                thead { tr {
                    th { "Device" } th { "Address" } th { "Type" } th { "Site" } th { "Criticality" }
                    th { "Ports" } th { "Longest window" } th { "Approvals" } th { "Organisations" } th {}
                } }
                tbody { @for d in &devices {
                    tr data-testid="device-row" {
                        td { (d.name.as_str()) }
                        td.code { (d.address.as_str()) }
                        td { (d.profile.device_type) }
                        td { (d.profile.site) }
                        td { (d.criticality.as_str()) }
                        td { (ports(&d.policy.allowed_ports)) }
                        td { (format_duration(d.policy.max_window)) }
                        td { (d.policy.approvals_required) }
                        td { (d.policy.allowed_orgs.iter().map(OrgName::as_str).collect::<Vec<_>>().join(", ")) }
                        td { a href={ "/admin/devices/" (d.name.as_str()) } { "Edit policy" } }
                    }
                } }
            }
            h2 { "Add a device" }
            form.stack method="post" action="/admin/devices" data-testid="add-device-form" {
                (csrf(who))
                label { "Name" input type="text" name="name" value=(v("name")) required data-testid="device-name"; }
                label { "Address (IP or host name; never shown to vendors)" input type="text" name="address" value=(v("address")) required data-testid="device-address"; }
                label { "Criticality"
                    select name="criticality" {
                        @for c in ["low", "medium", "high"] { option value=(c) selected[v("criticality") == c || (v("criticality").is_empty() && c == "medium")] { (c) } }
                    }
                }
                @for (k, label) in PROFILE_FIELDS {
                    label { (label) input type="text" name=(k) value=(v(k)); }
                }
                (policy_inputs(&orgs, None, typed))
                button type="submit" data-testid="add-device-submit" { "Add device" }
            }
        };
        page("Devices", who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some((e, _)) => rerender(e, |m| render(Some(m))),
    })
}

pub(crate) async fn devices(
    State(state): State<AppState>,
    who: Browser,
    flash: Flash,
) -> PageResult {
    who.require(&[Role::Admin])?;
    devices_page(&state, &who, flash, None).await
}

pub(crate) async fn add_device(State(state): State<AppState>, p: Posted) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = match device_from(&p.fields) {
        Ok(d) => state
            .0
            .store
            .add_device(&who.0.actor(), &d)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Ok(Flash::redirect("/admin/devices", "device_added").into_response()),
        Err(e) => devices_page(&state, who, Flash::default(), Some((e, &p.fields))).await,
    }
}

async fn device_page(
    state: &AppState,
    who: &Browser,
    name: &str,
    flash: Flash,
    error: Option<(ApiError, &Fields)>,
) -> PageResult<Response> {
    let dn = DeviceName::parse(name)?;
    let device = state
        .0
        .store
        .device(&dn)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device '{dn}' does not exist")))?;
    let orgs = state.0.store.list_orgs().await?;
    let typed = error.as_ref().map(|(_, f)| *f);
    let render = |msg: Option<&str>| {
        let d = &device;
        let body = html! {
            (error_box(msg))
            dl.facts data-testid="device" {
                dt { "Address" } dd.code { (d.address.as_str()) }
                dt { "Criticality" } dd { (d.criticality.as_str()) }
                @for (k, label) in PROFILE_FIELDS {
                    dt { (label) } dd { (profile_field(&d.profile, k)) }
                }
            }
            h2 { "Policy" }
            form.stack method="post" action={ "/admin/devices/" (d.name.as_str()) } data-testid="policy-form" {
                (csrf(who))
                (policy_inputs(&orgs, Some(&d.policy), typed))
                button type="submit" data-testid="policy-submit" { "Save policy" }
            }
        };
        page(&format!("Device {}", device.name), who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some((e, _)) => rerender(e, |m| render(Some(m))),
    })
}

fn profile_field<'a>(p: &'a DeviceProfile, k: &str) -> &'a str {
    match k {
        "device_type" => &p.device_type,
        "site" => &p.site,
        "owner" => &p.owner,
        "vendor" => &p.vendor,
        "purpose" => &p.purpose,
        "data_handled" => &p.data_handled,
        "access_method" => &p.access_method,
        "firmware" => &p.firmware,
        "support_contact" => &p.support_contact,
        _ => "",
    }
}

pub(crate) async fn device(
    State(state): State<AppState>,
    who: Browser,
    Path(name): Path<String>,
    flash: Flash,
) -> PageResult {
    who.require(&[Role::Admin])?;
    device_page(&state, &who, &name, flash, None).await
}

pub(crate) async fn set_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = async {
        let dn = DeviceName::parse(&name)?;
        let policy = policy(&p.fields)?;
        state
            .0
            .store
            .set_device_policy(&who.0.actor(), &dn, &policy)
            .await?;
        ApiResult::Ok(dn)
    }
    .await;
    match outcome {
        Ok(dn) => {
            Ok(Flash::redirect(&format!("/admin/devices/{dn}"), "policy_saved").into_response())
        }
        Err(e) => device_page(&state, who, &name, Flash::default(), Some((e, &p.fields))).await,
    }
}
