//! The audit log: appending (grouped), reading, filtering and verifying.
//!
//! Appends that are not part of a larger change go through one writer task per process, which
//! takes every append queued at that moment into a single durable transaction (group commit).
//! Eight concurrent appenders then cost one fsync, not eight, and the chain lock is taken once.

use futures_util::TryStreamExt;
use portcullis_core::audit::{
    AuditDraft, AuditEvent, BreakReason, ChainBreak, ChainHead, ChainVerifier, Digest, EventView,
    MacKey, VerifiedChain,
};
use portcullis_core::{GrantId, Timestamp};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError};

/// Most appends one group transaction takes.
const MAX_GROUP: usize = 256;

/// Most rows, and about the most bytes of values, one INSERT statement carries. Rows: sqlx-sqlite
/// looks every bind up by name, at a cost growing with the statement's number of binds (13 a
/// row). Bytes: sqlx 0.9.0 does not set TCP_NODELAY (transact-rs/sqlx#4335), so a PostgreSQL
/// message longer than one 16 KiB TLS record waits ~40 ms for the server's delayed ACK.
const INSERT_ROWS: usize = 32;
const INSERT_BYTES: usize = 12 * 1024;

/// Rows per batch handed from the task fetching rows to the one checking them, and batches in
/// flight: verifying holds at most about (VERIFY_QUEUE + 2) * VERIFY_BATCH rows (~10 MB at ~1.5 KB
/// a decoded row) whatever the length of the log.
const VERIFY_BATCH: usize = 1024;
const VERIFY_QUEUE: usize = 4;

/// The columns of an event, in the order `view_from_row` reads them by index.
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
    ///
    /// One task fetches rows while this one decodes and hashes them, so on a multi-threaded
    /// runtime the two overlap. Rows arrive in `seq` order, in batches, and are checked in that
    /// order, so the first break named is the one a row-by-row check would name.
    pub async fn verify_chain(
        &self,
        key: Option<MacKey>,
        checkpoints: Vec<(i64, Digest)>,
    ) -> Result<VerifyOutcome, StoreError> {
        let mut verifier = ChainVerifier::new(key, checkpoints);
        let (tx, mut rx) = mpsc::channel(VERIFY_QUEUE);
        let reader = tokio::spawn(fetch_rows(self.shared.pool.clone(), tx));
        let outcome = 'read: loop {
            match rx.recv().await {
                Some(Fetched::Rows(rows)) => {
                    for row in &rows {
                        let ev = match view_from_row(row) {
                            Ok(ev) => ev,
                            Err(StoreError::Invalid(e)) => {
                                let seq: i64 = row.try_get(0).unwrap_or(0);
                                break 'read Ok(Err(ChainBreak {
                                    seq,
                                    reason: BreakReason::Malformed(e.to_string()),
                                }));
                            }
                            Err(e) => break 'read Err(e),
                        };
                        if let Err(b) = verifier.push_view(&ev) {
                            break 'read Ok(Err(b));
                        }
                    }
                }
                Some(Fetched::Failed(e)) => break Err(e.into()),
                Some(Fetched::Done) => break Ok(verifier.finish()),
                // The reader always ends with one of the above; it can only vanish by panicking.
                None => {
                    break Err(StoreError::Unavailable(
                        "reading the audit log stopped unexpectedly".into(),
                    ));
                }
            }
        };
        // After an early answer the rest of the log is not needed: stop reading it.
        reader.abort();
        outcome
    }
}

/// What the reading half of [`Store::verify_chain`] hands over, in `seq` order.
enum Fetched {
    Rows(Vec<AnyRow>),
    /// The database failed (after the rows before the failure were sent).
    Failed(sqlx::Error),
    Done,
}

/// Streams every row of the log in `seq` order to `tx`, in batches. Ends early when `tx` is
/// closed (the verifier has its answer).
async fn fetch_rows(pool: AnyPool, tx: mpsc::Sender<Fetched>) {
    let sql = format!("SELECT {COLUMNS} FROM audit_events ORDER BY seq");
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&pool);
    let mut batch = Vec::with_capacity(VERIFY_BATCH);
    let last = loop {
        match rows.try_next().await {
            Ok(Some(row)) => {
                batch.push(row);
                if batch.len() == VERIFY_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(VERIFY_BATCH));
                    if tx.send(Fetched::Rows(full)).await.is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break Fetched::Done,
            Err(e) => break Fetched::Failed(e),
        }
    };
    if !batch.is_empty() && tx.send(Fetched::Rows(batch)).await.is_err() {
        return;
    }
    let _ = tx.send(last).await;
}

/// The writer task behind [`Store::append`]. Ends when every `Store` handle is dropped.
pub(crate) async fn run_appender(store: Store, mut rx: mpsc::Receiver<AppendJob>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        // Callers whose append was just acknowledged are usually about to queue their next one,
        // and would otherwise wait a whole commit for the group after this: let the tasks that
        // are ready run first, and take what they queue, for as long as they queue anything.
        // Measured: 8 writers went from groups of ~4 to groups of 8 (one fsync per 8 events).
        loop {
            let before = batch.len();
            tokio::task::yield_now().await;
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() >= MAX_GROUP {
                break;
            }
        }
        let drafts: Vec<&AuditDraft> = batch.iter().map(|j| &j.draft).collect();
        match store.append_group(&drafts).await {
            Ok(events) => {
                for (job, ev) in batch.drain(..).zip(events) {
                    let _ = job.reply.send(Ok(ev));
                }
            }
            Err(e) => {
                store.shared.write_health.failed(&e);
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
        let Some((first, rest)) = drafts.split_first() else {
            return Ok(Vec::new());
        };
        let mut tx = self.begin_write().await?;
        // The first event goes through the write transaction, which seals it after the head it
        // read under the chain lock; the others follow it, sealed here at the same time.
        let first = tx.audit(first).await?;
        let (now, key) = (tx.now(), &self.shared.mac_key);
        let mut head = first.head();
        let mut out = Vec::with_capacity(drafts.len());
        out.push(first);
        for d in rest {
            let ev = AuditEvent::seal(&head, d, now, key);
            head = ev.head();
            out.push(ev);
        }
        // A few multi-row statements instead of one round trip per event. `tx` is only
        // committed after this, so its own (now stale) head is never used again.
        insert_events(tx.conn(), &out[1..]).await?;
        tx.enqueue_notices(&out[1..]).await?;
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
    insert_events(conn, std::slice::from_ref(ev)).await
}

/// Inserts `events` with multi-row INSERTs of up to [`INSERT_ROWS`] rows and about
/// [`INSERT_BYTES`] of values (a larger event goes alone).
async fn insert_events(conn: &mut AnyConnection, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut rest = events;
    while !rest.is_empty() {
        let mut rows = 0;
        let mut bytes = 0;
        while rows < rest.len() && rows < INSERT_ROWS {
            bytes += value_bytes(&rest[rows]);
            if rows > 0 && bytes > INSERT_BYTES {
                break;
            }
            rows += 1;
        }
        let (chunk, next) = rest.split_at(rows);
        rest = next;
        // Only numbered placeholders are added to the constant text; every value is bound.
        let mut sql = format!("INSERT INTO audit_events ({COLUMNS}) VALUES ");
        for r in 0..chunk.len() {
            let p = r * 13;
            if r > 0 {
                sql.push_str(", ");
            }
            sql += &format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8,
                p + 9,
                p + 10,
                p + 11,
                p + 12,
                p + 13
            );
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for ev in chunk {
            q = q
                .bind(ev.seq)
                .bind(ev.ts.to_rfc3339())
                .bind(ev.actor.clone())
                .bind(ev.role.clone())
                .bind(ev.action.clone())
                .bind(ev.target.clone())
                .bind(ev.grant_id.map(GrantId::get))
                .bind(ev.session_id.clone())
                .bind(ev.source.clone())
                .bind(ev.details.clone())
                .bind(ev.prev_hash.to_hex())
                .bind(ev.hash.to_hex())
                .bind(ev.mac.to_hex());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// An upper estimate of a row's size on the wire: its text, three 64-digit digests, the
/// timestamp, integers and a length word per value.
fn value_bytes(ev: &AuditEvent) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    ev.actor.len()
        + ev.role.len()
        + ev.action.len()
        + ev.target.len()
        + opt(&ev.session_id)
        + opt(&ev.source)
        + ev.details.len()
        + 3 * 64
        + 32
        + 13 * 8
}

fn event_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    let v = view_from_row(r)?;
    Ok(AuditEvent {
        seq: v.seq,
        ts: v.ts,
        actor: v.actor.to_owned(),
        role: v.role.to_owned(),
        action: v.action.to_owned(),
        target: v.target.to_owned(),
        grant_id: v.grant_id.map(GrantId::new),
        session_id: v.session_id.map(str::to_owned),
        source: v.source.map(str::to_owned),
        details: v.details.to_owned(),
        prev_hash: v.prev_hash,
        hash: v.hash,
        mac: v.mac,
    })
}

/// The event in `r`, borrowing its text (verifying copies no strings). Columns are read by
/// position, in [`COLUMNS`] order: `audit verify` reads every row, and a lookup by name per
/// column cost about as much as hashing the row.
fn view_from_row(r: &AnyRow) -> Result<EventView<'_>, StoreError> {
    Ok(EventView {
        seq: r.try_get(0)?,
        ts: Timestamp::parse_rfc3339(r.try_get(1)?)?,
        actor: r.try_get(2)?,
        role: r.try_get(3)?,
        action: r.try_get(4)?,
        target: r.try_get(5)?,
        grant_id: r.try_get(6)?,
        session_id: r.try_get(7)?,
        source: r.try_get(8)?,
        details: r.try_get(9)?,
        prev_hash: Digest::from_hex(r.try_get(10)?)?,
        hash: Digest::from_hex(r.try_get(11)?)?,
        mac: Digest::from_hex(r.try_get(12)?)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use portcullis_core::audit::ActorRole;
    use portcullis_testkit::TestDb;

    use super::*;
    use crate::{Backend, StoreConfig};

    async fn open(db: &TestDb) -> Store {
        Store::open(db.url(), StoreConfig::new(MacKey::new([42; 32])))
            .await
            .unwrap()
    }

    fn drafts(n: usize, big_every: usize) -> Vec<AuditDraft> {
        (0..n)
            .map(|i| {
                let d = AuditDraft::new(format!("u{i}"), ActorRole::System, "test.append");
                if big_every > 0 && i % big_every == 0 {
                    // Larger than INSERT_BYTES on its own: goes in a statement by itself.
                    d.details(serde_json::json!({ "blob": "x".repeat(20_000) }))
                } else {
                    d.details(serde_json::json!({ "i": i }))
                }
            })
            .collect()
    }

    async fn append_all(store: &Store, drafts: &[AuditDraft]) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for group in drafts.chunks(MAX_GROUP) {
            let refs: Vec<&AuditDraft> = group.iter().collect();
            out.extend(store.append_group(&refs).await.unwrap());
        }
        out
    }

    async fn groups_are_stored_whole_in_several_statements(db: TestDb) {
        let store = open(&db).await;
        let written = append_all(&store, &drafts(300, 7)).await;
        let stored = store.audit_events(&AuditQuery::default()).await.unwrap();
        assert_eq!(stored, written);
        assert!(stored.iter().zip(1..).all(|(e, i)| e.seq == i));
        let v = store.verify_chain(None, vec![]).await.unwrap().unwrap();
        assert_eq!(v.events, 300);
    }

    /// The reader hands rows over in batches; the first bad row is named whichever batch it is
    /// in, and a malformed row does not hide an earlier break (nor a later one it).
    async fn first_break_is_named_across_batches(db: TestDb) {
        let store = open(&db).await;
        append_all(&store, &drafts(2600, 0)).await;
        let guards_off = match store.backend() {
            Backend::Sqlite => {
                "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;"
            }
            Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER USER",
        };
        sqlx::raw_sql(guards_off)
            .execute(store.pool())
            .await
            .unwrap();
        let key = Some(MacKey::new([42; 32]));
        let intact = store.audit_events(&AuditQuery::default()).await.unwrap();
        // (rows edited, rows given a malformed hash, expected seq, expected to be malformed)
        let cases: [(&[i64], &[i64], i64, bool); 6] = [
            (&[2100], &[], 2100, false),
            (&[], &[1500], 1500, true),
            (&[1000], &[1025], 1000, false),
            (&[1023], &[1024], 1023, false),
            (&[1030], &[1025], 1025, true),
            (&[2600], &[], 2600, false),
        ];
        for (edited, malformed, want, want_malformed) in cases {
            for &seq in edited {
                sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = $1")
                    .bind(seq)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            for &seq in malformed {
                sqlx::query("UPDATE audit_events SET hash = 'zz' WHERE seq = $1")
                    .bind(seq)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            let got = store
                .verify_chain(key.clone(), vec![])
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(got.seq, want, "{edited:?} {malformed:?}: {got}");
            assert_eq!(
                matches!(got.reason, BreakReason::Malformed(_)),
                want_malformed,
                "{got}"
            );
            for &seq in edited.iter().chain(malformed) {
                let ev = &intact[usize::try_from(seq - 1).unwrap()];
                sqlx::query("UPDATE audit_events SET actor = $1, hash = $2 WHERE seq = $3")
                    .bind(ev.actor.clone())
                    .bind(ev.hash.to_hex())
                    .bind(seq)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            let v = store.verify_chain(key.clone(), vec![]).await.unwrap();
            assert_eq!(v.unwrap().events, 2600, "restored");
        }
    }

    macro_rules! backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(portcullis_testkit::TestDb::sqlite()).await }) *
            }
            mod postgres {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(portcullis_testkit::TestDb::postgres().await).await }) *
            }
        };
    }

    backends!(
        groups_are_stored_whole_in_several_statements,
        first_break_is_named_across_batches,
    );
}
