//! The audit log: appending (grouped), reading, filtering and verifying.
//!
//! Appends that are not part of a larger change go through one writer task per process, which
//! takes every append queued at that moment into a single durable transaction (group commit).
//! Eight concurrent appenders then cost one fsync, not eight, and the chain lock is taken once.

use futures_util::TryStreamExt;
use portcullis_core::Timestamp;
use portcullis_core::audit::{
    AuditDraft, AuditEvent, ChainBreak, ChainHead, ChainVerifier, Digest, MacKey, VerifiedChain,
};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError};

/// Most appends one group transaction takes.
const MAX_GROUP: usize = 256;

const COLUMNS: &str = "seq, ts, actor, role, action, target, grant_id, session_id, source, details, prev_hash, hash, mac";

pub(crate) struct AppendJob {
    draft: AuditDraft,
    reply: oneshot::Sender<Result<AuditEvent, StoreError>>,
}

/// What an auditor asks the log for. Every field narrows; `after` and `limit` page.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Events about this device (target `device:<name>`, or naming it in their details).
    pub device: Option<String>,
    pub grant_id: Option<i64>,
    /// Only events with `seq > after`.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// The outcome of verifying the whole stored chain.
pub type VerifyOutcome = Result<VerifiedChain, ChainBreak>;

impl Store {
    /// Appends one event durably and returns it as stored. Fails (and the caller must refuse
    /// what it was about to do) when the database cannot take it.
    pub async fn append(&self, draft: AuditDraft) -> Result<AuditEvent, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.appender
            .send(AppendJob { draft, reply })
            .await
            .map_err(|_| StoreError::AppenderStopped)?;
        rx.await.map_err(|_| StoreError::AppenderStopped)?
    }

    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        let mut conn = self.shared.pool.acquire().await?;
        read_head(&mut conn).await
    }

    /// Events matching `q`, in `seq` order.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_events WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        // Placeholders are numbered in the order the binds below follow.
        if q.since.is_some() {
            sql += &format!(" AND ts >= {}", next());
        }
        if q.until.is_some() {
            sql += &format!(" AND ts < {}", next());
        }
        if q.actor.is_some() {
            sql += &format!(" AND actor = {}", next());
        }
        if q.action.is_some() {
            sql += &format!(" AND action = {}", next());
        }
        if q.device.is_some() {
            let (a, b) = (next(), next());
            sql += &format!(" AND (target = {a} OR details LIKE {b})");
        }
        if q.grant_id.is_some() {
            sql += &format!(" AND grant_id = {}", next());
        }
        if q.after.is_some() {
            sql += &format!(" AND seq > {}", next());
        }
        sql += " ORDER BY seq";
        if q.limit.is_some() {
            sql += &format!(" LIMIT {}", next());
        }
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(t) = q.since {
            query = query.bind(t.to_rfc3339());
        }
        if let Some(t) = q.until {
            query = query.bind(t.to_rfc3339());
        }
        if let Some(a) = &q.actor {
            query = query.bind(a.clone());
        }
        if let Some(a) = &q.action {
            query = query.bind(a.clone());
        }
        if let Some(d) = &q.device {
            let quoted = serde_json::Value::String(d.clone()).to_string();
            query = query
                .bind(format!("device:{d}"))
                .bind(format!("%\"device\":{quoted}%"));
        }
        if let Some(g) = q.grant_id {
            query = query.bind(g);
        }
        if let Some(a) = q.after {
            query = query.bind(a);
        }
        if let Some(l) = q.limit {
            query = query.bind(l.clamp(0, 10_000));
        }
        let rows = query.fetch_all(&self.shared.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Checks the whole stored chain in `seq` order against its hashes, the MAC key (when given)
    /// and the signed checkpoints (already signature-checked by the caller). The outer error is
    /// the database failing; the inner one is the chain being broken.
    pub async fn verify_chain(
        &self,
        key: Option<MacKey>,
        checkpoints: Vec<(i64, Digest)>,
    ) -> Result<VerifyOutcome, StoreError> {
        let mut verifier = ChainVerifier::new(key, checkpoints);
        let sql = format!("SELECT {COLUMNS} FROM audit_events ORDER BY seq");
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.shared.pool);
        while let Some(row) = rows.try_next().await? {
            let ev = match event_from_row(&row) {
                Ok(ev) => ev,
                Err(StoreError::Invalid(e)) => {
                    let seq: i64 = row.try_get("seq").unwrap_or(0);
                    return Ok(Err(ChainBreak {
                        seq,
                        reason: portcullis_core::audit::BreakReason::Malformed(e.to_string()),
                    }));
                }
                Err(e) => return Err(e),
            };
            if let Err(b) = verifier.push(&ev) {
                return Ok(Err(b));
            }
        }
        Ok(verifier.finish())
    }
}

/// The writer task behind [`Store::append`]. Ends when every `Store` handle is dropped.
pub(crate) async fn run_appender(store: Store, mut rx: mpsc::Receiver<AppendJob>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let drafts: Vec<&AuditDraft> = batch.iter().map(|j| &j.draft).collect();
        match store.append_group(&drafts).await {
            Ok(events) => {
                for (job, ev) in batch.drain(..).zip(events) {
                    let _ = job.reply.send(Ok(ev));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit append failed");
                let msg = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
            }
        }
    }
}

impl Store {
    async fn append_group(&self, drafts: &[&AuditDraft]) -> Result<Vec<AuditEvent>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(drafts.len());
        for d in drafts {
            out.push(tx.audit(d).await?);
        }
        tx.commit().await?;
        Ok(out)
    }
}

pub(crate) async fn read_head(conn: &mut AnyConnection) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT seq, hash, ts FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?;
    match row {
        None => Ok(ChainHead::GENESIS),
        Some(r) => Ok(ChainHead {
            seq: r.try_get("seq")?,
            hash: Digest::from_hex(&r.try_get::<String, _>("hash")?)?,
            ts: Timestamp::parse_rfc3339(&r.try_get::<String, _>("ts")?)?,
        }),
    }
}

pub(crate) async fn insert_event(
    conn: &mut AnyConnection,
    ev: &AuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO audit_events ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )))
    .bind(ev.seq)
    .bind(ev.ts.to_rfc3339())
    .bind(ev.actor.clone())
    .bind(ev.role.clone())
    .bind(ev.action.clone())
    .bind(ev.target.clone())
    .bind(ev.grant_id)
    .bind(ev.session_id.clone())
    .bind(ev.source.clone())
    .bind(ev.details.clone())
    .bind(ev.prev_hash.to_hex())
    .bind(ev.hash.to_hex())
    .bind(ev.mac.to_hex())
    .execute(conn)
    .await?;
    Ok(())
}

fn event_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: r.try_get("seq")?,
        ts: Timestamp::parse_rfc3339(&r.try_get::<String, _>("ts")?)?,
        actor: r.try_get("actor")?,
        role: r.try_get("role")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        grant_id: r.try_get("grant_id")?,
        session_id: r.try_get("session_id")?,
        source: r.try_get("source")?,
        details: r.try_get("details")?,
        prev_hash: Digest::from_hex(&r.try_get::<String, _>("prev_hash")?)?,
        hash: Digest::from_hex(&r.try_get::<String, _>("hash")?)?,
        mac: Digest::from_hex(&r.try_get::<String, _>("mac")?)?,
    })
}
