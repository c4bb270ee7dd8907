//! The vendor's pages: the devices their organisation may request, the request form, and their
//! own requests and grants.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_core::window::format_duration;
use portcullis_core::{Device, DeviceName, Port, Role, Window};
use portcullis_store::{NewRequest, RequestFilter};
use serde::Deserialize;

use super::error::{PageResult, rerender};
use super::form::{Fields, Posted};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use super::views::{ports, requests_table};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The devices this vendor's organisation may request (none without an organisation).
async fn requestable(state: &AppState, who: &Browser) -> ApiResult<Vec<Device>> {
    let Some(org) = &who.0.user.org else {
        return Ok(Vec::new());
    };
    let all = state.0.store.list_devices().await?;
    Ok(all
        .into_iter()
        .filter(|d| d.policy.allowed_orgs.contains(org))
        .collect())
}

pub(crate) async fn devices(
    State(state): State<AppState>,
    who: Browser,
    flash: Flash,
) -> PageResult {
    who.require(&[Role::Vendor])?;
    let list = requestable(&state, &who).await?;
    // Vendors learn what they may ask for, not the plant's addressing.
    let body = html! {
        @if list.is_empty() {
            p.muted data-testid="empty" { "Your organisation may not request any device yet." }
        } @else {
            table data-testid="devices" {
                thead { tr {
                    th { "Device" } th { "Type" } th { "Site" } th { "Criticality" }
                    th { "Ports" } th { "Longest window" } th { "Approvals" } th {}
                } }
                tbody { @for d in &list {
                    tr data-testid="device-row" {
                        td { (d.name.as_str()) }
                        td { (d.profile.device_type) }
                        td { (d.profile.site) }
                        td { (d.criticality.as_str()) }
                        td { (ports(&d.policy.allowed_ports)) }
                        td { (format_duration(d.policy.max_window)) }
                        td { (d.policy.approvals_required) }
                        td { a href={ "/requests/new?device=" (d.name.as_str()) } { "Request access" } }
                    }
                } }
            }
        }
    };
    Ok(page("Devices", &who, flash, body).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NewQuery {
    #[serde(default)]
    device: String,
}

/// What the form shows: the chosen device and the values typed so far.
#[derive(Debug, Default)]
struct Draft {
    ports: BTreeSet<String>,
    start: String,
    end: String,
    reason: String,
    ticket: String,
}

fn request_form(
    who: &Browser,
    tz: &PlantTime,
    devices: &[Device],
    chosen: Option<&Device>,
    d: &Draft,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        (error_box(error))
        form.filters method="get" action="/requests/new" data-testid="device-picker" {
            label { "Device"
                select name="device" data-testid="device-select" {
                    @for dev in devices {
                        option value=(dev.name.as_str())
                            selected[chosen.is_some_and(|c| c.name == dev.name)] {
                            (dev.name.as_str()) " — " (dev.profile.device_type) " (" (dev.profile.site) ")"
                        }
                    }
                }
            }
            button type="submit" data-testid="device-choose" { "Choose" }
        }
        @if let Some(dev) = chosen {
            form.stack method="post" action="/requests" data-testid="request-form" {
                (csrf(who))
                input type="hidden" name="device" value=(dev.name.as_str());
                p { "Device " strong { (dev.name.as_str()) } ". Longest window "
                    (format_duration(dev.policy.max_window)) "; "
                    (dev.policy.approvals_required) " approval(s) needed." }
                fieldset data-testid="ports" {
                    legend { "Ports" }
                    @for p in &dev.policy.allowed_ports {
                        label {
                            input type="checkbox" name="ports" value=(p)
                                checked[d.ports.contains(&p.to_string())]
                                data-testid={ "port-" (p) };
                            (p)
                        }
                    }
                }
                label { "Start (" (tz.name()) ")"
                    input type="datetime-local" name="start" value=(d.start) required
                        data-testid="start"; }
                label { "End (" (tz.name()) ")"
                    input type="datetime-local" name="end" value=(d.end) required
                        data-testid="end"; }
                label { "Reason"
                    textarea name="reason" rows="3" maxlength="1000" required data-testid="reason" { (d.reason) } }
                label { "Ticket (optional)"
                    input type="text" name="ticket" maxlength="100" value=(d.ticket) data-testid="ticket"; }
                button type="submit" data-testid="request-submit" { "Submit request" }
            }
        }
    };
    page("New access request", who, Flash::default(), body)
}

pub(crate) async fn new_request(
    State(state): State<AppState>,
    who: Browser,
    Query(q): Query<NewQuery>,
) -> PageResult {
    who.require(&[Role::Vendor])?;
    let tz = PlantTime::of(&state);
    let list = requestable(&state, &who).await?;
    let chosen = list
        .iter()
        .find(|d| d.name.as_str() == q.device)
        .or_else(|| (list.len() == 1).then(|| &list[0]));
    let now = state.0.clock.now();
    let draft = Draft {
        ports: chosen
            .filter(|d| d.policy.allowed_ports.len() == 1)
            .map(|d| d.policy.allowed_ports.iter().map(Port::to_string).collect())
            .unwrap_or_default(),
        start: tz.input(now),
        end: tz.input(now.saturating_add(Duration::from_secs(3600))),
        ..Draft::default()
    };
    Ok(request_form(&who, &tz, &list, chosen, &draft, None).into_response())
}

/// Reads the form into what the store takes; every message is the API's for the same mistake.
fn parse_request(f: &Fields, tz: &PlantTime) -> ApiResult<NewRequest> {
    let device = DeviceName::parse(f.get("device"))?;
    let ports = f
        .all("ports")
        .map(|p| {
            let n: u32 = p.trim().parse().map_err(|_| {
                ApiError::Invalid(format!("ports: '{p}' is not a port number (1..65535)"))
            })?;
            Port::new(n).map_err(|e| ApiError::Invalid(format!("ports: {}", e.message)))
        })
        .collect::<ApiResult<BTreeSet<Port>>>()?;
    if ports.is_empty() {
        return Err(ApiError::Invalid("ports: name at least one port".into()));
    }
    let window = Window::new(
        tz.parse("start", f.get("start"))?,
        tz.parse("end", f.get("end"))?,
    )?;
    Ok(NewRequest {
        device,
        ports,
        window,
        reason: f.get("reason").to_owned(),
        ticket: f.opt("ticket").map(str::to_owned),
    })
}

pub(crate) async fn create(State(state): State<AppState>, p: Posted) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Vendor])?;
    let tz = PlantTime::of(&state);
    let outcome = match parse_request(&p.fields, &tz) {
        Ok(new) => state
            .0
            .store
            .create_request(&who.0.actor(), &who.0.user, &new)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(_) => Ok(Flash::redirect("/requests", "requested").into_response()),
        Err(e) => {
            let list = requestable(&state, who).await?;
            let chosen = list
                .iter()
                .find(|d| d.name.as_str() == p.fields.get("device"));
            let f = &p.fields;
            let draft = Draft {
                ports: f.all("ports").map(str::to_owned).collect(),
                start: f.get("start").to_owned(),
                end: f.get("end").to_owned(),
                reason: f.get("reason").to_owned(),
                ticket: f.get("ticket").to_owned(),
            };
            Ok(rerender(e, |m| {
                request_form(who, &tz, &list, chosen, &draft, Some(m))
            }))
        }
    }
}

/// Vendors see their own requests; supervisors and auditors see all.
pub(crate) async fn requests(
    State(state): State<AppState>,
    who: Browser,
    flash: Flash,
) -> PageResult<Response> {
    who.require(&[Role::Vendor, Role::Supervisor, Role::Auditor])?;
    let vendor = who.0.user.role == Role::Vendor;
    let filter = RequestFilter {
        requester: vendor.then(|| who.0.user.username.clone()),
        state: None,
    };
    let list = state.0.store.list_requests(&filter).await?;
    let tz = PlantTime::of(&state);
    let now = state.0.clock.now();
    let title = if vendor {
        "My requests"
    } else {
        "All requests"
    };
    let body = html! {
        @if vendor { p { a href="/requests/new" data-testid="new-request" { "New request" } } }
        (requests_table(&list, &tz, now, !vendor))
    };
    Ok(page(title, &who, flash, body).into_response())
}
