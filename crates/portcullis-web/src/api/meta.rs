//! Keys, health and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::error::ApiError;
use crate::extract::ClientAddr;
use crate::state::AppState;

/// The relay-token verification keys (JWKS), public. Built once by `portcullis-auth`
/// (`KeyRing::jwks`, RFC 7517), served as it is; the document names the members every key has.
#[utoipa::path(get, path = "/api/v1/keys", summary = "Relay-token verification keys (JWKS)",
    responses((status = 200, description = "JWKS", body = portcullis_api_types::Jwks)))]
pub async fn keys(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.0.keys.jwks.clone())
}

/// The process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The audit log can be written (the last write or write probe worked) and read: otherwise
/// 503 (fail closed). A full disk still lets the head be read, so the write mark comes first.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if let Err(why) = state.0.store.audit_writable() {
        tracing::warn!(error = %why, "not ready: the audit log cannot be written");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "audit log cannot be written",
        );
    }
    match state.0.store.audit_head().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// Prometheus text: the service's own gauge and whatever the binary wired in (the relay's
/// counters when `serve` runs both). Answered only to clients on this machine (loopback): the
/// counts say who is connected when, which is not for the internet side of a broker.
pub async fn metrics(
    State(state): State<AppState>,
    addr: ClientAddr,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    if !addr.ip().is_loopback() {
        return Err(ApiError::Forbidden(
            "metrics are served to this machine only; scrape from the broker host".into(),
        ));
    }
    let mut text = String::from(
        "# HELP portcullis_web_up The web service answers.\n# TYPE portcullis_web_up gauge\nportcullis_web_up 1\n",
    );
    text.push_str(&crate::api::clock::metrics_text(&state));
    if let Some(source) = state.0.metrics.0.get() {
        text.push_str(&source());
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
