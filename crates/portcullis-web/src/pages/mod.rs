//! The server-rendered web pages: the same rules and the same store calls as the JSON API, for
//! people with a browser.
//!
//! Browser sessions live only in the `__Host-portcullis` cookie. Forms cannot send headers, so
//! every state-changing form carries the session's anti-CSRF token in a hidden `csrf` field
//! ([`form::Posted`] checks it in constant time); the same-Origin middleware applies as well.
//! GET never changes state; after a successful POST the browser is redirected (303) to a page,
//! with a fixed flash message named in the query string ([`layout::Flash`]). Every page is a
//! `maud` template, so user-controlled text is escaped; there are no inline scripts or styles
//! (the CSP is `default-src 'self'`).

mod admin;
mod assets;
mod audit;
mod auth;
mod error;
mod form;
mod layout;
mod live;
mod notify;
mod session;
mod sites;
mod supervisor;
mod time;
mod vendor;
mod views;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub use time::check_time_zone;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(auth::home))
        .route("/static/app.css", get(assets::css))
        .route("/static/app.js", get(assets::js))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/mfa", get(auth::mfa_page).post(auth::mfa))
        .route("/logout", post(auth::logout))
        .route("/logout-everywhere", post(auth::logout_everywhere))
        .route("/enroll", get(auth::enroll_page).post(auth::enroll))
        .route("/enroll/confirm", post(auth::enroll_confirm))
        .route("/devices", get(vendor::devices))
        .route("/requests", get(vendor::requests).post(vendor::create))
        .route("/requests/new", get(vendor::new_request))
        .route("/requests/{id}", get(supervisor::detail))
        .route("/requests/{id}/approve", post(supervisor::approve))
        .route("/requests/{id}/deny", post(supervisor::deny))
        .route("/queue", get(supervisor::queue))
        .route("/grants", get(supervisor::grants))
        .route("/grants/{id}/revoke", post(supervisor::revoke))
        .route("/sessions/live", get(live::fragment))
        .route("/sessions/{id}/end", post(live::end))
        .route("/audit", get(audit::list))
        .route("/audit/grant/{id}", get(audit::grant))
        .route("/audit/verify", get(audit::verify))
        .route("/admin/users", get(admin::users).post(admin::add_user))
        .route("/admin/users/{name}/email", post(notify::set_email))
        .route("/admin/users/{name}/{action}", post(admin::user_action))
        .route("/admin/outbox", get(notify::outbox))
        .route("/admin/outbox/{id}/retry", post(notify::retry))
        .route("/account", get(notify::account).post(notify::save_account))
        .route("/admin/orgs", get(admin::orgs).post(admin::add_org))
        .route(
            "/admin/devices",
            get(admin::devices).post(admin::add_device),
        )
        .route(
            "/admin/devices/{name}",
            get(admin::device).post(admin::set_policy),
        )
        .route("/admin/sites", get(sites::sites).post(sites::add_site))
        .route("/admin/sites/{name}/{action}", post(sites::site_action))
}
