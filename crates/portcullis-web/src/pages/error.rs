//! How a page answers when something is refused: an HTML page with the API's status code and
//! message (never internals), or a redirect to the login page when there is no session.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::form::{FormError, Problem};
use super::layout;
use crate::error::ApiError;

#[derive(Debug)]
pub(crate) enum PageError {
    /// No live browser session: log in first.
    Login,
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthenticated => PageError::Login,
            e => PageError::Api(e),
        }
    }
}

impl From<portcullis_store::StoreError> for PageError {
    fn from(e: portcullis_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<portcullis_core::ValidationError> for PageError {
    fn from(e: portcullis_core::ValidationError) -> Self {
        ApiError::from(e).into()
    }
}

pub(crate) type PageResult<T = Response> = Result<T, PageError>;

/// The message and the response parts (status, `Retry-After`) the API gives for `e`, so pages
/// and API never disagree on what an error means.
pub(crate) fn parts(e: ApiError) -> (String, Response) {
    let message = e.to_string();
    (message, e.into_response())
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Login => Redirect::to("/login").into_response(),
            PageError::Api(e) => {
                let (message, api) = parts(e);
                let status = api.status();
                let body = layout::bare(
                    "Not possible",
                    html! {
                        p.error data-testid="error" { (message) }
                        p { a href="/" { "Back to the start page" } }
                    },
                );
                let mut resp = (status, body).into_response();
                if let Some(v) = api.headers().get(header::RETRY_AFTER) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
                }
                resp
            }
        }
    }
}

/// Re-renders a form with the error's message (at its input, or above the form), under the
/// status (and `Retry-After`) the API gives the same error.
pub(crate) fn rerender(
    e: impl Into<FormError>,
    render: impl FnOnce(Option<&Problem>) -> maud::Markup,
) -> Response {
    let e = e.into();
    if matches!(e.error, ApiError::Unauthenticated) {
        return PageError::Login.into_response();
    }
    let problem = e.problem();
    let (_, api) = parts(e.error);
    let mut resp = (api.status(), render(Some(&problem))).into_response();
    if let Some(v) = api.headers().get(header::RETRY_AFTER) {
        resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    resp
}
