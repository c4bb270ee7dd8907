//! Enrollment, login (password, then TOTP), step-up and logout.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_api_types::auth::{PendingMfa, Session, SessionsEnded, TotpEnrollment};
use portcullis_api_types::schema::Totp;
use portcullis_auth::password::HashPool;
use portcullis_auth::{password, totp};
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::{Timestamp, Username};
use portcullis_store::{Credentials, FailureOutcome, NewSession, Stage, UserRecord};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Authed, ClientAddr, SESSION_COOKIE};
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    pub(crate) code: String,
    #[schema(min_length = 15, max_length = 256)]
    pub(crate) password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfirmBody {
    pub(crate) code: String,
    #[schema(value_type = Totp)]
    pub(crate) totp: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaBody {
    mfa_token: String,
    #[schema(value_type = Totp)]
    totp: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpBody {
    #[schema(value_type = Totp)]
    pub(crate) totp: String,
}

// The bodies above carry secrets (passwords, enrollment codes, TOTP codes, MFA tokens): their
// `Debug` names the body and the username only, so no log line or panic message can hold one.
macro_rules! redacted_debug {
    ($($body:ident $({ $field:ident })?),* $(,)?) => {$(
        impl std::fmt::Debug for $body {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($body))
                    $(.field(stringify!($field), &self.$field))?
                    .finish_non_exhaustive()
            }
        }
    )*};
}
redacted_debug!(
    EnrollBody,
    EnrollConfirmBody,
    LoginBody { username },
    MfaBody,
    StepUpBody,
);

pub(crate) const BAD_CODE: &str =
    "this enrollment code is not valid: it was mistyped, already used or has expired";

/// Runs argon2 on a blocking thread, at most `hash_concurrency` at once, with the service's
/// buffer pool (one buffer per permit: a burst allocates nothing new). A caller that cannot get a
/// slot within 10 s is told to retry instead of queueing without bound.
pub(crate) async fn hashing<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&HashPool) -> T + Send + 'static,
) -> ApiResult<T> {
    let _permit = tokio::time::timeout(Duration::from_secs(10), state.0.hashing.acquire())
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(|_| ApiError::Internal)?;
    let pool = state.0.passwords.clone();
    tokio::task::spawn_blocking(move || work(&pool))
        .await
        .map_err(|_| ApiError::Internal)
}

/// The password policy for a new password of `username`, with the plant's name as context. The
/// strength estimate can take milliseconds, so it runs off the async threads.
pub(crate) async fn check_new_password(
    state: &AppState,
    pw: &str,
    username: &str,
) -> ApiResult<Result<(), password::PasswordError>> {
    let (pw, user, plant) = (
        pw.to_owned(),
        username.to_owned(),
        state.0.config.plant_name.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let context: Vec<&str> = [plant.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        password::check_policy(&pw, &user, &context)
    })
    .await
    .map_err(|_| ApiError::Internal)
}

pub(crate) async fn audit(state: &AppState, draft: AuditDraft) -> ApiResult<()> {
    state.0.store.append(draft).await?;
    Ok(())
}

pub(crate) fn user_draft(user: &UserRecord, addr: &ClientAddr, action: &str) -> AuditDraft {
    let d = AuditDraft::new(
        user.username.to_string(),
        ActorRole::from(user.role),
        action,
    )
    .target(format!("user:{}", user.username));
    match addr.source() {
        Some(s) => d.source(s),
        None => d,
    }
}

/// Why an enrollment step was refused. The API and the pages say it in their own words (the
/// API's are a contract: `From<EnrollError> for ApiError`), and the pages put each at its input.
#[derive(Debug)]
pub(crate) enum EnrollError {
    /// The code was mistyped, already used or has expired (or was used by a parallel confirm).
    BadCode,
    /// The new password breaks the policy.
    Password(password::PasswordError),
    /// A TOTP confirmation before any password was set.
    NoPassword,
    /// The TOTP code does not match the new secret.
    WrongCode,
    Api(ApiError),
}

impl From<ApiError> for EnrollError {
    fn from(e: ApiError) -> Self {
        EnrollError::Api(e)
    }
}

impl From<portcullis_store::StoreError> for EnrollError {
    fn from(e: portcullis_store::StoreError) -> Self {
        EnrollError::Api(e.into())
    }
}

/// The message for a TOTP code that does not match during enrollment.
pub(crate) const WRONG_ENROLL_CODE: &str =
    "that code does not match; check the authenticator app's clock";

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> Self {
        match e {
            EnrollError::BadCode => ApiError::NotFound(BAD_CODE.into()),
            EnrollError::Password(e) => ApiError::Invalid(e.to_string()),
            EnrollError::NoPassword => {
                ApiError::Conflict("set a password first (POST /api/v1/enroll)".into())
            }
            EnrollError::WrongCode => ApiError::Invalid(WRONG_ENROLL_CODE.into()),
            EnrollError::Api(e) => e,
        }
    }
}

/// An account being enrolled, found by its one-time code. Enrollment is two steps, each one
/// implementation for `POST /api/v1/enroll{,/confirm}` and the `/enroll` pages alike: set the
/// password (which makes a fresh TOTP secret, shown once), then confirm a code from it.
#[derive(Debug)]
pub(crate) struct Enrollment(Credentials);

impl Enrollment {
    /// The account of a live `code`, after the login rate limit (codes are guessed like
    /// passwords).
    pub(crate) async fn find(
        state: &AppState,
        addr: &ClientAddr,
        code: &str,
    ) -> Result<Self, EnrollError> {
        rate_limit(state, addr)?;
        state
            .0
            .store
            .enrollment(code)
            .await?
            .map(Enrollment)
            .ok_or(EnrollError::BadCode)
    }

    pub(crate) fn username(&self) -> &str {
        self.0.user.username.as_str()
    }

    /// The first step: the password policy, argon2, and a fresh TOTP secret sealed for the
    /// user (a second call replaces both). Returns the secret to show.
    pub(crate) async fn set_password(
        &self,
        state: &AppState,
        pw: &str,
    ) -> Result<totp::TotpSecret, EnrollError> {
        let user = &self.0.user;
        check_new_password(state, pw, user.username.as_str())
            .await?
            .map_err(EnrollError::Password)?;
        let pw = pw.to_owned();
        let hash = hashing(state, move |pool| pool.hash(&pw))
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
            .seal(&secret, user.username.as_str())
            .map_err(|_| ApiError::Internal)?;
        state
            .0
            .store
            .enroll_set_secrets(user.id, &hash, &sealed)
            .await?;
        Ok(secret)
    }

    /// The secret the first step made, to check a code against (and for the pages to show the
    /// QR code again after a wrong one).
    pub(crate) fn secret(&self, state: &AppState) -> Result<totp::TotpSecret, EnrollError> {
        let sealed = self
            .0
            .totp_sealed
            .as_deref()
            .ok_or(EnrollError::NoPassword)?;
        Ok(state
            .0
            .keys
            .totp
            .open(sealed, self.username())
            .map_err(|_| ApiError::Internal)?)
    }

    /// The second step: a current code from `secret` ends enrollment (audited `user.enroll`);
    /// its time step counts as used.
    pub(crate) async fn confirm(
        &self,
        state: &AppState,
        addr: &ClientAddr,
        secret: &totp::TotpSecret,
        code: &str,
    ) -> Result<(), EnrollError> {
        let now = state.0.clock.now();
        let step =
            totp::check(secret, code, now.unix_secs(), None).map_err(|_| EnrollError::WrongCode)?;
        let user = &self.0.user;
        let actor = portcullis_store::AuditActor {
            name: user.username.to_string(),
            role: ActorRole::from(user.role),
            source: addr.source(),
        };
        if !state.0.store.enroll_confirm(&actor, user.id, step).await? {
            return Err(EnrollError::BadCode);
        }
        Ok(())
    }
}

#[utoipa::path(post, path = "/api/v1/enroll", summary = "Set a password and get a TOTP secret",
    request_body = EnrollBody,
    responses((status = 200, description = "The TOTP secret, shown this once", body = TotpEnrollment)))]
pub async fn enroll(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<EnrollBody>,
) -> ApiResult<Json<TotpEnrollment>> {
    let enrollment = Enrollment::find(&state, &addr, &body.code).await?;
    let secret = enrollment.set_password(&state, &body.password).await?;
    let uri = secret.otpauth_uri("Portcullis", enrollment.username());
    let qr = totp::qr_svg(&uri).unwrap_or_default();
    Ok(Json(TotpEnrollment {
        otpauth_uri: uri,
        secret: secret.base32(),
        qr_svg: qr,
    }))
}

#[utoipa::path(post, path = "/api/v1/enroll/confirm", summary = "Confirm the TOTP secret with a code",
    request_body = EnrollConfirmBody,
    responses((status = 204, description = "enrolled")))]
pub async fn enroll_confirm(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<EnrollConfirmBody>,
) -> ApiResult<StatusCode> {
    let enrollment = Enrollment::find(&state, &addr, &body.code).await?;
    let secret = enrollment.secret(&state)?;
    enrollment
        .confirm(&state, &addr, &secret, &body.totp)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn rate_limit(state: &AppState, addr: &ClientAddr) -> ApiResult<()> {
    state
        .0
        .login_limiter
        .check(addr.ip(), state.0.clock.now())
        .map_err(|secs| ApiError::TooManyRequests {
            retry_after_secs: secs,
        })
}

/// Refuses a locked account with 423 and the time left. Only for callers who are already logged
/// in (step-up): they know the account exists, and telling them why their code is refused helps.
/// The login stages answer a locked account with the generic failure instead ([`locked_until`]).
pub(crate) fn check_lock(user: &UserRecord, now: Timestamp) -> ApiResult<()> {
    match locked_until(user, now) {
        Some(until) => Err(ApiError::Locked {
            retry_after_secs: until.duration_since(now).as_secs(),
        }),
        None => Ok(()),
    }
}

/// When the account's lock ends, if it is locked now.
fn locked_until(user: &UserRecord, now: Timestamp) -> Option<Timestamp> {
    user.locked_until.filter(|until| *until > now)
}

/// A login attempt on a locked account: recorded (the lock is still audited and enforced), then
/// answered exactly like an unknown user or a wrong password, the same status, body and headers
/// (no 423, no Retry-After): a different answer would tell an attacker the account exists
/// (issue 12). It is not counted again: the lock is already in force and its end does not move.
async fn refuse_locked(
    state: &AppState,
    user: &UserRecord,
    addr: &ClientAddr,
    action: &str,
    until: Timestamp,
) -> ApiError {
    let draft = user_draft(user, addr, action)
        .details(serde_json::json!({ "reason": "locked", "until": until }));
    match audit(state, draft).await {
        Ok(()) => ApiError::LoginFailed,
        Err(e) => e,
    }
}

/// Counts a failure and records it; the store writes `login.locked` in the same transaction when
/// this very failure locked the account (exactly once per lock, whatever the parallelism).
pub(crate) async fn fail(
    state: &AppState,
    user: &UserRecord,
    addr: &ClientAddr,
    action: &str,
    reason: &str,
) -> ApiError {
    let draft = user_draft(user, addr, action).details(serde_json::json!({ "reason": reason }));
    match state
        .0
        .store
        .record_login_failure(user.id, &state.0.config.lockout, &draft)
        .await
    {
        Ok(FailureOutcome::Locked { until }) => {
            tracing::warn!(user = %user.username, %until, "account locked after repeated failures");
            ApiError::LoginFailed
        }
        Ok(FailureOutcome::Counted) => ApiError::LoginFailed,
        Err(e) => e.into(),
    }
}

/// The password stage of login, for the API and the pages alike: rate limit, the same work and the
/// same answer for unknown, disabled and wrong, lockout, then a password-only session.
pub(crate) async fn password_stage(
    state: &AppState,
    addr: &ClientAddr,
    username: &str,
    pw: &str,
) -> ApiResult<NewSession> {
    rate_limit(state, addr)?;
    let now = state.0.clock.now();
    let creds = match Username::parse(username) {
        Ok(name) => state.0.store.credentials(&name).await?,
        Err(_) => None,
    };
    let pw = pw.to_owned();
    let Some(Credentials {
        user,
        password_hash,
        ..
    }) = creds.filter(|c| c.user.disabled_at.is_none())
    else {
        hashing(state, move |pool| pool.verify_dummy(&pw)).await?;
        // The name as typed, for the audit log: bounded, and with control characters replaced
        // (PostgreSQL text cannot hold a NUL byte: the append would fail and the attempt would go
        // unrecorded, with a 503 for a junk name).
        let shown: String = username
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        let mut d = AuditDraft::new(shown.clone(), ActorRole::Anonymous, "login.fail")
            .target(format!("user:{shown}"))
            .details(serde_json::json!({ "reason": "unknown_or_disabled" }));
        if let Some(s) = addr.source() {
            d = d.source(s);
        }
        audit(state, d).await?;
        return Err(ApiError::LoginFailed);
    };
    if let Some(until) = locked_until(&user, now) {
        // The same argon2 work as a wrong password, so timing does not tell either.
        hashing(state, move |pool| pool.verify_dummy(&pw)).await?;
        return Err(refuse_locked(state, &user, addr, "login.fail", until).await);
    }
    let ok = match password_hash.filter(|_| user.enrolled) {
        Some(hash) => hashing(state, move |pool| pool.verify(&pw, &hash)).await?,
        None => {
            hashing(state, move |pool| pool.verify_dummy(&pw)).await?;
            false
        }
    };
    if !ok {
        return Err(fail(state, &user, addr, "login.fail", "bad_password").await);
    }
    Ok(state
        .0
        .store
        .create_session(
            user.id,
            Stage::Mfa,
            addr.source().as_deref(),
            &state.0.config.sessions,
        )
        .await?)
}

#[utoipa::path(post, path = "/api/v1/auth/login", summary = "Password step of login",
    request_body = LoginBody,
    responses((status = 200, description = "A token good only for the TOTP step", body = PendingMfa)))]
pub async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Json<PendingMfa>> {
    let s = password_stage(&state, &addr, &body.username, &body.password).await?;
    Ok(Json(PendingMfa {
        mfa_token: s.token.clone(),
        expires_at: s.session.expires_at,
    }))
}

/// Checks a TOTP code for `user` and marks its step used; the replay guard is atomic.
pub(crate) async fn check_totp(
    state: &AppState,
    user: &UserRecord,
    addr: &ClientAddr,
    code: &str,
) -> ApiResult<()> {
    let creds = state
        .0
        .store
        .credentials(&user.username)
        .await?
        .ok_or(ApiError::LoginFailed)?;
    let sealed = creds.totp_sealed.ok_or(ApiError::LoginFailed)?;
    let secret = state
        .0
        .keys
        .totp
        .open(&sealed, user.username.as_str())
        .map_err(|_| ApiError::Internal)?;
    let now = state.0.clock.now().unix_secs();
    match totp::check(&secret, code, now, creds.totp_last_step) {
        Ok(step) if state.0.store.use_totp_step(user.id, step).await? => Ok(()),
        Ok(_) | Err(totp::TotpError::Replayed) => {
            Err(fail(state, user, addr, "mfa.replay", "code_already_used").await)
        }
        Err(_) => Err(fail(state, user, addr, "mfa.fail", "wrong_code").await),
    }
}

/// The TOTP stage of login, for the API and the pages alike: lockout, the replay-guarded code check,
/// then a new full session (a new id: never the password-stage one).
pub(crate) async fn totp_stage(
    state: &AppState,
    addr: &ClientAddr,
    mfa_token: &str,
    code: &str,
) -> ApiResult<NewSession> {
    rate_limit(state, addr)?;
    let pending = state
        .0
        .store
        .session(mfa_token, &state.0.config.sessions)
        .await?
        .filter(|s| s.stage == Stage::Mfa)
        .ok_or(ApiError::LoginFailed)?;
    let user_id = pending.user_id;
    let user = state.0.store.user_by_id(user_id).await?;
    if let Some(until) = locked_until(&user, state.0.clock.now()) {
        return Err(refuse_locked(state, &user, addr, "mfa.fail", until).await);
    }
    check_totp(state, &user, addr, code).await?;
    state.0.store.end_session(mfa_token).await?;
    let s = state
        .0
        .store
        .create_session(
            user.id,
            Stage::Full,
            addr.source().as_deref(),
            &state.0.config.sessions,
        )
        .await?;
    state.0.store.record_login_success(user.id).await?;
    audit(state, user_draft(&user, addr, "login.ok")).await?;
    Ok(s)
}

#[utoipa::path(post, path = "/api/v1/auth/mfa", summary = "TOTP step of login",
    request_body = MfaBody,
    responses((status = 200, description = "The session", body = Session)))]
pub async fn mfa(
    State(state): State<AppState>,
    addr: ClientAddr,
    ApiJson(body): ApiJson<MfaBody>,
) -> ApiResult<Response> {
    let s = totp_stage(&state, &addr, &body.mfa_token, &body.totp).await?;
    let user = state.0.store.user_by_id(s.session.user_id).await?;
    let body = Json(Session {
        session_token: s.token.clone(),
        expires_at: s.session.expires_at,
        csrf_token: s.session.csrf_token.clone(),
        username: user.username,
        role: user.role.into(),
    });
    let mut resp = body.into_response();
    if let Ok(v) =
        HeaderValue::from_str(&session_cookie(&s.token, state.0.config.sessions.absolute))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub fn session_cookie(token: &str, max_age: Duration) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    )
}

/// The TOTP step-up for approvals and tokens: lockout, the replay-guarded check, the session's
/// step-up time, and `auth.step_up` in the audit log. Shared by the API and the pages.
pub(crate) async fn step_up_with(state: &AppState, who: &Authed, code: &str) -> ApiResult<()> {
    check_lock(&who.user, state.0.clock.now())?;
    check_totp(state, &who.user, &who.addr, code).await?;
    state.0.store.record_step_up(&who.token).await?;
    audit(state, user_draft(&who.user, &who.addr, "auth.step_up")).await
}

#[utoipa::path(post, path = "/api/v1/auth/step-up", summary = "Fresh TOTP for approvals and tokens",
    request_body = StepUpBody,
    responses((status = 204, description = "done")),
    security(("bearer" = [])))]
pub async fn step_up(
    State(state): State<AppState>,
    authed: Authed,
    ApiJson(body): ApiJson<StepUpBody>,
) -> ApiResult<StatusCode> {
    step_up_with(&state, &authed, &body.totp).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends this session and refuses the relay tokens the user was issued until now (a live
/// `portcullis connect` goes on; "log out everywhere" ends it too).
#[utoipa::path(post, path = "/api/v1/auth/logout",
    summary = "End the session; relay tokens issued before are refused",
    responses((status = 204, description = "done")),
    security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, authed: Authed) -> ApiResult<Response> {
    state
        .0
        .store
        .logout(&authed.actor(), &authed.user, &authed.token)
        .await?;
    Ok(with_expired_cookie(StatusCode::NO_CONTENT.into_response()))
}

fn with_expired_cookie(mut resp: Response) -> Response {
    let expired =
        format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&expired) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// "Log out everywhere": ends every web and CLI session of the user, refuses the relay tokens
/// issued until now and ends the user's live relay sessions.
#[utoipa::path(post, path = "/api/v1/auth/logout-everywhere",
    summary = "End every session of the caller: web and CLI sessions, relay tokens issued before, live relay sessions",
    responses((status = 200, description = "How many web and CLI sessions ended", body = SessionsEnded)),
    security(("bearer" = [])))]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    authed: Authed,
) -> ApiResult<Response> {
    let ended = state
        .0
        .store
        .logout_everywhere(&authed.actor(), &authed.user)
        .await?;
    let body = Json(SessionsEnded {
        sessions_ended: ended,
    });
    Ok(with_expired_cookie(body.into_response()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bodies_with_secrets_never_print_them() {
        let login: LoginBody =
            serde_json::from_str(r#"{"username":"vera","password":"hunter2-horse"}"#).unwrap();
        let enroll: EnrollBody =
            serde_json::from_str(r#"{"code":"ENR-SECRET","password":"hunter2-horse"}"#).unwrap();
        let mfa: MfaBody =
            serde_json::from_str(r#"{"mfa_token":"mfa-secret","totp":"123456"}"#).unwrap();
        let shown = format!("{login:?} {enroll:?} {mfa:?}");
        assert!(shown.contains("vera"), "{shown}");
        for secret in ["hunter2-horse", "ENR-SECRET", "mfa-secret", "123456"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
