//! Keys, health and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

/// The relay-token verification keys (JWKS), public.
pub async fn keys(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.0.keys.jwks.clone())
}

/// The process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The database answers and the audit log can be read: otherwise 503 (fail closed).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.0.store.audit_head().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
