//! The alert watcher (issue 15, point 4): follows the audit log and appends `alert.*` events.
//!
//! It reads the log from its cursor (`delivery_cursors.name = 'alerts'`) in pages, feeds every
//! event to [`AlertRules`] (pure, in core) and appends the alerts they raise with
//! [`Store::append`], like any other event: notifications route `alert.*` to alert subscribers,
//! the SIEM stream forwards them with everything else. Decision 0017 lists the alerts.
//!
//! Delivery is at least once, never lost: an alert is appended *before* the cursor moves past
//! the event that triggered it, and the cursor moves by compare-and-set. A crash between the two
//! makes the next start raise that alert again (once); nothing is skipped. An alert that cannot
//! be appended (the log refuses writes) waits in memory and holds the cursor back.
//!
//! On start the watcher rebuilds its state by replaying, without alerting, the events of the
//! longest counting window before its cursor (and the last day's connector and start/stop
//! events, so an outage that began long ago still gets its "back online"). Its own alerts read
//! back restore suppression. The very first start (no cursor yet) begins at the log's head:
//! alerts are about what happens from now on, not about an upgraded plant's history.
//!
//! Audit write failures are the one alert that cannot be written when it happens: the watcher
//! logs it at once (`tracing::error`) and appends `alert.audit_unwritable`, with the gap's start,
//! end and length, as soon as the log takes writes again. Such a gap that ends with a crash is
//! only in the process log.
//!
//! Run it in one process per database: `portcullis serve`, or `portcullis web` in a split
//! deployment (several web services: one of them). A second one is not harmful (the
//! compare-and-set keeps the cursor consistent and it skips what the other did) but it would
//! duplicate some alerts; it says so in its log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portcullis_core::Timestamp;
use portcullis_core::alert::{self, Alert, AlertKind, AlertRules, Thresholds};
use portcullis_core::audit::AuditEvent;
use portcullis_store::{AuditQuery, Store, StoreError};
use tokio_util::sync::CancellationToken;

/// The watcher's row in `delivery_cursors`.
pub const CURSOR: &str = "alerts";
/// How often the log is read: new events reach the rules within this.
pub const POLL: Duration = Duration::from_millis(250);
/// Events read per query. A page of 500 small events is well under a megabyte.
const PAGE: i64 = 500;
/// Pages read per poll before appending and advancing: bounds memory and the repeat after a
/// crash while catching up on a long backlog.
const PAGES_PER_POLL: usize = 8;
/// How far back a restart looks for connector and start/stop events.
const LONG_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Actions replayed from [`LONG_MEMORY`] on start (besides the whole counting window).
const LONG_ACTIONS: &[&str] = &[
    "relay.connector.connect",
    "relay.connector.disconnect",
    "relay.start",
    "service.start",
    "service.stop",
    "alert.connector_offline",
];

/// Alerts appended by this process, by kind, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    appended: [AtomicU64; AlertKind::ALL.len()],
    /// Alerts raised but not yet appended (the log refuses writes).
    pending: AtomicU64,
}

impl Metrics {
    fn count(&self, kind: AlertKind) {
        if let Some(i) = AlertKind::ALL.iter().position(|k| *k == kind) {
            self.appended[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text: `portcullis_alerts_total{kind="..."}` and the pending gauge.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += "# HELP portcullis_alerts_total Alerts this process appended to the audit log, by kind.\n";
        out += "# TYPE portcullis_alerts_total counter\n";
        for (k, n) in AlertKind::ALL.iter().zip(&self.appended) {
            out += &format!(
                "portcullis_alerts_total{{kind=\"{}\"}} {}\n",
                k.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
        out += "# HELP portcullis_alerts_pending Alerts raised but not yet written (the audit log refuses writes).\n";
        out += "# TYPE portcullis_alerts_pending gauge\n";
        out += &format!(
            "portcullis_alerts_pending {}\n",
            self.pending.load(Ordering::Relaxed)
        );
        out
    }
}

/// An alert raised and not yet appended, with the first seq the cursor may not pass before it
/// is (its trigger; for a timer, the event after the last one read).
#[derive(Debug)]
struct Pending {
    trigger: i64,
    alert: Alert,
}

/// The follower: rules, positions, and alerts waiting to be written.
#[derive(Debug)]
pub struct Watcher {
    store: Store,
    rules: AlertRules,
    /// Durable: every alert triggered by an event up to here is in the log.
    cursor: i64,
    /// In memory: the rules have seen every event up to here.
    observed: i64,
    pending: VecDeque<Pending>,
    /// Since when the log refuses writes, and why (while it does).
    unwritable: Option<(Timestamp, String)>,
    metrics: Arc<Metrics>,
}

impl Watcher {
    /// Reads the cursor (starting one at the log's head the first time) and rebuilds the
    /// rules' windows from the events before it.
    pub async fn start(
        store: Store,
        thresholds: Thresholds,
        metrics: Arc<Metrics>,
    ) -> Result<Watcher, StoreError> {
        let mut cursor = store.cursor(CURSOR).await?;
        if cursor == 0 {
            let head = store.audit_head().await?.seq;
            if store.advance_cursor(CURSOR, 0, head).await? {
                tracing::info!("alerts start at the audit log's head, seq {head}");
            }
            cursor = store.cursor(CURSOR).await?;
        }
        let mut w = Watcher {
            store,
            rules: AlertRules::new(thresholds),
            cursor,
            observed: cursor,
            pending: VecDeque::new(),
            unwritable: None,
            metrics,
        };
        w.rebuild().await?;
        Ok(w)
    }

    /// The durable position: alerts for every event up to here are written.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Replays, without alerting, what the rules need to remember at the cursor.
    async fn rebuild(&mut self) -> Result<(), StoreError> {
        if self.cursor == 0 {
            return Ok(());
        }
        let at = self
            .store
            .audit_events(&AuditQuery {
                after: Some(self.cursor - 1),
                limit: Some(1),
                ..AuditQuery::default()
            })
            .await?;
        let Some(last) = at.first() else {
            return Ok(());
        };
        let window_start = last.ts.saturating_sub(self.rules.thresholds().max_window());
        let mut replay: Vec<AuditEvent> = Vec::new();
        for action in LONG_ACTIONS {
            replay.extend(
                self.store
                    .audit_events(&AuditQuery {
                        since: Some(last.ts.saturating_sub(LONG_MEMORY)),
                        until: Some(window_start),
                        action: Some((*action).to_owned()),
                        ..AuditQuery::default()
                    })
                    .await?
                    .into_iter()
                    .filter(|e| e.seq <= self.cursor),
            );
        }
        let mut after = None;
        loop {
            let page = self
                .store
                .audit_events(&AuditQuery {
                    since: Some(window_start),
                    after,
                    limit: Some(PAGE),
                    ..AuditQuery::default()
                })
                .await?;
            let full = page.len() as i64 == PAGE;
            after = page.last().map(|e| e.seq);
            let done = !full || after.is_some_and(|s| s >= self.cursor);
            replay.extend(page.into_iter().filter(|e| e.seq <= self.cursor));
            if done {
                break;
            }
        }
        replay.sort_by_key(|e| e.seq);
        replay.dedup_by_key(|e| e.seq);
        let n = replay.len();
        for ev in &replay {
            // Raised before the crash, or (timers) raised again by `tick` if they never were.
            let _ = self.rules.observe(&ev.view());
        }
        tracing::info!(
            cursor = self.cursor,
            replayed = n,
            "alert windows rebuilt from the audit log"
        );
        Ok(())
    }

    /// One round: notes the log's write health, fires due timers, reads new events, appends the
    /// alerts and advances the cursor. `now` drives the timers only (windows use event times).
    pub async fn poll(&mut self, now: Timestamp) -> Result<(), StoreError> {
        match self.store.audit_writable() {
            Err(why) => {
                if self.unwritable.is_none() {
                    // The alert itself cannot be written now: the process log has it at once.
                    tracing::error!(
                        alert = "alert.audit_unwritable",
                        error = %why,
                        "ALERT: the audit log cannot be written; the broker refuses new actions \
                         and sessions until it can (the alert is appended once writes work)"
                    );
                    self.unwritable = Some((now, why));
                }
                return Ok(());
            }
            Ok(()) => {
                if let Some((since, why)) = self.unwritable.take() {
                    self.pending.push_back(Pending {
                        trigger: self.observed + 1,
                        alert: alert::audit_unwritable(since, now, &why),
                    });
                }
            }
        }
        for a in self.rules.tick(now) {
            self.pending.push_back(Pending {
                trigger: self.observed + 1,
                alert: a,
            });
        }
        for _ in 0..PAGES_PER_POLL {
            let page = self
                .store
                .audit_events(&AuditQuery {
                    after: Some(self.observed),
                    limit: Some(PAGE),
                    ..AuditQuery::default()
                })
                .await?;
            for ev in &page {
                for a in self.rules.observe(&ev.view()) {
                    self.pending.push_back(Pending {
                        trigger: ev.seq,
                        alert: a,
                    });
                }
                self.observed = ev.seq;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        let flushed = self.flush().await;
        self.advance().await?;
        flushed
    }

    /// Appends the pending alerts in order; stops at the first that fails (it stays first).
    async fn flush(&mut self) -> Result<(), StoreError> {
        while let Some(p) = self.pending.front() {
            let ev = match self.store.append(p.alert.draft()).await {
                Ok(ev) => ev,
                Err(e) => {
                    self.metrics
                        .pending
                        .store(self.pending.len() as u64, Ordering::Relaxed);
                    return Err(e);
                }
            };
            tracing::warn!(
                seq = ev.seq,
                action = %ev.action,
                target = %ev.target,
                "{}",
                p.alert.details["summary"].as_str().unwrap_or("alert")
            );
            self.metrics.count(p.alert.kind);
            self.pending.pop_front();
        }
        self.metrics.pending.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the cursor up to the last event read, but not past the trigger of an alert still
    /// waiting to be written.
    async fn advance(&mut self) -> Result<(), StoreError> {
        let to = self
            .pending
            .front()
            .map_or(self.observed, |p| p.trigger - 1);
        if to <= self.cursor {
            return Ok(());
        }
        if self.store.advance_cursor(CURSOR, self.cursor, to).await? {
            self.cursor = to;
            return Ok(());
        }
        // Someone else moved it: another watcher on this database. Follow it rather than
        // deliver twice what it already did.
        let theirs = self.store.cursor(CURSOR).await?;
        tracing::warn!(
            ours = self.cursor,
            theirs,
            "another process moves the alerts cursor: run the alert watcher in one process only \
             (serve, or one web service)"
        );
        self.cursor = theirs;
        if theirs > self.observed {
            self.observed = theirs;
        }
        self.pending.retain(|p| p.trigger > theirs);
        Ok(())
    }
}

/// Starts the watcher in the background; it stops with `stop`. Its timers run on tokio's clock
/// (anchored to the store's wall clock at start), so a test can pause and advance time.
pub fn spawn(
    store: Store,
    thresholds: Thresholds,
    stop: CancellationToken,
) -> (Arc<Metrics>, tokio::task::JoinHandle<()>) {
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = run(store, thresholds, m) => {}
        }
    });
    (metrics, task)
}

async fn run(store: Store, thresholds: Thresholds, metrics: Arc<Metrics>) {
    let mut backoff = POLL;
    let mut watcher = loop {
        match Watcher::start(store.clone(), thresholds, metrics.clone()).await {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!("the alert watcher cannot start yet: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    let anchor = (store.now(), tokio::time::Instant::now());
    let mut failing = false;
    loop {
        let now = anchor.0.saturating_add(anchor.1.elapsed());
        match watcher.poll(now).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!("the alert watcher could not finish a round: {e}");
                }
                failing = true;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests;
