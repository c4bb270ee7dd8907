//! What logging in needs from the database: credentials, enrollment, the TOTP replay guard and
//! the lockout counter. Every check-and-set here is one atomic statement, so parallel requests
//! cannot both win.

use std::time::Duration;

use portcullis_core::audit::AuditDraft;
use portcullis_core::{Timestamp, Username};
use sqlx::Row;

use crate::users::{EnrollmentCode, UserRecord, fetch_user_by_id, find_user};
use crate::{AuditActor, Store, StoreError};

/// SR 1.11: `max_failures` failed attempts (password or code) within `window` lock the account
/// for `lock_for`, or until an admin unlocks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: i64,
    pub window: Duration,
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

/// What one failed login attempt did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted (and recorded); this attempt did not lock the account, though it may be locked
    /// already.
    Counted,
    /// This attempt locked the account until `until`; `login.locked` was written with it.
    Locked { until: Timestamp },
}

/// An account's secrets, for the login and enrollment handlers only.
#[derive(Clone)]
pub struct Credentials {
    pub user: UserRecord,
    pub password_hash: Option<String>,
    /// Sealed (encrypted) TOTP secret.
    pub totp_sealed: Option<String>,
    pub totp_last_step: Option<i64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user.username)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub async fn credentials(&self, name: &Username) -> Result<Option<Credentials>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        let Some(user) = find_user(&mut conn, name).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT password_hash, totp_secret, totp_last_step FROM users WHERE id = $1",
        )
        .bind(user.id)
        .fetch_one(&mut *conn)
        .await?;
        Ok(Some(Credentials {
            password_hash: row.try_get("password_hash")?,
            totp_sealed: row.try_get("totp_secret")?,
            totp_last_step: row.try_get("totp_last_step")?,
            user,
        }))
    }

    /// The account an unexpired, unused enrollment code belongs to.
    pub async fn enrollment(&self, code: &str) -> Result<Option<Credentials>, StoreError> {
        let now = self.now().to_rfc3339();
        let row = sqlx::query(
            "SELECT username FROM users WHERE enrollment_code_hash = $1 AND enrollment_expires_at > $2 \
             AND disabled_at IS NULL",
        )
        .bind(EnrollmentCode::hash(code))
        .bind(now)
        .fetch_optional(&self.shared.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                self.credentials(&Username::parse(&r.try_get::<String, _>("username")?)?)
                    .await
            }
        }
    }

    /// Step one of enrollment: the password and a not-yet-confirmed TOTP secret.
    pub async fn enroll_set_secrets(
        &self,
        user_id: i64,
        password_hash: &str,
        totp_sealed: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, totp_secret = $2, totp_last_step = NULL \
             WHERE id = $3 AND enrollment_code_hash IS NOT NULL",
        )
        .bind(password_hash.to_owned())
        .bind(totp_sealed.to_owned())
        .bind(user_id)
        .execute(&self.shared.pool)
        .await?;
        Ok(())
    }

    /// Step two: a correct code confirms the secret and uses up the enrollment code. Returns
    /// false when someone else confirmed first (the code works once).
    pub async fn enroll_confirm(
        &self,
        by: &AuditActor,
        user_id: i64,
        step: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET enrollment_code_hash = NULL, enrollment_expires_at = NULL, totp_last_step = $1 \
             WHERE id = $2 AND enrollment_code_hash IS NOT NULL AND password_hash IS NOT NULL \
             AND totp_secret IS NOT NULL",
        )
        .bind(step)
        .bind(user_id)
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        let user = fetch_user_by_id(tx.conn(), user_id).await?;
        tx.audit(
            &by.draft("user.enroll")
                .target(format!("user:{}", user.username)),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Issues a new enrollment code (lost phone, forgotten password); the old credentials stop
    /// working at once, and so do the relay tokens and live relay sessions the user had
    /// (`revoke.rs`). Audited as `user.reset_enrollment`.
    pub async fn reset_enrollment(
        &self,
        by: &AuditActor,
        name: &Username,
    ) -> Result<EnrollmentCode, StoreError> {
        self.reset_credentials(by, name, "user.reset_enrollment")
            .await
    }

    /// The TOTP replay guard: records `step` as used only if it is later than the last one used.
    /// Exactly one of any number of parallel calls with the same step returns true.
    pub async fn use_totp_step(&self, user_id: i64, step: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 \
             AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(&self.shared.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Counts a failed attempt against the account, records `failure` (the event describing the
    /// attempt, e.g. `login.fail`) and locks the account when the policy says so, all in one write
    /// transaction.
    ///
    /// Whether THIS call locked the account is decided by the database: the lock is a conditional
    /// UPDATE (only when the count has reached the limit and no lock is in force) and its
    /// `rows_affected` says whether it took. Under any number of parallel failures exactly one
    /// call sees 1, so exactly one `login.locked` event is written per lock (issue 12: ten
    /// parallel wrong passwords used to write it six times). On SQLite the write transaction is
    /// `BEGIN IMMEDIATE`; on PostgreSQL the chain's advisory lock serialises it, and the row lock
    /// of the UPDATE alone would also make the second caller see the first one's `locked_until`.
    pub async fn record_login_failure(
        &self,
        user_id: i64,
        policy: &LockoutPolicy,
        failure: &AuditDraft,
    ) -> Result<FailureOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let now = tx.now();
        let window_start = now.saturating_sub(policy.window).to_rfc3339();
        let until = now.saturating_add(policy.lock_for);
        // Restart the count when the last run of failures is older than the window, otherwise
        // add one.
        sqlx::query(
            "UPDATE users SET \
               failed_logins = CASE WHEN first_failed_at IS NULL OR first_failed_at < $1 THEN 1 ELSE failed_logins + 1 END, \
               first_failed_at = CASE WHEN first_failed_at IS NULL OR first_failed_at < $1 THEN $2 ELSE first_failed_at END \
             WHERE id = $3",
        )
        .bind(window_start)
        .bind(now.to_rfc3339())
        .bind(user_id)
        .execute(tx.conn())
        .await?;
        tx.audit(failure).await?;
        // Lock only an account that is not locked now: a later failure during the lock must not
        // move `locked_until` (nor count as a new lock).
        let locked = sqlx::query(
            "UPDATE users SET locked_until = $1 WHERE id = $2 AND failed_logins >= $3 \
             AND (locked_until IS NULL OR locked_until <= $4)",
        )
        .bind(until.to_rfc3339())
        .bind(user_id)
        .bind(policy.max_failures)
        .bind(now.to_rfc3339())
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        let outcome = if locked {
            let mut event = failure.clone();
            event.action = "login.locked".into();
            event.details = serde_json::json!({ "until": until, "failures": policy.max_failures });
            tx.audit(&event).await?;
            FailureOutcome::Locked { until }
        } else {
            FailureOutcome::Counted
        };
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn record_login_success(&self, user_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET failed_logins = 0, first_failed_at = NULL WHERE id = $1")
            .bind(user_id)
            .execute(&self.shared.pool)
            .await?;
        Ok(())
    }

    pub async fn user_by_id(&self, id: i64) -> Result<UserRecord, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        fetch_user_by_id(&mut conn, id).await
    }
}
