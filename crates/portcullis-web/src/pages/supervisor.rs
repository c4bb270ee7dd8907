//! The supervisor's pages: the queue of pending requests (and whether each site's connector is
//! online), a request's detail with the approve (TOTP step-up in the same form, optional
//! narrowing) and deny forms, and the grants to revoke.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_core::request::Narrowing;
use portcullis_core::window::format_duration;
use portcullis_core::{Port, RequestState, Role, Window};
use portcullis_store::{RequestFilter, RequestRecord};

use super::error::{PageResult, rerender};
use super::form::{Fields, Posted};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::sites::connectors_section;
use super::time::PlantTime;
use super::views::{ports, requests_table, state as state_badge, window};
use crate::error::{ApiError, ApiResult};
use crate::extract::Authed;
use crate::state::AppState;

pub(crate) async fn queue(State(state): State<AppState>, who: Browser, flash: Flash) -> PageResult {
    who.require(&[Role::Supervisor])?;
    let filter = RequestFilter {
        requester: None,
        state: Some(RequestState::Requested),
    };
    let list = state.0.store.list_requests(&filter).await?;
    let sites = state.0.store.list_sites().await?;
    let tz = PlantTime::of(&state);
    let now = state.0.clock.now();
    let body = html! {
        p.muted { "Open a request to review the device and approve or deny it." }
        (requests_table(&list, &tz, now, true))
        (connectors_section(&sites, &tz, now))
    };
    Ok(page("Pending requests", &who, flash, body).into_response())
}

/// The request, if the caller may see it; vendors see only their own (others are "not found"),
/// as in the API.
async fn visible(state: &AppState, who: &Authed, id: i64) -> ApiResult<RequestRecord> {
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
    detail_page(&state, &who, id, flash, None, None).await
}

/// Renders the detail page, with `error` (and the status the API gives it) when a form failed.
async fn detail_page(
    state: &AppState,
    who: &Browser,
    id: i64,
    flash: Flash,
    error: Option<ApiError>,
    typed: Option<&Fields>,
) -> PageResult {
    who.require(&[Role::Vendor, Role::Supervisor, Role::Auditor])?;
    let rec = visible(state, &who.0, id).await?;
    let device = state.0.store.device(&rec.request.device).await?;
    let tz = PlantTime::of(state);
    let now = state.0.clock.now();
    let render = |msg: Option<&str>| {
        let r = &rec.request;
        let supervisor = who.0.user.role == Role::Supervisor;
        let body = html! {
            (error_box(msg))
            dl.facts data-testid="request" {
                dt { "Requester" } dd { (r.requester.as_str()) " (" (r.org.as_str()) ")" }
                dt { "Device" } dd { (r.device.as_str()) }
                dt { "Ports" } dd data-testid="ports" { (ports(&r.ports)) }
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
                        "ports " (ports(&d.policy.allowed_ports)) "; at most "
                        (format_duration(d.policy.max_window)) "; "
                        (d.policy.approvals_required) " approval(s)"
                    }
                }
            }
            @let mine = r.approvals.iter().any(|a| a.by == who.0.user.username);
            @if supervisor && r.state == RequestState::Requested && mine {
                p.muted data-testid="awaiting-second" { "You approved this request; a second, different supervisor must approve it too." }
            }
            @if supervisor && r.state == RequestState::Requested && !mine {
                h2 { "Approve" }
                form.stack method="post" action={ "/requests/" (rec.id) "/approve" } data-testid="approve-form" {
                    (csrf(who))
                    p.muted { "Untick ports or shorten the window to grant less than was asked." }
                    fieldset { legend { "Ports" }
                        @for p in &r.ports {
                            @let ticked = typed.is_none_or(|f| f.all("ports").any(|v| v == p.to_string()));
                            label { input type="checkbox" name="ports" value=(p) checked[ticked]
                                data-testid={ "approve-port-" (p) }; (p) }
                        }
                    }
                    label { "Start (" (tz.name()) ")"
                        input type="datetime-local" name="start" data-testid="approve-start"
                            value=(typed.map_or_else(|| tz.input(r.window.start), |f| f.get("start").to_owned())); }
                    label { "End (" (tz.name()) ")"
                        input type="datetime-local" name="end" data-testid="approve-end"
                            value=(typed.map_or_else(|| tz.input(r.window.end), |f| f.get("end").to_owned())); }
                    label { "Your authenticator code (confirms it is you)"
                        input type="text" name="totp" inputmode="numeric" pattern="[0-9]{6}"
                            maxlength="6" autocomplete="one-time-code" required data-testid="approve-totp"; }
                    button type="submit" data-testid="approve-submit" { "Approve" }
                }
                h2 { "Deny" }
                form.stack method="post" action={ "/requests/" (rec.id) "/deny" } data-testid="deny-form" {
                    (csrf(who))
                    label { "Reason"
                        input type="text" name="reason" maxlength="1000" required data-testid="deny-reason"; }
                    button.danger type="submit" data-testid="deny-submit" { "Deny" }
                }
            }
            @if who.0.user.role == Role::Auditor {
                p { a href={ "/audit/grant/" (rec.id) } { "Audit timeline" } }
            }
        };
        page(&format!("Request {}", rec.id), who, flash, body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some(e) => rerender(e, |m| render(Some(m))),
    })
}

/// What the approve form narrows. Fields left as shown mean "as requested", so a window with
/// seconds is not cut to the minute the input shows.
fn narrowing(f: &Fields, rec: &RequestRecord, tz: &PlantTime) -> ApiResult<Narrowing> {
    let r = &rec.request;
    let ticked = f
        .all("ports")
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .ok()
                .and_then(|n| Port::new(n).ok())
                .ok_or_else(|| ApiError::Invalid(format!("ports: '{p}' is not a TCP port")))
        })
        .collect::<ApiResult<BTreeSet<Port>>>()?;
    if ticked.is_empty() {
        return Err(ApiError::Invalid("ports: name at least one port".into()));
    }
    let at = |field: &str, shown: &str, current| -> ApiResult<_> {
        let typed = f.get(field).trim();
        if typed.is_empty() || typed == shown {
            Ok(current)
        } else {
            tz.parse(field, typed)
        }
    };
    let start = at("start", &tz.input(r.window.start), r.window.start)?;
    let end = at("end", &tz.input(r.window.end), r.window.end)?;
    let window = (start != r.window.start || end != r.window.end)
        .then(|| Window::new(start, end))
        .transpose()?;
    Ok(Narrowing {
        ports: (ticked != r.ports).then_some(ticked),
        window,
    })
}

/// The shared TOTP step-up, with a wrong code explained in approval terms.
async fn step_up(state: &AppState, who: &Authed, code: &str) -> ApiResult<()> {
    crate::api::auth::step_up_with(state, who, code)
        .await
        .map_err(|e| match e {
            ApiError::LoginFailed => ApiError::Forbidden(
                "the authenticator code is wrong or was already used; nothing was approved. \
                 Wait for the next code and try again"
                    .into(),
            ),
            e => e,
        })
}

pub(crate) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Supervisor])?;
    let tz = PlantTime::of(&state);
    let outcome = async {
        let current = visible(&state, &who.0, id).await?;
        // Read the form first, so a typo does not use up an authenticator code.
        let narrowing = narrowing(&p.fields, &current, &tz)?;
        step_up(&state, &who.0, p.fields.get("totp")).await?;
        let rec = state
            .0
            .store
            .approve_request(&who.0.actor(), &who.0.user, id, &narrowing)
            .await?;
        ApiResult::Ok(rec)
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
        Err(e) => detail_page(&state, who, id, Flash::default(), Some(e), Some(&p.fields)).await,
    }
}

pub(crate) async fn deny(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted,
) -> PageResult {
    let who = &p.who;
    who.require(&[Role::Supervisor])?;
    match state
        .0
        .store
        .deny_request(&who.0.actor(), &who.0.user, id, p.fields.get("reason"))
        .await
    {
        Ok(_) => Ok(Flash::redirect("/queue", "denied").into_response()),
        Err(e) => detail_page(&state, who, id, Flash::default(), Some(e.into()), None).await,
    }
}

fn grants_page(
    who: &Browser,
    list: &[RequestRecord],
    tz: &PlantTime,
    now: portcullis_core::Timestamp,
    flash: Flash,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        (error_box(error))
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
                                input type="text" name="reason" placeholder="reason" required
                                    maxlength="1000" data-testid="revoke-reason";
                                button.danger type="submit" data-testid="revoke-submit" { "Revoke" }
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
    let tz = PlantTime::of(&state);
    Ok(grants_page(&who, &list, &tz, state.0.clock.now(), flash, None).into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted,
) -> PageResult<Response> {
    let who = &p.who;
    who.require(&[Role::Supervisor, Role::Admin])?;
    match state
        .0
        .store
        .revoke_grant(&who.0.actor(), &who.0.user, id, p.fields.get("reason"))
        .await
    {
        Ok(_) => Ok(Flash::redirect("/grants", "revoked").into_response()),
        Err(e) => {
            let list = live_grants(&state).await?;
            let tz = PlantTime::of(&state);
            let now = state.0.clock.now();
            Ok(rerender(e.into(), |m| {
                grants_page(who, &list, &tz, now, Flash::default(), Some(m))
            }))
        }
    }
}
