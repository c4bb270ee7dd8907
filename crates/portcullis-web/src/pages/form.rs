//! Form posts from our own pages: the session, the anti-CSRF check, the typed body, and errors
//! that belong to one input.
//!
//! A posted form deserializes into a struct (the API's request body where the API has one), so
//! the template and the handler cannot drift apart by a misspelt field name: an unknown field is
//! refused, not read as "". A value that is wrong is reported at its input, named by the label
//! the person sees ("Longest window: ..."), not by a command-line flag or a JSON key.

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use maud::{Markup, html};
use portcullis_core::ValidationError;
use portcullis_store::StoreError;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};

use super::error::PageError;
use super::session::Browser;
use crate::error::ApiError;
use crate::extract::constant_eq;
use crate::state::AppState;

/// The name of the hidden field that carries the session's anti-CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// The inputs a vendor's request and a supervisor's approval share: the targets, the window and
/// the reason, labelled the same on both forms.
pub(crate) mod access_inputs {
    use super::Input;

    pub(crate) const PORTS: Input = Input::new("ports", "Ports");
    pub(crate) const WINDOW: Input = Input::new("window", "Window");
    pub(crate) const START: Input = Input::new("start", "Start");
    pub(crate) const END: Input = Input::new("end", "End");
    pub(crate) const REASON: Input = Input::new("reason", "Reason");
}

/// An input of a form: the `name` it posts under and the label people read. Messages about it
/// start with the label, so they speak of what is on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Input {
    pub name: &'static str,
    pub label: &'static str,
}

impl Input {
    pub(crate) const fn new(name: &'static str, label: &'static str) -> Self {
        Self { name, label }
    }
}

/// Why a posted form was refused: the API's error (its status and `Retry-After` are the page's
/// too) and the input it is about, if it is about one.
#[derive(Debug)]
pub(crate) struct FormError {
    pub at: Option<Input>,
    pub error: ApiError,
}

impl FormError {
    /// A value of `input` is wrong: 422 with `message` (which does not repeat the field).
    pub(crate) fn invalid(input: Input, message: impl Into<String>) -> Self {
        Self::at(input, ApiError::Invalid(message.into()))
    }

    pub(crate) fn at(input: Input, error: ApiError) -> Self {
        Self {
            at: Some(input),
            error,
        }
    }

    /// A core validation error, placed at the input that `map` names for its field (core names
    /// fields as the CLI does: `max-window`, `type`); a field the form does not have is reported
    /// for the whole form.
    pub(crate) fn located(v: ValidationError, map: &[(&str, Input)]) -> Self {
        match map.iter().find(|(field, _)| *field == v.field) {
            Some((_, input)) => Self::invalid(*input, v.message),
            None => ApiError::from(v).into(),
        }
    }

    /// A store error: a validation failure at its input (as [`FormError::located`]), anything
    /// else (a conflict, a missing device, the database) for the whole form.
    pub(crate) fn from_store(e: StoreError, map: &[(&str, Input)]) -> Self {
        match e {
            StoreError::Invalid(v) => Self::located(v, map),
            e => ApiError::from(e).into(),
        }
    }

    /// What the page shows and where.
    pub(crate) fn problem(&self) -> Problem {
        match self.at {
            Some(input) => Problem {
                at: Some(input.name),
                text: format!("{}: {}", input.label, self.error),
            },
            None => Problem {
                at: None,
                text: self.error.to_string(),
            },
        }
    }
}

impl From<ApiError> for FormError {
    fn from(error: ApiError) -> Self {
        Self { at: None, error }
    }
}

impl From<StoreError> for FormError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// A message on a re-rendered form: next to the input named `at`, or above the form.
#[derive(Debug, Clone, Default)]
pub(crate) struct Problem {
    pub at: Option<&'static str>,
    pub text: String,
}

impl Problem {
    /// The same message for the whole form, for a page that does not show the input it is about
    /// (so it is never lost).
    pub(crate) fn whole(&self) -> Problem {
        Problem {
            at: None,
            text: self.text.clone(),
        }
    }

    pub(crate) fn is_at(&self, input: Input) -> bool {
        self.at == Some(input.name)
    }
}

/// The message of `problem` if it is about `input`, to put right after the input, inside the
/// field's container. `aria-describedby` on the input may point at its id.
pub(crate) fn field_error(problem: Option<&Problem>, input: Input) -> Markup {
    html! {
        @if let Some(p) = problem.filter(|p| p.is_at(input)) {
            p.field-error role="alert" id={ (input.name) "-error" } data-testid="field-error"
                data-field=(input.name) { (p.text) }
        }
    }
}

/// A labelled input and its message: `hint` follows the label (units, examples), `control` is
/// the `input`/`select`/`textarea` itself.
pub(crate) fn field(
    input: Input,
    hint: &str,
    control: Markup,
    problem: Option<&Problem>,
) -> Markup {
    html! {
        div.field data-field=(input.name) {
            label { (input.label) (hint) (control) }
            (field_error(problem, input))
        }
    }
}

/// Reads a list field: a checkbox group posts its name once per ticked box, none for none.
pub(crate) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(v)) => vec![v],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A form without fields but the anti-CSRF token (a button).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoFields {}

/// An `application/x-www-form-urlencoded` body: the anti-CSRF token, if sent, and the rest as
/// `T`. A name sent more than once becomes a list (see [`list`]).
pub(crate) async fn parse<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<(String, T), PageError> {
    let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, state)
        .await
        .map_err(|_| ApiError::BadRequest("send the form as a web form".into()))?;
    let mut csrf = None;
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        if k == CSRF_FIELD {
            csrf.get_or_insert(v);
            continue;
        }
        match map.get_mut(&k) {
            None => {
                map.insert(k, serde_json::Value::String(v));
            }
            Some(serde_json::Value::Array(list)) => list.push(v.into()),
            Some(one) => *one = serde_json::Value::Array(vec![one.take(), v.into()]),
        }
    }
    // Only a crafted post gets here with a missing or unknown field: our forms send every field.
    let body = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ApiError::Invalid(format!("the form does not fit this page: {e}")))?;
    Ok((csrf.unwrap_or_default(), body))
}

/// A form posted by a logged-in browser whose `csrf` field matches the session's token, with
/// its fields as `T`. A missing or wrong token is refused with 403 before the body is read into
/// `T` or the handler runs, so nothing changes.
#[derive(Debug)]
pub(crate) struct Posted<T = NoFields> {
    pub who: Browser,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = PageError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let who = Browser::from_request_parts(&mut parts, state).await?;
        let (csrf, value) =
            parse::<serde_json::Value, _>(Request::from_parts(parts, body), state).await?;
        check_csrf(&csrf, &who.0.session.csrf_token)?;
        let form = serde_json::from_value(value)
            .map_err(|e| ApiError::Invalid(format!("the form does not fit this page: {e}")))?;
        Ok(Posted { who, form })
    }
}

/// Compares the posted token with the session's in constant time.
pub(crate) fn check_csrf(sent: &str, expected: &str) -> Result<(), PageError> {
    if expected.is_empty() || !constant_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden("missing or wrong anti-CSRF token".into()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::Body;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default, deserialize_with = "list")]
        orgs: Vec<String>,
    }

    async fn read(body: &'static str) -> Result<(String, Sample), PageError> {
        let req = Request::builder()
            .method("POST")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        parse(req, &()).await
    }

    #[tokio::test]
    async fn repeated_names_are_lists_and_the_csrf_token_is_apart() {
        let (csrf, s) = read("csrf=t0k&name=a%20b&orgs=x&orgs=y").await.unwrap();
        assert_eq!((csrf.as_str(), s.name.as_str()), ("t0k", "a b"));
        assert_eq!(s.orgs, ["x", "y"]);
        let (csrf, s) = read("name=a&orgs=x").await.unwrap();
        assert_eq!((csrf.as_str(), s.orgs.len()), ("", 1));
        let (_, s) = read("name=a").await.unwrap();
        assert!(s.orgs.is_empty(), "no box ticked");
    }

    #[tokio::test]
    async fn unknown_missing_and_repeated_single_fields_are_refused() {
        for body in ["name=a&nmae=b", "orgs=x", "name=a&name=b"] {
            assert!(
                matches!(read(body).await, Err(PageError::Api(ApiError::Invalid(_)))),
                "{body}"
            );
        }
    }

    #[test]
    fn a_located_error_names_the_input_by_its_label() {
        const WINDOW: Input = Input::new("max_window", "Longest window");
        let map = [("max-window", WINDOW)];
        let e = FormError::located(ValidationError::new("max-window", "must be short"), &map);
        let p = e.problem();
        assert_eq!(p.at, Some("max_window"));
        assert_eq!(p.text, "Longest window: must be short");
        let e = FormError::located(ValidationError::new("other", "no"), &map);
        assert_eq!(
            e.problem().at,
            None,
            "a field the form lacks: for the whole form"
        );
    }
}
