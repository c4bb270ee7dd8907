//! The clock monitor of one broker process (issue 12), and the periodic sweep of grant ends.
//!
//! Each process that serves (`serve`, `web`, `relay`) runs one monitor: every `sample_every` it
//! reads its wall clock (the injected `Clock`) and its monotonic clock (`tokio::time::Instant`,
//! so tests can run it on paused time) and feeds both to `portcullis_core::clockwatch`. A step
//! beyond the tolerance is logged as an error and audited as `clock.anomaly` with both
//! readings; while it lasts, [`Store::clock_anomaly`] answers `Some` and the web service mints
//! no relay token and the relay starts no session (fail closed; live sessions keep their
//! monotonic deadlines). It ends when the clocks agree again (`clock.resolved`) or when an admin
//! acknowledges (`clock.ack`, from the API or `portcullis admin clock ack` in another process):
//! the monitor looks for a `clock.ack` newer than its `clock.anomaly` in the audit log, which
//! works across processes on PostgreSQL and SQLite alike. The store lives in every process, so
//! the web service and the relay read one health state without depending on each other.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use portcullis_core::audit::{ActorRole, AuditDraft, AuditEvent};
use portcullis_core::clockwatch::{ClockEvent, ClockReadings, ClockSample, ClockState, ClockWatch};
use serde::Serialize;
use tokio::sync::Notify;

use crate::{AuditActor, AuditQuery, Shared, Store, StoreError};

/// The monitor's settings.
#[derive(Debug, Clone)]
pub struct ClockMonitorConfig {
    /// A step of the wall clock against the monotonic clock beyond this is an anomaly.
    pub tolerance: Duration,
    pub sample_every: Duration,
    /// Grant ends nobody has seen yet are persisted this often.
    pub sweep_every: Duration,
    /// This process in the audit log: `serve`, `web` or `relay`.
    pub service: String,
}

impl ClockMonitorConfig {
    pub fn new(service: impl Into<String>, tolerance: Duration) -> Self {
        Self {
            tolerance,
            sample_every: Duration::from_millis(250),
            sweep_every: Duration::from_secs(1),
            service: service.into(),
        }
    }
}

/// Whether this machine's clock is synchronised, as found at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeSync {
    /// `None`: could not be found out.
    pub synchronised: Option<bool>,
    /// What said so: `timedatectl`, `chronyc`, `systemd-timesyncd`, or `none`.
    pub source: String,
    /// What it answered, or why nothing could.
    pub detail: String,
}

/// What `GET /api/v1/admin/clock` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClockStatus {
    /// False in a process that runs no monitor (the command line).
    pub monitored: bool,
    /// `unknown` (no sample yet), `ok` or `anomaly`.
    pub state: &'static str,
    pub tolerance_ms: u64,
    /// The wall clock's distance from where the monotonic clock says it should be.
    pub deviation_ms: i64,
    /// The step that started the current anomaly.
    pub anomaly: Option<ClockReadings>,
    /// The `seq` of its `clock.anomaly` event, once written.
    pub anomaly_seq: Option<i64>,
    pub time_sync: Option<TimeSync>,
}

impl Default for ClockStatus {
    fn default() -> Self {
        Self {
            monitored: false,
            state: "unknown",
            tolerance_ms: 0,
            deviation_ms: 0,
            anomaly: None,
            anomaly_seq: None,
            time_sync: None,
        }
    }
}

/// The health state every part of a process reads.
#[derive(Debug, Default)]
pub(crate) struct Health {
    status: RwLock<ClockStatus>,
    /// Woken when an acknowledgement is written in this process, so its monitor looks at once.
    ack: Arc<Notify>,
}

impl Store {
    /// The step that makes the clocks disagree now, if they do: no new relay token or session
    /// may start while this is `Some`.
    pub fn clock_anomaly(&self) -> Option<ClockReadings> {
        self.clock_status().anomaly
    }

    pub fn clock_status(&self) -> ClockStatus {
        match self.shared.clock_health.status.read() {
            Ok(s) => s.clone(),
            // A monitor that panicked while writing: fail closed.
            Err(_) => ClockStatus {
                state: "anomaly",
                ..ClockStatus::default()
            },
        }
    }

    /// Records what was found about time synchronisation at start (shown with the status).
    pub fn set_time_sync(&self, sync: TimeSync) {
        if let Ok(mut s) = self.shared.clock_health.status.write() {
            s.time_sync = Some(sync);
        }
    }

    /// An admin vouches for the wall clock as it is: writes `clock.ack`. Every monitor in an
    /// anomaly that started before it takes the current time as right and lets tokens and
    /// sessions start again (this process's at once, others within a sample period).
    pub async fn acknowledge_clock(&self, by: &AuditActor) -> Result<AuditEvent, StoreError> {
        let status = self.clock_status();
        let mut details = serde_json::json!({ "wall_clock": self.now() });
        if status.monitored {
            details["state"] = status.state.into();
            details["deviation_ms"] = status.deviation_ms.into();
        }
        if let Some(r) = &status.anomaly {
            details["anomaly"] = serde_json::to_value(r).unwrap_or_default();
        }
        let ev = self
            .append(by.draft("clock.ack").target("clock").details(details))
            .await?;
        self.shared.clock_health.ack.notify_one();
        Ok(ev)
    }

    /// The latest events about the clock (`clock.*`), newest first, for `admin clock status`
    /// in a process that runs no monitor itself.
    pub async fn clock_events(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let mut all = Vec::new();
        for action in [
            "clock.anomaly",
            "clock.resolved",
            "clock.ack",
            "clock.unsynchronised",
        ] {
            all.extend(
                self.audit_events(&AuditQuery {
                    action: Some(action.into()),
                    ..AuditQuery::default()
                })
                .await?,
            );
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.seq));
        all.truncate(limit);
        Ok(all)
    }

    /// A monitor for this store, driven by [`ClockMonitor::step`] (tests) or
    /// [`ClockMonitor::spawn`] (services).
    pub fn clock_monitor(&self, config: ClockMonitorConfig) -> ClockMonitor {
        if let Ok(mut s) = self.shared.clock_health.status.write() {
            s.monitored = true;
            s.tolerance_ms = u64::try_from(config.tolerance.as_millis()).unwrap_or(u64::MAX);
        }
        ClockMonitor {
            watch: ClockWatch::new(config.tolerance),
            config,
            shared: Arc::downgrade(&self.shared),
            pending: Vec::new(),
            anomaly_seq: None,
        }
    }
}

/// One process's monitor. See the module documentation.
#[derive(Debug)]
pub struct ClockMonitor {
    watch: ClockWatch,
    config: ClockMonitorConfig,
    /// Weak: the monitor ends when the process drops its store.
    shared: Weak<Shared>,
    /// Events not written yet (the database was away): written in order, before anything else.
    pending: Vec<AuditDraft>,
    anomaly_seq: Option<i64>,
}

impl ClockMonitor {
    fn store(&self) -> Option<Store> {
        let shared = self.shared.upgrade()?;
        // A handle without an audit appender: the monitor writes in its own transactions.
        Some(Store {
            shared,
            appender: tokio::sync::mpsc::channel(1).0,
        })
    }

    fn draft(&self, action: &str, details: serde_json::Value) -> AuditDraft {
        let mut details = details;
        details["service"] = self.config.service.clone().into();
        AuditDraft::new("portcullis", ActorRole::System, action)
            .target("clock")
            .details(details)
    }

    /// Feeds one sample of both clocks; writes what it changed. Returns false once the store
    /// is gone.
    pub async fn step(&mut self, sample: ClockSample) -> bool {
        let Some(store) = self.store() else {
            return false;
        };
        match self.watch.observe(sample) {
            Some(ClockEvent::Anomaly(r)) => {
                tracing::error!(
                    step_ms = r.step_ms,
                    wall_before = %r.wall_before,
                    wall_after = %r.wall_after,
                    monotonic_elapsed_ms = r.monotonic_elapsed_ms,
                    tolerance_ms = r.tolerance_ms,
                    "the wall clock stepped against the monotonic clock: no new relay tokens or \
                     sessions until the clocks agree again or an admin runs `portcullis admin \
                     clock ack`"
                );
                let details = serde_json::to_value(&r).unwrap_or_default();
                self.anomaly_seq = None;
                self.pending.push(self.draft("clock.anomaly", details));
            }
            Some(ClockEvent::Resolved(r)) => {
                tracing::warn!(step_ms = r.step_ms, "the clocks agree again");
                let mut details = serde_json::to_value(&r).unwrap_or_default();
                details["how"] = "clocks_agree".into();
                self.anomaly_seq = None;
                self.pending.push(self.draft("clock.resolved", details));
            }
            None => {}
        }
        self.flush(&store).await;
        if self.watch.in_anomaly()
            && let Some(after) = self.anomaly_seq
        {
            self.look_for_ack(&store, after, sample).await;
        }
        self.publish(&store);
        true
    }

    async fn flush(&mut self, store: &Store) {
        while let Some(draft) = self.pending.first() {
            match store.write_event(draft).await {
                Ok(ev) => {
                    if ev.action == "clock.anomaly" {
                        self.anomaly_seq = Some(ev.seq);
                    }
                    self.pending.remove(0);
                }
                Err(e) => {
                    tracing::warn!("cannot write {} yet: {e}", draft.action);
                    return;
                }
            }
        }
    }

    async fn look_for_ack(&mut self, store: &Store, after: i64, sample: ClockSample) {
        let q = AuditQuery {
            action: Some("clock.ack".into()),
            after: Some(after),
            limit: Some(1),
            ..AuditQuery::default()
        };
        let ack = match store.audit_events(&q).await {
            Ok(mut found) => found.pop(),
            Err(e) => {
                tracing::warn!("cannot look for a clock acknowledgement: {e}");
                return;
            }
        };
        let Some(ack) = ack else { return };
        let ended = self.watch.acknowledge(sample);
        tracing::warn!(by = %ack.actor, "clock anomaly acknowledged: the current time is taken as right");
        let mut details = serde_json::json!({
            "how": "ack", "ack_seq": ack.seq, "by": ack.actor,
        });
        if let Some(r) = ended {
            details["anomaly"] = serde_json::to_value(r).unwrap_or_default();
        }
        self.anomaly_seq = None;
        self.pending.push(self.draft("clock.resolved", details));
        self.flush(store).await;
    }

    fn publish(&self, store: &Store) {
        let Ok(mut s) = store.shared.clock_health.status.write() else {
            return;
        };
        s.monitored = true;
        s.deviation_ms = self.watch.deviation_ms();
        s.anomaly_seq = self.anomaly_seq;
        (s.state, s.anomaly) = match self.watch.state() {
            ClockState::Unknown => ("unknown", None),
            ClockState::Healthy => ("ok", None),
            ClockState::Anomaly(r) => ("anomaly", Some(r.clone())),
        };
    }

    /// Runs the monitor and the grant-end sweep until the store is dropped.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(self.config.sample_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep: Option<tokio::time::Instant> = None;
            // Only the notifier is held, never the store: dropping the store ends the task.
            let notify = match self.shared.upgrade() {
                Some(s) => s.clock_health.ack.clone(),
                None => return,
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = notify.notified() => {}
                }
                let Some(store) = self.store() else { return };
                let sample = ClockSample {
                    wall: store.now(),
                    monotonic: start.elapsed(),
                };
                drop(store);
                if !self.step(sample).await {
                    return;
                }
                if last_sweep.is_none_or(|t| t.elapsed() >= self.config.sweep_every) {
                    last_sweep = Some(tokio::time::Instant::now());
                    if let Some(store) = self.store()
                        && let Err(e) = store.sweep_ended().await
                    {
                        tracing::warn!("cannot persist grant ends yet: {e}");
                    }
                }
            }
        })
    }
}

impl Store {
    /// Writes one event in its own write transaction (the monitor has no appender).
    async fn write_event(&self, draft: &AuditDraft) -> Result<AuditEvent, StoreError> {
        let mut tx = self.begin_write().await?;
        let ev = tx.audit(draft).await?;
        tx.commit().await?;
        Ok(ev)
    }
}

/// Finds out whether this machine's clock is synchronised: `timedatectl` (systemd), then
/// `chronyc`, then systemd-timesyncd's flag file. Never fails: `synchronised: None` when none
/// of them answers. Blocking (runs commands): call from a blocking task.
pub fn probe_time_sync() -> TimeSync {
    let run = |program: &str, args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "{program}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let mut tried = Vec::new();
    match run("timedatectl", &["show", "-p", "NTPSynchronized", "--value"]) {
        Ok(v) if v == "yes" || v == "no" => {
            return TimeSync {
                synchronised: Some(v == "yes"),
                source: "timedatectl".into(),
                detail: format!("NTPSynchronized={v}"),
            };
        }
        Ok(v) => tried.push(format!("timedatectl: unexpected answer '{v}'")),
        Err(e) => tried.push(e),
    }
    match run("chronyc", &["-n", "tracking"]) {
        Ok(text) => {
            if let Some(line) = text.lines().find(|l| l.starts_with("Leap status")) {
                let status = line.split(':').nth(1).unwrap_or("").trim().to_owned();
                return TimeSync {
                    synchronised: Some(status != "Not synchronised"),
                    source: "chronyc".into(),
                    detail: format!("leap status: {status}"),
                };
            }
            tried.push("chronyc: no leap status".into());
        }
        Err(e) => tried.push(e),
    }
    if std::path::Path::new("/run/systemd/timesync/synchronized").exists() {
        return TimeSync {
            synchronised: Some(true),
            source: "systemd-timesyncd".into(),
            detail: "/run/systemd/timesync/synchronized exists".into(),
        };
    }
    TimeSync {
        synchronised: None,
        source: "none".into(),
        detail: tried.join("; "),
    }
}
