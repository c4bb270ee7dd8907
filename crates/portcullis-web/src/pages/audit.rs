//! The auditor's pages: the log with filters and paging, one grant's timeline, exports (the
//! API's download, which the cookie authorises on GET) and chain verification. Read-only.

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use maud::{Markup, html};
use portcullis_core::Role;
use portcullis_core::audit::AuditEvent;
use portcullis_store::AuditQuery;
use serde::Deserialize;

use super::error::{PageResult, rerender};
use super::form::{FormError, Input, Problem, field};
use super::layout::{Flash, error_box, page};
use super::session::Browser;
use super::time::PlantTime;
use super::views::{state as state_badge, window};
use crate::api::audit::filter;
use crate::audit_check::{self, AuditCheck};
use crate::error::ApiError;
use crate::state::AppState;

const PAGE: i64 = 100;

const SINCE: Input = Input::new("since", "Since");
const UNTIL: Input = Input::new("until", "Until");
const ACTOR: Input = Input::new("actor", "Actor");
const DEVICE: Input = Input::new("device", "Device");
const ACTION: Input = Input::new("action", "Action");

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    after: Option<i64>,
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Filters {
    /// Since and until are read in the plant's time zone, like every time on the pages.
    fn query(&self, tz: &PlantTime) -> Result<AuditQuery, FormError> {
        let at = |input: Input, v: &str| {
            some(v)
                .map(|v| tz.parse(input.name, &v))
                .transpose()
                .map_err(|v| FormError::invalid(input, v.message))
        };
        let text = |input: Input, v: &str| {
            filter(input.name, Some(v.trim())).map_err(|v| FormError::invalid(input, v.message))
        };
        Ok(AuditQuery {
            since: at(SINCE, &self.since)?,
            until: at(UNTIL, &self.until)?,
            actor: text(ACTOR, &self.actor)?,
            action: text(ACTION, &self.action)?,
            device: text(DEVICE, &self.device)?,
            grant_id: None,
            after: self.after,
            limit: Some(PAGE),
        })
    }
}

fn events_table(events: &[AuditEvent], tz: &PlantTime) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted data-testid="empty" { "No events." }
        } @else {
            table data-testid="events" {
                thead { tr {
                    th { "Seq" } th { "Time (" (tz.name()) ")" } th { "Actor" } th { "Role" }
                    th { "Action" } th { "Target" } th { "Grant" } th { "Source" } th { "Details" }
                } }
                tbody { @for e in events {
                    tr data-testid="event-row" data-action=(e.action) {
                        td { (e.seq) }
                        td title=(e.ts.to_rfc3339()) { (tz.show(e.ts)) }
                        td { (e.actor) }
                        td { (e.role) }
                        td data-testid="event-action" { (e.action) }
                        td { (e.target) }
                        td { @if let Some(g) = e.grant_id { a href={ "/audit/grant/" (g) } { (g) } } }
                        td { (e.source.as_deref().unwrap_or("")) }
                        td.details { @if e.details != "{}" && e.details != "null" { (e.details) } }
                    }
                } }
            }
        }
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    who: Browser,
    Query(f): Query<Filters>,
) -> PageResult {
    who.require(&[Role::Auditor])?;
    let tz = PlantTime::of_reader(&state, &who);
    let (q, error) = match f.query(&tz) {
        Ok(q) => (q, None),
        Err(e) => (AuditQuery::default(), Some(e)),
    };
    let events = match error {
        None => state.0.store.audit_events(&q).await?,
        Some(_) => Vec::new(),
    };
    let next = (events.len() as i64 == PAGE)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    let export = |format: &str| {
        let mut href = format!("/api/v1/audit/export?format={format}");
        // RFC 3339 from `to_rfc3339` is digits, '-', ':', '.', 'T' and 'Z': safe in a query.
        if let Some(t) = q.since {
            href += &format!("&since={}", t.to_rfc3339());
        }
        if let Some(t) = q.until {
            href += &format!("&until={}", t.to_rfc3339());
        }
        href
    };
    let zone = format!(" ({})", tz.name());
    let render = |problem: Option<&Problem>| {
        let body = html! {
            (error_box(problem))
            form.filters method="get" action="/audit" data-testid="audit-filters" {
                (field(SINCE, &zone, html! { input type="datetime-local" name=(SINCE.name) value=(f.since) data-testid="filter-since"; }, problem))
                (field(UNTIL, "", html! { input type="datetime-local" name=(UNTIL.name) value=(f.until) data-testid="filter-until"; }, problem))
                (field(ACTOR, "", html! { input type="text" name=(ACTOR.name) value=(f.actor) data-testid="filter-actor"; }, problem))
                (field(DEVICE, "", html! { input type="text" name=(DEVICE.name) value=(f.device) data-testid="filter-device"; }, problem))
                (field(ACTION, "", html! { input type="text" name=(ACTION.name) value=(f.action) placeholder="e.g. request.approve" data-testid="filter-action"; }, problem))
                button type="submit" data-testid="filter-submit" { "Filter" }
                a href="/audit" { "Clear" }
            }
            p {
                "Export (whole log in this time range): "
                a href=(export("csv")) data-testid="export-csv" { "CSV" } " · "
                a href=(export("jsonl")) data-testid="export-jsonl" { "JSON lines" } " · "
                a href="/audit/verify" data-testid="verify-link" { "Verify the chain" }
            }
            (events_table(&events, &tz))
            @if let Some(after) = next {
                form.inline method="get" action="/audit" data-testid="next-page" {
                    @for (k, v) in [("since", &f.since), ("until", &f.until), ("actor", &f.actor), ("device", &f.device), ("action", &f.action)] {
                        @if !v.is_empty() { input type="hidden" name=(k) value=(v); }
                    }
                    input type="hidden" name="after" value=(after);
                    button type="submit" { "Next " (PAGE) " events" }
                }
            }
        };
        page("Audit log", &who, Flash::default(), body)
    };
    Ok(match error {
        None => render(None).into_response(),
        Some(e) => rerender(e, render),
    })
}

pub(crate) async fn grant(
    State(state): State<AppState>,
    who: Browser,
    Path(id): Path<i64>,
) -> PageResult {
    who.require(&[Role::Auditor])?;
    let tz = PlantTime::of_reader(&state, &who);
    let events = state
        .0
        .store
        .audit_events(&AuditQuery {
            grant_id: Some(id),
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    let rec = state.0.store.request(id).await?;
    if rec.is_none() && events.is_empty() {
        return Err(ApiError::NotFound(format!("grant {id} does not exist")).into());
    }
    let now = state.0.clock.now();
    let body = html! {
        @if let Some(r) = &rec {
            p {
                (r.request.requester.as_str()) " → " (r.request.device.as_str())
                " ports " (super::views::ports(&r.request.ports)) ", "
                (window(r, &tz, now)) " " (state_badge(r.request.state))
            }
        }
        (events_table(&events, &tz))
        p { a href="/audit" { "Back to the log" } }
    };
    Ok(page(
        &format!("Timeline of grant {id}"),
        &who,
        Flash::default(),
        body,
    )
    .into_response())
}

pub(crate) async fn verify(State(state): State<AppState>, who: Browser) -> PageResult {
    who.require(&[Role::Auditor])?;
    let body = match audit_check::run(&state).await? {
        AuditCheck::BadCheckpoint(why) => html! {
            p.bad data-testid="verify-result" data-intact="false" {
                "A signed checkpoint does not verify: " (why)
            }
        },
        AuditCheck::Chain {
            outcome: Ok(v),
            guards: true,
            newest_checkpoint,
        } => html! {
            p.ok data-testid="verify-result" data-intact="true" { "Audit log intact." }
            dl.facts {
                dt { "Events" } dd { (v.events) }
                dt { "Head" } dd { "seq " (v.head.seq) }
                dt { "Head hash" } dd.code { (v.head.hash.to_hex()) }
                dt { "Checkpoints" }
                dd data-testid="verify-checkpoints" {
                    @match newest_checkpoint {
                        Some(seq) => { (v.checkpoints_checked) " matched, the newest of seq " (seq) }
                        None => { "none signed yet: events cut from the end of the log would not be seen" }
                    }
                }
            }
        },
        AuditCheck::Chain { outcome: Ok(_), .. } => html! {
            p.bad data-testid="verify-result" data-intact="false" {
                "The chain verifies, but the append-only guard is missing: the database would allow rewriting the log."
            }
        },
        AuditCheck::Chain {
            outcome: Err(b), ..
        } => html! {
            p.bad data-testid="verify-result" data-intact="false" data-first-bad-seq=(b.seq) {
                "Broken at seq " (b.seq) ": " (b.to_string())
            }
        },
    };
    Ok(page("Verify the audit log", &who, Flash::default(), body).into_response())
}
