//! Logging in (password, then TOTP), logging out, and enrollment, as forms. The rules are the
//! API's (`api::auth`): the same rate limit, lockout, generic error, audit events and replay
//! guard, through the same helpers.

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use portcullis_auth::totp;
use portcullis_core::audit::ActorRole;
use portcullis_store::{AuditActor, Stage};
use serde::Deserialize;

use super::error::{PageError, PageResult, rerender};
use super::form::{CSRF_FIELD, Fields, Posted, check_csrf};
use super::layout::{Flash, bare, error_box};
use super::session::{Browser, MFA_COOKIE, clear_cookie, home_of, set_cookie};
use crate::api::auth::{
    BAD_CODE, check_new_password, hashing, password_stage, rate_limit, session_cookie, totp_stage,
    unix_secs,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddr, SESSION_COOKIE, cookie};
use crate::state::AppState;

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

fn login_form(state: &AppState, flash: Flash, username: &str, error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            p.banner data-testid="banner" { (state.0.config.banner) }
            @if let Some(m) = flash.0 { p.flash role="status" data-testid="flash" { (m) } }
            (error_box(error))
            form.stack method="post" action="/login" data-testid="login-form" {
                label { "Username"
                    input type="text" name="username" value=(username) autocomplete="username"
                        required autofocus data-testid="username"; }
                label { "Password"
                    input type="password" name="password" autocomplete="current-password"
                        required data-testid="password"; }
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
    let f = Fields::parse(req, &state).await?;
    let username = f.get("username");
    match password_stage(&state, &addr, username, f.get("password")).await {
        Ok(s) => {
            let c = set_cookie(MFA_COOKIE, &s.token, state.0.config.sessions.mfa_stage);
            Ok(with_cookies(
                Redirect::to("/login/mfa").into_response(),
                &[c],
            ))
        }
        Err(e) => Ok(rerender(e, |m| {
            login_form(&state, Flash::default(), username, Some(m))
        })),
    }
}

fn mfa_form(csrf: &str, error: Option<&str>) -> Markup {
    bare(
        "Enter your code",
        html! {
            p { "Open your authenticator app and enter the 6-digit code for Portcullis." }
            (error_box(error))
            form.stack method="post" action="/login/mfa" data-testid="mfa-form" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label { "Code"
                    input type="text" name="totp" inputmode="numeric" pattern="[0-9]{6}"
                        maxlength="6" autocomplete="one-time-code" required autofocus
                        data-testid="totp"; }
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
    let f = Fields::parse(Request::from_parts(parts, body), &state).await?;
    let Some((token, pending)) = found else {
        return Ok(Redirect::to("/login").into_response());
    };
    check_csrf(&f, &pending.csrf_token)?;
    match totp_stage(&state, &addr, &token, f.get("totp")).await {
        Ok(s) => {
            let cookies = [
                session_cookie(&s.token, state.0.config.sessions.absolute),
                clear_cookie(MFA_COOKIE),
            ];
            Ok(with_cookies(Redirect::to("/").into_response(), &cookies))
        }
        Err(e) => Ok(rerender(e, |m| mfa_form(&pending.csrf_token, Some(m)))),
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

fn password_form(code: &str, username: &str, error: Option<&str>) -> Markup {
    bare(
        "Set up your account",
        html! {
            p { "Account " strong data-testid="enroll-username" { (username) } ". Choose a password of at least 15 characters; a passphrase of several words works well." }
            (error_box(error))
            form.stack method="post" action="/enroll" data-testid="enroll-form" {
                input type="hidden" name="code" value=(code);
                label { "Password"
                    input type="password" name="password" minlength="15" autocomplete="new-password"
                        required data-testid="password"; }
                label { "Password again"
                    input type="password" name="confirm" minlength="15" autocomplete="new-password"
                        required data-testid="confirm"; }
                button type="submit" data-testid="enroll-submit" { "Continue" }
            }
        },
    )
}

fn code_form(error: Option<&str>) -> Markup {
    bare(
        "Set up your account",
        html! {
            (error_box(error))
            form.stack method="get" action="/enroll" {
                label { "Enrollment code (from your administrator)"
                    input type="text" name="code" required data-testid="enroll-code"; }
                button type="submit" { "Continue" }
            }
        },
    )
}

pub(crate) async fn enroll_page(
    State(state): State<AppState>,
    addr: ClientAddr,
    Query(q): Query<CodeQuery>,
) -> PageResult {
    if q.code.trim().is_empty() {
        return Ok(code_form(None).into_response());
    }
    rate_limit(&state, &addr).map_err(PageError::from)?;
    match state.0.store.enrollment(&q.code).await? {
        Some(c) => Ok(password_form(&q.code, c.user.username.as_str(), None).into_response()),
        None => Ok(rerender(ApiError::NotFound(BAD_CODE.into()), |m| {
            code_form(Some(m))
        })),
    }
}

/// The QR code and the secret for manual entry, and the form that confirms them.
fn qr_form(code: &str, secret: &totp::TotpSecret, username: &str, error: Option<&str>) -> Markup {
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
                input type="hidden" name="code" value=(code);
                label { "Code"
                    input type="text" name="totp" inputmode="numeric" pattern="[0-9]{6}" maxlength="6"
                        autocomplete="one-time-code" required data-testid="totp"; }
                button type="submit" data-testid="enroll-confirm-submit" { "Finish" }
            }
        },
    )
}

pub(crate) async fn enroll(
    State(state): State<AppState>,
    addr: ClientAddr,
    req: Request,
) -> PageResult {
    let f = Fields::parse(req, &state).await?;
    let code = f.get("code").trim().to_owned();
    rate_limit(&state, &addr).map_err(PageError::from)?;
    let Some(creds) = state.0.store.enrollment(&code).await? else {
        return Ok(rerender(ApiError::NotFound(BAD_CODE.into()), |m| {
            code_form(Some(m))
        }));
    };
    let user = creds.user;
    let name = user.username.as_str();
    let pw = f.get("password").to_owned();
    if pw != f.get("confirm") {
        let e = ApiError::Invalid("password: the two passwords differ".into());
        return Ok(rerender(e, |m| password_form(&code, name, Some(m))));
    }
    if let Err(e) = check_new_password(&state, &pw, name).await? {
        let e = ApiError::Invalid(e.to_string());
        return Ok(rerender(e, |m| password_form(&code, name, Some(m))));
    }
    // The same steps as `POST /api/v1/enroll`.
    let hash = hashing(&state, move |pool| pool.hash(&pw))
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::Internal
        })?;
    let secret = totp::TotpSecret::generate().map_err(|_| ApiError::Internal)?;
    let sealed = state
        .0
        .keys
        .totp
        .seal(&secret, name)
        .map_err(|_| ApiError::Internal)?;
    state
        .0
        .store
        .enroll_set_secrets(user.id, &hash, &sealed)
        .await?;
    Ok(qr_form(&code, &secret, name, None).into_response())
}

pub(crate) async fn enroll_confirm(
    State(state): State<AppState>,
    addr: ClientAddr,
    req: Request,
) -> PageResult {
    let f = Fields::parse(req, &state).await?;
    let code = f.get("code").trim().to_owned();
    rate_limit(&state, &addr).map_err(PageError::from)?;
    let Some(creds) = state.0.store.enrollment(&code).await? else {
        return Ok(rerender(ApiError::NotFound(BAD_CODE.into()), |m| {
            code_form(Some(m))
        }));
    };
    let name = creds.user.username.as_str();
    let Some(sealed) = creds.totp_sealed.as_deref() else {
        let e = ApiError::Conflict("set a password first".into());
        return Ok(rerender(e, |m| password_form(&code, name, Some(m))));
    };
    let secret = state
        .0
        .keys
        .totp
        .open(sealed, name)
        .map_err(|_| ApiError::Internal)?;
    let now = state.0.clock.now();
    let step = match totp::check(&secret, f.get("totp"), unix_secs(now), None) {
        Ok(step) => step,
        Err(_) => {
            let e = ApiError::Invalid(
                "that code does not match; check the authenticator app's clock".into(),
            );
            return Ok(rerender(e, |m| qr_form(&code, &secret, name, Some(m))));
        }
    };
    let actor = AuditActor {
        name: name.to_owned(),
        role: ActorRole::from(creds.user.role),
        source: addr.source(),
    };
    if !state
        .0
        .store
        .enroll_confirm(&actor, creds.user.id, step)
        .await?
    {
        return Ok(rerender(ApiError::NotFound(BAD_CODE.into()), |m| {
            code_form(Some(m))
        }));
    }
    Ok(Flash::redirect("/login", "enrolled").into_response())
}
