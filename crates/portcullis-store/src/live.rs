//! Live relay sessions (issue 14, point 5): the counters each relay reports, the list the web
//! service shows, and a supervisor's request to end one session.
//!
//! The relay holds the truth of a live session in memory (atomic counters per session). Every
//! few seconds it writes all of its live sessions' counters in one transaction
//! ([`Store::report_live_sessions`]), and the final ones with the session's end; the web service
//! reads them from here, in whatever process it runs. A report is working state, not history:
//! it takes neither the audit chain's lock nor an audit row (the session's end event carries the
//! totals), and a late report never overwrites an ended session's final numbers.
//!
//! Ending one session is a request written to the session's row with its `session.end` audit
//! event and a grant change `session:<id>` in one transaction. The relay holding the session
//! re-reads the request and ends the session with `ended_by_supervisor`; its periodic
//! reconciliation reads the outstanding requests of its open sessions
//! ([`Store::end_requests`]), so a lost notification delays the cut by one period at most.

use std::fmt;
use std::str::FromStr;

use portcullis_core::{DeviceName, GrantId, Timestamp, Username, ValidationError};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::relay::GrantChange;
use crate::{AuditActor, Backend, Store, StoreError};

/// Longest reason for ending a session, in characters: as for a denial or a revocation
/// (`portcullis-core` request.rs).
const MAX_REASON_CHARS: usize = 1000;

/// Most sessions one list returns.
pub const MAX_SESSION_LIST: u32 = 500;

/// A relay session's id: `rs_` and 16 characters of URL-safe base64 (96 random bits), as the
/// relay makes them. Text from outside (a URL path, a notification) is parsed into one before it
/// reaches a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelaySessionId(String);

impl RelaySessionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RelaySessionId {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, ValidationError> {
        let ok = text.strip_prefix("rs_").is_some_and(|rest| {
            rest.len() == 16
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValidationError::new(
                "id",
                format!(
                    "'{}' is not a relay session id (rs_ and 16 letters, digits, - or _)",
                    text.chars().take(40).collect::<String>()
                ),
            ))
        }
    }
}

impl fmt::Display for RelaySessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One live session's counters, as its relay reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCounters {
    pub id: String,
    /// Tunnelled TCP connections open now.
    pub open_streams: u64,
    /// Vendor to device.
    pub bytes_up: u64,
    /// Device to vendor.
    pub bytes_down: u64,
    /// Streams the relay refused so far.
    pub refused_streams: u64,
    /// The decoded Modbus activity (`null` when there was none).
    pub modbus: serde_json::Value,
}

/// A supervisor's request to end one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndRequest {
    /// Who asked (the audit actor's name).
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
}

impl EndRequest {
    /// What the vendor's `portcullis connect` prints after `session ended
    /// (ended_by_supervisor): `.
    pub fn message(&self) -> String {
        format!("ended by {}: {}", self.by, self.reason)
    }
}

/// A relay session as stored: who, where from, through which relay, and its last report.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: RelaySessionId,
    pub relay: String,
    pub grant: GrantId,
    pub vendor: Username,
    pub device: DeviceName,
    /// The client's address as the relay saw it.
    pub source: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
    pub open_streams: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub refused_streams: u64,
    pub modbus: Option<serde_json::Value>,
    /// When the relay last wrote the counters; `None` before its first report.
    pub last_reported_at: Option<Timestamp>,
    pub end_request: Option<EndRequest>,
}

/// Which sessions to list, newest first.
#[derive(Debug, Clone)]
pub struct SessionFilter {
    /// Only sessions not ended yet.
    pub live_only: bool,
    /// Only this vendor's (vendors see nothing else).
    pub vendor: Option<Username>,
    pub grant: Option<GrantId>,
    /// At most this many (capped at [`MAX_SESSION_LIST`]).
    pub limit: u32,
}

impl Default for SessionFilter {
    fn default() -> Self {
        Self {
            live_only: true,
            vendor: None,
            grant: None,
            limit: MAX_SESSION_LIST,
        }
    }
}

/// What waits for a supervisor: requests awaiting a decision and sessions running now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attention {
    pub pending_requests: u64,
    pub live_sessions: u64,
}

const SESSION_COLUMNS: &str = "s.id, s.relay, s.grant_id, s.username, s.source, s.started_at, \
    s.ended_at, s.end_reason, s.open_streams, s.bytes_up, s.bytes_down, s.refused_streams, \
    s.modbus, s.last_reported_at, s.end_requested_at, s.end_requested_by, \
    s.end_requested_reason, d.name AS device";
const SESSION_FROM: &str = "FROM relay_sessions s JOIN access_requests r ON r.id = s.grant_id \
    JOIN devices d ON d.id = r.device_id";

impl Store {
    /// Writes the counters of a relay's live sessions, all in one transaction (one commit per
    /// report, however many sessions). Rows of sessions already ended keep their final numbers.
    pub async fn report_live_sessions(&self, batch: &[LiveCounters]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let pool = &self.shared.pool;
        // No audit row and no chain lock: this is working state. SQLite still needs its write
        // lock up front (a deferred transaction that must upgrade can fail with BUSY at once).
        let mut tx = match self.backend() {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        let now = self.now().to_rfc3339();
        for c in batch {
            let modbus = (!c.modbus.is_null()).then(|| c.modbus.to_string());
            sqlx::query(
                "UPDATE relay_sessions SET open_streams = $1, bytes_up = $2, bytes_down = $3, \
                 refused_streams = $4, modbus = $5, last_reported_at = $6 \
                 WHERE id = $7 AND ended_at IS NULL",
            )
            .bind(db_count(c.open_streams))
            .bind(db_count(c.bytes_up))
            .bind(db_count(c.bytes_down))
            .bind(db_count(c.refused_streams))
            .bind(modbus)
            .bind(now.clone())
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Relay sessions as `filter` says, newest first.
    pub async fn relay_sessions(
        &self,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sql = format!("SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.live_only {
            sql += " AND s.ended_at IS NULL";
        }
        if filter.vendor.is_some() {
            sql += &format!(" AND s.username = {}", next());
        }
        if filter.grant.is_some() {
            sql += &format!(" AND s.grant_id = {}", next());
        }
        sql += &format!(" ORDER BY s.started_at DESC, s.id LIMIT {}", next());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(v) = &filter.vendor {
            q = q.bind(v.as_str().to_owned());
        }
        if let Some(g) = filter.grant {
            q = q.bind(g.get());
        }
        q = q.bind(i64::from(filter.limit.clamp(1, MAX_SESSION_LIST)));
        let rows = q.fetch_all(&self.shared.pool).await?;
        rows.iter().map(session_from_row).collect()
    }

    /// One relay session, live or ended.
    pub async fn relay_session(
        &self,
        id: &RelaySessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        load_session(&mut conn, id).await
    }

    /// A supervisor (or admin) asks for live session `id` to end, for `reason`: recorded on the
    /// session, audited as `session.end` and sent to the relays as
    /// [`GrantChange::Session`], in one transaction. The grant stays as it is. A session
    /// already over, or already being ended, is a conflict. Returns the session with the
    /// request.
    pub async fn request_session_end(
        &self,
        by: &AuditActor,
        id: &RelaySessionId,
        reason: &str,
    ) -> Result<SessionRecord, StoreError> {
        let reason = check_reason(reason)?;
        let mut tx = self.begin_write().await?;
        let mut rec = load_session(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("session {id} does not exist")))?;
        if let Some(ended) = rec.ended_at {
            return Err(StoreError::Conflict(format!(
                "session {id} is already over: it ended at {ended} ({})",
                rec.end_reason.as_deref().unwrap_or("unknown reason")
            )));
        }
        if let Some(earlier) = &rec.end_request {
            return Err(StoreError::Conflict(format!(
                "session {id} is already being ended: {} asked at {}",
                earlier.by, earlier.at
            )));
        }
        let request = EndRequest {
            by: by.name.clone(),
            reason,
            at: tx.now(),
        };
        sqlx::query(
            "UPDATE relay_sessions SET end_requested_at = $1, end_requested_by = $2, \
             end_requested_reason = $3 WHERE id = $4",
        )
        .bind(request.at.to_rfc3339())
        .bind(&request.by)
        .bind(&request.reason)
        .bind(id.as_str())
        .execute(tx.conn())
        .await?;
        tx.audit(
            &by.draft("session.end")
                .target(format!("session:{id}"))
                .grant(rec.grant)
                .session(id.as_str())
                .details(serde_json::json!({
                    "session": id.as_str(), "reason": request.reason,
                    "vendor": rec.vendor.as_str(), "device": rec.device.as_str(),
                    "relay": rec.relay,
                })),
        )
        .await?;
        tx.notify(GrantChange::Session(id.clone())).await?;
        tx.commit().await?;
        rec.end_request = Some(request);
        Ok(rec)
    }

    /// The end request on session `id` while it is still open (what a relay re-reads when told
    /// of one).
    pub async fn session_end_request(
        &self,
        id: &RelaySessionId,
    ) -> Result<Option<EndRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT end_requested_at, end_requested_by, end_requested_reason \
             FROM relay_sessions WHERE id = $1 AND ended_at IS NULL \
             AND end_requested_at IS NOT NULL",
        )
        .bind(id.as_str())
        .fetch_optional(&self.shared.pool)
        .await?;
        row.as_ref().map(end_request_from_row).transpose()
    }

    /// The end requests on `relay`'s open sessions, by session id (the relay's reconciliation).
    pub async fn end_requests(&self, relay: &str) -> Result<Vec<(String, EndRequest)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, end_requested_at, end_requested_by, end_requested_reason \
             FROM relay_sessions WHERE relay = $1 AND ended_at IS NULL \
             AND end_requested_at IS NOT NULL",
        )
        .bind(relay)
        .fetch_all(&self.shared.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, end_request_from_row(r)?)))
            .collect()
    }

    /// How many requests await a decision (not expired yet) and how many sessions are live.
    pub async fn attention(&self) -> Result<Attention, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM access_requests WHERE state = 'requested' \
             AND window_end > $1) AS pending, \
             (SELECT COUNT(*) FROM relay_sessions WHERE ended_at IS NULL) AS live",
        )
        .bind(self.now().to_rfc3339())
        .fetch_one(&self.shared.pool)
        .await?;
        Ok(Attention {
            pending_requests: count(row.try_get("pending")?),
            live_sessions: count(row.try_get("live")?),
        })
    }
}

/// The session's row, or `None`.
async fn load_session(
    conn: &mut sqlx::AnyConnection,
    id: &RelaySessionId,
) -> Result<Option<SessionRecord>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} {SESSION_FROM} WHERE s.id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(session_from_row).transpose()
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    let ts = |col: &str| -> Result<Option<Timestamp>, StoreError> {
        Ok(row
            .try_get::<Option<String>, _>(col)?
            .map(|t| Timestamp::parse_rfc3339(&t))
            .transpose()?)
    };
    let id: String = row.try_get("id")?;
    // Written by the relay from its own JSON; text that does not parse is shown as "none"
    // rather than failing the whole list, and logged.
    let modbus = row
        .try_get::<Option<String>, _>("modbus")?
        .and_then(
            |text| match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("session {id}: stored Modbus activity is not JSON: {e}");
                    None
                }
            },
        );
    let end_request = match ts("end_requested_at")? {
        Some(_) => Some(end_request_from_row(row)?),
        None => None,
    };
    Ok(SessionRecord {
        id: RelaySessionId(id),
        relay: row.try_get("relay")?,
        grant: GrantId::new(row.try_get("grant_id")?),
        vendor: Username::parse(&row.try_get::<String, _>("username")?)?,
        device: DeviceName::parse(&row.try_get::<String, _>("device")?)?,
        source: row.try_get("source")?,
        started_at: ts("started_at")?.unwrap_or(Timestamp::EPOCH),
        ended_at: ts("ended_at")?,
        end_reason: row.try_get("end_reason")?,
        open_streams: count(row.try_get("open_streams")?),
        bytes_up: count(row.try_get("bytes_up")?),
        bytes_down: count(row.try_get("bytes_down")?),
        refused_streams: count(row.try_get("refused_streams")?),
        modbus: modbus.filter(|m| !m.is_null()),
        last_reported_at: ts("last_reported_at")?,
        end_request,
    })
}

fn end_request_from_row(row: &AnyRow) -> Result<EndRequest, StoreError> {
    let at: String = row.try_get("end_requested_at")?;
    Ok(EndRequest {
        by: row
            .try_get::<Option<String>, _>("end_requested_by")?
            .unwrap_or_default(),
        reason: row
            .try_get::<Option<String>, _>("end_requested_reason")?
            .unwrap_or_default(),
        at: Timestamp::parse_rfc3339(&at)?,
    })
}

/// The reason as it is stored: trimmed, not empty, not over [`MAX_REASON_CHARS`], no control
/// characters (they could forge a line where the vendor's client prints it). The same rules as
/// a denial's or a revocation's reason in core (`check_text`, private there).
fn check_reason(text: &str) -> Result<String, ValidationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ValidationError::new("reason", "must not be empty"));
    }
    if t.chars().count() > MAX_REASON_CHARS {
        return Err(ValidationError::new(
            "reason",
            format!("is longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "reason",
            "must not contain control characters",
        ));
    }
    Ok(t.to_owned())
}

/// A counter as the database stores it (BIGINT): beyond `i64::MAX` it stays there.
pub(crate) fn db_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn session_ids_are_what_the_relay_makes() {
        let id: RelaySessionId = "rs_AbC-_0123456789x".parse().unwrap();
        assert_eq!(id.to_string(), "rs_AbC-_0123456789x");
        for bad in [
            "",
            "rs_",
            "rs_short",
            "xs_AbC-_0123456789xy",
            "rs_AbC-_0123456789xy",
            "rs_AbC-_01234567.9x",
            "rs_AbC-_0123456789\u{e9}",
        ] {
            let e = bad.parse::<RelaySessionId>().unwrap_err();
            assert_eq!(e.field, "id", "{bad}");
            assert!(e.message.contains("not a relay session id"), "{bad}: {e}");
        }
    }

    #[test]
    fn reasons_follow_the_rules_of_a_revocation() {
        assert_eq!(check_reason("  done early ").unwrap(), "done early");
        for (bad, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("a\nb", "control"),
            (&"x".repeat(1001)[..], "longer"),
        ] {
            let e = check_reason(bad).unwrap_err();
            assert_eq!(e.field, "reason");
            assert!(e.message.contains(why), "{bad:?}: {e}");
        }
        assert!(check_reason(&"x".repeat(1000)).is_ok());
    }

    #[test]
    fn the_vendor_reads_who_ended_the_session_and_why() {
        let r = EndRequest {
            by: "sam".into(),
            reason: "wrong PLC".into(),
            at: Timestamp::EPOCH,
        };
        assert_eq!(r.message(), "ended by sam: wrong PLC");
    }
}
