//! Ending what a person started: logout, "log out everywhere" and the admin reset.
//!
//! Relay tokens are verified offline and live up to 5 minutes, so deleting the web session is
//! not enough: each of these also moves the user's not-befores forward, which the relay reads
//! with the grant snapshot.
//! - `tokens_not_before`: relay tokens issued before it are refused at the handshake. Set by
//!   all of them.
//! - `sessions_not_before`: live relay sessions started before it end. Set by "log out
//!   everywhere" and the resets, which also notify the relay ([`GrantChange::User`]); a plain
//!   logout leaves a running `portcullis connect` alone (the vendor logged out of one browser,
//!   not out of the session they are working in).
//!
//! Not-befores only ever move forward (a clock stepped back must not re-validate tokens), and
//! each change commits with its audit event.

use portcullis_core::{Timestamp, Username};
use sqlx::Row;

use crate::relay::GrantChange;
use crate::sessions::token_hash;
use crate::users::{EnrollmentCode, UserRecord, fetch_user};
use crate::write::WriteTx;
use crate::{AuditActor, ENROLLMENT_TTL, Store, StoreError};

/// A user's not-befores, as the relay checks them (the grant-liveness decision's type).
pub use portcullis_core::liveness::NotBefore;
use portcullis_core::liveness::VendorAccount;

/// Which not-befores a change moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// New tokens only: a plain logout.
    Tokens,
    /// Tokens and live sessions.
    Everything,
}

impl Store {
    /// The not-befores of `name` (both `None` for an unknown user: the caller's grant check
    /// refuses those anyway).
    pub async fn not_before(&self, name: &Username) -> Result<NotBefore, StoreError> {
        Ok(self
            .vendor_account(name)
            .await?
            .map(|a| a.not_before)
            .unwrap_or_default())
    }

    /// Whether `name` is disabled, and its not-befores, in one read: what the grant-liveness
    /// decision needs of the account. `None`: no such user.
    pub async fn vendor_account(
        &self,
        name: &Username,
    ) -> Result<Option<VendorAccount>, StoreError> {
        let row = sqlx::query(
            "SELECT disabled_at, tokens_not_before, sessions_not_before \
             FROM users WHERE username = $1",
        )
        .bind(name.as_str().to_owned())
        .fetch_optional(&self.shared.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let ts = |col: &str| -> Result<Option<Timestamp>, StoreError> {
            Ok(row
                .try_get::<Option<String>, _>(col)?
                .map(|t| Timestamp::parse_rfc3339(&t))
                .transpose()?)
        };
        Ok(Some(VendorAccount {
            disabled: ts("disabled_at")?.is_some(),
            not_before: NotBefore {
                tokens: ts("tokens_not_before")?,
                sessions: ts("sessions_not_before")?,
            },
        }))
    }

    /// Logout: ends the session behind `token` and refuses the relay tokens `user` was issued
    /// until now, on any of their sessions. Audited as `logout`.
    pub async fn logout(
        &self,
        by: &AuditActor,
        user: &UserRecord,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(tx.conn())
            .await?;
        let now = move_not_before(&mut tx, user.id, Reach::Tokens).await?;
        tx.audit(
            &by.draft("logout")
                .target(format!("user:{}", user.username))
                .details(serde_json::json!({ "tokens_not_before": now })),
        )
        .await?;
        tx.commit().await
    }

    /// "Log out everywhere": ends every web and CLI session of `user`, refuses the relay tokens
    /// issued until now and ends their live relay sessions. Returns how many sessions ended.
    /// Audited as `logout.everywhere`.
    pub async fn logout_everywhere(
        &self,
        by: &AuditActor,
        user: &UserRecord,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let ended = sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user.id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        let now = move_not_before(&mut tx, user.id, Reach::Everything).await?;
        tx.audit(
            &by.draft("logout.everywhere")
                .target(format!("user:{}", user.username))
                .details(serde_json::json!({ "sessions_ended": ended, "not_before": now })),
        )
        .await?;
        tx.notify(GrantChange::User(user.username.as_str().to_owned()))
            .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// The admin reset (forgotten password, lost phone, suspected compromise): clears the
    /// password and the TOTP enrollment, issues a new one-time enrollment code, ends the
    /// user's web sessions, refuses their relay tokens and ends their live relay sessions.
    /// Audited as `user.reset`.
    pub async fn reset_user(
        &self,
        by: &AuditActor,
        name: &Username,
    ) -> Result<EnrollmentCode, StoreError> {
        self.reset_credentials(by, name, "user.reset").await
    }

    /// [`Store::reset_user`] audited as `action`.
    pub(crate) async fn reset_credentials(
        &self,
        by: &AuditActor,
        name: &Username,
        action: &str,
    ) -> Result<EnrollmentCode, StoreError> {
        let mut tx = self.begin_write().await?;
        let user = fetch_user(tx.conn(), name).await?;
        let code = EnrollmentCode::generate(tx.now().saturating_add(ENROLLMENT_TTL));
        sqlx::query(
            "UPDATE users SET password_hash = NULL, totp_secret = NULL, totp_last_step = NULL, \
             enrollment_code_hash = $1, enrollment_expires_at = $2 WHERE id = $3",
        )
        .bind(EnrollmentCode::hash(&code.code))
        .bind(code.expires_at.to_rfc3339())
        .bind(user.id)
        .execute(tx.conn())
        .await?;
        let ended = sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user.id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        let now = move_not_before(&mut tx, user.id, Reach::Everything).await?;
        tx.audit(
            &by.draft(action)
                .target(format!("user:{name}"))
                .details(serde_json::json!({
                    "sessions_ended": ended,
                    "not_before": now,
                    "enrollment_expires_at": code.expires_at,
                })),
        )
        .await?;
        tx.notify(GrantChange::User(name.as_str().to_owned()))
            .await?;
        tx.commit().await?;
        Ok(code)
    }
}

/// Moves the not-befores `reach` names to this transaction's time, never backwards (the text
/// form is fixed-width RFC 3339 UTC, so text order is time order). Returns that time.
async fn move_not_before(
    tx: &mut WriteTx,
    user_id: i64,
    reach: Reach,
) -> Result<Timestamp, StoreError> {
    let now = tx.now();
    let sql = match reach {
        Reach::Tokens => {
            "UPDATE users SET tokens_not_before = CASE WHEN tokens_not_before IS NULL \
             OR tokens_not_before < $1 THEN $1 ELSE tokens_not_before END WHERE id = $2"
        }
        Reach::Everything => {
            "UPDATE users SET tokens_not_before = CASE WHEN tokens_not_before IS NULL \
             OR tokens_not_before < $1 THEN $1 ELSE tokens_not_before END, \
             sessions_not_before = CASE WHEN sessions_not_before IS NULL \
             OR sessions_not_before < $1 THEN $1 ELSE sessions_not_before END WHERE id = $2"
        }
    };
    sqlx::query(sql)
        .bind(now.to_rfc3339())
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    Ok(now)
}
