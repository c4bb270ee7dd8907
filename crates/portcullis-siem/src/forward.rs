//! The follower: reads the audit log after the `siem` cursor, sends each event in `seq`
//! order, and moves the cursor once a page is written and flushed.
//!
//! One step: read the cursor, fetch up to [`PAGE`] events after it, make sure a connection is
//! open (and the collector has not left), send them, flush, then compare-and-set the cursor
//! from what was read to the last `seq` sent. When the set fails another process moved the
//! cursor: the next step reads it again. Any send error drops the connection; after a pause
//! that doubles from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`] (tokio time) the next step
//! reconnects and sends again from the cursor, so a collector that was away gets what it
//! missed. With nothing new the follower sleeps [`IDLE_POLL`], which bounds the delay from
//! commit to send (target p99 1 s).
//!
//! Where a duplicate or a loss can still happen (decision 0016): a page that was written but
//! whose cursor update did not happen (the process stopped, or the database failed, between
//! flush and update) is sent again; messages in the collector's socket buffer when it crashes
//! are lost to it though the cursor has moved past them. Each message carries `seq`, so a
//! collector can drop repeats and see gaps.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use portcullis_store::{AuditQuery, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::config::SyslogConfig;
use crate::format::Formatter;
use crate::transport::{Connection, Connector, TransportError};

/// The follower's name in `delivery_cursors`.
pub const CURSOR: &str = "siem";
/// Events read and sent per step: bounds memory (a page of events and their messages) and how
/// much is sent again after a failure between flush and cursor update.
pub const PAGE: i64 = 500;
/// How long the follower sleeps when it has sent everything.
pub const IDLE_POLL: Duration = Duration::from_millis(100);
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// A collector that comes back is found again within this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Capped exponential backoff: `first`, `2 first`, ... up to `max`; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct SiemMetrics {
    forwarded: AtomicU64,
    lag: AtomicU64,
    connected: AtomicBool,
    connect_errors: AtomicU64,
    send_errors: AtomicU64,
    database_errors: AtomicU64,
    cursor_conflicts: AtomicU64,
}

impl SiemMetrics {
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "portcullis_siem_forwarded_total",
            "counter",
            "Audit events sent to the syslog collector since start.",
            get(&self.forwarded),
        );
        one(
            "portcullis_siem_lag_events",
            "gauge",
            "Audit events committed but not yet sent to the syslog collector.",
            get(&self.lag),
        );
        one(
            "portcullis_siem_connected",
            "gauge",
            "1 while a connection to the syslog collector is open.",
            u64::from(self.connected()),
        );
        one(
            "portcullis_siem_cursor_conflicts_total",
            "counter",
            "Times another process had moved the siem cursor (a second forwarder on one database).",
            get(&self.cursor_conflicts),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_siem_errors_total Failures of the SIEM stream by kind (each is retried).\n\
             # TYPE portcullis_siem_errors_total counter\n\
             portcullis_siem_errors_total{{kind=\"connect\"}} {}\n\
             portcullis_siem_errors_total{{kind=\"send\"}} {}\n\
             portcullis_siem_errors_total{{kind=\"database\"}} {}",
            get(&self.connect_errors),
            get(&self.send_errors),
            get(&self.database_errors),
        );
        out
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("reading the audit log: {0}")]
    Database(#[from] StoreError),
    #[error("{0}")]
    Connect(TransportError),
    #[error("{0}")]
    Send(TransportError),
}

/// The SIEM stream of one process.
#[derive(Debug)]
pub struct Forwarder {
    store: Store,
    connector: Connector,
    formatter: Formatter,
    metrics: Arc<SiemMetrics>,
    backoff: Backoff,
    idle_poll: Duration,
}

impl Forwarder {
    /// Prepares the stream (reads the CA file): errors here mean the config needs fixing.
    pub fn new(store: Store, config: &SyslogConfig) -> Result<Self, TransportError> {
        Ok(Self {
            store,
            connector: Connector::new(config)?,
            formatter: Formatter {
                format: config.format,
                facility: config.facility,
                hostname: config.hostname_or_local(),
                app_name: config.app_name.clone(),
                procid: std::process::id().to_string(),
            },
            metrics: Arc::new(SiemMetrics::default()),
            backoff: Backoff::new(BACKOFF_FIRST, BACKOFF_MAX),
            idle_poll: IDLE_POLL,
        })
    }

    /// Other pauses (tests: a collector restarted is found again sooner).
    pub fn with_timing(mut self, backoff: Backoff, idle_poll: Duration) -> Self {
        self.backoff = backoff;
        self.idle_poll = idle_poll;
        self
    }

    pub fn metrics(&self) -> Arc<SiemMetrics> {
        self.metrics.clone()
    }

    /// Runs until `stop`. `stop` is looked at between steps and during pauses, never in the
    /// middle of a page, so a stop does not leave a page sent and its cursor unmoved.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(server = %self.connector.endpoint(), "SIEM stream starting");
        let mut conn: Option<Connection> = None;
        while !stop.is_cancelled() {
            let pause = match self.step(&mut conn).await {
                Ok(sent) => {
                    self.backoff.reset();
                    if sent > 0 {
                        continue;
                    }
                    self.idle_poll
                }
                Err(e) => {
                    if conn.take().is_some() {
                        tracing::warn!("SIEM stream: {e}; reconnecting");
                    } else {
                        tracing::debug!("SIEM stream: {e}");
                    }
                    self.metrics.connected.store(false, Ordering::Relaxed);
                    let counter = match &e {
                        StepError::Database(_) => &self.metrics.database_errors,
                        StepError::Connect(_) => &self.metrics.connect_errors,
                        StepError::Send(_) => &self.metrics.send_errors,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.backoff.next_delay()
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.metrics.connected.store(false, Ordering::Relaxed);
        tracing::info!("SIEM stream stopped");
    }

    /// One page: returns how many events were sent (0: nothing new).
    async fn step(&self, conn: &mut Option<Connection>) -> Result<usize, StepError> {
        let cursor = self.store.cursor(CURSOR).await?;
        let page = self
            .store
            .audit_events(&AuditQuery {
                after: Some(cursor),
                limit: Some(PAGE),
                ..Default::default()
            })
            .await?;
        let lag = if page.len() as i64 == PAGE {
            (self.store.audit_head().await?.seq - cursor).max(0)
        } else {
            page.len() as i64
        };
        self.metrics
            .lag
            .store(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);

        // A collector that left while we were idle is noticed here, not at the next event.
        if conn.as_ref().is_some_and(Connection::peer_closed) {
            *conn = None;
            return Err(StepError::Send(TransportError::PeerClosed(
                self.connector.endpoint().to_string(),
            )));
        }
        let c = match conn {
            Some(c) => c,
            None => {
                let c = self.connector.connect().await.map_err(StepError::Connect)?;
                tracing::info!(server = %self.connector.endpoint(), "SIEM stream connected");
                self.metrics.connected.store(true, Ordering::Relaxed);
                conn.insert(c)
            }
        };
        let Some(last) = page.last().map(|e| e.seq) else {
            return Ok(0);
        };
        for ev in &page {
            c.send(&self.formatter.message(ev))
                .await
                .map_err(StepError::Send)?;
        }
        c.flush().await.map_err(StepError::Send)?;
        if self.store.advance_cursor(CURSOR, cursor, last).await? {
            self.metrics
                .forwarded
                .fetch_add(page.len() as u64, Ordering::Relaxed);
            self.metrics.lag.store(
                u64::try_from(lag)
                    .unwrap_or(0)
                    .saturating_sub(page.len() as u64),
                Ordering::Relaxed,
            );
        } else {
            self.metrics
                .cursor_conflicts
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "the siem cursor was moved by another process (is a second forwarder running on \
                 this database?); reading it again"
            );
        }
        Ok(page.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
