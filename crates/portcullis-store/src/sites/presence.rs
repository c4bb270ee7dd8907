//! Where each site's connector is connected, as the relay holding the connection records it.
//! Working state, not history: the relay audits connects and disconnects itself, so nothing here
//! writes an audit event or takes the audit chain's lock.
//!
//! Every update after the first names the connection it is about, so a connection the relay
//! replaced (the newest wins) can never touch the presence its successor recorded.

use portcullis_core::Timestamp;

use super::ConnectorPresence;
use crate::{Store, StoreError};

impl Store {
    /// Records that `site`'s connector is connected (replacing what an older connection left).
    pub async fn connector_online(
        &self,
        site: &str,
        p: &ConnectorPresence,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE sites SET connection_id = $1, relay = $2, source = $3, connected_at = $4, \
             last_seen_at = $5 WHERE name = $6",
        )
        .bind(p.connection_id.clone())
        .bind(p.relay.clone())
        .bind(p.source.clone())
        .bind(p.connected_at.to_rfc3339())
        .bind(p.last_seen_at.to_rfc3339())
        .bind(site.to_owned())
        .execute(&self.shared.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "site '{site}' does not exist"
            )));
        }
        Ok(())
    }

    /// Moves "last seen" forward for the connection `connection_id`; a no-op when the site now
    /// has another connection (or none).
    pub async fn connector_seen(
        &self,
        site: &str,
        connection_id: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sites SET last_seen_at = $1 WHERE name = $2 AND connection_id = $3")
            .bind(at.to_rfc3339())
            .bind(site.to_owned())
            .bind(connection_id.to_owned())
            .execute(&self.shared.pool)
            .await?;
        Ok(())
    }

    /// Clears the presence `connection_id` recorded; a no-op when a newer connection replaced it.
    pub async fn connector_offline(
        &self,
        site: &str,
        connection_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sites SET connection_id = NULL, relay = NULL, source = NULL, \
             connected_at = NULL, last_seen_at = NULL WHERE name = $1 AND connection_id = $2",
        )
        .bind(site.to_owned())
        .bind(connection_id.to_owned())
        .execute(&self.shared.pool)
        .await?;
        Ok(())
    }

    /// Clears every presence the relay named `relay` recorded (it restarted, so none of its
    /// connections survive). Returns how many sites it held.
    pub async fn clear_connector_presence(&self, relay: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sites SET connection_id = NULL, relay = NULL, source = NULL, \
             connected_at = NULL, last_seen_at = NULL WHERE relay = $1",
        )
        .bind(relay.to_owned())
        .execute(&self.shared.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
