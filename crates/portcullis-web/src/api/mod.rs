//! The JSON API under `/api/v1`. Paths listed in issue 3 are a contract with users' scripts.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod meta;
pub mod openapi;
pub mod sessions;
pub mod sites;

use axum::Router;
use axum::routing::{get, patch, post};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/enroll", post(auth::enroll))
        .route("/enroll/confirm", post(auth::enroll_confirm))
        .route("/auth/login", post(auth::login))
        .route("/auth/mfa", post(auth::mfa))
        .route("/auth/step-up", post(auth::step_up))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/logout-everywhere", post(auth::logout_everywhere))
        .route("/devices", get(access::devices))
        .route("/requests", get(access::list).post(access::create))
        .route("/requests/{id}", get(access::get))
        .route("/requests/{id}/approve", post(access::approve))
        .route("/requests/{id}/deny", post(access::deny))
        .route("/grants/{id}/revoke", post(access::revoke))
        .route("/grants/{id}/token", post(access::token))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}/end", post(sessions::end))
        .route("/keys", get(meta::keys))
        .route("/audit", get(audit::list))
        .route("/audit/export", get(audit::export))
        .route("/audit/verify", get(audit::verify))
        .route("/admin/orgs", get(admin::orgs).post(admin::add_org))
        .route("/admin/users", get(admin::users).post(admin::add_user))
        .route("/admin/users/{name}", patch(admin::set_user))
        .route("/admin/users/{name}/{action}", post(admin::user_action))
        .route("/me", get(admin::me).patch(admin::set_me))
        .route("/admin/outbox", get(admin::outbox))
        .route("/admin/outbox/{id}/retry", post(admin::retry_delivery))
        .route("/admin/devices", post(admin::add_device))
        .route("/admin/devices/{name}/policy", post(admin::set_policy))
        .route("/sites", get(sites::sites))
        .route(
            "/admin/sites",
            get(sites::admin_sites).post(sites::add_site),
        )
        .route("/admin/sites/{name}/revoke", post(sites::revoke))
        .route("/admin/sites/{name}/token", post(sites::new_token))
        .route("/connector/enroll", post(sites::enroll))
        .route("/openapi.json", get(openapi::document))
        .route("/admin/clock", get(clock::status))
        .route("/admin/clock/ack", post(clock::ack))
}
