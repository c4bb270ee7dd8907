//! Write transactions: every change to the database and the audit events that record it commit
//! together or not at all.
//!
//! A write transaction first takes the chain lock (SQLite `BEGIN IMMEDIATE`, the database-wide
//! write lock; PostgreSQL a transaction-scoped advisory lock), then reads the chain head. Appends
//! from every process therefore queue on one lock and the chain never forks; `seq` being the
//! primary key is the second line of defence.

use portcullis_core::Timestamp;
use portcullis_core::audit::{AuditDraft, AuditEvent, ChainHead};
use sqlx::{Any, AnyConnection, Transaction};

use crate::audit::{insert_event, read_head};
use crate::relay::{GrantChange, PG_CHANNEL};
use crate::{Backend, Store, StoreError};

/// Arbitrary constant naming the audit chain's advisory lock on PostgreSQL ("pcaudit" in ASCII).
const AUDIT_LOCK_KEY: i64 = 0x0070_6361_7564_6974;

#[derive(Debug)]
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    head: ChainHead,
    now: Timestamp,
    store: Store,
    /// Grant changes to publish once the transaction commits.
    changes: Vec<GrantChange>,
}

impl Store {
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let r = self.begin_write_inner().await;
        if let Err(e) = &r {
            self.shared.write_health.failed(e);
        }
        r
    }

    async fn begin_write_inner(&self) -> Result<WriteTx, StoreError> {
        let pool = &self.shared.pool;
        let mut tx = match self.shared.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(AUDIT_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        let head = read_head(&mut tx).await?;
        // Audit time never runs backwards, even when the wall clock does.
        let now = self.shared.clock.now().max(head.ts);
        Ok(WriteTx {
            tx,
            head,
            now,
            store: self.clone(),
            changes: Vec::new(),
        })
    }
}

impl WriteTx {
    /// The time of this transaction: every row it writes carries it.
    pub(crate) fn now(&self) -> Timestamp {
        self.now
    }

    /// Writes the notices of events sealed outside [`WriteTx::audit`] (a group append).
    pub(crate) async fn enqueue_notices(
        &mut self,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        for ev in events {
            crate::outbox::enqueue(&mut self.tx, ev).await?;
        }
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Appends one event after the current head, inside this transaction.
    pub(crate) async fn audit(&mut self, draft: &AuditDraft) -> Result<AuditEvent, StoreError> {
        let ev = AuditEvent::seal(&self.head, draft, self.now, &self.store.shared.mac_key);
        if let Err(e) = insert_event(&mut self.tx, &ev).await {
            self.store.shared.write_health.failed(&e);
            return Err(e);
        }
        crate::outbox::enqueue(&mut self.tx, &ev).await?;
        self.head = ev.head();
        Ok(ev)
    }

    /// Tells relays, once this transaction commits, that live sessions may have to end. The
    /// notice is part of the transaction, so it exists exactly when the change does, and it
    /// reaches relays in other processes: on PostgreSQL as a NOTIFY (delivered on commit), on
    /// SQLite as a row in the `grant_changes` feed that running brokers poll (`feed.rs`; the
    /// command line is another process writing the same file).
    pub(crate) async fn notify(&mut self, change: GrantChange) -> Result<(), StoreError> {
        match self.store.shared.backend {
            Backend::Postgres => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(PG_CHANNEL)
                    .bind(change.to_payload())
                    .execute(&mut *self.tx)
                    .await?;
            }
            Backend::Sqlite => {
                sqlx::query(
                    "INSERT INTO grant_changes (change, origin, created_at) VALUES ($1, $2, $3)",
                )
                .bind(change.to_payload())
                .bind(self.store.shared.origin.clone())
                .bind(self.now.to_rfc3339())
                .execute(&mut *self.tx)
                .await?;
            }
        }
        self.changes.push(change);
        Ok(())
    }

    /// Commits. A failed COMMIT (SQLITE_FULL, a connection lost) marks the audit log not
    /// writable; the transaction is then rolled back as it drops, and a connection that the
    /// rollback could not bring back to a clean state is discarded by the pool (`db.rs`).
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        if let Err(e) = self.tx.commit().await {
            let e = StoreError::from(e);
            self.store.shared.write_health.failed(&e);
            return Err(e);
        }
        self.store.shared.write_health.ok();
        for change in self.changes {
            self.store.publish(change);
        }
        Ok(())
    }
}
