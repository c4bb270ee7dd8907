//! What can go wrong talking to the broker, said so the vendor knows what to do next.

use crate::printable;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The broker URL or the CA given is unusable; nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// No answer: DNS, TCP, TLS, or a timeout.
    #[error("cannot reach the broker at {url}: {detail}{hint}")]
    Unreachable {
        url: String,
        detail: String,
        hint: &'static str,
    },
    /// The stored session is over (ended by time, logout, or an admin).
    #[error("the session expired: log in again with `portcullis login {url}`")]
    SessionExpired { url: String },
    /// The broker said no, with its own sentence (already meant for people) and code.
    #[error("{message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// The broker answered something this client does not understand.
    #[error("the broker's answer to {what} was not understood: {detail}")]
    BadAnswer { what: &'static str, detail: String },
}

impl ApiError {
    /// The broker's machine-readable error code (`step_up_required`, `login_failed`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The broker wants a fresh authenticator code first (`POST /api/v1/auth/step-up`).
    pub fn is_step_up_required(&self) -> bool {
        self.code() == Some("step_up_required")
    }

    /// Worth retrying later: the broker could not be reached, was overloaded or failed
    /// internally, or could not write its audit log. A "no" about the request itself is not.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Refused { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// An error from the broker's JSON error body `{"error": "...", "code": "..."}`.
    pub(crate) fn from_body(status: u16, body: &[u8], retry_after_secs: Option<u64>) -> Self {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let message = v["error"]
            .as_str()
            .map(|m| printable(m, 500))
            .unwrap_or_else(|| format!("the broker answered HTTP {status}"));
        let code = v["code"]
            .as_str()
            .map(|c| printable(c, 64))
            .unwrap_or_default();
        let message = match retry_after_secs {
            Some(secs) if status == 423 || status == 429 => {
                format!("{message} (retry in {})", crate::when::left(secs_dur(secs)))
            }
            _ => message,
        };
        ApiError::Refused {
            status,
            code,
            message,
            retry_after_secs,
        }
    }

    /// A transport error with its causes, and a hint when the broker's certificate is the
    /// likely problem.
    pub(crate) fn unreachable(url: &str, e: &reqwest::Error) -> Self {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let text = s.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            source = s.source();
        }
        let lower = detail.to_lowercase();
        let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
            " (is the broker's CA trusted? log in with --ca <the CA's PEM file>, e.g. \
             <data-dir>/tls/ca.pem of a development broker)"
        } else {
            ""
        };
        ApiError::Unreachable {
            url: url.to_owned(),
            detail: printable(&detail, 500),
            hint,
        }
    }
}

fn secs_dur(secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_keep_their_sentence_and_code() {
        let e = ApiError::from_body(
            403,
            br#"{"error":"confirm with a fresh authenticator code first (step-up)","code":"step_up_required"}"#,
            None,
        );
        assert!(e.is_step_up_required());
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "confirm with a fresh authenticator code first (step-up)"
        );
    }

    #[test]
    fn lockouts_say_when_to_retry_and_odd_bodies_still_make_a_sentence() {
        let e = ApiError::from_body(
            423,
            br#"{"error":"the account is locked","code":"locked"}"#,
            Some(900),
        );
        assert_eq!(e.to_string(), "the account is locked (retry in 15 min)");
        let e = ApiError::from_body(502, b"<html>bad gateway</html>", None);
        assert_eq!(e.to_string(), "the broker answered HTTP 502");
        assert!(e.is_transient());
        let e = ApiError::from_body(409, b"{\"error\":\"line\\nbreak\",\"code\":\"c\"}", None);
        assert_eq!(e.to_string(), "line break");
    }
}
