//! Grant changes made by other processes, delivered to this one's relay.
//!
//! In one process a committed change travels on the in-process channel
//! ([`Store::grant_changes`]). Another process (the command line, a second broker on the same
//! database) commits changes this process never hears of, unless:
//! - on PostgreSQL, it listens: every change is also a `pg_notify` in its transaction
//!   ([`Store::forward_pg_notifications`]);
//! - on SQLite, it follows the `grant_changes` table: every change is also a row there, written
//!   in its transaction (`WriteTx::notify`), with the writing store's `origin`. A follower polls
//!   for rows after the last it saw every [`FEED_POLL`] and publishes the ones other origins
//!   wrote. Without it, `portcullis admin user disable` took one reconciliation period (5 s) to
//!   reach a live session; with it, one poll.
//!
//! One path for every change (disable, revoke, policy, site, and whatever later commands
//! commit): the follower knows nothing of what a change means, it only carries the payload.
//! Rows are working state, not history (the audit log is the history): they are pruned after
//! [`FEED_KEEP`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::RngCore;
use sqlx::Row;

use crate::relay::GrantChange;
use crate::{Backend, Shared, Store, StoreError};

/// How often a follower reads the SQLite feed. 50 ms keeps a change made on the command line
/// within the design's 250 ms to a live session with room for the cut itself; a read of an
/// indexed range that is nearly always empty costs a few microseconds.
pub const FEED_POLL: Duration = Duration::from_millis(50);

/// Feed rows older than this are deleted: a follower that was away longer than this re-checks
/// everything on its own reconciliation anyway.
const FEED_KEEP: Duration = Duration::from_secs(3600);

/// How often a follower prunes old rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most rows read per poll: bounds one poll's memory; the rest come on the next poll.
const POLL_BATCH: i64 = 1000;

/// 64 random bits naming one store (one process's handle on the database) in the feed.
pub(crate) fn new_origin() -> String {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Store {
    /// Publishes on [`Store::grant_changes`] the changes other processes commit to this
    /// database, until the store is dropped: PostgreSQL NOTIFY ([`Store::forward_pg_notifications`]
    /// with `url`) or the SQLite feed ([`Store::follow_change_feed`] every [`FEED_POLL`]).
    /// Every process that runs a relay calls this.
    pub async fn follow_other_processes(&self, url: &str) -> Result<(), StoreError> {
        match self.backend() {
            Backend::Postgres => self.forward_pg_notifications(url).await,
            Backend::Sqlite => self.follow_change_feed(FEED_POLL).await,
        }
    }

    /// On SQLite, polls the `grant_changes` feed every `every` and publishes the changes other
    /// stores wrote, from the rows committed after this call on. Does nothing on PostgreSQL
    /// (NOTIFY carries changes there).
    pub async fn follow_change_feed(&self, every: Duration) -> Result<(), StoreError> {
        if self.backend() != Backend::Sqlite {
            return Ok(());
        }
        // Only what is committed from now on: older changes were applied (or reconciled) by
        // whoever ran then, and this process's relay has no sessions from before its start.
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM grant_changes")
            .fetch_one(&self.shared.pool)
            .await?
            .try_get("seq")?;
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(follow(weak, last, every));
        Ok(())
    }
}

async fn follow(weak: Weak<Shared>, mut last: i64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first prune comes with the first poll: a broker restarted after a long stop does not
    // keep a backlog for another minute.
    let mut next_prune = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tick.tick().await;
        // The task must not keep the store alive: it ends with the last handle.
        let Some(shared) = weak.upgrade() else { return };
        if shared.pool.is_closed() {
            return;
        }
        match poll(&shared, last).await {
            Ok(rows) => {
                if failing {
                    tracing::info!("grant-change feed readable again");
                    failing = false;
                }
                for (seq, change, origin) in rows {
                    last = seq;
                    if origin != shared.origin {
                        // No subscribers (no relay in this process) is normal.
                        let _ = shared.changes.send(GrantChange::from_payload(&change));
                    }
                }
            }
            // Nothing is lost while the database cannot be read: the rows wait in the table
            // and the next successful poll reads them. Logged once per outage, not per poll.
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot read the grant-change feed: {e}; retrying");
                    failing = true;
                }
            }
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
            if let Err(e) = prune(&shared).await {
                tracing::warn!("cannot prune the grant-change feed: {e}");
            }
        }
    }
}

/// Rows after `last`, in commit order: writers hold SQLite's write lock (`BEGIN IMMEDIATE`)
/// while they insert, so `seq` order is commit order and no row appears behind one already read.
async fn poll(shared: &Shared, last: i64) -> Result<Vec<(i64, String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, change, origin FROM grant_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(last)
    .bind(POLL_BATCH)
    .fetch_all(&shared.pool)
    .await?;
    rows.iter()
        .map(|r| -> Result<(i64, String, String), StoreError> {
            Ok((
                r.try_get("seq")?,
                r.try_get("change")?,
                r.try_get("origin")?,
            ))
        })
        .collect()
}

async fn prune(shared: &Shared) -> Result<(), StoreError> {
    let cutoff = shared.clock.now().saturating_sub(FEED_KEEP);
    sqlx::query("DELETE FROM grant_changes WHERE created_at < $1")
        .bind(cutoff.to_rfc3339())
        .execute(&shared.pool)
        .await?;
    Ok(())
}
