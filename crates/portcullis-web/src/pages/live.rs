//! Live sessions on the Grants page and on a request's page (issue 14, point 5): per live
//! session the vendor, device, since when, the client's address, the relay, open streams, bytes
//! each way, the last Modbus operations (with refused requests) and refused streams; and for
//! supervisors and admins an "End session" form (a reason, and an authenticator code when the
//! last step-up is older than the approval rule allows).
//!
//! Refreshing without a reload: the section names its fragment (`data-live-src`, served by
//! [`fragment`] from the same template), which `app.js` fetches every 2 s. The script replaces
//! only the numbers in rows it already shows (`data-live` cells), adds the rows of new sessions
//! and drops those of ended ones, so a reason being typed is never lost. Without JavaScript a
//! reload shows the current numbers.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portcullis_api_types::sessions::{ModbusActivity, RelaySession};
use portcullis_core::{GrantId, Role, Timestamp};
use portcullis_store::{RelaySessionId, SessionFilter};
use serde::Deserialize;

use super::error::{PageError, PageResult};
use super::form::access_inputs::REASON;
use super::form::{FormError, Input, Posted, Problem, field_error};
use super::layout::{Flash, csrf};
use super::session::Browser;
use super::time::PlantTime;
use crate::api::auth::step_up_with;
use crate::api::sessions::{may_end, view};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

const TOTP: Input = Input::new("totp", "Your authenticator code");

/// Core's field names for ending a session, at the form's inputs.
const END_FIELDS: &[(&str, Input)] = &[("reason", REASON)];

/// A report older than this on a live session is shown as stale: its relay is not reporting.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

/// Which page an "End session" form is on, so its answer goes back there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Back {
    Grants,
    Request,
}

impl Back {
    fn as_str(self) -> &'static str {
        match self {
            Back::Grants => "grants",
            Back::Request => "request",
        }
    }
}

/// The live sessions a page shows: all of them (Grants), or one grant's (its request page).
pub(crate) async fn load(
    state: &AppState,
    who: &Browser,
    grant: Option<GrantId>,
) -> Result<Vec<RelaySession>, PageError> {
    let filter = SessionFilter {
        live_only: true,
        vendor: (who.0.user.role == Role::Vendor).then(|| who.0.user.username.clone()),
        grant,
        ..SessionFilter::default()
    };
    let list = state.0.store.relay_sessions(&filter).await?;
    Ok(list.iter().map(view).collect())
}

/// What [`section`] needs besides the sessions.
pub(crate) struct Context<'a> {
    pub who: &'a Browser,
    pub tz: &'a PlantTime,
    pub now: Timestamp,
    pub back: Back,
    /// The grant whose sessions are shown; `None`: every live session.
    pub grant: Option<GrantId>,
    /// Whether the viewer's step-up is fresh (no code needed to end a session).
    pub fresh: bool,
}

impl<'a> Context<'a> {
    pub(crate) fn new(state: &AppState, who: &'a Browser, tz: &'a PlantTime, back: Back) -> Self {
        let now = state.0.clock.now();
        Self {
            who,
            tz,
            now,
            back,
            grant: None,
            fresh: who.0.mfa_fresh(now, state.0.config.step_up_max_age),
        }
    }

    fn src(&self) -> String {
        match self.grant {
            Some(g) => format!("/sessions/live?grant={g}"),
            None => "/sessions/live".into(),
        }
    }
}

/// The section: a table of live sessions (or a line saying there are none), refreshed by
/// app.js from [`Context::src`]. `failed`: an "End session" form that was refused, and why.
pub(crate) fn section(
    cx: &Context<'_>,
    list: &[RelaySession],
    failed: Option<(&str, &Problem)>,
) -> Markup {
    // A message about an input goes to that input of the session's form; anything else (a
    // conflict, a session no longer listed or no longer showing its form) goes on top.
    let at_form = failed.filter(|(id, p)| {
        p.at.is_some()
            && list
                .iter()
                .any(|s| s.id == *id && s.end_requested.is_none())
    });
    let on_top = failed.filter(|_| at_form.is_none()).map(|(_, p)| p.whole());
    let can_end = matches!(cx.who.0.user.role, Role::Supervisor | Role::Admin);
    html! {
        section.live data-testid="live-sessions" data-live-src=(cx.src()) {
            h2 { "Live sessions" }
            @if let Some(p) = &on_top {
                p.error role="alert" data-testid="error" { (p.text) }
            }
            p.muted data-testid="live-empty" data-live-empty hidden[!list.is_empty()] {
                "No live sessions."
            }
            table data-testid="live-table" hidden[list.is_empty()] {
                thead { tr {
                    th { "Vendor" } th { "Device" } th { "Since (" (cx.tz.name()) ")" }
                    th { "Client address" } th { "Relay" } th { "Open streams" }
                    th { "Bytes up" } th { "Bytes down" } th { "Modbus" }
                    th { "Refused streams" } th { "Last report" }
                    @if can_end { th { "End session" } }
                } }
                tbody data-live-rows {
                    @for s in list {
                        (row(cx, s, can_end, at_form.filter(|(id, _)| *id == s.id).map(|(_, p)| p)))
                    }
                }
            }
        }
    }
}

fn row(cx: &Context<'_>, s: &RelaySession, can_end: bool, problem: Option<&Problem>) -> Markup {
    html! {
        tr data-testid="live-session" data-session=(s.id) data-grant=(s.grant) {
            td { (s.vendor.as_str()) }
            td {
                (s.device.as_str()) br;
                span.muted {
                    @if cx.who.0.user.role == Role::Admin { "grant " (s.grant) }
                    @else { a href={ "/requests/" (s.grant) } { "grant " (s.grant) } }
                }
            }
            td { (cx.tz.show(s.started_at)) }
            td.code { (s.source.as_deref().unwrap_or("—")) }
            td { (s.relay) }
            td data-live="open_streams" {
                span data-testid="open-streams" { (s.open_streams) }
            }
            td data-live="bytes_up" { (bytes(s.bytes_up, "bytes-up")) }
            td data-live="bytes_down" { (bytes(s.bytes_down, "bytes-down")) }
            td data-live="modbus" { (modbus(cx, s.modbus.as_ref())) }
            td data-live="refused" {
                span data-testid="refused" class=[(s.refused > 0).then_some("bad")] { (s.refused) }
            }
            td data-live="report" { (report(cx, s)) }
            @if can_end {
                td { (end_form(cx, s, problem)) }
            }
        }
    }
}

/// A byte count people read (`1.21 MiB`), with the exact number for scripts and tooltips.
fn bytes(n: u64, testid: &str) -> Markup {
    html! {
        span data-testid=(testid) data-bytes=(n) title={ (n) " bytes" } { (human_bytes(n)) }
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Display only: the float's rounding is what a person wants here.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

fn modbus(cx: &Context<'_>, m: Option<&ModbusActivity>) -> Markup {
    html! {
        @match m {
            None => span.muted data-testid="modbus" { "—" },
            Some(m) => {
                span data-testid="modbus" {
                    (m.reads) " reads · " (m.writes) " writes · "
                    span class=[(m.refused > 0).then_some("bad")] { (m.refused) " refused" }
                }
                @if !m.last.is_empty() {
                    ol.ops data-testid="modbus-last" {
                        @for op in m.last.iter().rev() {
                            li class=[(op.kind == "refused").then_some("bad")] {
                                (cx.tz.clock(op.at)) " " (op.kind) " fc " (op.function)
                                " unit " (op.unit)
                                @if let Some(a) = op.address { " @" (a) }
                                @if let Some(q) = op.quantity { " ×" (q) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn report(cx: &Context<'_>, s: &RelaySession) -> Markup {
    html! {
        @match s.last_reported_at {
            None => span.muted { "none yet" },
            Some(at) if cx.now.duration_since(at) > STALE_AFTER => {
                span.bad data-testid="stale" {
                    (cx.tz.clock(at)) " (stale: its relay is not reporting)"
                }
            }
            Some(at) => span { (cx.tz.clock(at)) },
        }
    }
}

fn end_form(cx: &Context<'_>, s: &RelaySession, problem: Option<&Problem>) -> Markup {
    html! {
        @if let Some(r) = &s.end_requested {
            span.muted data-testid="ending" { "ending: " (r.by) " asked (" (r.reason) ")" }
        } @else {
            form.inline method="post" action={ "/sessions/" (s.id) "/end" } data-testid="end-form" {
                (csrf(cx.who))
                input type="hidden" name="back" value=(cx.back.as_str());
                span data-field=(REASON.name) {
                    input type="text" name=(REASON.name) placeholder="reason" required
                        size="14" maxlength="1000" aria-label="Reason for ending the session"
                        data-testid="end-reason";
                    (field_error(problem, REASON))
                }
                // The same step-up as an approval: asked for only when the last one is stale,
                // and again (at this input) when it went stale since the page was made.
                @if !cx.fresh || problem.is_some_and(|p| p.is_at(TOTP)) {
                    span data-field=(TOTP.name) {
                        input type="text" name=(TOTP.name) placeholder="code" inputmode="numeric"
                            pattern="[0-9]{6}" maxlength="6" autocomplete="one-time-code" required
                            aria-label=(TOTP.label) data-testid="end-totp";
                        (field_error(problem, TOTP))
                    }
                }
                button.danger type="submit" data-testid="end-submit" { "End session" }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FragmentQuery {
    #[serde(default)]
    grant: Option<i64>,
}

/// `GET /sessions/live[?grant=N]`: the section alone, for app.js. The same visibility as the
/// pages it refreshes: a grant's sessions for whoever may see its request page (vendors: their
/// own), all sessions for supervisors, admins and auditors.
pub(crate) async fn fragment(
    State(state): State<AppState>,
    who: Browser,
    ApiQuery(q): ApiQuery<FragmentQuery>,
) -> PageResult {
    let grant = match q.grant {
        Some(id) => {
            who.require(&[Role::Vendor, Role::Supervisor, Role::Auditor])?;
            super::supervisor::visible(&state, &who.0, id).await?;
            Some(GrantId::new(id))
        }
        None => {
            who.require(&[Role::Supervisor, Role::Admin, Role::Auditor])?;
            None
        }
    };
    let list = load(&state, &who, grant).await?;
    let tz = PlantTime::of_reader(&state, &who);
    let back = if grant.is_some() {
        Back::Request
    } else {
        Back::Grants
    };
    let mut cx = Context::new(&state, &who, &tz, back);
    cx.grant = grant;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        section(&cx, &list, None),
    )
        .into_response())
}

/// The "End session" form as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndForm {
    back: Back,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    totp: String,
}

/// `POST /sessions/{id}/end`: the API's end (same roles, step-up, audit), with the step-up
/// made here first when the form carried a code. Back to the page it came from, or that page
/// again with the message at the form.
pub(crate) async fn end(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted<EndForm>,
) -> PageResult<Response> {
    let who = &p.who;
    who.require(&[Role::Supervisor, Role::Admin])?;
    let outcome = async {
        let sid: RelaySessionId = id.parse().map_err(ApiError::from)?;
        // Read the reason first, so an empty one does not use up an authenticator code.
        if p.form.reason.trim().is_empty() {
            return Err(FormError::invalid(REASON, "must not be empty"));
        }
        let code = p.form.totp.trim();
        let stepped_up = !code.is_empty();
        if stepped_up {
            step_up_with(&state, &who.0, code)
                .await
                .map_err(|e| match e {
                    ApiError::LoginFailed => FormError::at(
                        TOTP,
                        ApiError::Forbidden(
                            "wrong or already used; the session goes on. Wait for the next \
                             code and try again"
                                .into(),
                        ),
                    ),
                    e => e.into(),
                })?;
        }
        may_end(&state, &who.0, stepped_up).map_err(|e| match e {
            ApiError::StepUpRequired => FormError::at(TOTP, e),
            e => e.into(),
        })?;
        state
            .0
            .store
            .request_session_end(&who.0.actor(), &sid, &p.form.reason)
            .await
            .map_err(|e| FormError::from_store(e, END_FIELDS))
    }
    .await;
    match (outcome, p.form.back) {
        (Ok(rec), Back::Request) => Ok(Flash::redirect(
            &format!("/requests/{}", rec.grant),
            "session_ended",
        )
        .into_response()),
        (Ok(_), Back::Grants) => Ok(Flash::redirect("/grants", "session_ended").into_response()),
        (Err(e), Back::Grants) => super::supervisor::grants_after_end(&state, who, &id, e).await,
        (Err(e), Back::Request) => {
            let grant = match id.parse::<RelaySessionId>() {
                Ok(sid) => state.0.store.relay_session(&sid).await?.map(|s| s.grant),
                Err(_) => None,
            };
            match grant {
                Some(g) => super::supervisor::detail_after_end(&state, who, g, &id, e).await,
                None => super::supervisor::grants_after_end(&state, who, &id, e).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_read_like_a_person_would_say_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.00 KiB");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100 MiB");
        assert_eq!(human_bytes(15 * 1024 * 1024 + 300 * 1024), "15.3 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384 PiB");
    }
}
