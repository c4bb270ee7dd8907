//! Form posts from our own pages: the session, the fields, and the anti-CSRF check.

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};

use super::error::PageError;
use super::session::Browser;
use crate::error::ApiError;
use crate::extract::constant_eq;
use crate::state::AppState;

/// The name of the hidden field that carries the session's anti-CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// An `application/x-www-form-urlencoded` body as name/value pairs, in order (checkbox groups
/// repeat a name).
#[derive(Debug, Default, Clone)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "" when absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The trimmed value of `name`, None when absent or blank.
    pub(crate) fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|v| !v.is_empty())
    }

    /// Every value of `name` (checkboxes).
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) async fn parse(req: Request, state: &AppState) -> Result<Self, PageError> {
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|_| ApiError::BadRequest("send the form as a web form".into()))?;
        Ok(Fields(pairs))
    }
}

/// A form posted by a logged-in browser whose `csrf` field matches the session's token. A
/// missing or wrong token is refused with 403 before the handler runs, so nothing changes.
#[derive(Debug)]
pub(crate) struct Posted {
    pub who: Browser,
    pub fields: Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = PageError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let who = Browser::from_request_parts(&mut parts, state).await?;
        let fields = Fields::parse(Request::from_parts(parts, body), state).await?;
        check_csrf(&fields, &who.0.session.csrf_token)?;
        Ok(Posted { who, fields })
    }
}

/// Compares the posted token with the session's in constant time.
pub(crate) fn check_csrf(fields: &Fields, expected: &str) -> Result<(), PageError> {
    if expected.is_empty() || !constant_eq(fields.get(CSRF_FIELD).as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden("missing or wrong anti-CSRF token".into()).into());
    }
    Ok(())
}
