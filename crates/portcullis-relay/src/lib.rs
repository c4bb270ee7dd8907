//! The Portcullis relay: the QUIC endpoint vendors' `portcullis connect` reaches.
//!
//! Deny by default. A connection must present a client certificate (TLS 1.3, ALPN
//! `portcullis/1`, no 0-RTT; see `portcullis_net::quic`), then a relay token on its first stream
//! that verifies offline, is bound to that certificate, was never used before, and names a grant
//! that the store says is live now. Each further stream asks for one device/port pair of that
//! grant; the relay dials the address from the inventory (never one from the client), or has the
//! device's site connector dial it, and splices bytes both ways. Sessions end at the window end (a monotonic timer armed at the handshake),
//! on revoke, user disable or policy change (grant-change notifications, re-checked against the
//! store, with a periodic reconciliation as a safety net), when a supervisor ends one session
//! (the same way), on idle timeout, and on shutdown;
//! every end is audited with its reason, bytes each way and duration.
//!
//! Layout: [`grant`] reads a grant's live state; [`session`] runs one connection's handshake and
//! control stream; [`stream`] one tunnelled TCP connection; [`enforce`] follows grant changes;
//! [`auditor`] writes audit events, failing closed, and [`budget`] bounds how many refusals it
//! writes one by one; [`registry`] holds live sessions; [`connector`] serves site connectors'
//! connections, [`connectors`] holds the live ones, and [`via`] carries a stream through one;
//! [`conn`] holds what every connection needs (close codes, ALPN, client thumbprint), and
//! [`refusal`] the one way a connection is refused; [`report`] writes live sessions' counters
//! for the live view;
//! [`metrics`] counts. Modules import one way: session -> connector -> connectors -> conn,
//! stream -> via -> connectors; none imports one that imports it back.
#![forbid(unsafe_code)]

mod activity;
mod auditor;
mod budget;
mod conn;
mod connector;
mod connectors;
mod enforce;
mod grant;
pub mod metrics;
mod modbus;
mod refusal;
mod registry;
mod report;
mod session;
mod stream;
mod via;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_auth::token::TokenVerifier;
use portcullis_core::Clock;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_core::wire::EndReason;
use portcullis_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;

use crate::auditor::Auditor;
use crate::budget::AuditBudget;
use crate::connectors::{ConnectorEnd, Connectors};
use crate::registry::Registry;

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This relay's name in the audit log and the session table; sessions it left open are
    /// closed as `relay_restart` when a relay of the same name starts.
    pub name: String,
    /// A client must complete TLS and send `Hello` within this.
    pub handshake_timeout: Duration,
    /// A device must accept the TCP connection within this.
    pub dial_timeout: Duration,
    /// A stream with no bytes either way for this long is closed (`idle_timeout`).
    pub idle_timeout: Duration,
    /// Open streams (tunnelled TCP connections) one grant may have at once, over all its
    /// sessions (SR 2.7).
    pub max_streams_per_grant: usize,
    /// Warnings are sent this long before the window ends (only those still ahead at the
    /// handshake).
    pub warnings: Vec<Duration>,
    /// Every live session is re-checked against the store this often, in case a grant-change
    /// notification was lost; the audit log's health is probed at the same time.
    pub reconcile_every: Duration,
    /// Refusals written to the audit log one by one: a burst, then one per period
    /// ([`budget`](crate::budget)). The rest are refused and counted all the same (metrics,
    /// `suppressed_before` on the next event let through, a session end's `refused_streams`).
    /// For handshakes whose token did not verify, over the whole relay:
    pub anonymous_refusal_audits: (u32, Duration),
    /// For refused streams, per session:
    pub stream_refusal_audits: (u32, Duration),
    /// Site connectors are pinged this often on their control stream...
    pub connector_ping: Duration,
    /// ...and dropped when no `Pong` came back for this long.
    pub connector_timeout: Duration,
    /// A connector's "last seen" is written to the database at most this often.
    pub connector_seen_every: Duration,
    /// Live sessions' counters (bytes, open streams, Modbus activity) are written to the
    /// database this often, all in one transaction, for the live view ([`report`]).
    pub report_every: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            name: "relay".into(),
            handshake_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15 * 60),
            max_streams_per_grant: 64,
            warnings: vec![Duration::from_secs(300), Duration::from_secs(60)],
            reconcile_every: Duration::from_secs(5),
            anonymous_refusal_audits: budget::ANONYMOUS,
            stream_refusal_audits: budget::PER_SESSION,
            connector_ping: Duration::from_secs(2),
            connector_timeout: Duration::from_secs(6),
            connector_seen_every: Duration::from_secs(10),
            report_every: Duration::from_secs(2),
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Store,
    pub verifier: TokenVerifier,
    pub clock: Arc<dyn Clock>,
    pub config: RelayConfig,
    pub registry: Arc<Registry>,
    /// The live site connectors.
    pub connectors: Connectors,
    pub metrics: Arc<Metrics>,
    pub auditor: Auditor,
    /// Audits of handshakes refused before a token verified (anyone with a TLS client can
    /// cause one).
    pub anonymous_refusals: AuditBudget,
}

/// A relay, ready to serve an endpoint.
#[derive(Debug, Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

impl Relay {
    pub fn new(
        store: Store,
        verifier: TokenVerifier,
        clock: Arc<dyn Clock>,
        config: RelayConfig,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            shared: Arc::new(Shared {
                auditor: Auditor::new(store.clone(), metrics.clone()),
                anonymous_refusals: AuditBudget::new(config.anonymous_refusal_audits),
                store,
                verifier,
                clock,
                config,
                registry: Arc::new(Registry::default()),
                connectors: Connectors::default(),
                metrics,
            }),
        }
    }

    /// The relay's counters (for `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Closes, in the audit log, the sessions a previous run of this relay left open. Call once
    /// before [`Relay::run`] (which does it too, so callers that want the count first may).
    pub async fn close_orphans(&self) -> Result<usize, portcullis_store::StoreError> {
        let closed = self
            .shared
            .store
            .close_orphan_relay_sessions(&self.shared.config.name)
            .await?;
        // Connectors it held are gone with it; they reconnect to this run.
        self.shared
            .store
            .clear_connector_presence(&self.shared.config.name)
            .await?;
        for o in &closed {
            tracing::warn!(
                "session {} of grant {} ({}) was left open by a previous run: closed as relay_restart",
                o.id,
                o.grant,
                o.username
            );
        }
        Ok(closed.len())
    }

    /// Serves `endpoint` until `shutdown` completes; then ends every live session with reason
    /// `shutdown`, waits for their end events to be written, and closes the endpoint.
    pub async fn run(
        &self,
        endpoint: quinn::Endpoint,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), portcullis_store::StoreError> {
        self.close_orphans().await?;
        let shared = &self.shared;
        shared
            .auditor
            .event(
                AuditDraft::new("relay", ActorRole::System, "relay.start")
                    .target("service")
                    .details(serde_json::json!({
                        "relay": shared.config.name,
                        "listen": endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                    })),
            )
            .await;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(enforce::watch(
            shared.clone(),
            shared.store.grant_changes(),
            stop.clone(),
        ));
        tasks.spawn(report::run(shared.clone(), stop.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    tasks.spawn(session::handle(shared.clone(), incoming));
                }
            }
        }
        for s in shared.registry.all() {
            s.end(EndReason::Shutdown);
        }
        for c in shared.connectors.all() {
            c.end(ConnectorEnd::Shutdown);
        }
        stop.cancel();
        tasks.close();
        // Sessions send `Ending`, close their streams and write their end events.
        if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not finish ending within 10 s of shutdown");
        }
        shared.auditor.flush().await;
        endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
        endpoint.wait_idle().await;
        Ok(())
    }
}
