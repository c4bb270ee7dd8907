//! The admin's pages: users (add, disable, unlock, reset enrollment), organisations, and the
//! device inventory with each device's policy. Enrollment codes are shown once, in the answer
//! to the POST that made them (never in a URL).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_core::window::{format_duration, parse_window_length};
use portcullis_core::{
    DeviceName, DevicePolicy, DeviceProfile, OrgName, Port, Role, Timestamp, Username,
};
use portcullis_store::EnrollmentCode;
use serde::Deserialize;

use super::error::{PageResult, rerender};
use super::form::{FormError, Input, Posted, Problem, field, field_error, list};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use super::views::policy_ports;
use crate::api::admin::{DeviceBody, OrgBody, PolicyBody, UserBody};
use crate::error::ApiError;
use crate::state::AppState;

const USERNAME: Input = Input::new("username", "Username");
const ROLE: Input = Input::new("role", "Role");
const ORG: Input = Input::new("org", "Organisation");
const ORG_NAME: Input = Input::new("name", "Name");

/// Core's field names for a new user, at the users form's inputs.
const USER_FIELDS: &[(&str, Input)] = &[("username", USERNAME), ("role", ROLE), ("org", ORG)];

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
    error: Option<(FormError, Option<&UserBody>)>,
) -> PageResult {
    let users = state.0.store.list_users().await?;
    let orgs = state.0.store.list_orgs().await?;
    let tz = PlantTime::of_reader(state, who);
    let now = state.0.clock.now();
    let origin = &state.0.config.public_origin;
    let typed = error.as_ref().and_then(|(_, t)| *t);
    let render = |problem: Option<&Problem>| {
        let (name_v, role_v, org_v) = typed.map_or(("", "", ""), |t| {
            (
                t.username.as_str(),
                t.role.as_str(),
                t.org.as_deref().unwrap_or(""),
            )
        });
        let body = html! {
            (error_box(problem))
            @if let Some(i) = &issued {
                @let link = format!("{origin}/enroll?code={}", i.code.code);
                div.flash data-testid="enrollment" {
                    p { "Enrollment for " strong { (i.username) } " — give this to the person by a trusted channel. It is shown only now and works once, until " (tz.show(i.code.expires_at)) "." }
                    p { "Code: " span.secret data-testid="enrollment-code" { (i.code.code) } }
                    p { "Link: " a href=(link) data-testid="enrollment-link" { (link) } }
                }
            }
            table data-testid="users" {
                thead { tr { th { "User" } th { "Role" } th { "Organisation" } th { "Status" } th { "E-mail" } th { "Created" } th { "Actions" } } }
                tbody { @for u in &users {
                    @let name = u.username.as_str();
                    tr data-testid="user-row" data-user=(name) {
                        td { (name) }
                        td { (u.role) }
                        td { (u.org.as_ref().map_or("", |o| o.as_str())) }
                        td data-testid="user-status" { (u.status(now)) }
                        td {
                            form.inline method="post" action={ "/admin/users/" (name) "/email" } {
                                (csrf(who))
                                input type="email" name="email" maxlength="254" aria-label={ "E-mail address of " (name) }
                                    value=(u.email.as_ref().map_or("", |e| e.as_str())) data-testid={ "email-" (name) };
                                " "
                                button type="submit" data-testid={ "save-email-" (name) } { "Save" }
                            }
                        }
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
                (field(USERNAME, "", html! {
                    input type="text" name=(USERNAME.name) value=(name_v) required data-testid="new-username";
                }, problem))
                (field(ROLE, "", html! {
                    select name=(ROLE.name) data-testid="new-role" {
                        @for r in Role::ALL { option value=(r) selected[role_v == r.as_str()] { (r) } }
                    }
                }, problem))
                (field(ORG, " (vendors only)", html! {
                    select name=(ORG.name) data-testid="new-org" {
                        option value="" { "—" }
                        @for (o, _) in &orgs { option value=(o.as_str()) selected[org_v == o.as_str()] { (o.as_str()) } }
                    }
                }, problem))
                button type="submit" data-testid="add-user-submit" { "Add user" }
            }
        };
        page("Users", who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some((e, _)) => rerender(e, render),
    })
}

pub(crate) async fn users(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Admin])?;
    users_page(&state, &who, flash, None, None).await
}

/// The form as `POST /api/v1/admin/users` takes it. The organisation select only means
/// something for vendors, and "—" is none; a vendor without one is refused here, in the page's
/// words (the store's refusal speaks of the CLI's `--org`).
async fn new_user(
    state: &AppState,
    mut b: UserBody,
) -> (UserBody, Result<portcullis_store::NewUser, FormError>) {
    if b.role.trim() != Role::Vendor.as_str()
        || b.org.as_deref().is_some_and(|o| o.trim().is_empty())
    {
        b.org = None;
    }
    let outcome = async {
        let new = b.new_user().map_err(|v| FormError::located(v, USER_FIELDS))?;
        if new.role == Role::Vendor && new.org.is_none() {
            let orgs = state.0.store.list_orgs().await?;
            let why = if orgs.is_empty() {
                "a vendor must belong to an organisation, and there is none yet: add it first on the Organisations page"
            } else {
                "a vendor must belong to an organisation: choose theirs"
            };
            return Err(FormError::at(ORG, ApiError::Conflict(why.into())));
        }
        Ok(new)
    }
    .await;
    (b, outcome)
}

pub(crate) async fn add_user(State(state): State<AppState>, p: Posted<UserBody>) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let (typed, new) = new_user(&state, p.form).await;
    let outcome = match new {
        Ok(new) => state
            .0
            .store
            .add_user(&who.0.actor(), &new)
            .await
            .map_err(|e| FormError::from_store(e, USER_FIELDS)),
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
        Err(e) => users_page(&state, who, Flash::default(), None, Some((e, Some(&typed)))).await,
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
        Err(e) => users_page(&state, who, Flash::default(), None, Some((e.into(), None))).await,
    }
}

fn orgs_page(
    who: &Browser,
    orgs: &[(OrgName, Timestamp)],
    tz: &PlantTime,
    flash: Flash,
    typed: &str,
    problem: Option<&Problem>,
) -> Markup {
    let body = html! {
        (error_box(problem))
        table data-testid="orgs" {
            thead { tr { th { "Organisation" } th { "Added" } } }
            tbody { @for (o, at) in orgs { tr { td { (o.as_str()) } td { (tz.show(*at)) } } } }
        }
        h2 { "Add an organisation" }
        form.stack method="post" action="/admin/orgs" data-testid="add-org-form" {
            (csrf(who))
            (field(ORG_NAME, "", html! {
                input type="text" name=(ORG_NAME.name) value=(typed) required data-testid="org-name";
            }, problem))
            button type="submit" data-testid="add-org-submit" { "Add" }
        }
    };
    page("Organisations", who, flash, body)
}

pub(crate) async fn orgs(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Admin])?;
    let orgs = state.0.store.list_orgs().await?;
    Ok(orgs_page(
        &who,
        &orgs,
        &PlantTime::of_reader(&state, &who),
        flash,
        "",
        None,
    )
    .into_response())
}

pub(crate) async fn add_org(State(state): State<AppState>, p: Posted<OrgBody>) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = match OrgName::parse(&p.form.name) {
        Ok(name) => state
            .0
            .store
            .add_org(&who.0.actor(), &name)
            .await
            .map_err(|e| FormError::from_store(e, &[("org", ORG_NAME)])),
        Err(v) => Err(FormError::invalid(ORG_NAME, v.message)),
    };
    match outcome {
        Ok(()) => Ok(Flash::redirect("/admin/orgs", "org_added").into_response()),
        Err(e) => {
            let orgs = state.0.store.list_orgs().await?;
            let tz = PlantTime::of_reader(&state, who);
            Ok(rerender(e, |problem| {
                orgs_page(who, &orgs, &tz, Flash::default(), &p.form.name, problem)
            }))
        }
    }
}

const PORTS: Input = Input::new("ports", "Allowed ports");
const MAX_WINDOW: Input = Input::new("max_window", "Longest window");
const APPROVALS: Input = Input::new("approvals", "Approvals needed");
const ORGS: Input = Input::new("orgs", "Organisations");
const PROTOCOLS: Input = Input::new("protocols", "Modbus ports");
const WRITES: Input = Input::new("writes", "Modbus writes");
const DEVICE_NAME: Input = Input::new("name", "Name");
const ADDRESS: Input = Input::new("address", "Address");
const CRITICALITY: Input = Input::new("criticality", "Criticality");

/// Core's field names for a policy, at the policy inputs.
const POLICY_FIELDS: &[(&str, Input)] = &[
    ("ports", PORTS),
    ("port", PORTS),
    ("max-window", MAX_WINDOW),
    ("approvals", APPROVALS),
    ("org", ORGS),
    ("protocol", PROTOCOLS),
    ("writes", WRITES),
];

/// The inventory's free-text fields: the input, its hint, core's name for it, and where a
/// device keeps it.
type ProfileField = (
    Input,
    &'static str,
    &'static str,
    fn(&DeviceProfile) -> &str,
);
const PROFILE_FIELDS: [ProfileField; 9] = [
    (
        Input::new("device_type", "Type"),
        " (PLC, HMI, engineering workstation…)",
        "type",
        |p| &p.device_type,
    ),
    (Input::new("site", "Site"), "", "site", |p| &p.site),
    (Input::new("owner", "Owner"), "", "owner", |p| &p.owner),
    (Input::new("vendor", "Vendor"), "", "vendor", |p| &p.vendor),
    (Input::new("purpose", "Purpose"), "", "purpose", |p| {
        &p.purpose
    }),
    (
        Input::new("data_handled", "Data handled"),
        "",
        "data",
        |p| &p.data_handled,
    ),
    (
        Input::new("access_method", "Access method"),
        "",
        "access",
        |p| &p.access_method,
    ),
    (Input::new("firmware", "Firmware"), "", "firmware", |p| {
        &p.firmware
    }),
    (
        Input::new("support_contact", "Support contact"),
        "",
        "contact",
        |p| &p.support_contact,
    ),
];

/// Core's field names for a device, at the device form's inputs.
fn device_fields() -> Vec<(&'static str, Input)> {
    let mut map = vec![
        ("device", DEVICE_NAME),
        ("address", ADDRESS),
        ("criticality", CRITICALITY),
    ];
    map.extend(
        PROFILE_FIELDS
            .iter()
            .map(|(input, _, core, _)| (*core, *input)),
    );
    map.extend_from_slice(POLICY_FIELDS);
    map
}

/// The policy inputs as posted: ports `502, 80`, window `8h`, approvals 1 or 2, orgs ticked.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyForm {
    #[serde(default)]
    ports: String,
    #[serde(default)]
    max_window: String,
    #[serde(default)]
    approvals: String,
    #[serde(default, deserialize_with = "list")]
    orgs: Vec<String>,
    /// The ports that speak Modbus/TCP: `502` or `502, 5020`.
    #[serde(default)]
    protocols: String,
    #[serde(default)]
    writes: String,
}

impl PolicyForm {
    fn of(p: &DevicePolicy) -> Self {
        let modbus: BTreeSet<Port> = p.protocols.keys().copied().collect();
        Self {
            ports: Port::join(&p.allowed_ports),
            max_window: format_duration(p.max_window),
            approvals: p.approvals_required.to_string(),
            orgs: p.allowed_orgs.iter().map(|o| o.to_string()).collect(),
            protocols: if modbus.is_empty() {
                String::new()
            } else {
                Port::join(&modbus)
            },
            writes: p.writes.as_str().into(),
        }
    }

    /// `{"502": "modbus"}` from the Modbus ports typed.
    fn protocols(&self) -> Result<BTreeMap<String, String>, FormError> {
        if self.protocols.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        let ports = Port::parse_list(&self.protocols)
            .map_err(|v| FormError::invalid(PROTOCOLS, v.message))?;
        Ok(ports
            .iter()
            .map(|p| (p.to_string(), "modbus".to_owned()))
            .collect())
    }

    /// What `POST /api/v1/admin/devices/{name}/policy` takes, from the text people type.
    fn body(&self) -> Result<PolicyBody, FormError> {
        let ports =
            Port::parse_list(&self.ports).map_err(|v| FormError::invalid(PORTS, v.message))?;
        let window = parse_window_length(&self.max_window)
            .map_err(|v| FormError::invalid(MAX_WINDOW, v.message))?;
        let approvals = self
            .approvals
            .trim()
            .parse::<u8>()
            .map_err(|_| FormError::invalid(APPROVALS, "choose 1 or 2"))?;
        Ok(PolicyBody {
            ports: ports.iter().map(|p| u32::from(p.get())).collect(),
            approvals_required: approvals,
            max_window_secs: window.as_secs(),
            orgs: self.orgs.clone(),
            protocols: self.protocols()?,
            writes: Some(self.writes.clone()),
            write_units: Vec::new(),
            write_registers: Vec::new(),
        })
    }

    fn policy(&self) -> Result<DevicePolicy, FormError> {
        self.body()?
            .policy()
            .map_err(|v| FormError::located(v, POLICY_FIELDS))
    }
}

/// The add-device form: `POST /api/v1/admin/devices`'s fields, the policy as [`PolicyForm`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    criticality: String,
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
    ports: String,
    #[serde(default)]
    max_window: String,
    #[serde(default)]
    approvals: String,
    #[serde(default, deserialize_with = "list")]
    orgs: Vec<String>,
    #[serde(default)]
    protocols: String,
    #[serde(default)]
    writes: String,
}

impl DeviceForm {
    fn profile(&self) -> DeviceProfile {
        DeviceProfile {
            device_type: self.device_type.clone(),
            site: self.site.clone(),
            owner: self.owner.clone(),
            vendor: self.vendor.clone(),
            purpose: self.purpose.clone(),
            data_handled: self.data_handled.clone(),
            access_method: self.access_method.clone(),
            firmware: self.firmware.clone(),
            support_contact: self.support_contact.clone(),
        }
    }

    fn policy(&self) -> PolicyForm {
        PolicyForm {
            ports: self.ports.clone(),
            max_window: self.max_window.clone(),
            approvals: self.approvals.clone(),
            orgs: self.orgs.clone(),
            protocols: self.protocols.clone(),
            writes: self.writes.clone(),
        }
    }

    /// The device, through `POST /api/v1/admin/devices`'s body.
    fn device(&self) -> Result<portcullis_core::Device, FormError> {
        let policy = self.policy().body()?;
        let text = |s: &str| s.trim().to_owned();
        let body = DeviceBody {
            name: self.name.clone(),
            address: self.address.clone(),
            ports: policy.ports,
            device_type: text(&self.device_type),
            site: text(&self.site),
            owner: text(&self.owner),
            vendor: text(&self.vendor),
            purpose: text(&self.purpose),
            data_handled: text(&self.data_handled),
            access_method: text(&self.access_method),
            firmware: text(&self.firmware),
            support_contact: text(&self.support_contact),
            criticality: Some(self.criticality.trim())
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            approvals_required: Some(policy.approvals_required),
            max_window_secs: Some(policy.max_window_secs),
            orgs: policy.orgs,
            protocols: policy.protocols,
            writes: policy.writes,
            write_units: policy.write_units,
            write_registers: policy.write_registers,
        };
        body.device()
            .map_err(|v| FormError::located(v, &device_fields()))
    }
}

/// The policy inputs, filled from `typed` (what was posted) or `current`.
fn policy_inputs(
    orgs: &[(OrgName, Timestamp)],
    current: Option<&DevicePolicy>,
    typed: Option<&PolicyForm>,
    problem: Option<&Problem>,
) -> Markup {
    let shown = match (typed, current) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => PolicyForm::of(p),
        (None, None) => PolicyForm {
            max_window: "8h".into(),
            approvals: "1".into(),
            ..PolicyForm::default()
        },
    };
    html! {
        (field(PORTS, " (comma-separated)", html! {
            input type="text" name=(PORTS.name) value=(shown.ports) required data-testid="policy-ports";
        }, problem))
        (field(MAX_WINDOW, " (e.g. 8h, 30m)", html! {
            input type="text" name=(MAX_WINDOW.name) value=(shown.max_window) required data-testid="policy-window";
        }, problem))
        (field(APPROVALS, "", html! {
            select name=(APPROVALS.name) data-testid="policy-approvals" {
                option value="1" selected[shown.approvals == "1"] { "1" }
                option value="2" selected[shown.approvals == "2"] { "2 (dual approval)" }
            }
        }, problem))
        (field(PROTOCOLS, " (ports that speak Modbus/TCP; reads only unless write is granted)", html! {
            input type="text" name=(PROTOCOLS.name) value=(shown.protocols) data-testid="policy-modbus";
        }, problem))
        (field(WRITES, "", html! {
            select name=(WRITES.name) data-testid="policy-writes" {
                option value="allowed" selected[shown.writes != "never"] { "may be granted" }
                option value="never" selected[shown.writes == "never"] { "never (read-only)" }
            }
        }, problem))
        fieldset.field data-field=(ORGS.name) { legend { (ORGS.label) " that may request it" }
            @for (o, _) in orgs {
                @let on = shown.orgs.iter().any(|v| v == o.as_str());
                label { input type="checkbox" name=(ORGS.name) value=(o.as_str()) checked[on]; (o.as_str()) }
            }
            (field_error(problem, ORGS))
        }
    }
}

async fn devices_page(
    state: &AppState,
    who: &Browser,
    flash: Flash,
    error: Option<(FormError, &DeviceForm)>,
) -> PageResult {
    let devices = state.0.store.list_devices().await?;
    let orgs = state.0.store.list_orgs().await?;
    let typed = error.as_ref().map(|(_, f)| *f);
    let render = |problem: Option<&Problem>| {
        let blank = DeviceForm::default();
        let v = typed.unwrap_or(&blank);
        let profile = v.profile();
        let criticality = Some(v.criticality.as_str())
            .filter(|c| !c.is_empty())
            .unwrap_or("medium");
        let body = html! {
            (error_box(problem))
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
                        td { (policy_ports(&d.policy)) }
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
                (field(DEVICE_NAME, "", html! {
                    input type="text" name=(DEVICE_NAME.name) value=(v.name) required data-testid="device-name";
                }, problem))
                (field(ADDRESS, " (IP or host name; never shown to vendors)", html! {
                    input type="text" name=(ADDRESS.name) value=(v.address) required data-testid="device-address";
                }, problem))
                (field(CRITICALITY, "", html! {
                    select name=(CRITICALITY.name) {
                        @for c in ["low", "medium", "high"] { option value=(c) selected[criticality == c] { (c) } }
                    }
                }, problem))
                @for (input, hint, _, get) in PROFILE_FIELDS {
                    (field(input, hint, html! {
                        input type="text" name=(input.name) value=(get(&profile));
                    }, problem))
                }
                (policy_inputs(&orgs, None, typed.map(DeviceForm::policy).as_ref(), problem))
                button type="submit" data-testid="add-device-submit" { "Add device" }
            }
        };
        page("Devices", who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some((e, _)) => rerender(e, render),
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

pub(crate) async fn add_device(State(state): State<AppState>, p: Posted<DeviceForm>) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = match p.form.device() {
        Ok(d) => state
            .0
            .store
            .add_device(&who.0.actor(), &d)
            .await
            .map_err(|e| FormError::from_store(e, &device_fields())),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Ok(Flash::redirect("/admin/devices", "device_added").into_response()),
        Err(e) => devices_page(&state, who, Flash::default(), Some((e, &p.form))).await,
    }
}

async fn device_page(
    state: &AppState,
    who: &Browser,
    name: &str,
    flash: Flash,
    error: Option<(FormError, &PolicyForm)>,
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
    let render = |problem: Option<&Problem>| {
        let d = &device;
        let body = html! {
            (error_box(problem))
            dl.facts data-testid="device" {
                dt { "Address" } dd.code { (d.address.as_str()) }
                dt { "Criticality" } dd { (d.criticality.as_str()) }
                @for (input, _, _, get) in PROFILE_FIELDS {
                    dt { (input.label) } dd { (get(&d.profile)) }
                }
            }
            h2 { "Policy" }
            form.stack method="post" action={ "/admin/devices/" (d.name.as_str()) } data-testid="policy-form" {
                (csrf(who))
                (policy_inputs(&orgs, Some(&d.policy), typed, problem))
                button type="submit" data-testid="policy-submit" { "Save policy" }
            }
        };
        page(&format!("Device {}", device.name), who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some((e, _)) => rerender(e, render),
    })
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
    p: Posted<PolicyForm>,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let outcome = async {
        let dn = DeviceName::parse(&name).map_err(ApiError::from)?;
        let policy = p.form.policy()?;
        state
            .0
            .store
            .set_device_policy(&who.0.actor(), &dn, &policy)
            .await
            .map_err(|e| FormError::from_store(e, POLICY_FIELDS))?;
        Ok::<_, FormError>(dn)
    }
    .await;
    match outcome {
        Ok(dn) => {
            Ok(Flash::redirect(&format!("/admin/devices/{dn}"), "policy_saved").into_response())
        }
        Err(e) => device_page(&state, who, &name, Flash::default(), Some((e, &p.form))).await,
    }
}
