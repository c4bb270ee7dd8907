//! The one API error type. Each variant maps to a status code and a message a person can act on;
//! internal causes go to the log, never into a response (no SQL, no stack traces).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but a field is wrong (unknown field, bad port, reversed window, policy).
    #[error("{0}")]
    Invalid(String),
    /// The body is larger than the service reads (`MAX_BODY` in lib.rs).
    #[error("the request body is too large (at most 64 KiB)")]
    TooLarge,
    /// No valid session.
    #[error("log in first")]
    Unauthenticated,
    /// The generic login failure: unknown user, wrong password and wrong code look the same.
    #[error("wrong username, password or code")]
    LoginFailed,
    #[error(
        "the account is locked after too many failed attempts; try again later or ask an admin to unlock it"
    )]
    Locked { retry_after_secs: u64 },
    #[error("too many attempts; slow down")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("confirm with a fresh authenticator code first (step-up)")]
    StepUpRequired,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The database or the audit log cannot take the action: fail closed.
    #[error(
        "the service cannot record this action right now; nothing was changed, try again shortly"
    )]
    Unavailable,
    #[error("internal error")]
    Internal,
    /// The wall clock stepped against the monotonic clock (issue 12): fail closed.
    #[error(
        "the broker's clock was stepped, so no relay token is issued until the clocks agree again or an admin confirms the time (portcullis admin clock ack)"
    )]
    ClockAnomaly,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthenticated | ApiError::LoginFailed => StatusCode::UNAUTHORIZED,
            ApiError::Locked { .. } => StatusCode::LOCKED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) | ApiError::StepUpRequired => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ClockAnomaly => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable machine-readable code beside the message.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid(_) => "invalid",
            ApiError::TooLarge => "too_large",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::LoginFailed => "login_failed",
            ApiError::Locked { .. } => "locked",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::StepUpRequired => "step_up_required",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
            ApiError::ClockAnomaly => "clock_anomaly",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(v) => ApiError::Invalid(v.to_string()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            e @ StoreError::TokenReused => ApiError::Conflict(e.to_string()),
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Forbidden(m) => ApiError::Forbidden(m),
            e if e.is_unavailable() => {
                tracing::error!(error = %e, "database unavailable: refusing the action");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %e, "store error");
                ApiError::Internal
            }
        }
    }
}

impl From<portcullis_core::ValidationError> for ApiError {
    fn from(v: portcullis_core::ValidationError) -> Self {
        ApiError::Invalid(v.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = match &self {
            ApiError::Locked { retry_after_secs }
            | ApiError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let body = portcullis_api_types::ErrorBody {
            error: self.to_string(),
            code: self.code().to_owned(),
        };
        let mut resp = (self.status(), Json(body)).into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
