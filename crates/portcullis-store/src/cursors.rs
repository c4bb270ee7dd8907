//! Followers' cursors over the audit log (`delivery_cursors`): the SIEM stream and the alert
//! watcher each remember the last `seq` they finished with, so one that was away resumes after it.

use sqlx::Row;

use crate::{Store, StoreError};

impl Store {
    /// The last `seq` the follower `name` finished with; 0 when it has never run.
    pub async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seq FROM delivery_cursors WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.shared.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("seq")?,
            None => 0,
        })
    }

    /// Moves the follower `name` from `from` to `to`. Returns false, and changes nothing, when
    /// the stored cursor is no longer `from` (another process moved it): the caller then reads
    /// the cursor again rather than deliver twice.
    pub async fn advance_cursor(&self, name: &str, from: i64, to: i64) -> Result<bool, StoreError> {
        if to < from {
            return Err(StoreError::Conflict(format!(
                "cursor '{name}' may not move back from {from} to {to}"
            )));
        }
        let now = self.now().to_rfc3339();
        let done = if from == 0 {
            sqlx::query(
                "INSERT INTO delivery_cursors (name, seq, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at \
                 WHERE delivery_cursors.seq = 0",
            )
            .bind(name.to_string())
            .bind(to)
            .bind(now)
            .execute(&self.shared.pool)
            .await?
        } else {
            sqlx::query(
                "UPDATE delivery_cursors SET seq = $1, updated_at = $2 WHERE name = $3 AND seq = $4",
            )
            .bind(to)
            .bind(now)
            .bind(name.to_string())
            .bind(from)
            .execute(&self.shared.pool)
            .await?
        };
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portcullis_core::audit::MacKey;
    use portcullis_testkit::TestDb;

    use crate::{Store, StoreConfig};

    async fn a_cursor_moves_forward_once_from_where_it_is(db: TestDb) {
        let store = Store::open(db.url(), StoreConfig::new(MacKey::new([7; 32])))
            .await
            .unwrap();
        assert_eq!(store.cursor("siem").await.unwrap(), 0);
        assert!(store.advance_cursor("siem", 0, 5).await.unwrap());
        assert_eq!(store.cursor("siem").await.unwrap(), 5);
        // A second process that still believes 0 is refused, and so is a stale `from`.
        assert!(!store.advance_cursor("siem", 0, 3).await.unwrap());
        assert!(!store.advance_cursor("siem", 4, 9).await.unwrap());
        assert!(store.advance_cursor("siem", 5, 9).await.unwrap());
        assert_eq!(store.cursor("siem").await.unwrap(), 9);
        assert!(store.advance_cursor("siem", 9, 1).await.is_err());
        assert_eq!(store.cursor("alerts").await.unwrap(), 0);
    }

    portcullis_testkit::both_backends!(a_cursor_moves_forward_once_from_where_it_is);
}
