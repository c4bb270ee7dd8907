//! Persisted grant ends (issue 12): a grant's end by time is a fact, written once.
//!
//! The stored state of an approved grant used to stay `approved` while its state was computed
//! from the wall clock at every read, so a clock stepped back re-opened an ended window. Now the
//! first part of the broker that sees a request's window over (a read for a page, the API or
//! the token endpoint, the relay's handshake or re-check, the relay's monotonic window timer,
//! or the periodic sweep) writes `state = 'expired'` and `ended_at`, with one `request.expire`
//! audit event, in one transaction. The UPDATE is conditional on a non-final state, so racing
//! observers write it once. After that every read says `expired`, whatever the wall clock says.
//!
//! A forward step of the wall clock can make the sweep persist an end early. That is accepted on
//! purpose (docs/decisions/0008-clock-steps.md): it fails closed (the vendor asks again), while
//! not persisting during an anomaly would leave the re-opening the persistence is there to stop.

use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::{GrantId, Timestamp};
use sqlx::Row;

use crate::relay::GrantChange;
use crate::write::WriteTx;
use crate::{Store, StoreError};

/// Stored states a window's end moves to `expired`.
const OPEN_STATES: &str = "'requested', 'approved', 'active'";

/// Who saw a grant's end first, as `request.expire` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndObserver {
    /// A read (page, API, token endpoint, the relay's handshake or re-check).
    Read,
    /// The periodic sweep.
    Sweep,
    /// The relay's monotonic window-end timer of a live session: the window is over by the
    /// monotonic clock, whatever the wall clock says now.
    RelayTimer,
}

impl EndObserver {
    pub fn as_str(self) -> &'static str {
        match self {
            EndObserver::Read => "read",
            EndObserver::Sweep => "sweep",
            EndObserver::RelayTimer => "relay_window_timer",
        }
    }
}

impl Store {
    /// Persists the end of request `id` if its window has ended by the wall clock (or, for
    /// [`EndObserver::RelayTimer`], by the relay's monotonic clock) and it is not final yet.
    /// Returns true when this call wrote it.
    pub async fn persist_end(&self, id: i64, observer: EndObserver) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let now = tx.now();
        let sql = if observer == EndObserver::RelayTimer {
            format!("SELECT id FROM access_requests WHERE id = $1 AND state IN ({OPEN_STATES})")
        } else {
            format!(
                "SELECT id FROM access_requests WHERE id = $1 AND state IN ({OPEN_STATES}) \
                 AND window_end <= $2"
            )
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
        if observer != EndObserver::RelayTimer {
            q = q.bind(now.to_rfc3339());
        }
        let found = q.fetch_optional(tx.conn()).await?.is_some();
        let written = found && expire(&mut tx, id, now, observer).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Persists the end of every request whose window has ended by the wall clock. Returns
    /// how many it wrote.
    pub async fn sweep_ended(&self) -> Result<usize, StoreError> {
        // A read first, without the write lock: nearly always nothing is due.
        let due = {
            let mut conn = self.shared.pool.acquire().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 AS one FROM access_requests WHERE state IN ({OPEN_STATES}) \
                 AND window_end <= $1 LIMIT 1"
            )))
            .bind(self.now().to_rfc3339())
            .fetch_optional(&mut *conn)
            .await?
            .is_some()
        };
        if !due {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let now = tx.now();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM access_requests WHERE state IN ({OPEN_STATES}) \
             AND window_end <= $1 ORDER BY id LIMIT 500"
        )))
        .bind(now.to_rfc3339())
        .fetch_all(tx.conn())
        .await?;
        let mut written = 0;
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            if expire(&mut tx, id, now, EndObserver::Sweep).await? {
                written += 1;
            }
        }
        tx.commit().await?;
        Ok(written)
    }
}

/// The conditional UPDATE and its audit event; false when another observer was first.
async fn expire(
    tx: &mut WriteTx,
    id: i64,
    now: Timestamp,
    observer: EndObserver,
) -> Result<bool, StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE access_requests SET state = 'expired', ended_at = $1, updated_at = $1 \
         WHERE id = $2 AND state IN ({OPEN_STATES})"
    )))
    .bind(now.to_rfc3339())
    .bind(id)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let row = sqlx::query(
        "SELECT d.name AS device, r.window_end FROM access_requests r \
         JOIN devices d ON d.id = r.device_id WHERE r.id = $1",
    )
    .bind(id)
    .fetch_one(tx.conn())
    .await?;
    let device: String = row.try_get("device")?;
    let window_end: String = row.try_get("window_end")?;
    let draft = AuditDraft::new("portcullis", ActorRole::System, "request.expire")
        .target(format!("device:{device}"))
        .grant(GrantId::new(id))
        .details(serde_json::json!({
            "device": device, "window_end": window_end, "ended_at": now,
            "observed_by": observer.as_str(),
        }));
    tx.audit(&draft).await?;
    // Relays in other processes end live sessions of it at once (their own timers would too).
    tx.notify(GrantChange::Grant(GrantId::new(id))).await?;
    Ok(true)
}
