//! Sites and their connectors (docs/decisions/0007-site-connectors.md).
//!
//! An admin registers a site and hands its one-time enrollment token to whoever installs the
//! connector; the connector trades the token (once) for a certificate whose fingerprint is
//! recorded here, and the relay accepts exactly that certificate for the site. Rows are never
//! deleted: a revoked site keeps its row, so a device routed through it never falls back to a
//! direct dial. The connector's live connection (presence) is kept beside it, in `presence.rs`.

mod presence;

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::{SiteName, Timestamp};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::relay::GrantChange;
use crate::{AuditActor, Store, StoreError};

/// A connector whose last sign of life is older than this is shown offline. The relay records
/// one at most every 10 s while the connector answers its pings every 2 s.
pub const ONLINE_WITHIN: Duration = Duration::from_secs(30);

/// How long a site enrollment token works.
pub const SITE_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a person is told about any token that cannot enroll: the same words whether it was
/// mistyped, used, expired or its site revoked, so a guess learns nothing about which sites exist.
pub const BAD_SITE_TOKEN: &str = "this enrollment token is not valid: it was mistyped, already \
    used or has expired, or its site was revoked. Ask the admin for a new one: \
    portcullis admin site token <site>";

const SITE_COLUMNS: &str = "name, created_at, created_by, enrolled_at, cert_fingerprint, \
    cert_not_after, revoked_at, connection_id, relay, source, connected_at, last_seen_at";

/// A registered site, as lists and the relay see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteRecord {
    pub name: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub enrolled_at: Option<Timestamp>,
    /// base64url SHA-256 of the enrolled certificate's DER: the certificate the relay accepts.
    pub cert_fingerprint: Option<String>,
    pub cert_not_after: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// The connector's live connection, if a relay holds one.
    pub presence: Option<ConnectorPresence>,
}

impl SiteRecord {
    /// One word (or two) for lists and pages.
    pub fn status(&self, now: Timestamp) -> SiteStatus {
        if self.revoked_at.is_some() {
            SiteStatus::Revoked
        } else if self.cert_fingerprint.is_none() {
            SiteStatus::NotEnrolled
        } else if self
            .presence
            .as_ref()
            .is_some_and(|p| now.duration_since(p.last_seen_at) <= ONLINE_WITHIN)
        {
            SiteStatus::Online
        } else {
            SiteStatus::Offline
        }
    }

    /// When the connector was last heard from, if it is (or was, until the relay noticed it
    /// gone) connected.
    pub fn last_seen(&self) -> Option<Timestamp> {
        self.presence.as_ref().map(|p| p.last_seen_at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SiteStatus {
    #[serde(rename = "not enrolled")]
    NotEnrolled,
    #[serde(rename = "online")]
    Online,
    #[serde(rename = "offline")]
    Offline,
    #[serde(rename = "revoked")]
    Revoked,
}

impl SiteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteStatus::NotEnrolled => "not enrolled",
            SiteStatus::Online => "online",
            SiteStatus::Offline => "offline",
            SiteStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for SiteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connector's connection to a relay, as that relay records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorPresence {
    pub connection_id: String,
    /// The relay's name (`--relay-name`).
    pub relay: String,
    /// The connector's address as the relay sees it.
    pub source: String,
    pub connected_at: Timestamp,
    pub last_seen_at: Timestamp,
}

/// A one-time site enrollment token: shown once, stored only as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct SiteToken {
    /// `pcs_` and 32 random bytes in base64url.
    pub token: String,
    pub expires_at: Timestamp,
}

impl fmt::Debug for SiteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl SiteToken {
    fn generate(expires_at: Timestamp) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self {
            token: format!("pcs_{}", URL_SAFE_NO_PAD.encode(bytes)),
            expires_at,
        }
    }

    /// What the database keeps: hex SHA-256 of the token as typed (surrounding space ignored).
    pub fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.trim().as_bytes()))
    }
}

impl Store {
    /// Registers a site and issues its first enrollment token.
    pub async fn add_site(
        &self,
        by: &AuditActor,
        name: &SiteName,
    ) -> Result<(SiteRecord, SiteToken), StoreError> {
        let mut tx = self.begin_write().await?;
        if find_site(tx.conn(), name.as_str()).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "site '{name}' already exists"
            )));
        }
        let now = tx.now();
        let token = SiteToken::generate(now.saturating_add(SITE_TOKEN_TTL));
        sqlx::query(
            "INSERT INTO sites (name, created_at, created_by, enroll_token_hash, enroll_expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name.as_str().to_owned())
        .bind(now.to_rfc3339())
        .bind(by.name.clone())
        .bind(SiteToken::hash(&token.token))
        .bind(token.expires_at.to_rfc3339())
        .execute(tx.conn())
        .await?;
        tx.audit(
            &by.draft("site.add")
                .target(format!("site:{name}"))
                .details(serde_json::json!({ "enrollment_expires_at": token.expires_at })),
        )
        .await?;
        let record = fetch_site(tx.conn(), name.as_str()).await?;
        tx.commit().await?;
        Ok((record, token))
    }

    /// Issues a new enrollment token for a site (replacing any unused one), e.g. to enroll a
    /// replacement connector. The current certificate keeps working until a connector enrolls
    /// with the new token.
    pub async fn new_site_token(
        &self,
        by: &AuditActor,
        name: &SiteName,
    ) -> Result<SiteToken, StoreError> {
        let mut tx = self.begin_write().await?;
        let site = fetch_site(tx.conn(), name.as_str()).await?;
        if let Some(at) = site.revoked_at {
            return Err(StoreError::Conflict(format!(
                "site '{name}' was revoked at {at} and cannot enroll a connector again; to \
                 replace a connector, issue a token without revoking the site"
            )));
        }
        let now = tx.now();
        let token = SiteToken::generate(now.saturating_add(SITE_TOKEN_TTL));
        // Whether an unused token is being replaced, for the audit record.
        let had_token = sqlx::query("SELECT enroll_token_hash FROM sites WHERE name = $1")
            .bind(name.as_str().to_owned())
            .fetch_one(tx.conn())
            .await?
            .try_get::<Option<String>, _>("enroll_token_hash")?
            .is_some();
        sqlx::query(
            "UPDATE sites SET enroll_token_hash = $1, enroll_expires_at = $2 WHERE name = $3",
        )
        .bind(SiteToken::hash(&token.token))
        .bind(token.expires_at.to_rfc3339())
        .bind(name.as_str().to_owned())
        .execute(tx.conn())
        .await?;
        tx.audit(
            &by.draft("site.token")
                .target(format!("site:{name}"))
                .details(serde_json::json!({
                    "enrollment_expires_at": token.expires_at,
                    "replaces_unused_token": had_token,
                    "enrolled": site.cert_fingerprint.is_some(),
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The site a valid token belongs to: unused, unexpired, and its site not revoked.
    pub async fn site_for_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT name FROM sites WHERE enroll_token_hash = $1 AND enroll_expires_at > $2 \
             AND revoked_at IS NULL",
        )
        .bind(SiteToken::hash(token))
        .bind(self.now().to_rfc3339())
        .fetch_optional(&self.shared.pool)
        .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    /// Consumes `token` and records the certificate the connector enrolled with, in one
    /// transaction: a token works once. Returns the site's name. A second enrollment of a site
    /// replaces its certificate; the relay is told, and drops the old connection.
    pub async fn enroll_site(
        &self,
        token: &str,
        fingerprint: &str,
        not_after: Timestamp,
        source: Option<String>,
    ) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        let now = tx.now();
        let row = sqlx::query(
            "SELECT id, name, cert_fingerprint FROM sites WHERE enroll_token_hash = $1 \
             AND enroll_expires_at > $2 AND revoked_at IS NULL",
        )
        .bind(SiteToken::hash(token))
        .bind(now.to_rfc3339())
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| StoreError::Forbidden(BAD_SITE_TOKEN.into()))?;
        let id: i64 = row.try_get("id")?;
        let name: String = row.try_get("name")?;
        let old: Option<String> = row.try_get("cert_fingerprint")?;
        let taken = sqlx::query("SELECT name FROM sites WHERE cert_fingerprint = $1 AND id <> $2")
            .bind(fingerprint.to_owned())
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(
                "this certificate is already enrolled for another site; enroll with a new key"
                    .into(),
            ));
        }
        sqlx::query(
            "UPDATE sites SET enroll_token_hash = NULL, enroll_expires_at = NULL, \
             enrolled_at = $1, cert_fingerprint = $2, cert_not_after = $3 WHERE id = $4",
        )
        .bind(now.to_rfc3339())
        .bind(fingerprint.to_owned())
        .bind(not_after.to_rfc3339())
        .bind(id)
        .execute(tx.conn())
        .await?;
        let mut draft = AuditDraft::new(format!("site:{name}"), ActorRole::System, "site.enroll")
            .target(format!("site:{name}"))
            .details(serde_json::json!({
                "fingerprint": fingerprint,
                "not_after": not_after,
                "replaced_fingerprint": old,
            }));
        if let Some(s) = source {
            draft = draft.source(s);
        }
        tx.audit(&draft).await?;
        tx.notify(GrantChange::Site(name.clone())).await?;
        tx.commit().await?;
        Ok(name)
    }

    /// Revokes a site for good: the relay closes its connector's connection at once and refuses
    /// its certificate from then on; an unused enrollment token dies with it.
    pub async fn revoke_site(&self, by: &AuditActor, name: &SiteName) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let site = fetch_site(tx.conn(), name.as_str()).await?;
        if let Some(at) = site.revoked_at {
            return Err(StoreError::Conflict(format!(
                "site '{name}' is already revoked (since {at})"
            )));
        }
        let now = tx.now();
        sqlx::query(
            "UPDATE sites SET revoked_at = $1, revoked_by = $2, enroll_token_hash = NULL, \
             enroll_expires_at = NULL WHERE name = $3",
        )
        .bind(now.to_rfc3339())
        .bind(by.name.clone())
        .bind(name.as_str().to_owned())
        .execute(tx.conn())
        .await?;
        tx.audit(
            &by.draft("site.revoke")
                .target(format!("site:{name}"))
                .details(serde_json::json!({
                    "fingerprint": site.cert_fingerprint,
                    "connected": site.presence.is_some(),
                })),
        )
        .await?;
        tx.notify(GrantChange::Site(name.as_str().to_owned()))
            .await?;
        tx.commit().await
    }

    /// Every site, by name.
    pub async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SITE_COLUMNS} FROM sites ORDER BY name"
        )))
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter().map(site_from_row).collect()
    }

    pub async fn site(&self, name: &str) -> Result<Option<SiteRecord>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        find_site(&mut conn, name).await
    }
}

async fn find_site(conn: &mut AnyConnection, name: &str) -> Result<Option<SiteRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SITE_COLUMNS} FROM sites WHERE name = $1"
    )))
    .bind(name.to_owned())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(site_from_row).transpose()
}

async fn fetch_site(conn: &mut AnyConnection, name: &str) -> Result<SiteRecord, StoreError> {
    find_site(conn, name).await?.ok_or_else(|| {
        StoreError::NotFound(format!(
            "site '{name}' does not exist; `portcullis admin site list` shows the sites"
        ))
    })
}

/// A timestamp column (fixed-width RFC 3339 text); shared by the store's row readers.
pub(crate) fn ts(r: &AnyRow, col: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::parse_rfc3339(&r.try_get::<String, _>(col)?)?)
}

/// A timestamp column that may be NULL.
pub(crate) fn opt_ts(r: &AnyRow, col: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(r.try_get::<Option<String>, _>(col)?
        .map(|t| Timestamp::parse_rfc3339(&t))
        .transpose()?)
}

fn site_from_row(r: &AnyRow) -> Result<SiteRecord, StoreError> {
    let presence = match r.try_get::<Option<String>, _>("connection_id")? {
        Some(connection_id) => Some(ConnectorPresence {
            connection_id,
            relay: r.try_get("relay")?,
            source: r.try_get("source")?,
            connected_at: ts(r, "connected_at")?,
            last_seen_at: ts(r, "last_seen_at")?,
        }),
        None => None,
    };
    Ok(SiteRecord {
        name: r.try_get("name")?,
        created_at: ts(r, "created_at")?,
        created_by: r.try_get("created_by")?,
        enrolled_at: opt_ts(r, "enrolled_at")?,
        cert_fingerprint: r.try_get("cert_fingerprint")?,
        cert_not_after: opt_ts(r, "cert_not_after")?,
        revoked_at: opt_ts(r, "revoked_at")?,
        presence,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn record() -> SiteRecord {
        SiteRecord {
            name: "plant-2".into(),
            created_at: t("2026-11-25T08:00:00Z"),
            created_by: "cli:root".into(),
            enrolled_at: None,
            cert_fingerprint: None,
            cert_not_after: None,
            revoked_at: None,
            presence: None,
        }
    }

    #[test]
    fn status_follows_revocation_enrollment_and_last_sign_of_life() {
        let now = t("2026-11-25T09:00:00Z");
        let mut r = record();
        assert_eq!(r.status(now), SiteStatus::NotEnrolled);
        r.cert_fingerprint = Some("fp".into());
        assert_eq!(r.status(now), SiteStatus::Offline);
        r.presence = Some(ConnectorPresence {
            connection_id: "c1".into(),
            relay: "relay".into(),
            source: "192.0.2.7:50000".into(),
            connected_at: t("2026-11-25T08:50:00Z"),
            last_seen_at: t("2026-11-25T08:59:30Z"),
        });
        assert_eq!(
            r.status(now),
            SiteStatus::Online,
            "30 s ago is still online"
        );
        assert_eq!(
            r.status(now.saturating_add(Duration::from_secs(1))),
            SiteStatus::Offline
        );
        r.revoked_at = Some(now);
        assert_eq!(r.status(now), SiteStatus::Revoked);
        assert_eq!(
            serde_json::to_value(SiteStatus::NotEnrolled).unwrap(),
            "not enrolled"
        );
        assert_eq!(SiteStatus::Online.to_string(), "online");
    }

    #[test]
    fn tokens_are_prefixed_random_and_never_debug_printed() {
        let a = SiteToken::generate(Timestamp::EPOCH);
        let b = SiteToken::generate(Timestamp::EPOCH);
        assert!(
            a.token.starts_with("pcs_") && a.token.len() == 4 + 43,
            "{}",
            a.token
        );
        assert_ne!(a.token, b.token);
        assert!(!format!("{a:?}").contains(&a.token));
        assert_eq!(
            SiteToken::hash(&format!(" {} ", a.token)),
            SiteToken::hash(&a.token)
        );
    }
}
