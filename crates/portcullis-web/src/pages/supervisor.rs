//! The supervisor's pages: the queue of pending requests (and whether each site's connector is
//! online), a request's detail with the approve (TOTP step-up in the same form, optional
//! narrowing) and deny forms and its live sessions, and the grants to revoke with every live
//! session (`live.rs`) to watch and end.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_core::request::Narrowing;
use portcullis_core::window::format_duration;
use portcullis_core::{Access, GrantId, Port, RequestState, Role};
use portcullis_store::{RequestFilter, RequestRecord};
use serde::Deserialize;

use super::error::{PageResult, rerender};
use super::form::access_inputs::{END, PORTS, REASON, START, WINDOW};
use super::form::{FormError, Input, Posted, Problem, field, field_error, list};
use super::layout::{Flash, csrf, error_box, page};
use super::live::{self, Back};
use super::session::Browser;
use super::sites::connectors_section;
use super::time::PlantTime;
use super::views::{
    access as access_badge, policy_ports, port_modes, ports, requests_table, state as state_badge,
    window,
};
use crate::api::access::{ApproveBody, ReasonBody};
use crate::error::{ApiError, ApiResult};
use crate::extract::Authed;
use crate::state::AppState;

const TOTP: Input = Input::new("totp", "Your authenticator code");

/// How often the queue, the grants and the request lists look for changes (issue 15).
const REFRESH_SECS: u32 = 10;

/// The marker `app.js` reads: every [`REFRESH_SECS`] it fetches the page again and reloads it
/// only when this key (the requests listed and their states) differs, and nobody is typing in
/// one of its forms. A list that has not changed is never reloaded under the reader's eyes.
pub(crate) fn refresh(list: &[RequestRecord]) -> Markup {
    let key = list
        .iter()
        .map(|r| format!("{}:{}", r.id, r.request.state.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    html! { span hidden data-refresh=(REFRESH_SECS) data-refresh-key=(key) {} }
}
const ACCESS: Input = Input::new("access", "Modbus access");

/// Core's field names for an approval, at the approve form's inputs.
const APPROVE_FIELDS: &[(&str, Input)] = &[
    ("ports", PORTS),
    ("port", PORTS),
    ("window", WINDOW),
    ("start", START),
    ("end", END),
    ("access", ACCESS),
];

/// Core's field name for a denial's or a revocation's reason.
const REASON_FIELDS: &[(&str, Input)] = &[("reason", REASON)];

pub(crate) async fn queue(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Supervisor])?;
    let filter = RequestFilter {
        requester: None,
        state: Some(RequestState::Requested),
    };
    let list = state.0.store.list_requests(&filter).await?;
    let sites = state.0.store.list_sites().await?;
    let tz = PlantTime::of_reader(&state, &who);
    let now = state.0.clock.now();
    let body = html! {
        (refresh(&list))
        p.muted { "Open a request to review the device and approve or deny it." }
        (requests_table(&list, &tz, now, true))
        (connectors_section(&sites, &tz, now))
    };
    Ok(page("Pending requests", &who, flash, body).into_response())
}

/// The request, if the caller may see it; vendors see only their own (others are "not found"),
/// as in the API.
pub(crate) async fn visible(state: &AppState, who: &Authed, id: i64) -> ApiResult<RequestRecord> {
    match state.0.store.request(id).await? {
        Some(r) if who.user.role != Role::Vendor || r.request.requester == who.user.username => {
            Ok(r)
        }
        _ => Err(ApiError::NotFound(format!("request {id} does not exist"))),
    }
}

pub(crate) async fn detail(
    State(state): State<AppState>,
    who: Browser,
    Path(id): Path<i64>,
    flash: Flash,
) -> PageResult {
    detail_page(&state, &who, id, flash, None).await
}

/// Which form of the detail page failed.
enum DetailError<'a> {
    /// Approve or deny, with the approve form as typed.
    Decision(FormError, Option<&'a ApproveForm>),
    /// "End session" of the session with this id.
    EndSession(&'a str, FormError),
}

/// Renders the detail page, with `error` (and the status the API gives it) when a form failed.
async fn detail_page(
    state: &AppState,
    who: &Browser,
    id: i64,
    flash: Flash,
    error: Option<DetailError<'_>>,
) -> PageResult {
    who.require(&[Role::Vendor, Role::Supervisor, Role::Auditor])?;
    let typed = match &error {
        Some(DetailError::Decision(_, t)) => *t,
        _ => None,
    };
    let failed_session = match &error {
        Some(DetailError::EndSession(s, _)) => Some(*s),
        _ => None,
    };
    let rec = visible(state, &who.0, id).await?;
    let device = state.0.store.device(&rec.request.device).await?;
    let sessions = live::load(state, who, Some(GrantId::new(id))).await?;
    let tz = PlantTime::of_reader(state, who);
    let now = state.0.clock.now();
    let mut cx = live::Context::new(state, who, &tz, Back::Request);
    cx.grant = Some(GrantId::new(id));
    let render = |problem: Option<&Problem>| {
        let r = &rec.request;
        let supervisor = who.0.user.role == Role::Supervisor;
        let mine = r.approvals.iter().any(|a| a.by == who.0.user.username);
        let forms = supervisor && r.state == RequestState::Requested && !mine;
        let live_problem = failed_session.and_then(|s| problem.map(|p| (s, p)));
        let problem = problem.filter(|_| failed_session.is_none());
        // Without the forms (decided meanwhile), a message about an input goes on top.
        let problem = problem.map(|m| if forms { m.clone() } else { m.whole() });
        let problem = problem.as_ref();
        // A refused "End session" is always answered here, even if nothing is live any more.
        let show_live = !sessions.is_empty()
            || failed_session.is_some()
            || matches!(r.state, RequestState::Approved | RequestState::Active);
        let zone = format!(" ({})", tz.name());
        let body = html! {
            (error_box(problem))
            dl.facts data-testid="request" {
                dt { "Requester" } dd { (r.requester.as_str()) " (" (r.org.as_str()) ")" }
                dt { "Device" } dd { (r.device.as_str()) }
                dt { "Ports" } dd data-testid="ports" {
                    @if let Some(d) = &device { (port_modes(r, &d.policy)) } @else { (ports(&r.ports)) }
                }
                dt { "Access" } dd { (access_badge(r.access))
                    @if r.access == Access::Write { " — writes reach the device, each on the record" } }
                dt { "Window (" (tz.name()) ")" } dd { (window(&rec, &tz, now)) }
                dt { "State" } dd { (state_badge(r.state)) }
                dt { "Reason" } dd data-testid="reason" { (r.reason) }
                dt { "Ticket" } dd { (r.ticket.as_deref().unwrap_or("—")) }
                dt { "Submitted" } dd { (tz.show(r.created_at)) }
                @if let Some(why) = &r.closing_reason {
                    dt { "Closed" } dd { (why) @if let Some(by) = &r.closed_by { " — " (by.as_str()) } }
                }
            }
            h2 { "Approvals" }
            @if r.approvals.is_empty() {
                p.muted data-testid="approvals" { "None yet." }
            } @else {
                ul data-testid="approvals" { @for a in &r.approvals {
                    li { (a.by.as_str()) ", " (tz.show(a.at)) }
                } }
            }
            @if let Some(d) = &device {
                h2 { "Device" }
                dl.facts data-testid="device" {
                    @if who.0.user.role != Role::Vendor {
                        dt { "Address" } dd.code { (d.address.as_str()) }
                    }
                    dt { "Criticality" } dd { (d.criticality.as_str()) }
                    dt { "Type" } dd { (d.profile.device_type) }
                    dt { "Site" } dd { (d.profile.site) }
                    dt { "Owner" } dd { (d.profile.owner) }
                    dt { "Vendor" } dd { (d.profile.vendor) }
                    dt { "Purpose" } dd { (d.profile.purpose) }
                    dt { "Data handled" } dd { (d.profile.data_handled) }
                    dt { "Access method" } dd { (d.profile.access_method) }
                    dt { "Firmware" } dd { (d.profile.firmware) }
                    dt { "Support contact" } dd { (d.profile.support_contact) }
                    dt { "Policy" } dd {
                        "ports " (policy_ports(&d.policy)) "; at most "
                        (format_duration(d.policy.max_window)) "; "
                        (d.policy.approvals_required) " approval(s)"
                        @if !d.policy.protocols.is_empty() { "; Modbus writes " (d.policy.writes) }
                    }
                }
            }
            @if supervisor && r.state == RequestState::Requested && mine {
                p.muted data-testid="awaiting-second" { "You approved this request; a second, different supervisor must approve it too." }
            }
            @if forms {
                h2 { "Approve" }
                form.stack method="post" action={ "/requests/" (rec.id) "/approve" } data-testid="approve-form" {
                    (csrf(who))
                    p.muted { "Untick ports or shorten the window to grant less than was asked." }
                    fieldset.field data-field=(PORTS.name) { legend { (PORTS.label) }
                        @for p in &r.ports {
                            @let ticked = typed.is_none_or(|f| f.ports.iter().any(|v| *v == p.to_string()));
                            label { input type="checkbox" name=(PORTS.name) value=(p) checked[ticked]
                                data-testid={ "approve-port-" (p) }; (p) }
                        }
                        (field_error(problem, PORTS))
                    }
                    fieldset.field.window data-field=(WINDOW.name) {
                        legend { (WINDOW.label) (zone) }
                        (field(START, "", html! {
                            input type="datetime-local" name=(START.name) data-testid="approve-start"
                                value=(typed.map_or_else(|| tz.input(r.window.start), |f| f.start.clone()));
                        }, problem))
                        (field(END, "", html! {
                            input type="datetime-local" name=(END.name) data-testid="approve-end"
                                value=(typed.map_or_else(|| tz.input(r.window.end), |f| f.end.clone()));
                        }, problem))
                        (field_error(problem, WINDOW))
                    }
                    @if r.access == Access::Write {
                        fieldset.field data-field=(ACCESS.name) { legend { (ACCESS.label) }
                            @let narrow = typed.is_some_and(|f| f.access == "read");
                            label { input type="radio" name=(ACCESS.name) value="write" checked[!narrow]
                                data-testid="approve-access-write"; strong.access-write { "write" } " (as asked)" }
                            label { input type="radio" name=(ACCESS.name) value="read" checked[narrow]
                                data-testid="approve-access-read"; "read only (narrow)" }
                            (field_error(problem, ACCESS))
                        }
                    }
                    (field(TOTP, " (confirms it is you)", html! {
                        input type="text" name=(TOTP.name) inputmode="numeric" pattern="[0-9]{6}"
                            maxlength="6" autocomplete="one-time-code" required data-testid="approve-totp";
                    }, problem))
                    button type="submit" data-testid="approve-submit" { "Approve" }
                }
                h2 { "Deny" }
                form.stack method="post" action={ "/requests/" (rec.id) "/deny" } data-testid="deny-form" {
                    (csrf(who))
                    (field(REASON, "", html! {
                        input type="text" name=(REASON.name) maxlength="1000" required data-testid="deny-reason";
                    }, problem))
                    button.danger type="submit" data-testid="deny-submit" { "Deny" }
                }
            }
            @if show_live {
                (live::section(&cx, &sessions, live_problem))
            }
            @if who.0.user.role == Role::Auditor {
                p { a href={ "/audit/grant/" (rec.id) } { "Audit timeline" } }
            }
        };
        page(&format!("Request {}", rec.id), who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some(DetailError::Decision(e, _) | DetailError::EndSession(_, e)) => rerender(e, render),
    })
}

/// The detail page of grant `grant` again, after its "End session" form for session `session`
/// was refused with `e`.
pub(crate) async fn detail_after_end(
    state: &AppState,
    who: &Browser,
    grant: GrantId,
    session: &str,
    e: FormError,
) -> PageResult {
    let error = DetailError::EndSession(session, e);
    detail_page(state, who, grant.get(), Flash::default(), Some(error)).await
}

/// The approve form as posted (and as shown again after an error).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveForm {
    #[serde(default, deserialize_with = "list")]
    ports: Vec<String>,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
    #[serde(default)]
    access: String,
    #[serde(default)]
    totp: String,
}

impl ApproveForm {
    /// What the form narrows, through `POST /api/v1/requests/{id}/approve`'s body. Fields left
    /// as shown mean "as requested", so a window with seconds is not cut to the minute the
    /// input shows.
    fn narrowing(&self, rec: &RequestRecord, tz: &PlantTime) -> Result<Narrowing, FormError> {
        let r = &rec.request;
        let ticked = self
            .ports
            .iter()
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| Port::new(n).ok())
                    .ok_or_else(|| FormError::invalid(PORTS, format!("'{p}' is not a TCP port")))
            })
            .collect::<Result<BTreeSet<Port>, _>>()?;
        let at = |input: Input, typed: &str, current| -> Result<Option<String>, FormError> {
            let typed = typed.trim();
            if typed.is_empty() || typed == tz.input(current) {
                return Ok(None);
            }
            let t = tz
                .parse(input.name, typed)
                .map_err(|v| FormError::invalid(input, v.message))?;
            Ok((t != current).then(|| t.to_rfc3339()))
        };
        let body = ApproveBody {
            ports: (ticked != r.ports).then(|| ticked.iter().map(|p| u32::from(p.get())).collect()),
            start: at(START, &self.start, r.window.start)?,
            end: at(END, &self.end, r.window.end)?,
            access: Some(self.access.trim())
                .filter(|a| !a.is_empty() && *a != r.access.as_str())
                .map(str::to_owned),
        };
        body.narrowing(&r.window)
            .map_err(|v| FormError::located(v, APPROVE_FIELDS))
    }
}

/// The shared TOTP step-up, with a wrong code explained in approval terms, at the code's input.
async fn step_up(state: &AppState, who: &Authed, code: &str) -> Result<(), FormError> {
    crate::api::auth::step_up_with(state, who, code)
        .await
        .map_err(|e| match e {
            ApiError::LoginFailed => FormError::at(
                TOTP,
                ApiError::Forbidden(
                    "wrong or already used; nothing was approved. Wait for the next code and \
                     try again"
                        .into(),
                ),
            ),
            e => e.into(),
        })
}

pub(crate) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted<ApproveForm>,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Supervisor])?;
    let tz = PlantTime::of_reader(&state, who);
    let outcome = async {
        let current = visible(&state, &who.0, id).await?;
        // Read the form first, so a typo does not use up an authenticator code.
        let narrowing = p.form.narrowing(&current, &tz)?;
        step_up(&state, &who.0, &p.form.totp).await?;
        let rec = state
            .0
            .store
            .approve_request(&who.0.actor(), &who.0.user, id, &narrowing)
            .await
            .map_err(|e| FormError::from_store(e, APPROVE_FIELDS))?;
        Ok::<_, FormError>(rec)
    }
    .await;
    match outcome {
        Ok(rec) => {
            let done = if rec.request.state == RequestState::Requested {
                "approval_recorded"
            } else {
                "approved"
            };
            Ok(Flash::redirect(&format!("/requests/{id}"), done).into_response())
        }
        Err(e) => {
            let error = DetailError::Decision(e, Some(&p.form));
            detail_page(&state, who, id, Flash::default(), Some(error)).await
        }
    }
}

pub(crate) async fn deny(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted<ReasonBody>,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Supervisor])?;
    match state
        .0
        .store
        .deny_request(&who.0.actor(), &who.0.user, id, &p.form.reason)
        .await
    {
        Ok(_) => Ok(Flash::redirect("/queue", "denied").into_response()),
        Err(e) => {
            let e = FormError::from_store(e, REASON_FIELDS);
            let error = DetailError::Decision(e, None);
            detail_page(&state, who, id, Flash::default(), Some(error)).await
        }
    }
}

fn grants_page(
    who: &Browser,
    list: &[RequestRecord],
    live: Markup,
    tz: &PlantTime,
    now: portcullis_core::Timestamp,
    flash: Flash,
    failed: Option<(i64, &Problem)>,
) -> Markup {
    // A message about the reason goes next to the reason of the grant it is about; if that grant
    // is no longer listed, on top.
    let listed = failed.is_some_and(|(id, _)| list.iter().any(|r| r.id == id));
    let on_top = failed.map(|(_, p)| if listed { p.clone() } else { p.whole() });
    let body = html! {
        (refresh(list))
        (error_box(on_top.as_ref()))
        (live)
        h2 { "Approved and active grants" }
        @if list.is_empty() {
            p.muted data-testid="empty" { "No approved or active grants." }
        } @else {
            table data-testid="grants" {
                thead { tr {
                    th { "#" } th { "Vendor" } th { "Device" } th { "Ports" }
                    th { "Window (" (tz.name()) ")" } th { "State" } th { "Revoke" }
                } }
                tbody { @for r in list {
                    tr data-testid="grant-row" data-id=(r.id) {
                        td {
                            // Admins revoke but do not review requests.
                            @if who.0.user.role == Role::Admin { (r.id) }
                            @else { a href={ "/requests/" (r.id) } { (r.id) } }
                        }
                        td { (r.request.requester.as_str()) " (" (r.request.org.as_str()) ")" }
                        td { (r.request.device.as_str()) }
                        td { (ports(&r.request.ports)) }
                        td { (window(r, tz, now)) }
                        td { (state_badge(r.request.state)) }
                        td {
                            form.inline method="post" action={ "/grants/" (r.id) "/revoke" } data-testid="revoke-form" {
                                (csrf(who))
                                input type="text" name=(REASON.name) placeholder="reason" required
                                    maxlength="1000" aria-label=(REASON.label) data-testid="revoke-reason";
                                button.danger type="submit" data-testid="revoke-submit" { "Revoke" }
                                (field_error(failed.filter(|(id, _)| *id == r.id).map(|(_, p)| p), REASON))
                            }
                        }
                    }
                } }
            }
        }
    };
    page("Grants", who, flash, body)
}

async fn live_grants(state: &AppState) -> ApiResult<Vec<RequestRecord>> {
    let all = state
        .0
        .store
        .list_requests(&RequestFilter::default())
        .await?;
    Ok(all
        .into_iter()
        .filter(|r| {
            matches!(
                r.request.state,
                RequestState::Approved | RequestState::Active
            )
        })
        .collect())
}

pub(crate) async fn grants(
    State(state): State<AppState>,
    who: Browser,
    flash: Flash,
) -> PageResult {
    who.require(&[Role::Supervisor, Role::Admin])?;
    let list = live_grants(&state).await?;
    let sessions = live::load(&state, &who, None).await?;
    let tz = PlantTime::of_reader(&state, &who);
    let cx = live::Context::new(&state, &who, &tz, Back::Grants);
    let live = live::section(&cx, &sessions, None);
    Ok(grants_page(&who, &list, live, &tz, state.0.clock.now(), flash, None).into_response())
}

/// The Grants page again, after the "End session" form of session `session` was refused
/// with `e` (the message at that session's form).
pub(crate) async fn grants_after_end(
    state: &AppState,
    who: &Browser,
    session: &str,
    e: FormError,
) -> PageResult {
    who.require(&[Role::Supervisor, Role::Admin])?;
    let list = live_grants(state).await?;
    let sessions = live::load(state, who, None).await?;
    let tz = PlantTime::of_reader(state, who);
    let now = state.0.clock.now();
    let cx = live::Context::new(state, who, &tz, Back::Grants);
    Ok(rerender(e, |problem| {
        let live = live::section(&cx, &sessions, problem.map(|p| (session, p)));
        grants_page(who, &list, live, &tz, now, Flash::default(), None)
    }))
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted<ReasonBody>,
) -> PageResult<Response> {
    let who = &p.who;
    who.require(&[Role::Supervisor, Role::Admin])?;
    match state
        .0
        .store
        .revoke_grant(&who.0.actor(), &who.0.user, id, &p.form.reason)
        .await
    {
        Ok(_) => Ok(Flash::redirect("/grants", "revoked").into_response()),
        Err(e) => {
            let list = live_grants(&state).await?;
            let sessions = live::load(&state, who, None).await?;
            let tz = PlantTime::of_reader(&state, who);
            let now = state.0.clock.now();
            let cx = live::Context::new(&state, who, &tz, Back::Grants);
            Ok(rerender(
                FormError::from_store(e, REASON_FIELDS),
                |problem| {
                    let failed = problem.map(|p| (id, p));
                    let live = live::section(&cx, &sessions, None);
                    grants_page(who, &list, live, &tz, now, Flash::default(), failed)
                },
            ))
        }
    }
}
