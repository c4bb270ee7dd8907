//! User accounts: one role each; vendors belong to an organisation.

use std::fmt;

use portcullis_core::{Email, OrgName, Role, TimeZoneName, Timestamp, Username};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::orgs::org_id;
use crate::relay::GrantChange;
use crate::sites::opt_ts;
use crate::{AuditActor, ENROLLMENT_TTL, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: Username,
    pub role: Role,
    pub org: Option<OrgName>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    pub id: i64,
    pub username: Username,
    pub role: Role,
    pub org: Option<OrgName>,
    /// Password and TOTP are set and confirmed.
    pub enrolled: bool,
    pub failed_logins: i64,
    pub locked_until: Option<Timestamp>,
    pub disabled_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Where notifications go; `None`: this account gets no e-mail.
    pub email: Option<Email>,
    /// The zone this person's pages and messages use; `None`: the plant's.
    pub time_zone: Option<TimeZoneName>,
    /// Wants to hear of every session's start and end (supervisors).
    pub notify_sessions: bool,
    /// Wants alerts (admins get them regardless).
    pub notify_alerts: bool,
}

/// A change to an account's contact details and notification opt-ins; `None` keeps a value,
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactChange {
    pub email: Option<Option<Email>>,
    pub time_zone: Option<Option<TimeZoneName>>,
    pub notify_sessions: Option<bool>,
    pub notify_alerts: Option<bool>,
}

impl ContactChange {
    pub fn is_empty(&self) -> bool {
        *self == ContactChange::default()
    }

    /// What changes, for the audit event: only the fields given.
    fn details(&self) -> serde_json::Value {
        let mut d = serde_json::Map::new();
        if let Some(e) = &self.email {
            d.insert("email".into(), serde_json::json!(e));
        }
        if let Some(t) = &self.time_zone {
            d.insert("time_zone".into(), serde_json::json!(t));
        }
        if let Some(n) = self.notify_sessions {
            d.insert("notify_sessions".into(), n.into());
        }
        if let Some(n) = self.notify_alerts {
            d.insert("notify_alerts".into(), n.into());
        }
        serde_json::Value::Object(d)
    }
}

impl UserRecord {
    /// Receives alerts: every admin, and whoever asked.
    pub fn wants_alerts(&self) -> bool {
        self.role == Role::Admin || self.notify_alerts
    }

    /// Can be told anything now: an address, and an account that is not disabled.
    pub fn reachable(&self) -> Option<&Email> {
        self.email.as_ref().filter(|_| self.disabled_at.is_none())
    }
}

impl UserRecord {
    /// One word for lists: disabled, locked, enrolling or active.
    pub fn status(&self, now: Timestamp) -> &'static str {
        if self.disabled_at.is_some() {
            "disabled"
        } else if self.locked_until.is_some_and(|t| t > now) {
            "locked"
        } else if !self.enrolled {
            "enrolling"
        } else {
            "active"
        }
    }
}

/// A one-time enrollment code: shown once to the admin, stored only as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentCode {
    pub code: String,
    pub expires_at: Timestamp,
}

impl fmt::Debug for EnrollmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentCode")
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl EnrollmentCode {
    /// 128 random bits as 32 hex digits.
    pub(crate) fn generate(expires_at: Timestamp) -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self {
            code: hex::encode(bytes),
            expires_at,
        }
    }

    pub fn hash(code: &str) -> String {
        hex::encode(Sha256::digest(code.trim().as_bytes()))
    }
}

const USER_COLUMNS: &str = "u.id, u.username, u.role, o.name AS org, \
    CASE WHEN u.password_hash IS NOT NULL AND u.totp_secret IS NOT NULL \
    AND u.enrollment_code_hash IS NULL THEN 1 ELSE 0 END AS enrolled, \
    u.failed_logins, u.locked_until, u.disabled_at, u.created_at, u.email, u.time_zone, \
    u.notify_sessions, u.notify_alerts";

impl Store {
    /// Creates an account and its one-time enrollment code. Vendors need an organisation; no
    /// other role may have one (a separate account per role: SR 2.1 separation of duties).
    pub async fn add_user(
        &self,
        by: &AuditActor,
        new: &NewUser,
    ) -> Result<(UserRecord, EnrollmentCode), StoreError> {
        self.add_user_with_contact(by, new, &ContactChange::default())
            .await
    }

    /// [`Store::add_user`] with contact details, in the same transaction (one `user.add` event
    /// that names them).
    pub async fn add_user_with_contact(
        &self,
        by: &AuditActor,
        new: &NewUser,
        contact: &ContactChange,
    ) -> Result<(UserRecord, EnrollmentCode), StoreError> {
        let org = match (new.role, &new.org) {
            (Role::Vendor, None) => {
                return Err(StoreError::Conflict(
                    "a vendor must belong to an organisation: add --org <name>".into(),
                ));
            }
            (Role::Vendor, Some(o)) => Some(o),
            (role, Some(_)) => {
                return Err(StoreError::Conflict(format!(
                    "only vendors belong to an organisation; a {role} account takes no --org"
                )));
            }
            (_, None) => None,
        };
        let mut tx = self.begin_write().await?;
        if user_exists(tx.conn(), &new.username).await? {
            return Err(StoreError::Conflict(format!(
                "user '{}' already exists",
                new.username
            )));
        }
        let org_id = match org {
            Some(o) => Some(org_id(tx.conn(), o).await?),
            None => None,
        };
        let now = tx.now();
        let code = EnrollmentCode::generate(now.saturating_add(ENROLLMENT_TTL));
        sqlx::query(
            "INSERT INTO users (username, role, org_id, enrollment_code_hash, enrollment_expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new.username.as_str().to_owned())
        .bind(new.role.as_str())
        .bind(org_id)
        .bind(EnrollmentCode::hash(&code.code))
        .bind(code.expires_at.to_rfc3339())
        .bind(now.to_rfc3339())
        .execute(tx.conn())
        .await?;
        let user_id = fetch_user(tx.conn(), &new.username).await?.id;
        write_contact(tx.conn(), user_id, contact).await?;
        let mut details = serde_json::json!({
            "role": new.role.as_str(),
            "org": org.map(|o| o.as_str()),
            "enrollment_expires_at": code.expires_at,
        });
        if let (serde_json::Value::Object(d), serde_json::Value::Object(c)) =
            (&mut details, contact.details())
        {
            d.extend(c);
        }
        tx.audit(
            &by.draft("user.add")
                .target(format!("user:{}", new.username))
                .details(details),
        )
        .await?;
        let record = fetch_user(tx.conn(), &new.username).await?;
        tx.commit().await?;
        Ok((record, code))
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u LEFT JOIN orgs o ON o.id = u.org_id ORDER BY u.username"
        )))
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn user(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        find_user(&mut conn, name).await
    }

    /// Disables an account: it can no longer log in, and (with the relay) its live sessions end.
    pub async fn disable_user(
        &self,
        by: &AuditActor,
        name: &Username,
    ) -> Result<UserRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let user = fetch_user(tx.conn(), name).await?;
        if user.disabled_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "user '{name}' is already disabled"
            )));
        }
        let now = tx.now();
        sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
            .bind(now.to_rfc3339())
            .bind(user.id)
            .execute(tx.conn())
            .await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user.id)
            .execute(tx.conn())
            .await?;
        tx.audit(&by.draft("user.disable").target(format!("user:{name}")))
            .await?;
        tx.notify(GrantChange::User(name.as_str().to_owned()))
            .await?;
        let user = fetch_user(tx.conn(), name).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Changes an account's contact details or opt-ins. Audited as `user.set`, naming what
    /// changed. `by` is an admin, or the account's owner after a step-up (the caller checks).
    pub async fn set_contact(
        &self,
        by: &AuditActor,
        name: &Username,
        change: &ContactChange,
    ) -> Result<UserRecord, StoreError> {
        if change.is_empty() {
            return Err(StoreError::Conflict(
                "nothing to change: give an e-mail address, a time zone or a notification setting"
                    .into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let user = fetch_user(tx.conn(), name).await?;
        write_contact(tx.conn(), user.id, change).await?;
        tx.audit(
            &by.draft("user.set")
                .target(format!("user:{name}"))
                .details(change.details()),
        )
        .await?;
        let user = fetch_user(tx.conn(), name).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Clears a lockout (SR 1.11: "until an admin unlocks") and the failed-attempt count.
    pub async fn unlock_user(
        &self,
        by: &AuditActor,
        name: &Username,
    ) -> Result<UserRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let user = fetch_user(tx.conn(), name).await?;
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(user.id)
            .execute(tx.conn())
            .await?;
        let details = serde_json::json!({
            "failed_logins": user.failed_logins,
            "was_locked_until": user.locked_until,
        });
        tx.audit(
            &by.draft("user.unlock")
                .target(format!("user:{name}"))
                .details(details),
        )
        .await?;
        let user = fetch_user(tx.conn(), name).await?;
        tx.commit().await?;
        Ok(user)
    }
}

async fn write_contact(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    c: &ContactChange,
) -> Result<(), StoreError> {
    if let Some(e) = &c.email {
        sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
            .bind(e.as_ref().map(|e| e.as_str().to_owned()))
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(t) = &c.time_zone {
        sqlx::query("UPDATE users SET time_zone = $1 WHERE id = $2")
            .bind(t.as_ref().map(|t| t.as_str().to_owned()))
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(n) = c.notify_sessions {
        sqlx::query("UPDATE users SET notify_sessions = $1 WHERE id = $2")
            .bind(i64::from(n))
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(n) = c.notify_alerts {
        sqlx::query("UPDATE users SET notify_alerts = $1 WHERE id = $2")
            .bind(i64::from(n))
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn user_exists(conn: &mut sqlx::AnyConnection, name: &Username) -> Result<bool, StoreError> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE username = $1")
        .bind(name.as_str().to_owned())
        .fetch_optional(conn)
        .await?
        .is_some())
}

pub(crate) async fn find_user(
    conn: &mut sqlx::AnyConnection,
    name: &Username,
) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users u LEFT JOIN orgs o ON o.id = u.org_id WHERE u.username = $1"
    )))
    .bind(name.as_str().to_owned())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

pub(crate) async fn fetch_user(
    conn: &mut sqlx::AnyConnection,
    name: &Username,
) -> Result<UserRecord, StoreError> {
    find_user(conn, name)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user '{name}' does not exist")))
}

pub(crate) async fn fetch_user_by_id(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<UserRecord, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users u LEFT JOIN orgs o ON o.id = u.org_id WHERE u.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref()
        .map(user_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("user #{id} does not exist")))
}

fn user_from_row(r: &AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        username: Username::parse(&r.try_get::<String, _>("username")?)?,
        role: r.try_get::<String, _>("role")?.parse()?,
        org: r
            .try_get::<Option<String>, _>("org")?
            .map(|o| OrgName::parse(&o))
            .transpose()?,
        enrolled: r.try_get::<i64, _>("enrolled")? == 1,
        failed_logins: r.try_get("failed_logins")?,
        locked_until: opt_ts(r, "locked_until")?,
        disabled_at: opt_ts(r, "disabled_at")?,
        created_at: Timestamp::parse_rfc3339(&r.try_get::<String, _>("created_at")?)?,
        email: r
            .try_get::<Option<String>, _>("email")?
            .map(|e| Email::parse(&e))
            .transpose()?,
        time_zone: r
            .try_get::<Option<String>, _>("time_zone")?
            .map(|t| TimeZoneName::parse(&t))
            .transpose()?,
        notify_sessions: r.try_get::<i64, _>("notify_sessions")? == 1,
        notify_alerts: r.try_get::<i64, _>("notify_alerts")? == 1,
    })
}
