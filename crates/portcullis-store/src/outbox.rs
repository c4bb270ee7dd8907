//! The notification outbox (migration 0008): notices written with the events that cause them,
//! routed into one delivery per recipient, and the deliveries' tries, leases and failures.
//!
//! Nothing here sends anything: `portcullis-notify` routes and delivers. What this file promises
//! is that a notice is never lost once its event is committed (it is in the same transaction),
//! that a delivery is tried by one worker at a time (a lease on `next_attempt_at`), and that a
//! failing delivery never fails anything but itself.

use std::time::Duration;

use portcullis_core::audit::AuditEvent;
use portcullis_core::notify::{Notice, WINDOW_ENDING};
use portcullis_core::{GrantId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::sites::{opt_ts, ts};
use crate::{AuditActor, Backend, Store, StoreError};

/// A notice waiting to be routed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxNotice {
    pub id: i64,
    /// The audit event behind it; `None` for a window-ending notice.
    pub event_seq: Option<i64>,
    pub action: String,
    pub notice: Notice,
    pub grant_id: Option<GrantId>,
    pub facts: serde_json::Value,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "email" => Ok(Channel::Email),
            "webhook" => Ok(Channel::Webhook),
            other => Err(StoreError::Corrupt(format!("unknown channel '{other}'"))),
        }
    }
}

/// One message for one recipient, as routing makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub channel: Channel,
    /// An e-mail address, or a webhook URL.
    pub recipient: String,
    /// The account an e-mail goes to.
    pub recipient_user: Option<String>,
    pub subject: String,
    /// E-mail: the plain-text body. Webhook: the JSON document posted.
    pub body: String,
}

/// A delivery as admins see it, and as the worker tries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub outbox_id: i64,
    pub action: String,
    pub event_seq: Option<i64>,
    pub channel: Channel,
    pub recipient: String,
    pub recipient_user: Option<String>,
    pub subject: String,
    #[serde(skip)]
    pub body: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

/// Counts for `/metrics` and the admin page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    pub unrouted: i64,
    pub pending: i64,
    /// Pending deliveries that have failed at least once and wait for their next try.
    pub retrying: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// Writes the notice `ev` causes, if any, inside the transaction that writes `ev`.
pub(crate) async fn enqueue(conn: &mut AnyConnection, ev: &AuditEvent) -> Result<(), StoreError> {
    // Cheap for the many events that notify nobody: the details are only parsed when the
    // action could need them.
    let state = if ev.action == "request.approve" {
        serde_json::from_str::<serde_json::Value>(&ev.details)
            .ok()
            .and_then(|d| d.get("state").and_then(|s| s.as_str()).map(str::to_owned))
    } else {
        None
    };
    let Some(notice) = Notice::of(&ev.action, state.as_deref()) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO outbox (event_seq, action, notice, grant_id, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(ev.seq)
    .bind(ev.action.clone())
    .bind(notice.as_str())
    .bind(ev.grant_id.map(|g| g.get()))
    .bind(ev.ts.to_rfc3339())
    .execute(conn)
    .await?;
    Ok(())
}

fn notice_from_str(s: &str) -> Result<Notice, StoreError> {
    const ALL: [Notice; 10] = [
        Notice::NewRequest,
        Notice::SecondApproval,
        Notice::Decision,
        Notice::SessionStarted,
        Notice::SessionEnded,
        Notice::Revoked,
        Notice::EndedBySupervisor,
        Notice::Lockout,
        Notice::WindowEnding,
        Notice::Alert,
    ];
    ALL.into_iter()
        .find(|n| n.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown notice '{s}'")))
}

const DELIVERY_COLUMNS: &str = "d.id, d.outbox_id, o.action, o.event_seq, d.channel, d.recipient, \
    d.recipient_user, d.subject, d.body, d.state, d.attempts, d.next_attempt_at, d.last_error, \
    d.created_at, d.delivered_at";

fn delivery_from_row(r: &AnyRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        outbox_id: r.try_get("outbox_id")?,
        action: r.try_get("action")?,
        event_seq: r.try_get("event_seq")?,
        channel: Channel::parse(&r.try_get::<String, _>("channel")?)?,
        recipient: r.try_get("recipient")?,
        recipient_user: r.try_get("recipient_user")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: ts(r, "next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: ts(r, "created_at")?,
        delivered_at: opt_ts(r, "delivered_at")?,
    })
}

/// Which deliveries an admin lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryFilter {
    #[default]
    All,
    Pending,
    Failed,
    Delivered,
}

impl Store {
    async fn begin_plain(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let pool = &self.shared.pool;
        Ok(match self.shared.backend {
            // Take SQLite's write lock at once: a deferred transaction that reads, then writes,
            // can fail with SQLITE_BUSY instead of waiting.
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        })
    }

    /// Notices not yet routed, oldest first.
    pub async fn unrouted_notices(&self, limit: i64) -> Result<Vec<OutboxNotice>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_seq, action, notice, grant_id, facts, created_at FROM outbox \
             WHERE routed_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxNotice {
                    id: r.try_get("id")?,
                    event_seq: r.try_get("event_seq")?,
                    action: r.try_get("action")?,
                    notice: notice_from_str(&r.try_get::<String, _>("notice")?)?,
                    grant_id: r.try_get::<Option<i64>, _>("grant_id")?.map(GrantId::new),
                    facts: serde_json::from_str(&r.try_get::<String, _>("facts")?)
                        .map_err(|e| StoreError::Corrupt(format!("outbox facts: {e}")))?,
                    created_at: ts(r, "created_at")?,
                })
            })
            .collect()
    }

    /// Routes one notice: its deliveries are written and it is marked routed, together. Returns
    /// false, writing nothing, when another worker routed it first.
    pub async fn route_notice(
        &self,
        id: i64,
        deliveries: &[NewDelivery],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_plain().await?;
        let now = self.now().to_rfc3339();
        let took =
            sqlx::query("UPDATE outbox SET routed_at = $1 WHERE id = $2 AND routed_at IS NULL")
                .bind(now.clone())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if took.rows_affected() != 1 {
            return Ok(false);
        }
        for d in deliveries {
            sqlx::query(
                "INSERT INTO deliveries (outbox_id, channel, recipient, recipient_user, subject, body, \
                 state, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
            )
            .bind(id)
            .bind(d.channel.as_str())
            .bind(d.recipient.clone())
            .bind(d.recipient_user.clone())
            .bind(d.subject.clone())
            .bind(d.body.clone())
            .bind(now.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` due deliveries for one try each: a claimed delivery is not due again
    /// until `lease` has passed, so a worker that dies mid-try leaves it to be tried again.
    pub async fn claim_deliveries(
        &self,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let now = self.now();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.outbox_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at, d.id LIMIT $2"
        )))
        .bind(now.to_rfc3339())
        .bind(limit)
        .fetch_all(&self.shared.pool)
        .await?;
        let until = now.saturating_add(lease).to_rfc3339();
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut d = delivery_from_row(r)?;
            let took = sqlx::query(
                "UPDATE deliveries SET next_attempt_at = $1, attempts = attempts + 1 \
                 WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
            )
            .bind(until.clone())
            .bind(d.id)
            .bind(d.next_attempt_at.to_rfc3339())
            .execute(&self.shared.pool)
            .await?;
            if took.rows_affected() == 1 {
                d.attempts += 1;
                claimed.push(d);
            }
        }
        Ok(claimed)
    }

    pub async fn mark_delivered(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = 'delivered', delivered_at = $1, last_error = NULL WHERE id = $2",
        )
        .bind(self.now().to_rfc3339())
        .bind(id)
        .execute(&self.shared.pool)
        .await?;
        Ok(())
    }

    /// Records a failed try: pending again after `retry_in`, or failed for good when `None`.
    pub async fn mark_delivery_failed(
        &self,
        id: i64,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(500).collect();
        match retry_in {
            Some(wait) => {
                sqlx::query(
                    "UPDATE deliveries SET last_error = $1, next_attempt_at = $2 WHERE id = $3",
                )
                .bind(error)
                .bind(self.now().saturating_add(wait).to_rfc3339())
                .bind(id)
                .execute(&self.shared.pool)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE deliveries SET last_error = $1, state = 'failed' WHERE id = $2",
                )
                .bind(error)
                .bind(id)
                .execute(&self.shared.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// An admin sends a failed (or waiting) delivery again now. Audited as `notify.retry`.
    pub async fn retry_delivery(&self, by: &AuditActor, id: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.outbox_id WHERE d.id = $1"
        )))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("delivery #{id} does not exist")))?;
        let d = delivery_from_row(&row)?;
        if d.state == "delivered" {
            return Err(StoreError::Conflict(format!(
                "delivery #{id} was delivered already"
            )));
        }
        sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1 WHERE id = $2",
        )
        .bind(tx.now().to_rfc3339())
        .bind(id)
        .execute(tx.conn())
        .await?;
        tx.audit(
            &by.draft("notify.retry")
                .target(format!("delivery:{id}"))
                .details(serde_json::json!({
                    "channel": d.channel, "recipient": d.recipient, "action": d.action,
                    "state": d.state, "attempts": d.attempts, "last_error": d.last_error,
                })),
        )
        .await?;
        tx.commit().await
    }

    /// The newest deliveries first.
    pub async fn deliveries(
        &self,
        filter: DeliveryFilter,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let state = match filter {
            DeliveryFilter::All => "",
            DeliveryFilter::Pending => " WHERE d.state = 'pending'",
            DeliveryFilter::Failed => " WHERE d.state = 'failed'",
            DeliveryFilter::Delivered => " WHERE d.state = 'delivered'",
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.id = d.outbox_id{state} \
             ORDER BY d.id DESC LIMIT $1"
        )))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let r = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM outbox WHERE routed_at IS NULL) AS unrouted, \
             (SELECT COUNT(*) FROM deliveries WHERE state = 'pending') AS pending, \
             (SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND last_error IS NOT NULL) AS retrying, \
             (SELECT COUNT(*) FROM deliveries WHERE state = 'delivered') AS delivered, \
             (SELECT COUNT(*) FROM deliveries WHERE state = 'failed') AS failed",
        )
        .fetch_one(&self.shared.pool)
        .await?;
        Ok(OutboxStats {
            unrouted: r.try_get("unrouted")?,
            pending: r.try_get("pending")?,
            retrying: r.try_get("retrying")?,
            delivered: r.try_get("delivered")?,
            failed: r.try_get("failed")?,
        })
    }

    /// Writes the notice that `grant`'s window ends in `minutes`, once: a second call (from a
    /// restart, or another process) finds it written and returns false.
    pub async fn enqueue_window_notice(
        &self,
        grant: GrantId,
        minutes: u32,
        window_end: Timestamp,
    ) -> Result<bool, StoreError> {
        let facts = serde_json::json!({ "minutes": minutes, "end": window_end });
        let done = sqlx::query(
            "INSERT INTO outbox (event_seq, action, notice, grant_id, facts, dedupe_key, created_at) \
             VALUES (NULL, $1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(WINDOW_ENDING)
        .bind(Notice::WindowEnding.as_str())
        .bind(grant.get())
        .bind(facts.to_string())
        .bind(format!("window:{}:{minutes}:{}", grant.get(), window_end.to_rfc3339()))
        .bind(self.now().to_rfc3339())
        .execute(&self.shared.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Live grants (approved or active) whose window ends in `(after, until]`, with their ends.
    pub async fn grants_ending(
        &self,
        after: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(GrantId, Timestamp)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, window_end FROM access_requests WHERE state IN ('approved', 'active') \
             AND window_end > $1 AND window_end <= $2 ORDER BY window_end",
        )
        .bind(after.to_rfc3339())
        .bind(until.to_rfc3339())
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((GrantId::new(r.try_get("id")?), ts(r, "window_end")?)))
            .collect()
    }
}
