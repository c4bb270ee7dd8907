//! The site connectors that are live: one connection per site at most, each with the streams
//! it carries, and their re-check against the store. Apart from the connector link's handshake
//! and control loop (`connector.rs`), so the stream path reaches a live connector without
//! importing the handshake.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use quinn::Connection;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Why a connector's connection ended: the `reason` of `relay.connector.disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectorEnd {
    /// The QUIC connection closed or timed out (link down, connector stopped).
    Lost,
    /// It stopped answering pings, or broke the protocol.
    Unresponsive,
    /// A newer connection of the same site took over.
    Replaced,
    /// The site was revoked, or re-enrolled with another certificate.
    Revoked,
    Shutdown,
}

impl ConnectorEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorEnd::Lost => "connection_lost",
            ConnectorEnd::Unresponsive => "unresponsive",
            ConnectorEnd::Replaced => "replaced",
            ConnectorEnd::Revoked => "revoked",
            ConnectorEnd::Shutdown => "shutdown",
        }
    }
}

/// One accepted connector connection.
#[derive(Debug)]
pub(crate) struct LiveConnector {
    /// `cc_...`: names this connection in the audit log.
    pub id: String,
    pub site: String,
    /// The certificate it presented (base64url SHA-256).
    pub fingerprint: String,
    pub conn: Connection,
    /// Cancelled when the connection ends; every stream it carries watches it.
    pub cancel: CancellationToken,
    end: OnceLock<ConnectorEnd>,
    /// Streams opened through it.
    pub streams: AtomicU64,
}

impl LiveConnector {
    pub fn new(id: String, site: String, fingerprint: String, conn: Connection) -> Self {
        Self {
            id,
            site,
            fingerprint,
            conn,
            cancel: CancellationToken::new(),
            end: OnceLock::new(),
            streams: AtomicU64::new(0),
        }
    }

    pub fn end(&self, reason: ConnectorEnd) {
        let _ = self.end.set(reason);
        self.cancel.cancel();
    }

    pub fn end_reason(&self) -> Option<ConnectorEnd> {
        self.end.get().copied()
    }
}

/// The live connector of each site (at most one).
#[derive(Debug, Default)]
pub(crate) struct Connectors {
    inner: Mutex<HashMap<String, Arc<LiveConnector>>>,
}

impl Connectors {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveConnector>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `c` its site's connector; returns the one it replaces.
    pub(crate) fn insert(&self, c: Arc<LiveConnector>) -> Option<Arc<LiveConnector>> {
        self.lock().insert(c.site.clone(), c)
    }

    /// Removes `c`, unless a newer connection of its site has replaced it already.
    pub(crate) fn remove(&self, c: &LiveConnector) {
        let mut map = self.lock();
        if map.get(&c.site).is_some_and(|cur| cur.id == c.id) {
            map.remove(&c.site);
        }
    }

    pub fn get(&self, site: &str) -> Option<Arc<LiveConnector>> {
        self.lock().get(site).cloned()
    }

    pub fn all(&self) -> Vec<Arc<LiveConnector>> {
        self.lock().values().cloned().collect()
    }
}

/// Re-reads the site of every live connector (or of `site` only) and drops those whose site
/// was revoked or re-enrolled with another certificate since they connected.
pub(crate) async fn recheck(shared: &Shared, site: Option<&str>) {
    let live: Vec<_> = match site {
        Some(s) => shared.connectors.get(s).into_iter().collect(),
        None => shared.connectors.all(),
    };
    for c in live {
        match shared.store.site(&c.site).await {
            Ok(Some(r))
                if r.revoked_at.is_none()
                    && r.cert_fingerprint.as_deref() == Some(&c.fingerprint) => {}
            Ok(_) => c.end(ConnectorEnd::Revoked),
            Err(e) => {
                tracing::error!("cannot re-check site {}: {e}", c.site);
                shared.auditor.mark_unhealthy();
            }
        }
    }
}
