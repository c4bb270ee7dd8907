//! Request extractors: the caller's address, JSON bodies with clear errors, and the logged-in
//! user with CSRF protection for cookie sessions.

use std::net::{IpAddr, SocketAddr};

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use portcullis_core::audit::ActorRole;
use portcullis_core::{Role, Timestamp};
use portcullis_store::{AuditActor, Session, Stage, UserRecord};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie. `__Host-` makes the browser insist on Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-portcullis";
/// Header carrying the anti-CSRF token for cookie-authenticated requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The peer's IP address (None in socket-less tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl ClientAddr {
    pub fn source(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
    pub fn ip(&self) -> IpAddr {
        self.0.unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }
}

/// `Json<T>` whose rejections speak our error format: malformed JSON is 400, a well-formed body
/// with unknown or wrongly typed fields is 422 naming the field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Invalid(clean(&e.body_text()))),
            Err(JsonRejection::JsonSyntaxError(e)) => {
                Err(ApiError::BadRequest(clean(&e.body_text())))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
            Err(e) => Err(ApiError::BadRequest(clean(&e.body_text()))),
        }
    }
}

/// An optional JSON body (see [`optional_json`]), read with the same size limit and errors as
/// [`ApiJson`].
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
                _ => ApiError::BadRequest(e.body_text()),
            })?;
        optional_json(&bytes).map(OptionalJson)
    }
}

/// `Query<T>` whose rejection speaks our error format: an unknown or malformed parameter is 422
/// naming it, like a bad JSON field (axum's own rejection is a plain-text 400).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::Invalid(clean(&e.body_text()))),
        }
    }
}

/// `Path<T>` whose rejection speaks our error format: `/requests/abc` is 422 naming the bad
/// segment, not axum's plain-text 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if e.status().is_client_error() =>
            {
                Err(ApiError::Invalid(path_message(e.kind())))
            }
            // The route and the handler disagree about the parameters: our bug, not the caller's.
            Err(e) => {
                tracing::error!(error = %e.body_text(), "path parameters do not fit the handler");
                Err(ApiError::Internal)
            }
        }
    }
}

fn path_message(kind: &ErrorKind) -> String {
    // The caller's text comes back in the message: bounded, so a long path makes a short error.
    let shown = |v: &str| v.chars().take(64).collect::<String>();
    let want = |ty: &str| {
        if ty.starts_with('i') || ty.starts_with('u') {
            "is not a whole number in range"
        } else {
            "is not valid here"
        }
    };
    match kind {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => format!("{key}: '{}' {}", shown(value), want(expected_type)),
        ErrorKind::ParseError {
            value,
            expected_type,
        }
        | ErrorKind::ParseErrorAtIndex {
            value,
            expected_type,
            ..
        } => format!("path: '{}' {}", shown(value), want(expected_type)),
        ErrorKind::InvalidUtf8InPathParam { key } => {
            format!("{key}: not valid UTF-8 once percent-decoded")
        }
        other => other.to_string(),
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise the same rules as [`ApiJson`].
pub fn optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })
}

/// serde's message without axum's prefix, e.g. "ports[0]: invalid value: 70000 is not a TCP port".
fn clean(text: &str) -> String {
    text.trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        .trim_start_matches("Failed to parse the request body as JSON: ")
        .trim_start_matches("Failed to deserialize query string: ")
        .to_owned()
}

/// How the session token arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

/// A logged-in user (password and TOTP done) with a live session.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: UserRecord,
    pub session: Session,
    pub token: String,
    pub via: Via,
    pub addr: ClientAddr,
}

impl Authed {
    pub fn actor(&self) -> AuditActor {
        AuditActor {
            name: self.user.username.to_string(),
            role: ActorRole::from(self.user.role),
            source: self.addr.source(),
        }
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} account cannot do this",
                self.user.role
            )))
        }
    }

    /// True when the last TOTP check of this session is within `max_age` of `now`.
    pub fn mfa_fresh(&self, now: Timestamp, max_age: std::time::Duration) -> bool {
        self.session
            .step_up_at
            .is_some_and(|t| now.duration_since(t) < max_age && t <= now)
    }
}

pub fn bearer_or_cookie(parts: &Parts) -> Option<(String, Via)> {
    if let Some(auth) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(token) = auth.strip_prefix("Bearer ")
    {
        return Some((token.trim().to_owned(), Via::Bearer));
    }
    cookie(parts, SESSION_COOKIE).map(|t| (t, Via::Cookie))
}

pub fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let addr = ClientAddr::from_request_parts(parts, state).await?;
        let (token, via) = bearer_or_cookie(parts).ok_or(ApiError::Unauthenticated)?;
        let inner = &state.0;
        let session = inner
            .store
            .session(&token, &inner.config.sessions)
            .await?
            .filter(|s| s.stage == Stage::Full)
            .ok_or(ApiError::Unauthenticated)?;
        // A browser attaches cookies to any request, including one forged by another site, so
        // state changes over a cookie session must also carry the token only our pages know.
        if via == Via::Cookie && !is_safe(&parts.method) {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_eq(sent.as_bytes(), session.csrf_token.as_bytes()) {
                return Err(ApiError::Forbidden(
                    "missing or wrong anti-CSRF token".into(),
                ));
            }
        }
        let user = inner.store.user_by_id(session.user_id).await?;
        if user.disabled_at.is_some() {
            return Err(ApiError::Unauthenticated);
        }
        Ok(Authed {
            user,
            session,
            token,
            via,
            addr,
        })
    }
}

pub fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
