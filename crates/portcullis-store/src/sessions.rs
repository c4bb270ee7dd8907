//! Server-side sessions for the browser (cookie) and the CLI (bearer token). The token is 256
//! random bits shown once; only its SHA-256 is stored.

use std::time::Duration;

use portcullis_core::Timestamp;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

/// How stale `last_seen_at` may get before a request refreshes it (see [`Store::session`]).
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// SECURITY.md: 30 minutes idle, 12 hours absolute. The password-only stage lives 5 minutes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
    pub mfa_stage: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            mfa_stage: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Password checked; the only thing this session can do is submit a TOTP code.
    Mfa,
    /// Password and TOTP checked.
    Full,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Mfa => "mfa",
            Stage::Full => "full",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: i64,
    pub stage: Stage,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub expires_at: Timestamp,
    pub step_up_at: Option<Timestamp>,
}

/// A fresh session token and its record.
#[derive(Clone)]
pub struct NewSession {
    pub token: String,
    pub session: Session,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Starts a session at `stage`. A new token every time: a session id is never carried over
    /// from before login (session fixation).
    pub async fn create_session(
        &self,
        user_id: i64,
        stage: Stage,
        source: Option<&str>,
        policy: &SessionPolicy,
    ) -> Result<NewSession, StoreError> {
        let now = self.now();
        let life = match stage {
            Stage::Mfa => policy.mfa_stage,
            Stage::Full => policy.absolute,
        };
        let session = Session {
            user_id,
            stage,
            csrf_token: random_token(),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(life),
            step_up_at: (stage == Stage::Full).then_some(now),
        };
        let token = random_token();
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, user_id, stage, csrf_token, source, created_at, \
             last_seen_at, expires_at, step_up_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
        )
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(stage.as_str())
        .bind(session.csrf_token.clone())
        .bind(source.map(str::to_owned))
        .bind(now.to_rfc3339())
        .bind(session.expires_at.to_rfc3339())
        .bind(session.step_up_at.map(|t| t.to_rfc3339()))
        .execute(&self.shared.pool)
        .await?;
        Ok(NewSession { token, session })
    }

    /// The live session for `token`, touching its idle timer; None when unknown, idle too long
    /// or past its absolute end (and then it is deleted).
    pub async fn session(
        &self,
        token: &str,
        policy: &SessionPolicy,
    ) -> Result<Option<Session>, StoreError> {
        let now = self.now();
        let hash = token_hash(token);
        let row = sqlx::query(
            "SELECT s.user_id, s.stage, s.csrf_token, s.created_at, s.last_seen_at, s.expires_at, \
             s.step_up_at FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND u.disabled_at IS NULL",
        )
        .bind(hash.clone())
        .fetch_optional(&self.shared.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let s = session_from_row(&row)?;
        if now >= s.expires_at || now >= s.last_seen_at.saturating_add(policy.idle) {
            self.end_session(token).await?;
            return Ok(None);
        }
        // A durable write on every authenticated GET would put each page view in the single
        // writer's queue with approvals and audit appends; touching at most once a minute means a
        // session can lapse up to a minute *early*, never late.
        if now < s.last_seen_at.saturating_add(TOUCH_INTERVAL) {
            return Ok(Some(s));
        }
        sqlx::query("UPDATE web_sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now.to_rfc3339())
            .bind(hash)
            .execute(&self.shared.pool)
            .await?;
        Ok(Some(Session {
            last_seen_at: now,
            ..s
        }))
    }

    pub async fn record_step_up(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE web_sessions SET step_up_at = $1 WHERE token_hash = $2")
            .bind(self.now().to_rfc3339())
            .bind(token_hash(token))
            .execute(&self.shared.pool)
            .await?;
        Ok(())
    }

    pub async fn end_session(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&self.shared.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of a user (disable, enrollment reset).
    pub async fn end_user_sessions(&self, user_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.shared.pool)
            .await?;
        Ok(())
    }
}

fn session_from_row(r: &AnyRow) -> Result<Session, StoreError> {
    let ts = |c: &str| -> Result<Timestamp, StoreError> {
        Ok(Timestamp::parse_rfc3339(&r.try_get::<String, _>(c)?)?)
    };
    Ok(Session {
        user_id: r.try_get("user_id")?,
        stage: match r.try_get::<String, _>("stage")?.as_str() {
            "full" => Stage::Full,
            _ => Stage::Mfa,
        },
        csrf_token: r.try_get("csrf_token")?,
        created_at: ts("created_at")?,
        last_seen_at: ts("last_seen_at")?,
        expires_at: ts("expires_at")?,
        step_up_at: r
            .try_get::<Option<String>, _>("step_up_at")?
            .map(|t| Timestamp::parse_rfc3339(&t))
            .transpose()?,
    })
}
