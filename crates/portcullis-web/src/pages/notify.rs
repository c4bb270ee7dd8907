//! Issue 15's pages: a person's own contact details (`/account`, after a step-up), the admin's
//! outbox (`/admin/outbox`: pending, retrying and failed deliveries, with a retry button), and
//! an admin setting someone's e-mail address from the users page.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use portcullis_api_types::admin::ContactBody;
use portcullis_core::{Role, Username};
use serde::Deserialize;

use super::error::{PageResult, rerender};
use super::form::{FormError, Input, Posted, Problem, field};
use super::layout::{Flash, csrf, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use crate::api::admin::{contact_change, delivery_filter};
use crate::api::auth::step_up_with;
use crate::error::ApiError;
use crate::state::AppState;

const EMAIL: Input = Input::new("email", "E-mail address");
const TIME_ZONE: Input = Input::new("time_zone", "Time zone");
const TOTP: Input = Input::new("totp", "Your authenticator code");

/// Where core's and the store's field names show on the account form.
const CONTACT_FIELDS: &[(&str, Input)] = &[("email", EMAIL), ("time_zone", TIME_ZONE)];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    time_zone: String,
    /// Checkboxes: present when ticked.
    #[serde(default)]
    notify_sessions: Option<String>,
    #[serde(default)]
    notify_alerts: Option<String>,
    #[serde(default)]
    totp: String,
}

impl AccountForm {
    fn body(&self, role: Role) -> ContactBody {
        ContactBody {
            email: Some(self.email.clone()),
            time_zone: Some(self.time_zone.clone()),
            notify_sessions: (role == Role::Supervisor).then_some(self.notify_sessions.is_some()),
            notify_alerts: (role != Role::Admin && role != Role::Vendor)
                .then_some(self.notify_alerts.is_some()),
        }
    }
}

fn account_page(
    state: &AppState,
    who: &Browser,
    flash: Flash,
    typed: Option<&AccountForm>,
    problem: Option<&Problem>,
) -> maud::Markup {
    let u = &who.0.user;
    let email = typed.map_or_else(
        || u.email.as_ref().map(|e| e.to_string()).unwrap_or_default(),
        |t| t.email.clone(),
    );
    let zone = typed.map_or_else(
        || {
            u.time_zone
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default()
        },
        |t| t.time_zone.clone(),
    );
    let fresh = who
        .0
        .mfa_fresh(state.0.clock.now(), state.0.config.step_up_max_age);
    let body = html! {
        (error_box(problem))
        p { "Notifications go to this address: new requests and second approvals for supervisors, decisions, revokes and the end of your window for vendors, alerts for admins. They carry links only; approving still takes a login and a code." }
        form.stack method="post" action="/account" data-testid="account-form" {
            (csrf(who))
            (field(EMAIL, " (empty: no e-mail)", html! {
                input type="email" name=(EMAIL.name) value=(email) maxlength="254" data-testid="account-email";
            }, problem))
            (field(TIME_ZONE, &format!(" (empty: the plant's, {})", state.0.config.time_zone), html! {
                input type="text" name=(TIME_ZONE.name) value=(zone) placeholder="Europe/Berlin" data-testid="account-time-zone";
            }, problem))
            @if u.role == Role::Supervisor {
                label { input type="checkbox" name="notify_sessions" value="on" checked[u.notify_sessions] data-testid="account-notify-sessions"; " Tell me when a session starts or ends" }
            }
            @if u.role == Role::Supervisor || u.role == Role::Auditor {
                label { input type="checkbox" name="notify_alerts" value="on" checked[u.notify_alerts] data-testid="account-notify-alerts"; " Send me alerts" }
            }
            @if !fresh {
                (field(TOTP, " (changing where your notices go needs a fresh code)", html! {
                    input type="text" name=(TOTP.name) inputmode="numeric" pattern="[0-9]{6}"
                        maxlength="6" autocomplete="one-time-code" required data-testid="account-totp";
                }, problem))
            }
            button type="submit" data-testid="account-save" { "Save" }
        }
    };
    page("Account", who, flash, body)
}

pub(crate) async fn account(
    State(state): State<AppState>,
    who: Browser,
    flash: Flash,
) -> PageResult {
    Ok(account_page(&state, &who, flash, None, None).into_response())
}

pub(crate) async fn save_account(
    State(state): State<AppState>,
    p: Posted<AccountForm>,
) -> PageResult<Response> {
    let who = &p.who;
    let outcome = async {
        // Check what was typed first, so a typo does not use up an authenticator code.
        let change = contact_change(&p.form.body(who.0.user.role))
            .map_err(|v| FormError::located(v, CONTACT_FIELDS))?;
        let fresh = who
            .0
            .mfa_fresh(state.0.clock.now(), state.0.config.step_up_max_age);
        if !fresh {
            let code = p.form.totp.trim();
            if code.is_empty() {
                return Err(FormError::at(TOTP, ApiError::StepUpRequired));
            }
            step_up_with(&state, &who.0, code)
                .await
                .map_err(|e| match e {
                    ApiError::LoginFailed => FormError::at(
                        TOTP,
                        ApiError::Forbidden(
                            "wrong or already used; nothing was changed. Wait for the next code \
                         and try again"
                                .into(),
                        ),
                    ),
                    e => e.into(),
                })?;
        }
        state
            .0
            .store
            .set_contact(&who.0.actor(), &who.0.user.username, &change)
            .await
            .map_err(|e| FormError::from_store(e, CONTACT_FIELDS))
    }
    .await;
    match outcome {
        Ok(_) => Ok(Flash::redirect("/account", "account_saved").into_response()),
        Err(e) => Ok(rerender(e, |problem| {
            account_page(&state, who, Flash::default(), Some(&p.form), problem)
        })),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailForm {
    #[serde(default)]
    email: String,
}

/// `POST /admin/users/{name}/email` from the users page.
pub(crate) async fn set_email(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted<EmailForm>,
) -> PageResult<Response> {
    let who = &p.who;
    who.require(&[Role::Admin])?;
    let name = Username::parse(&name).map_err(ApiError::from)?;
    let change = contact_change(&ContactBody {
        email: Some(p.form.email.clone()),
        ..Default::default()
    })
    .map_err(ApiError::from)?;
    state
        .0
        .store
        .set_contact(&who.0.actor(), &name, &change)
        .await
        .map_err(ApiError::from)?;
    Ok(Flash::redirect("/admin/users", "email_saved").into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboxFilter {
    #[serde(default)]
    state: Option<String>,
}

pub(crate) async fn outbox(
    State(state): State<AppState>,
    who: Browser,
    flash: Flash,
    Query(q): Query<OutboxFilter>,
) -> PageResult {
    who.require(&[Role::Admin])?;
    let filter = delivery_filter(q.state.as_deref())?;
    let store = &state.0.store;
    let counts = store.outbox_stats().await?;
    let list = store.deliveries(filter, 200).await?;
    let tz = PlantTime::of_reader(&state, &who);
    let body = html! {
        p data-testid="outbox-counts" {
            a href="/admin/outbox?state=pending" { (counts.pending) " pending" }
            " (" (counts.retrying) " retrying) · "
            a href="/admin/outbox?state=failed" data-testid="outbox-failed" { (counts.failed) " failed" }
            " · "
            a href="/admin/outbox?state=delivered" { (counts.delivered) " delivered" }
            " · "
            a href="/admin/outbox" { "all" }
        }
        h2 { "Settings" }
        @let settings = state.0.settings_summary.get().cloned().unwrap_or_default();
        @if settings.is_empty() {
            p data-testid="outbox-settings" { "Nothing is configured to send to: notices are kept here, not sent. Add [smtp] or [[webhook]] to the config file." }
        } @else {
            table data-testid="outbox-settings" {
                tbody { @for (k, v) in &settings { tr { th { (k) } td { (v) } } } }
            }
        }
        h2 { "Deliveries" }
        p { "Each notice is kept here from the moment its event is committed. A failed try is retried with growing waits; one that has used up its tries is failed until you retry it. A failure never affects the action that caused it." }
        table data-testid="outbox" {
            thead { tr { th { "#" } th { "Event" } th { "To" } th { "Subject" } th { "State" } th { "Tries" } th { "Next try / delivered" } th { "Last error" } th {} } }
            tbody { @for d in &list {
                tr data-testid="delivery-row" data-delivery=(d.id) data-state=(d.state) {
                    td { (d.id) }
                    td { (d.action) @if let Some(s) = d.event_seq { " (#" (s) ")" } }
                    td { (d.channel.as_str()) ": " (d.recipient) }
                    td { (d.subject) }
                    td data-testid="delivery-state" { (d.state) }
                    td { (d.attempts) }
                    td { @match (&d.delivered_at, d.state.as_str()) {
                        (Some(t), _) => { (tz.show(*t)) }
                        (None, "pending") => { (tz.show(d.next_attempt_at)) }
                        _ => { "—" }
                    } }
                    td.error-text { (d.last_error.as_deref().unwrap_or("")) }
                    td { @if d.state != "delivered" {
                        form.inline method="post" action={ "/admin/outbox/" (d.id) "/retry" } {
                            (csrf(&who))
                            button type="submit" data-testid={ "retry-" (d.id) } { "Retry now" }
                        }
                    } }
                }
            } }
        }
    };
    Ok(page("Outbox", &who, flash, body).into_response())
}

pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    p: Posted,
) -> PageResult<Response> {
    p.who.require(&[Role::Admin])?;
    state
        .0
        .store
        .retry_delivery(&p.who.0.actor(), id)
        .await
        .map_err(ApiError::from)?;
    Ok(Flash::redirect("/admin/outbox", "delivery_retried").into_response())
}
