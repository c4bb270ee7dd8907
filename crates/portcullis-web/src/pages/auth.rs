//! Logging in (password, then TOTP), logging out, and enrollment, as forms. The rules are the
//! API's (`api::auth`): the same rate limit, lockout, generic error, audit events and replay
//! guard, through the same helpers.

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use portcullis_auth::totp;
use portcullis_store::Stage;
use serde::Deserialize;

use super::error::{PageError, PageResult, rerender};
use super::form::{CSRF_FIELD, FormError, Input, Posted, Problem, check_csrf, field, parse};
use super::layout::{Flash, bare, error_box};
use super::session::{Browser, MFA_COOKIE, clear_cookie, home_of, set_cookie};
use crate::api::auth::{
    EnrollBody, EnrollConfirmBody, EnrollError, Enrollment, LoginBody, StepUpBody, password_stage,
    session_cookie, totp_stage,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddr, SESSION_COOKIE, cookie};
use crate::state::AppState;

const USERNAME: Input = Input::new("username", "Username");
const PASSWORD: Input = Input::new("password", "Password");
const CONFIRM: Input = Input::new("confirm", "Password again");
const TOTP: Input = Input::new("totp", "Code");
const CODE: Input = Input::new("code", "Enrollment code");

/// `/`: the role's start page, or the login page.
pub(crate) async fn home(who: Result<Browser, PageError>) -> Redirect {
    match who {
        Ok(b) => Redirect::to(home_of(b.0.user.role)),
        Err(_) => Redirect::to("/login"),
    }
}

fn with_cookies(mut resp: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The login form. Its errors are all for the whole form: which of name, password or code was
/// wrong is exactly what it must not tell.
fn login_form(state: &AppState, flash: Flash, username: &str, error: Option<&Problem>) -> Markup {
    bare(
        "Log in",
        html! {
            p.banner data-testid="banner" { (state.0.config.banner) }
            @if let Some(m) = flash.0 { p.flash role="status" data-testid="flash" { (m) } }
            (error_box(error))
            form.stack method="post" action="/login" data-testid="login-form" {
                (field(USERNAME, "", html! {
                    input type="text" name=(USERNAME.name) value=(username) autocomplete="username"
                        required autofocus data-testid="username";
                }, None))
                (field(PASSWORD, "", html! {
                    input type="password" name=(PASSWORD.name) autocomplete="current-password"
                        required data-testid="password";
                }, None))
                button type="submit" data-testid="login-submit" { "Continue" }
            }
        },
    )
}

pub(crate) async fn login_page(
    State(state): State<AppState>,
    who: Result<Browser, PageError>,
    flash: Flash,
) -> Response {
    if let Ok(b) = who {
        return Redirect::to(home_of(b.0.user.role)).into_response();
    }
    login_form(&state, flash, "", None).into_response()
}

pub(crate) async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    req: Request,
) -> PageResult {
    let (_, body): (_, LoginBody) = parse(req, &state).await?;
    let username = body.username.as_str();
    match password_stage(&state, &addr, username, &body.password).await {
        Ok(s) => {
            let c = set_cookie(MFA_COOKIE, &s.token, state.0.config.sessions.mfa_stage);
            Ok(with_cookies(
                Redirect::to("/login/mfa").into_response(),
                &[c],
            ))
        }
        Err(e) => Ok(rerender(e, |p| {
            login_form(&state, Flash::default(), username, p)
        })),
    }
}

/// The code form of login; a wrong code is the generic login failure, for the whole form.
fn mfa_form(csrf: &str, error: Option<&Problem>) -> Markup {
    bare(
        "Enter your code",
        html! {
            p { "Open your authenticator app and enter the 6-digit code for Portcullis." }
            (error_box(error))
            form.stack method="post" action="/login/mfa" data-testid="mfa-form" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                (field(TOTP, "", html! {
                    input type="text" name=(TOTP.name) inputmode="numeric" pattern="[0-9]{6}"
                        maxlength="6" autocomplete="one-time-code" required autofocus
                        data-testid="totp";
                }, None))
                button type="submit" data-testid="mfa-submit" { "Log in" }
            }
            p { a href="/login" { "Start again" } }
        },
    )
}

/// The password-stage session named by the MFA cookie, if it is still live.
async fn pending(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> ApiResult<Option<(String, portcullis_store::Session)>> {
    let Some(token) = cookie(parts, MFA_COOKIE) else {
        return Ok(None);
    };
    Ok(state
        .0
        .store
        .session(&token, &state.0.config.sessions)
        .await?
        .filter(|s| s.stage == Stage::Mfa)
        .map(|s| (token, s)))
}

pub(crate) async fn mfa_page(State(state): State<AppState>, req: Request) -> PageResult {
    let (parts, _) = req.into_parts();
    match pending(&state, &parts).await? {
        Some((_, s)) => Ok(mfa_form(&s.csrf_token, None).into_response()),
        None => Ok(Redirect::to("/login").into_response()),
    }
}

pub(crate) async fn mfa(State(state): State<AppState>, req: Request) -> PageResult {
    let (mut parts, body) = req.into_parts();
    let addr = ClientAddr::from_request_parts(&mut parts, &state).await?;
    let found = pending(&state, &parts).await?;
    let (csrf, body): (_, StepUpBody) = parse(Request::from_parts(parts, body), &state).await?;
    let Some((token, pending)) = found else {
        return Ok(Redirect::to("/login").into_response());
    };
    check_csrf(&csrf, &pending.csrf_token)?;
    match totp_stage(&state, &addr, &token, &body.totp).await {
        Ok(s) => {
            let cookies = [
                session_cookie(&s.token, state.0.config.sessions.absolute),
                clear_cookie(MFA_COOKIE),
            ];
            Ok(with_cookies(Redirect::to("/").into_response(), &cookies))
        }
        Err(e) => Ok(rerender(e, |p| mfa_form(&pending.csrf_token, p))),
    }
}

/// Ends this session and refuses the relay tokens issued until now (as the API's logout).
pub(crate) async fn logout(State(state): State<AppState>, p: Posted) -> PageResult {
    let a = &p.who.0;
    state.0.store.logout(&a.actor(), &a.user, &a.token).await?;
    let resp = Flash::redirect("/login", "logged_out").into_response();
    Ok(with_cookies(resp, &[clear_cookie(SESSION_COOKIE)]))
}

/// "Log out everywhere" (as the API's): every session, relay token and live relay session.
pub(crate) async fn logout_everywhere(State(state): State<AppState>, p: Posted) -> PageResult {
    let a = &p.who.0;
    state.0.store.logout_everywhere(&a.actor(), &a.user).await?;
    let resp = Flash::redirect("/login", "logged_out_everywhere").into_response();
    Ok(with_cookies(resp, &[clear_cookie(SESSION_COOKIE)]))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CodeQuery {
    #[serde(default)]
    code: String,
}

fn password_form(code: &str, username: &str, error: Option<&Problem>) -> Markup {
    bare(
        "Set up your account",
        html! {
            p { "Account " strong data-testid="enroll-username" { (username) } ". Choose a password of at least 15 characters; a passphrase of several words works well." }
            (error_box(error))
            form.stack method="post" action="/enroll" data-testid="enroll-form" {
                input type="hidden" name=(CODE.name) value=(code);
                (field(PASSWORD, "", html! {
                    input type="password" name=(PASSWORD.name) minlength="15"
                        autocomplete="new-password" required data-testid="password";
                }, error))
                (field(CONFIRM, "", html! {
                    input type="password" name=(CONFIRM.name) minlength="15"
                        autocomplete="new-password" required data-testid="confirm";
                }, error))
                button type="submit" data-testid="enroll-submit" { "Continue" }
            }
        },
    )
}

fn code_form(error: Option<&Problem>) -> Markup {
    bare(
        "Set up your account",
        html! {
            (error_box(error))
            form.stack method="get" action="/enroll" {
                (field(CODE, " (from your administrator)", html! {
                    input type="text" name=(CODE.name) required data-testid="enroll-code";
                }, error))
                button type="submit" { "Continue" }
            }
        },
    )
}

/// Where the pages show each enrollment refusal, in their own words; the status is the API's
/// for the same refusal.
fn enroll_error(e: EnrollError) -> Result<FormError, PageError> {
    Ok(match e {
        EnrollError::BadCode => FormError::at(CODE, ApiError::from(EnrollError::BadCode)),
        EnrollError::Password(e) => FormError::invalid(PASSWORD, e.to_string()),
        EnrollError::NoPassword => ApiError::Conflict(
            "set a password first: open your enrollment link again and choose one".into(),
        )
        .into(),
        EnrollError::WrongCode => FormError::at(TOTP, EnrollError::WrongCode.into()),
        // Rate limits, the database: the error page, as for any other form.
        EnrollError::Api(e) => return Err(e.into()),
    })
}

pub(crate) async fn enroll_page(
    State(state): State<AppState>,
    addr: ClientAddr,
    Query(q): Query<CodeQuery>,
) -> PageResult {
    if q.code.trim().is_empty() {
        return Ok(code_form(None).into_response());
    }
    match Enrollment::find(&state, &addr, &q.code).await {
        Ok(e) => Ok(password_form(&q.code, e.username(), None).into_response()),
        Err(e) => Ok(rerender(enroll_error(e)?, code_form)),
    }
}

/// The QR code and the secret for manual entry, and the form that confirms them.
fn qr_form(
    code: &str,
    secret: &totp::TotpSecret,
    username: &str,
    error: Option<&Problem>,
) -> Markup {
    let uri = secret.otpauth_uri("Portcullis", username);
    // Our own SVG from the QR encoder (no user text inside but the escaped otpauth URI).
    let svg = totp::qr_svg(&uri).unwrap_or_default();
    bare(
        "Set up your authenticator",
        html! {
            p { "Scan this code with an authenticator app (or type the key below), then enter the 6-digit code it shows." }
            div.qr data-testid="qr" { (PreEscaped(svg)) }
            p { "Key for manual entry: " span.secret data-testid="totp-secret" { (secret.base32()) } }
            (error_box(error))
            form.stack method="post" action="/enroll/confirm" data-testid="enroll-confirm-form" {
                input type="hidden" name=(CODE.name) value=(code);
                (field(TOTP, "", html! {
                    input type="text" name=(TOTP.name) inputmode="numeric" pattern="[0-9]{6}"
                        maxlength="6" autocomplete="one-time-code" required data-testid="totp";
                }, error))
                button type="submit" data-testid="enroll-confirm-submit" { "Finish" }
            }
        },
    )
}

/// The enrollment form: `POST /api/v1/enroll`'s body and the password typed again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollForm {
    code: String,
    password: String,
    confirm: String,
}

pub(crate) async fn enroll(
    State(state): State<AppState>,
    addr: ClientAddr,
    req: Request,
) -> PageResult {
    let (_, form): (_, EnrollForm) = parse(req, &state).await?;
    let body = EnrollBody {
        code: form.code.trim().to_owned(),
        password: form.password,
    };
    let code = body.code.as_str();
    let enrollment = match Enrollment::find(&state, &addr, code).await {
        Ok(e) => e,
        Err(e) => return Ok(rerender(enroll_error(e)?, code_form)),
    };
    let name = enrollment.username();
    if body.password != form.confirm {
        let e = FormError::invalid(CONFIRM, "the two passwords differ");
        return Ok(rerender(e, |p| password_form(code, name, p)));
    }
    // The same step as `POST /api/v1/enroll`.
    match enrollment.set_password(&state, &body.password).await {
        Ok(secret) => Ok(qr_form(code, &secret, name, None).into_response()),
        Err(e) => Ok(rerender(enroll_error(e)?, |p| password_form(code, name, p))),
    }
}

pub(crate) async fn enroll_confirm(
    State(state): State<AppState>,
    addr: ClientAddr,
    req: Request,
) -> PageResult {
    let (_, mut body): (_, EnrollConfirmBody) = parse(req, &state).await?;
    body.code = body.code.trim().to_owned();
    let code = body.code.as_str();
    // The same steps as `POST /api/v1/enroll/confirm`.
    let enrollment = match Enrollment::find(&state, &addr, code).await {
        Ok(e) => e,
        Err(e) => return Ok(rerender(enroll_error(e)?, code_form)),
    };
    let name = enrollment.username();
    let secret = match enrollment.secret(&state) {
        Ok(s) => s,
        Err(e) => return Ok(rerender(enroll_error(e)?, |p| password_form(code, name, p))),
    };
    match enrollment.confirm(&state, &addr, &secret, &body.totp).await {
        Ok(()) => Ok(Flash::redirect("/login", "enrolled").into_response()),
        Err(e @ EnrollError::BadCode) => Ok(rerender(enroll_error(e)?, code_form)),
        Err(e) => Ok(rerender(enroll_error(e)?, |p| {
            qr_form(code, &secret, name, p)
        })),
    }
}
