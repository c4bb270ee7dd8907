//! Headers on every response (errors included) and the same-origin rule for state changes.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::extract::is_safe;
use crate::state::AppState;

const CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
                   form-action 'self'; img-src 'self' data:";

/// Adds HSTS, CSP, nosniff, referrer and framing rules to every response.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let cache_set = h.contains_key(header::CACHE_CONTROL);
    let mut set = |name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=63072000; includeSubDomains",
    );
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Not `no-referrer`: under it browsers send `Origin: null` with form posts, which the
    // same-origin check must refuse. `same-origin` still tells other sites nothing.
    set(header::REFERRER_POLICY, "same-origin");
    set(header::X_FRAME_OPTIONS, "DENY");
    if !cache_set {
        set(header::CACHE_CONTROL, "no-store");
    }
    resp
}

/// Refuses a state-changing request whose `Origin` is not ours (CSRF from another site). Clients
/// that send no `Origin` (the CLI) pass here; cookie sessions still need the anti-CSRF token.
pub async fn same_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_safe(req.method())
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && origin.as_bytes() != state.0.config.public_origin.as_bytes()
    {
        return ApiError::Forbidden("cross-origin request refused".into()).into_response();
    }
    next.run(req).await
}
