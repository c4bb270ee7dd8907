//! The Portcullis approval service: a JSON API under `/api/v1` (what the vendor CLI and scripts
//! use) and, beside it, the web pages. `router(state)` builds the whole service; tests drive it
//! without a socket (`tower::ServiceExt::oneshot`), the binary serves it over HTTPS.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit_check;
mod body;
pub mod error;
pub mod extract;
mod limit;
pub mod pages;
pub mod security;
pub mod serve;
pub mod state;

use axum::Router;
use axum::middleware;
use axum::routing::get;

pub use error::ApiError;
pub use state::{AppState, MetricsSource, WebConfig, WebKeys};

/// Request bodies larger than this are refused before parsing.
const MAX_BODY: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", api::router())
        .route("/healthz", get(api::meta::healthz))
        .route("/readyz", get(api::meta::readyz))
        .route("/metrics", get(api::meta::metrics))
        .merge(pages::router())
        .fallback(|| async { error::ApiError::NotFound("no such page".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::same_origin,
        ))
        // Outside everything that may refuse a request early, so the body is read first.
        .layer(middleware::from_fn(body::read_whole))
        .layer(middleware::from_fn(security::headers))
        .with_state(state)
}
