//! The browser's session: the `__Host-portcullis` cookie only (never a bearer token), fully
//! logged in (password and TOTP), on an enabled account. The password-only stage lives in its
//! own short-lived cookie and can do nothing but submit the TOTP code.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use portcullis_core::Role;
use portcullis_store::{Attention, Stage};

use super::error::PageError;
use crate::extract::{Authed, ClientAddr, SESSION_COOKIE, Via, cookie};
use crate::state::AppState;

/// The password-stage cookie: holds the `Stage::Mfa` token between the two login forms.
pub(crate) const MFA_COOKIE: &str = "__Host-portcullis-mfa";

/// A logged-in browser user. Wraps [`Authed`] so the API's helpers (`actor`, `require`,
/// `mfa_fresh`) apply unchanged; for supervisors and admins also what the top bar counts
/// (pending requests, live sessions).
#[derive(Debug, Clone)]
pub(crate) struct Browser(pub Authed, pub Option<Attention>);

impl FromRequestParts<AppState> for Browser {
    type Rejection = PageError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let addr = ClientAddr::from_request_parts(parts, state).await?;
        let token = cookie(parts, SESSION_COOKIE).ok_or(PageError::Login)?;
        let inner = &state.0;
        let session = inner
            .store
            .session(&token, &inner.config.sessions)
            .await?
            .filter(|s| s.stage == Stage::Full)
            .ok_or(PageError::Login)?;
        let user = inner.store.user_by_id(session.user_id).await?;
        if user.disabled_at.is_some() {
            return Err(PageError::Login);
        }
        let attention = match user.role {
            Role::Supervisor | Role::Admin => match inner.store.attention().await {
                Ok(a) => Some(a),
                // The counts are a convenience: the page itself still answers (or fails on
                // its own reads).
                Err(e) => {
                    tracing::warn!("cannot count pending requests and live sessions: {e}");
                    None
                }
            },
            _ => None,
        };
        Ok(Browser(
            Authed {
                user,
                session,
                token,
                via: Via::Cookie,
                addr,
            },
            attention,
        ))
    }
}

impl Browser {
    /// Refuses (403) a user whose role may not see this page.
    pub(crate) fn require(&self, roles: &[Role]) -> Result<(), PageError> {
        Ok(self.0.require(roles)?)
    }
}

/// Where each role starts.
pub(crate) fn home_of(role: Role) -> &'static str {
    match role {
        Role::Vendor => "/requests",
        Role::Supervisor => "/queue",
        Role::Auditor => "/audit",
        Role::Admin => "/admin/users",
    }
}

/// A `__Host-` cookie: Secure, HttpOnly, SameSite=Strict, Path=/ (no Domain).
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    )
}

pub(crate) fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", Duration::ZERO)
}
