//! The page frame: head, the role's navigation, the logout button, flash messages.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use maud::{DOCTYPE, Markup, html};
use portcullis_core::Role;
use portcullis_store::Attention;

use super::form::{CSRF_FIELD, Problem};
use super::session::Browser;

/// A message after a redirect (PRG), named by a fixed code in the `done` query parameter. Only
/// these texts can appear, so a crafted link cannot put words in the service's mouth.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flash(pub Option<&'static str>);

const FLASHES: &[(&str, &str)] = &[
    (
        "enrolled",
        "Enrollment complete. Log in with your password and a code from your app.",
    ),
    ("logged_out", "You are logged out."),
    (
        "logged_out_everywhere",
        "You are logged out everywhere: every session, relay token and live connection of yours has ended.",
    ),
    (
        "requested",
        "Request submitted. A supervisor will review it.",
    ),
    ("approved", "Approved: the grant is ready."),
    (
        "approval_recorded",
        "Approval recorded; this device needs a second supervisor's approval.",
    ),
    ("denied", "Request denied."),
    ("revoked", "Grant revoked."),
    (
        "session_ended",
        "Session ended: the relay cuts it now and the vendor reads your reason. The grant stays \
         approved; revoke it to stop new connections.",
    ),
    ("org_added", "Organisation added."),
    ("device_added", "Device added."),
    ("policy_saved", "Policy saved."),
    ("user_disabled", "User disabled; their sessions have ended."),
    ("user_unlocked", "User unlocked."),
    (
        "account_saved",
        "Saved. Notifications go to the address shown.",
    ),
    ("email_saved", "E-mail address saved."),
    (
        "delivery_retried",
        "Queued: it is tried again within a second.",
    ),
    (
        "site_revoked",
        "Site revoked; its connector is cut off and cannot enroll again.",
    ),
];

impl Flash {
    pub(crate) fn redirect(path: &str, code: &str) -> axum::response::Redirect {
        let sep = if path.contains('?') { '&' } else { '?' };
        axum::response::Redirect::to(&format!("{path}{sep}done={code}"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let code = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| q.get("done").cloned());
        Ok(Flash(code.and_then(|c| {
            FLASHES.iter().find(|(k, _)| *k == c).map(|(_, m)| *m)
        })))
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Portcullis" }
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A page for someone not logged in (login, enrollment, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { span.brand { "Portcullis" } }
                main {
                    h1 data-testid="page-title" { (title) }
                    (body)
                }
            }
        }
    }
}

fn nav_for(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Vendor => &[
            ("/devices", "Devices"),
            ("/requests/new", "New request"),
            ("/requests", "My requests"),
        ],
        Role::Supervisor => &[
            ("/queue", "Queue"),
            ("/grants", "Grants"),
            ("/requests", "All requests"),
        ],
        Role::Auditor => &[
            ("/audit", "Audit log"),
            ("/audit/verify", "Verify"),
            ("/requests", "Requests"),
        ],
        Role::Admin => &[
            ("/admin/users", "Users"),
            ("/admin/orgs", "Organisations"),
            ("/admin/devices", "Devices"),
            ("/admin/sites", "Sites"),
            ("/admin/outbox", "Outbox"),
            ("/grants", "Grants"),
        ],
    }
}

/// "N pending · M live" in the top bar: requests awaiting a decision (a link to the queue for
/// supervisors, who decide them) and live relay sessions (a link to the Grants page).
fn attention(role: Role, a: &Attention) -> Markup {
    html! {
        span.attention data-testid="attention" {
            @if role == Role::Supervisor {
                a href="/queue" data-testid="pending-count" { (a.pending_requests) " pending" }
            } @else {
                span data-testid="pending-count" { (a.pending_requests) " pending" }
            }
            " · "
            a href="/grants" data-testid="live-count" { (a.live_sessions) " live" }
        }
    }
}

/// The hidden anti-CSRF field every form of a logged-in page carries.
pub(crate) fn csrf(who: &Browser) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(who.0.session.csrf_token); }
}

/// The message above a re-rendered form, when it is about the form as a whole (a message about
/// one input is shown at that input: [`super::form::field`]).
pub(crate) fn error_box(problem: Option<&Problem>) -> Markup {
    html! {
        @if let Some(p) = problem.filter(|p| p.at.is_none()) {
            p.error role="alert" data-testid="error" { (p.text) }
        }
    }
}

/// A page for a logged-in user: navigation for their role and a logout button.
pub(crate) fn page(title: &str, who: &Browser, flash: Flash, body: Markup) -> Markup {
    let user = &who.0.user;
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    span.brand { "Portcullis" }
                    nav data-testid="nav" {
                        @for (href, label) in nav_for(user.role) {
                            a href=(href) { (label) }
                        }
                    }
                    @if let Some(a) = &who.1 {
                        (attention(user.role, a))
                    }
                    a.who href="/account" data-testid="whoami" {
                        (user.username.as_str()) " (" (user.role) ")"
                    }
                    form.inline method="post" action="/logout" {
                        (csrf(who))
                        button type="submit" data-testid="logout" { "Log out" }
                    }
                    form.inline method="post" action="/logout-everywhere" {
                        (csrf(who))
                        button type="submit" data-testid="logout-everywhere" { "Log out everywhere" }
                    }
                }
                main {
                    h1 data-testid="page-title" { (title) }
                    @if let Some(m) = flash.0 {
                        p.flash role="status" data-testid="flash" { (m) }
                    }
                    (body)
                }
            }
        }
    }
}
