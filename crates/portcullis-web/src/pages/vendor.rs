//! The vendor's pages: the devices their organisation may request, the request form, and their
//! own requests and grants.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_core::window::format_duration;
use portcullis_core::{Device, Port, Role, WritePolicy};
use portcullis_store::{NewRequest, RequestFilter};
use serde::Deserialize;

use super::error::{PageResult, rerender};
use super::form::access_inputs::{END, PORTS, REASON, START, WINDOW};
use super::form::{FormError, Input, Posted, Problem, field, field_error, list};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use super::views::{ports, requests_table};
use crate::api::access::CreateBody;
use crate::error::ApiResult;
use crate::state::AppState;

const DEVICE: Input = Input::new("device", "Device");
const TICKET: Input = Input::new("ticket", "Ticket");
const ACCESS: Input = Input::new("access", "Modbus access");

/// Core's field names for a request, at the request form's inputs.
const REQUEST_FIELDS: &[(&str, Input)] = &[
    ("device", DEVICE),
    ("ports", PORTS),
    ("port", PORTS),
    ("window", WINDOW),
    ("start", START),
    ("end", END),
    ("reason", REASON),
    ("ticket", TICKET),
    ("access", ACCESS),
];

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

/// The request form as posted (and as shown again after an error): times in plant time, ports
/// as ticked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestForm {
    #[serde(default)]
    device: String,
    #[serde(default, deserialize_with = "list")]
    ports: Vec<String>,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    access: String,
}

impl RequestForm {
    /// The request, through `POST /api/v1/requests`'s body: every rule and message is the API's
    /// for the same mistake, placed at the input it is about.
    fn request(&self, tz: &PlantTime) -> Result<NewRequest, FormError> {
        let ports = self
            .ports
            .iter()
            .map(|p| {
                p.trim().parse::<u32>().map_err(|_| {
                    FormError::invalid(PORTS, format!("'{p}' is not a port number (1..65535)"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let at = |input: Input, text: &str| {
            tz.parse(input.name, text)
                .map(|t| t.to_rfc3339())
                .map_err(|v| FormError::invalid(input, v.message))
        };
        let body = CreateBody {
            device: self.device.clone(),
            ports,
            start: at(START, &self.start)?,
            end: at(END, &self.end)?,
            reason: self.reason.clone(),
            ticket: Some(self.ticket.trim())
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            access: Some(self.access.trim())
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        };
        body.new_request()
            .map_err(|v| FormError::located(v, REQUEST_FIELDS))
    }
}

fn request_form(
    who: &Browser,
    tz: &PlantTime,
    devices: &[Device],
    chosen: Option<&Device>,
    d: &RequestForm,
    problem: Option<&Problem>,
) -> Markup {
    // A message about the device (or its policy) is shown at the device picker.
    let body = html! {
        (error_box(problem))
        form.filters method="get" action="/requests/new" data-testid="device-picker" {
            (field(DEVICE, "", html! {
                select name=(DEVICE.name) data-testid="device-select" {
                    @for dev in devices {
                        option value=(dev.name.as_str())
                            selected[chosen.is_some_and(|c| c.name == dev.name)] {
                            (dev.name.as_str()) " — " (dev.profile.device_type) " (" (dev.profile.site) ")"
                        }
                    }
                }
            }, problem))
            button type="submit" data-testid="device-choose" { "Choose" }
        }
        @if let Some(dev) = chosen {
            form.stack method="post" action="/requests" data-testid="request-form" {
                (csrf(who))
                input type="hidden" name=(DEVICE.name) value=(dev.name.as_str());
                p { "Device " strong { (dev.name.as_str()) } ". Longest window "
                    (format_duration(dev.policy.max_window)) "; "
                    (dev.policy.approvals_required) " approval(s) needed." }
                fieldset.field data-field=(PORTS.name) data-testid="ports" {
                    legend { (PORTS.label) }
                    @for p in &dev.policy.allowed_ports {
                        label {
                            input type="checkbox" name=(PORTS.name) value=(p)
                                checked[d.ports.contains(&p.to_string())]
                                data-testid={ "port-" (p) };
                            (p)
                            @if dev.policy.protocols.contains_key(p) { " (modbus)" }
                        }
                    }
                    (field_error(problem, PORTS))
                }
                @if !dev.policy.protocols.is_empty() {
                    (field(ACCESS, " (on the Modbus ports; read passes reading function codes only)", html! {
                        select name=(ACCESS.name) data-testid="access" {
                            option value="read" selected[d.access != "write"] { "read" }
                            @if dev.policy.writes == WritePolicy::Allowed {
                                option value="write" selected[d.access == "write"] { "write (each write is recorded)" }
                            }
                        }
                    }, problem))
                }
                fieldset.field.window data-field=(WINDOW.name) {
                    legend { (WINDOW.label) " (" (tz.name()) ")" }
                    (field(START, "", html! {
                        input type="datetime-local" name=(START.name) value=(d.start) required
                            data-testid="start";
                    }, problem))
                    (field(END, "", html! {
                        input type="datetime-local" name=(END.name) value=(d.end) required
                            data-testid="end";
                    }, problem))
                    (field_error(problem, WINDOW))
                }
                (field(REASON, "", html! {
                    textarea name=(REASON.name) rows="3" maxlength="1000" required data-testid="reason" { (d.reason) }
                }, problem))
                (field(TICKET, " (optional)", html! {
                    input type="text" name=(TICKET.name) maxlength="100" value=(d.ticket) data-testid="ticket";
                }, problem))
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
    let tz = PlantTime::of_reader(&state, &who);
    let list = requestable(&state, &who).await?;
    let chosen = list
        .iter()
        .find(|d| d.name.as_str() == q.device)
        .or_else(|| (list.len() == 1).then(|| &list[0]));
    let now = state.0.clock.now();
    let draft = RequestForm {
        ports: chosen
            .filter(|d| d.policy.allowed_ports.len() == 1)
            .map(|d| d.policy.allowed_ports.iter().map(Port::to_string).collect())
            .unwrap_or_default(),
        start: tz.input(now),
        end: tz.input(now.saturating_add(Duration::from_secs(3600))),
        ..RequestForm::default()
    };
    Ok(request_form(&who, &tz, &list, chosen, &draft, None).into_response())
}

pub(crate) async fn create(State(state): State<AppState>, p: Posted<RequestForm>) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Vendor])?;
    let tz = PlantTime::of_reader(&state, who);
    let outcome = match p.form.request(&tz) {
        Ok(new) => state
            .0
            .store
            .create_request(&who.0.actor(), &who.0.user, &new)
            .await
            .map_err(|e| FormError::from_store(e, REQUEST_FIELDS)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(_) => Ok(Flash::redirect("/requests", "requested").into_response()),
        Err(e) => {
            let list = requestable(&state, who).await?;
            let chosen = list.iter().find(|d| d.name.as_str() == p.form.device);
            Ok(rerender(e, |problem| {
                // Without a chosen device only the picker is shown: a message about another
                // input goes above it.
                let problem = problem.map(|m| match chosen {
                    None if !m.is_at(DEVICE) => m.whole(),
                    _ => m.clone(),
                });
                request_form(who, &tz, &list, chosen, &p.form, problem.as_ref())
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
    let tz = PlantTime::of_reader(&state, &who);
    let now = state.0.clock.now();
    let title = if vendor {
        "My requests"
    } else {
        "All requests"
    };
    let body = html! {
        (super::supervisor::refresh(&list))
        @if vendor { p { a href="/requests/new" data-testid="new-request" { "New request" } } }
        (requests_table(&list, &tz, now, !vendor))
    };
    Ok(page(title, &who, flash, body).into_response())
}
