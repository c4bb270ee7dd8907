//! What the relay keeps in the database: its sessions (open ones, and which token ids were
//! used), their audit events, and the grant-change notifications that tell a relay a live
//! session may have to end.
//!
//! Notifications travel two ways. Inside one process (`portcullis serve`), every committed
//! revoke, user disable or policy change is sent on an in-process broadcast channel
//! ([`Store::grant_changes`]). Across processes (`portcullis web` and `portcullis relay` on
//! PostgreSQL), the same transaction also runs `pg_notify`, which PostgreSQL delivers only if
//! the transaction commits; [`Store::forward_pg_notifications`] turns them back into
//! [`GrantChange`]s in the relay's process. Both are hints: the relay re-reads the grant before
//! it acts, and reconciles all live sessions periodically in case a notification was lost.

use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::{GrantId, Timestamp};
use sqlx::Row;
use tokio::sync::broadcast;

use crate::live::{EndRequest, RelaySessionId, db_count};
use crate::{Store, StoreError};

/// PostgreSQL channel carrying grant changes between processes.
pub const PG_CHANNEL: &str = "portcullis_grant_changes";

/// Something that may end live relay sessions. The relay re-checks the sessions it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantChange {
    /// A grant was revoked (or otherwise changed state).
    Grant(GrantId),
    /// A user was disabled.
    User(String),
    /// A device's policy changed.
    Device(String),
    /// A site was revoked or re-enrolled: its connector's connection must be re-checked.
    Site(String),
    /// A supervisor asked for this one session to end.
    Session(RelaySessionId),
    /// Anything may have changed (a notification stream was interrupted): re-check everything.
    All,
}

impl GrantChange {
    /// The `pg_notify` payload: `grant:<id>`, `user:<name>`, `device:<name>`, `site:<name>`,
    /// `session:<id>` or `all`.
    pub fn to_payload(&self) -> String {
        match self {
            GrantChange::Grant(id) => format!("grant:{id}"),
            GrantChange::User(u) => format!("user:{u}"),
            GrantChange::Device(d) => format!("device:{d}"),
            GrantChange::Site(n) => format!("site:{n}"),
            GrantChange::Session(id) => format!("session:{id}"),
            GrantChange::All => "all".into(),
        }
    }

    /// Parses a payload; anything unrecognised means "re-check everything", never "ignore".
    pub fn from_payload(text: &str) -> GrantChange {
        match text.split_once(':') {
            Some(("grant", id)) => id.parse().map_or(GrantChange::All, GrantChange::Grant),
            Some(("user", u)) => GrantChange::User(u.to_owned()),
            Some(("device", d)) => GrantChange::Device(d.to_owned()),
            Some(("site", n)) => GrantChange::Site(n.to_owned()),
            Some(("session", id)) => id.parse().map_or(GrantChange::All, GrantChange::Session),
            _ => GrantChange::All,
        }
    }
}

/// A session the relay accepted, as recorded when it starts.
#[derive(Debug, Clone)]
pub struct RelaySessionStart {
    pub id: String,
    /// The relay's name (several relays may share a database).
    pub relay: String,
    pub grant: GrantId,
    pub username: String,
    pub device: String,
    pub jti: String,
    /// The client certificate thumbprint the token was bound to.
    pub cnf: String,
    pub source: String,
    /// The targets the session may reach, `device:port`.
    pub targets: Vec<String>,
    pub window_end: Timestamp,
    /// The site whose connector carries the session's streams; `None`: the relay dials the
    /// device itself.
    pub site: Option<String>,
}

/// How a session ended, as recorded.
#[derive(Debug, Clone)]
pub struct RelaySessionEnd {
    pub id: String,
    pub grant: GrantId,
    pub username: String,
    pub device: String,
    pub reason: String,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// Vendor to device.
    pub bytes_up: u64,
    /// Device to vendor.
    pub bytes_down: u64,
    pub streams: u64,
    /// Streams the relay refused in the session (all of them, audited one by one or not).
    pub refused_streams: u64,
    /// The decoded Modbus activity (`null` when there was none): the live view's last report.
    pub modbus: serde_json::Value,
    /// Ids of the site-connector connections that carried its streams, in first-use order.
    pub connectors: Vec<String>,
    /// The supervisor's request, when one ended it (`ended_by_supervisor`).
    pub ended_by: Option<EndRequest>,
}

/// A session that was open when its relay stopped without closing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanSession {
    pub id: String,
    pub grant: GrantId,
    pub username: String,
}

impl Store {
    /// Receives every grant change committed through this store (and, with
    /// [`Store::forward_pg_notifications`], those of other processes).
    pub fn grant_changes(&self) -> broadcast::Receiver<GrantChange> {
        self.shared.changes.subscribe()
    }

    /// Sends a change to this process's subscribers.
    pub(crate) fn publish(&self, change: GrantChange) {
        // No subscribers (no relay in this process) is normal.
        let _ = self.shared.changes.send(change);
    }

    /// Records a session start: its row (which fails if the token id was used before) and its
    /// audit event, in one transaction. An error means the session must be refused.
    pub async fn start_relay_session(&self, s: &RelaySessionStart) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let now = tx.now();
        let used: Option<i64> = sqlx::query("SELECT 1 AS one FROM relay_sessions WHERE jti = $1")
            .bind(&s.jti)
            .fetch_optional(tx.conn())
            .await?
            .map(|r| r.try_get("one"))
            .transpose()?;
        if used.is_some() {
            return Err(StoreError::TokenReused);
        }
        sqlx::query(
            "INSERT INTO relay_sessions (id, relay, grant_id, username, jti, source, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(&s.relay)
        .bind(s.grant.get())
        .bind(&s.username)
        .bind(&s.jti)
        .bind(&s.source)
        .bind(now.to_rfc3339())
        .execute(tx.conn())
        .await
        .map_err(|e| match e.as_database_error() {
            // Two handshakes with one token at once: the other one's row won (PostgreSQL; on
            // SQLite the write lock orders them and the check above answers).
            Some(d) if d.is_unique_violation() => StoreError::TokenReused,
            _ => StoreError::from(e),
        })?;
        let mut details = serde_json::json!({
            "session": s.id, "relay": s.relay, "jti": s.jti, "cnf": s.cnf,
            "targets": s.targets, "window_end": s.window_end,
        });
        if let Some(site) = &s.site {
            details["site"] = site.clone().into();
        }
        let draft = AuditDraft::new(s.username.clone(), ActorRole::Vendor, "relay.session.start")
            .source(s.source.clone())
            .target(format!("device:{}", s.device))
            .grant(s.grant)
            .details(details);
        tx.audit(&draft).await?;
        tx.commit().await
    }

    /// Records a session end with its reason, bytes each way and duration; the row keeps the
    /// final counters.
    pub async fn end_relay_session(&self, e: &RelaySessionEnd) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE relay_sessions SET ended_at = $1, end_reason = $2, open_streams = 0, \
             bytes_up = $3, bytes_down = $4, refused_streams = $5, modbus = $6, \
             last_reported_at = $1 WHERE id = $7 AND ended_at IS NULL",
        )
        .bind(e.ended_at.to_rfc3339())
        .bind(&e.reason)
        .bind(db_count(e.bytes_up))
        .bind(db_count(e.bytes_down))
        .bind(db_count(e.refused_streams))
        .bind((!e.modbus.is_null()).then(|| e.modbus.to_string()))
        .bind(&e.id)
        .execute(tx.conn())
        .await?;
        let duration_ms = (e.ended_at.unix_micros() - e.started_at.unix_micros()).max(0) / 1000;
        let mut details = serde_json::json!({
            "session": e.id, "vendor": e.username, "reason": e.reason,
            "started_at": e.started_at, "ended_at": e.ended_at, "duration_ms": duration_ms,
            "bytes_up": e.bytes_up, "bytes_down": e.bytes_down, "streams": e.streams,
            "refused_streams": e.refused_streams,
        });
        if !e.connectors.is_empty() {
            details["connectors"] = e.connectors.clone().into();
        }
        if let Some(by) = &e.ended_by {
            details["supervisor"] = by.by.clone().into();
            details["supervisor_reason"] = by.reason.clone().into();
        }
        let draft = AuditDraft::new("relay", ActorRole::System, "relay.session.end")
            .target(format!("device:{}", e.device))
            .grant(e.grant)
            .details(details);
        tx.audit(&draft).await?;
        tx.commit().await
    }

    /// Closes, in the table and the audit log, every session `relay` left open: the relay
    /// crashed or was killed. Returns them.
    pub async fn close_orphan_relay_sessions(
        &self,
        relay: &str,
    ) -> Result<Vec<OrphanSession>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT s.id, s.grant_id, s.username, s.started_at, s.last_reported_at, \
             s.bytes_up, s.bytes_down, d.name AS device \
             FROM relay_sessions s JOIN access_requests r ON r.id = s.grant_id \
             JOIN devices d ON d.id = r.device_id \
             WHERE s.relay = $1 AND s.ended_at IS NULL ORDER BY s.started_at",
        )
        .bind(relay)
        .fetch_all(tx.conn())
        .await?;
        let now = tx.now();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let o = OrphanSession {
                id: row.try_get("id")?,
                grant: GrantId::new(row.try_get("grant_id")?),
                username: row.try_get("username")?,
            };
            let started: String = row.try_get("started_at")?;
            let device: String = row.try_get("device")?;
            let reported: Option<String> = row.try_get("last_reported_at")?;
            sqlx::query(
                "UPDATE relay_sessions SET ended_at = $1, end_reason = $2, open_streams = 0 \
                 WHERE id = $3",
            )
            .bind(now.to_rfc3339())
            .bind("relay_restart")
            .bind(&o.id)
            .execute(tx.conn())
            .await?;
            let mut details = serde_json::json!({
                "session": o.id, "vendor": o.username, "reason": "relay_restart",
                "started_at": started, "ended_at": now,
                "note": "the relay stopped without closing this session; bytes unknown",
            });
            // What its last live report said: a lower bound, better than nothing.
            if let Some(at) = reported {
                details["note"] =
                    "the relay stopped without closing this session; bytes as last reported".into();
                details["last_reported_at"] = at.into();
                details["bytes_up"] = row.try_get::<i64, _>("bytes_up")?.into();
                details["bytes_down"] = row.try_get::<i64, _>("bytes_down")?.into();
            }
            let draft = AuditDraft::new("relay", ActorRole::System, "relay.session.end")
                .target(format!("device:{device}"))
                .grant(o.grant)
                .details(details);
            tx.audit(&draft).await?;
            out.push(o);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// On PostgreSQL, listens for grant changes other processes commit and publishes them on
    /// [`Store::grant_changes`] until the store is dropped. Reconnects by itself; after a
    /// reconnect it publishes [`GrantChange::All`], since notifications sent meanwhile are lost.
    /// Does nothing on SQLite (one process owns an embedded database).
    pub async fn forward_pg_notifications(&self, url: &str) -> Result<(), StoreError> {
        if self.backend() != crate::Backend::Postgres {
            return Ok(());
        }
        let mut listener = sqlx::postgres::PgListener::connect(url)
            .await
            .map_err(|e| StoreError::Connect(format!("cannot listen for grant changes: {e}")))?;
        listener
            .listen(PG_CHANNEL)
            .await
            .map_err(|e| StoreError::Connect(format!("cannot listen for grant changes: {e}")))?;
        let weak = std::sync::Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                let next = listener.try_recv().await;
                let Some(shared) = weak.upgrade() else { return };
                let change = match next {
                    Ok(Some(n)) => GrantChange::from_payload(n.payload()),
                    // The connection dropped; the next try_recv reconnects. What was sent
                    // meanwhile is lost, so everything is re-checked.
                    Ok(None) => GrantChange::All,
                    Err(e) => {
                        tracing::warn!("grant-change listener: {e}; retrying");
                        drop(shared);
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let _ = shared.changes.send(change);
            }
        });
        Ok(())
    }
}
