//! Alerts for unusual activity (issue 15, point 4): which audit events, alone or counted in a
//! sliding window, deserve a person's attention now.
//!
//! An alert is itself an audit event, `alert.<kind>` by actor `portcullis` (role `system`), so
//! it is hash-chained, exported, sent to alert subscribers and forwarded to syslog like every
//! other event (docs/decisions/0017-alerts.md lists the kinds and their details).
//!
//! Pure, like the rest of core: [`AlertRules::observe`] is fed the log's events in `seq` order
//! and [`AlertRules::tick`] is called with the current time for timers; neither reads a clock.
//! Windows are measured in the events' own timestamps, so replaying the same events gives the
//! same alerts: that is how a restarted watcher rebuilds its windows.
//!
//! The rules in one place:
//! - **Failed logins** (`login.fail`, `mfa.fail`, `mfa.replay`) are counted per account and per
//!   source address. When one reaches `login_failures` within `login_failures_window`, one
//!   `alert.login_failures` fires; that subject is then quiet until the window has passed since
//!   the firing event. When an account and an address reach the threshold on the same event (one
//!   person hammering one account) they make one alert naming both.
//! - **Lockouts** (`login.locked`): one `alert.lockout` each.
//! - **Relay refusals** that suggest misuse (see [`SUSPICIOUS_REFUSALS`], plus every refused
//!   Modbus request and every refused connector) are counted per subject: the vendor when the
//!   refused party is a known vendor, otherwise the source address. The default threshold of 1
//!   alerts at once, then suppresses that subject for `relay_refusals_window`.
//! - **Configuration changes** (users, devices, policies, sites, organisations, keys: see
//!   [`is_config_change`]): one `alert.config_change` per event, naming the actor and the change.
//! - **Connectors**: a site whose last connection ended (`relay.connector.disconnect`) and has
//!   none for longer than `connector_offline` raises `alert.connector_offline`; its next
//!   `relay.connector.connect` then raises `alert.connector_online` (only after an offline
//!   alert: a connector that blinks for a second is not news).
//! - **Restarts** (`service.start`), **clock jumps** (`clock.anomaly`), an unsynchronised clock
//!   at start (`clock.unsynchronised`) and the data disk filling up (`disk.usage` rising): one
//!   alert each.
//! - Audit write failures cannot be observed in the log (they are the absence of events): the
//!   watcher builds `alert.audit_unwritable` with [`audit_unwritable`] when writes work again.
//!
//! `alert.*` events never raise alerts. The rules do read their own `alert.login_failures`,
//! `alert.relay_refusals` and `alert.connector_offline` events back, to restore suppression and
//! "offline already reported" after a restart (their details carry what that needs).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};

use crate::Timestamp;
use crate::audit::{ActorRole, AuditDraft, EventView};

#[cfg(test)]
mod tests;

/// At most this many triggering `seq`s are named in an alert (the count says how many there were).
pub const MAX_SEQS: usize = 20;

/// The actor of every alert: the broker itself.
pub const ACTOR: &str = "portcullis";

/// Refusal codes (`details.code` of `relay.session.refuse` and `relay.stream.refuse`) that point
/// at misuse rather than at an expired window or a device that is down: a token that does not
/// verify, a token used on another connection, a token of a logged-out session, a target the
/// grant does not contain, and a dial the site connector refused on its own allow-list.
pub const SUSPICIOUS_REFUSALS: &[&str] = &[
    "bad_token",
    "binding_mismatch",
    "session_revoked",
    "target_not_granted",
    "connector_refused",
];

/// When alerts fire. Defaults are in [`Thresholds::default`] and docs/guides/admin.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failed logins (password or code) for one account, or from one address, that raise an
    /// alert. Default 5, the lockout threshold: an account locks and alerts on the same attempt.
    pub login_failures: u32,
    /// The sliding window failed logins are counted in, and how long a subject stays quiet after
    /// an alert. Default 10 minutes.
    pub login_failures_window: Duration,
    /// Suspicious relay refusals for one vendor or address that raise an alert. Default 1: a
    /// refused target or a stolen token is news at once.
    pub relay_refusals: u32,
    /// The window relay refusals are counted in and the quiet time after an alert. Default 10
    /// minutes.
    pub relay_refusals_window: Duration,
    /// How long a site may have no connector before `alert.connector_offline`. Default 60 s:
    /// longer than a connector's reconnect after a relay restart or a network blip.
    pub connector_offline: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            login_failures: 5,
            login_failures_window: Duration::from_secs(10 * 60),
            relay_refusals: 1,
            relay_refusals_window: Duration::from_secs(10 * 60),
            connector_offline: Duration::from_secs(60),
        }
    }
}

impl Thresholds {
    /// The longest counting window: a restarted watcher replays this much of the log before
    /// its cursor to rebuild its counts.
    pub fn max_window(&self) -> Duration {
        self.login_failures_window.max(self.relay_refusals_window)
    }
}

/// What an alert is about. The audit action is `alert.` + [`AlertKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    LoginFailures,
    Lockout,
    RelayRefusals,
    ConfigChange,
    ConnectorOffline,
    ConnectorOnline,
    AuditUnwritable,
    Restart,
    ClockJump,
    ClockUnsynchronised,
    DiskUsage,
}

impl AlertKind {
    pub const ALL: [AlertKind; 11] = [
        AlertKind::LoginFailures,
        AlertKind::Lockout,
        AlertKind::RelayRefusals,
        AlertKind::ConfigChange,
        AlertKind::ConnectorOffline,
        AlertKind::ConnectorOnline,
        AlertKind::AuditUnwritable,
        AlertKind::Restart,
        AlertKind::ClockJump,
        AlertKind::ClockUnsynchronised,
        AlertKind::DiskUsage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LoginFailures => "login_failures",
            AlertKind::Lockout => "lockout",
            AlertKind::RelayRefusals => "relay_refusals",
            AlertKind::ConfigChange => "config_change",
            AlertKind::ConnectorOffline => "connector_offline",
            AlertKind::ConnectorOnline => "connector_online",
            AlertKind::AuditUnwritable => "audit_unwritable",
            AlertKind::Restart => "restart",
            AlertKind::ClockJump => "clock_jump",
            AlertKind::ClockUnsynchronised => "clock_unsynchronised",
            AlertKind::DiskUsage => "disk_usage",
        }
    }

    /// The audit action of this kind of alert, e.g. `alert.login_failures`.
    pub fn action(self) -> String {
        format!("alert.{}", self.as_str())
    }

    /// The kind of an `alert.*` action.
    pub fn from_action(action: &str) -> Option<AlertKind> {
        let name = action.strip_prefix("alert.")?;
        AlertKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One alert to append to the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// What it is about, in the log's usual spelling: `user:bob`, `address:203.0.113.9`,
    /// `vendor:acme-ann`, `site:north`, `device:plc-7`, `service`, `clock`, `audit`.
    pub target: String,
    /// Always holds `summary` (one sentence for a person); the rest depends on the kind.
    pub details: Value,
}

impl Alert {
    /// The event to append: actor `portcullis`, role `system`, action `alert.<kind>`.
    pub fn draft(&self) -> AuditDraft {
        AuditDraft::new(ACTOR, ActorRole::System, self.kind.action())
            .target(self.target.clone())
            .details(self.details.clone())
    }
}

/// `alert.audit_unwritable`: the audit log refused writes from `since` until `until`. Built by
/// the watcher, which alone can see the gap, once the log takes writes again.
pub fn audit_unwritable(since: Timestamp, until: Timestamp, error: &str) -> Alert {
    let secs = until.duration_since(since).as_secs();
    Alert {
        kind: AlertKind::AuditUnwritable,
        target: "audit".into(),
        details: json!({
            "summary": format!(
                "the audit log could not be written for {secs} s; the broker refused new actions \
                 and sessions meanwhile (fail closed)"
            ),
            "since": since, "until": until, "duration_secs": secs, "error": error,
        }),
    }
}

/// Whether `action` changes configuration: users, devices and their policies, sites and their
/// connectors, vendor organisations, keys.
pub fn is_config_change(action: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "user.", "device.", "site.", "org.", "policy.", "key.", "keys.",
    ];
    PREFIXES.iter().any(|p| action.starts_with(p))
}

/// Failed logins and relay refusals of one subject within a window.
#[derive(Debug, Default)]
struct Window {
    /// `(ts, seq)` of the events still inside the window, oldest first.
    events: VecDeque<(Timestamp, i64)>,
    /// No new alert for this subject before this time.
    quiet_until: Option<Timestamp>,
}

impl Window {
    /// Adds an event and drops those older than `width` before it. Returns the count inside.
    fn add(&mut self, ts: Timestamp, seq: i64, width: Duration) -> usize {
        self.prune(ts, width);
        self.events.push_back((ts, seq));
        self.events.len()
    }

    fn prune(&mut self, now: Timestamp, width: Duration) {
        let start = now.saturating_sub(width);
        while self.events.front().is_some_and(|(t, _)| *t <= start) {
            self.events.pop_front();
        }
    }

    fn quiet_at(&self, ts: Timestamp) -> bool {
        self.quiet_until.is_some_and(|q| ts < q)
    }

    /// Nothing left to remember at `now`: it can be forgotten.
    fn idle(&self, now: Timestamp, width: Duration) -> bool {
        !self.quiet_at(now)
            && self
                .events
                .back()
                .is_none_or(|(t, _)| *t <= now.saturating_sub(width))
    }

    fn seqs(&self) -> impl Iterator<Item = i64> + '_ {
        self.events.iter().map(|(_, s)| *s)
    }
}

/// Sliding windows keyed by subject (`account:bob`, `address:…`, `vendor:…`).
#[derive(Debug, Default)]
struct Windows {
    by_subject: HashMap<String, Window>,
}

impl Windows {
    /// Counts an event for `subject`; `Some(count)` when this event brings the subject to
    /// `threshold` and it is not quiet (it is quiet for `width` from here on).
    fn count(
        &mut self,
        subject: &str,
        ts: Timestamp,
        seq: i64,
        threshold: u32,
        width: Duration,
    ) -> Option<usize> {
        let w = self.by_subject.entry(subject.to_owned()).or_default();
        let n = w.add(ts, seq, width);
        if n >= threshold as usize && !w.quiet_at(ts) {
            w.quiet_until = Some(ts.saturating_add(width));
            Some(n)
        } else {
            None
        }
    }

    fn quiet(&mut self, subject: &str, until: Timestamp) {
        let w = self.by_subject.entry(subject.to_owned()).or_default();
        w.quiet_until = Some(w.quiet_until.map_or(until, |q| q.max(until)));
    }

    fn get(&self, subject: &str) -> Option<&Window> {
        self.by_subject.get(subject)
    }

    /// Forgets subjects with nothing in the window and no quiet time left: memory stays bounded
    /// by the events of one window.
    fn forget_idle(&mut self, now: Timestamp, width: Duration) {
        self.by_subject.retain(|_, w| !w.idle(now, width));
    }
}

/// A site's connector connections as the log tells them.
#[derive(Debug, Default)]
struct Site {
    /// Live connection id -> the relay it is connected to.
    live: BTreeMap<String, String>,
    /// When the last connection ended, its event's seq and end reason, while none is live.
    offline: Option<Offline>,
}

#[derive(Debug, Clone)]
struct Offline {
    since: Timestamp,
    seq: i64,
    reason: String,
    /// `alert.connector_offline` was raised (or read back from the log) for this outage.
    alerted: bool,
}

/// The alert rules' state: fed every event in `seq` order, and the time for timers.
#[derive(Debug)]
pub struct AlertRules {
    thresholds: Thresholds,
    logins: Windows,
    refusals: Windows,
    sites: BTreeMap<String, Site>,
    /// Per service part (`serve`, `web`, `relay`): the seq of its last `service.start`, and
    /// whether a `service.stop` followed it.
    starts: BTreeMap<String, (i64, bool)>,
}

impl AlertRules {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            logins: Windows::default(),
            refusals: Windows::default(),
            sites: BTreeMap::new(),
            starts: BTreeMap::new(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Feeds one event of the log (in `seq` order) and returns the alerts it raises. Timers that
    /// fell due before the event's time fire first: replaying a log gives the alerts a live run
    /// gave, whatever the replay's own clock says.
    pub fn observe(&mut self, ev: &EventView<'_>) -> Vec<Alert> {
        if ev.action.starts_with("alert.") {
            // Read back before the timers run: an offline alert written at its deadline must
            // not fire a second time when it is read again after a restart.
            self.read_back(ev);
            return self.fire_due(ev.ts);
        }
        let mut out = self.fire_due(ev.ts);
        match ev.action {
            "login.fail" | "mfa.fail" | "mfa.replay" => out.extend(self.login_failure(ev)),
            "login.locked" => out.push(lockout(ev)),
            "relay.session.refuse" | "relay.stream.refuse" => {
                let d = parse(ev.details);
                let code = d.get("code").and_then(Value::as_str).unwrap_or("");
                if SUSPICIOUS_REFUSALS.contains(&code) {
                    out.extend(self.refusal(ev, &d));
                }
            }
            "relay.modbus.refuse" | "relay.connector.refuse" => {
                let d = parse(ev.details);
                out.extend(self.refusal(ev, &d));
            }
            "relay.connector.connect" => out.extend(self.connector_connect(ev)),
            "relay.connector.disconnect" => self.connector_disconnect(ev),
            "relay.start" => self.relay_start(ev),
            "service.start" => out.push(self.restart(ev)),
            // Only the web service (`web`, `serve`) writes a stop event.
            "service.stop" => {
                if let Some((_, stopped)) = self.starts.get_mut("web") {
                    *stopped = true;
                }
            }
            "clock.anomaly" => out.push(clock_jump(ev)),
            "clock.unsynchronised" => out.push(clock_unsynchronised(ev)),
            "disk.usage" => out.extend(disk_usage(ev)),
            a if is_config_change(a) => out.push(config_change(ev)),
            _ => {}
        }
        out
    }

    /// Fires the timers due at `now` (a connector offline for longer than the threshold) and
    /// forgets windows with nothing left in them.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Alert> {
        let t = self.thresholds;
        // Here, not per event: a sweep over every subject on every event would make a burst
        // from many addresses quadratic.
        self.logins.forget_idle(now, t.login_failures_window);
        self.refusals.forget_idle(now, t.relay_refusals_window);
        self.fire_due(now)
    }

    /// The connector-offline timers due at `now`.
    fn fire_due(&mut self, now: Timestamp) -> Vec<Alert> {
        let t = self.thresholds;
        let mut out = Vec::new();
        for (name, site) in &mut self.sites {
            let Some(off) = site.offline.as_mut() else {
                continue;
            };
            if off.alerted || now < off.since.saturating_add(t.connector_offline) {
                continue;
            }
            off.alerted = true;
            let secs = now.duration_since(off.since).as_secs();
            out.push(Alert {
                kind: AlertKind::ConnectorOffline,
                target: format!("site:{name}"),
                details: json!({
                    "summary": format!(
                        "site {name}'s connector has been offline for more than {} s \
                         (last connection ended: {})",
                        t.connector_offline.as_secs(), off.reason
                    ),
                    "site": name,
                    "threshold_secs": t.connector_offline.as_secs(),
                    "offline_since": off.since,
                    "offline_secs": secs,
                    "reason": off.reason,
                    "seqs": [off.seq],
                    "count": 1,
                }),
            });
        }
        out
    }

    /// When the next timer falls due, if any: the watcher sleeps until then at the latest.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.sites
            .values()
            .filter_map(|s| s.offline.as_ref())
            .filter(|o| !o.alerted)
            .map(|o| o.since.saturating_add(self.thresholds.connector_offline))
            .min()
    }

    /// Our own alerts, read back from the log: what they tell restores suppression after a
    /// restart (in a live run it is already known).
    fn read_back(&mut self, ev: &EventView<'_>) {
        if ev.actor != ACTOR || ev.role != ActorRole::System.as_str() {
            return;
        }
        let d = parse(ev.details);
        let until = d
            .get("suppressed_until")
            .and_then(|v| serde_json::from_value::<Timestamp>(v.clone()).ok());
        let subjects = d.get("subjects").and_then(Value::as_array);
        match (AlertKind::from_action(ev.action), until, subjects) {
            (Some(AlertKind::LoginFailures), Some(until), Some(subjects)) => {
                for s in subjects.iter().filter_map(Value::as_str) {
                    self.logins.quiet(s, until);
                }
            }
            (Some(AlertKind::RelayRefusals), Some(until), Some(subjects)) => {
                for s in subjects.iter().filter_map(Value::as_str) {
                    self.refusals.quiet(s, until);
                }
            }
            (Some(AlertKind::ConnectorOffline), _, _) => {
                if let Some(site) = d.get("site").and_then(Value::as_str)
                    && let Some(off) = self.sites.get_mut(site).and_then(|s| s.offline.as_mut())
                {
                    off.alerted = true;
                }
            }
            _ => {}
        }
    }

    fn login_failure(&mut self, ev: &EventView<'_>) -> Option<Alert> {
        let t = self.thresholds;
        let account = ev
            .target
            .strip_prefix("user:")
            .unwrap_or(ev.actor)
            .to_owned();
        let mut subjects = vec![format!("account:{account}")];
        if let Some(src) = ev.source.filter(|s| !s.is_empty() && *s != "cli") {
            subjects.push(format!("address:{src}"));
        }
        let mut fired = Vec::new();
        for s in &subjects {
            let hit =
                self.logins
                    .count(s, ev.ts, ev.seq, t.login_failures, t.login_failures_window);
            if let Some(n) = hit {
                fired.push((s.clone(), n));
            }
        }
        if fired.is_empty() {
            return None;
        }
        let (seqs, count) = union_seqs(&self.logins, &fired);
        let names: Vec<&str> = fired.iter().map(|(s, _)| s.as_str()).collect();
        let mut subject = serde_json::Map::new();
        for (s, n) in &fired {
            if let Some((k, v)) = s.split_once(':') {
                subject.insert(k.to_owned(), json!({ "name": v, "count": n }));
            }
        }
        let address = ev.source.unwrap_or("");
        let target = if names.iter().any(|s| s.starts_with("account:")) {
            format!("user:{account}")
        } else {
            format!("address:{address}")
        };
        let who = names.join(" and ");
        Some(Alert {
            kind: AlertKind::LoginFailures,
            target,
            details: json!({
                "summary": format!(
                    "{count} failed logins in {} minutes ({who}); no further alert for them \
                     for {} minutes",
                    t.login_failures_window.as_secs() / 60,
                    t.login_failures_window.as_secs() / 60
                ),
                "account": account,
                "address": ev.source,
                "subjects": names,
                "subject": subject,
                "threshold": t.login_failures,
                "window_secs": t.login_failures_window.as_secs(),
                "count": count,
                "seqs": seqs,
                "last_action": ev.action,
                "suppressed_until": ev.ts.saturating_add(t.login_failures_window),
            }),
        })
    }

    fn refusal(&mut self, ev: &EventView<'_>, d: &Value) -> Option<Alert> {
        let t = self.thresholds;
        let subject = if ev.role == ActorRole::Vendor.as_str() {
            format!("vendor:{}", ev.actor)
        } else if let Some(src) = ev.source.filter(|s| !s.is_empty()) {
            format!("address:{src}")
        } else {
            format!("actor:{}", ev.actor)
        };
        let n = self.refusals.count(
            &subject,
            ev.ts,
            ev.seq,
            t.relay_refusals,
            t.relay_refusals_window,
        )?;
        let fired = [(subject.clone(), n)];
        let (seqs, count) = union_seqs(&self.refusals, &fired);
        let pick = |k: &str| d.get(k).cloned().unwrap_or(Value::Null);
        let what = match ev.action {
            "relay.modbus.refuse" => "refused Modbus request",
            "relay.connector.refuse" => "refused site connector",
            "relay.stream.refuse" => "refused target",
            _ => "refused relay session",
        };
        let code = d
            .get("code")
            .or_else(|| d.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("");
        Some(Alert {
            kind: AlertKind::RelayRefusals,
            target: subject.clone(),
            details: json!({
                "summary": format!(
                    "{count} suspicious relay refusal(s) in {} minutes for {subject}, the last a \
                     {what} ({code}); no further alert for it for {} minutes",
                    t.relay_refusals_window.as_secs() / 60,
                    t.relay_refusals_window.as_secs() / 60
                ),
                "subjects": [subject],
                "vendor": (ev.role == ActorRole::Vendor.as_str()).then_some(ev.actor),
                "address": ev.source,
                "threshold": t.relay_refusals,
                "window_secs": t.relay_refusals_window.as_secs(),
                "count": count,
                "seqs": seqs,
                "last": {
                    "action": ev.action, "code": pick("code"), "reason": pick("reason"),
                    "target": ev.target, "device": pick("device"), "port": pick("port"),
                    "grant_id": ev.grant_id, "session": pick("session"),
                    "site": pick("site"),
                },
                "suppressed_until": ev.ts.saturating_add(t.relay_refusals_window),
            }),
        })
    }

    fn connector_connect(&mut self, ev: &EventView<'_>) -> Option<Alert> {
        let name = site_of(ev)?;
        let d = parse(ev.details);
        let id = d
            .get("connection")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let relay = d.get("relay").and_then(Value::as_str).unwrap_or("").into();
        let site = self.sites.entry(name.clone()).or_default();
        site.live.insert(id, relay);
        let off = site.offline.take()?;
        if !off.alerted {
            return None;
        }
        let secs = ev.ts.duration_since(off.since).as_secs();
        Some(Alert {
            kind: AlertKind::ConnectorOnline,
            target: format!("site:{name}"),
            details: json!({
                "summary": format!("site {name}'s connector is back online after {secs} s"),
                "site": name,
                "offline_since": off.since,
                "offline_secs": secs,
                "seqs": [off.seq, ev.seq],
                "count": 2,
            }),
        })
    }

    fn connector_disconnect(&mut self, ev: &EventView<'_>) {
        let Some(name) = site_of(ev) else {
            return;
        };
        let d = parse(ev.details);
        let id = d.get("connection").and_then(Value::as_str).unwrap_or("");
        let reason = d.get("reason").and_then(Value::as_str).unwrap_or("lost");
        let site = self.sites.entry(name).or_default();
        site.live.remove(id);
        if site.live.is_empty() && site.offline.is_none() {
            site.offline = Some(Offline {
                since: ev.ts,
                seq: ev.seq,
                reason: reason.to_owned(),
                alerted: false,
            });
        }
    }

    /// A relay that starts has no connections: those recorded for it ended with its previous
    /// run, even if that run died before it could say so.
    fn relay_start(&mut self, ev: &EventView<'_>) {
        let d = parse(ev.details);
        let Some(relay) = d.get("relay").and_then(Value::as_str) else {
            return;
        };
        for site in self.sites.values_mut() {
            let before = site.live.len();
            site.live.retain(|_, r| r != relay);
            if before > 0 && site.live.is_empty() && site.offline.is_none() {
                site.offline = Some(Offline {
                    since: ev.ts,
                    seq: ev.seq,
                    reason: "relay_restarted".into(),
                    alerted: false,
                });
            }
        }
    }

    fn restart(&mut self, ev: &EventView<'_>) -> Alert {
        let d = parse(ev.details);
        // `serve` and `web` name their web address, `portcullis relay` only its own: the part
        // that started is `web` (the web service, alone or in `serve`) or `relay`.
        let part = if d.get("web").is_some() {
            "web"
        } else {
            "relay"
        };
        let previous = self.starts.insert(part.to_owned(), (ev.seq, false));
        let (clean, prev_seq) = match previous {
            Some((seq, stopped)) if part == "web" => (Value::Bool(stopped), Value::from(seq)),
            Some((seq, _)) => (Value::Null, Value::from(seq)),
            None => (Value::Null, Value::Null),
        };
        let how = match clean {
            Value::Bool(true) => "after a clean stop",
            Value::Bool(false) if part == "web" => "without a recorded stop (a crash or a kill)",
            _ => "(whether the previous run stopped cleanly is not known)",
        };
        Alert {
            kind: AlertKind::Restart,
            target: "service".into(),
            details: json!({
                "summary": format!("portcullis {part} started {how}"),
                "part": part,
                "clean_stop": clean,
                "previous_start_seq": prev_seq,
                "start": d,
                "seqs": [ev.seq],
                "count": 1,
            }),
        }
    }
}

fn lockout(ev: &EventView<'_>) -> Alert {
    let d = parse(ev.details);
    let account = ev.target.strip_prefix("user:").unwrap_or(ev.actor);
    Alert {
        kind: AlertKind::Lockout,
        target: format!("user:{account}"),
        details: json!({
            "summary": format!(
                "account {account} was locked after repeated failed logins{}",
                ev.source.map(|s| format!(" (last from {s})")).unwrap_or_default()
            ),
            "account": account,
            "address": ev.source,
            "until": d.get("until"),
            "failures": d.get("failures"),
            "seqs": [ev.seq],
            "count": 1,
        }),
    }
}

fn config_change(ev: &EventView<'_>) -> Alert {
    let d = parse(ev.details);
    Alert {
        kind: AlertKind::ConfigChange,
        target: ev.target.to_owned(),
        details: json!({
            "summary": format!(
                "configuration change: {} by {} ({}) on {}",
                ev.action, ev.actor, ev.role, ev.target
            ),
            "actor": ev.actor,
            "role": ev.role,
            "action": ev.action,
            "changed": ev.target,
            "address": ev.source,
            "change": d,
            "seqs": [ev.seq],
            "count": 1,
        }),
    }
}

fn clock_jump(ev: &EventView<'_>) -> Alert {
    let d = parse(ev.details);
    let step = d.get("step_ms").and_then(Value::as_i64).unwrap_or(0);
    Alert {
        kind: AlertKind::ClockJump,
        target: "clock".into(),
        details: json!({
            "summary": format!(
                "the wall clock stepped by {step} ms against the monotonic clock; no new relay \
                 tokens or sessions until the clocks agree or an admin runs `portcullis admin \
                 clock ack`"
            ),
            "step_ms": step,
            "tolerance_ms": d.get("tolerance_ms"),
            "anomaly": d,
            "seqs": [ev.seq],
            "count": 1,
        }),
    }
}

fn clock_unsynchronised(ev: &EventView<'_>) -> Alert {
    let d = parse(ev.details);
    Alert {
        kind: AlertKind::ClockUnsynchronised,
        target: "clock".into(),
        details: json!({
            "summary": format!(
                "{} started without a synchronised clock (NTP)",
                d.get("service").and_then(Value::as_str).unwrap_or("a service")
            ),
            "service": d.get("service"),
            "time_sync": d.get("time_sync"),
            "seqs": [ev.seq],
            "count": 1,
        }),
    }
}

/// Only a rise (to `warning` or `critical`) is news; falling back is in the log already.
fn disk_usage(ev: &EventView<'_>) -> Option<Alert> {
    let d = parse(ev.details);
    let rank = |k: &str| match d.get(k).and_then(Value::as_str) {
        Some("warning") => 1,
        Some("critical") => 2,
        _ => 0,
    };
    if rank("level") <= rank("previous") {
        return None;
    }
    Some(Alert {
        kind: AlertKind::DiskUsage,
        target: "disk".into(),
        details: json!({
            "summary": format!(
                "the data directory's filesystem is {} % full ({}); at 100 % the audit log \
                 stops taking writes and the broker refuses new actions",
                d.get("percent").cloned().unwrap_or(Value::Null),
                d.get("level").and_then(Value::as_str).unwrap_or("")
            ),
            "level": d.get("level"),
            "percent": d.get("percent"),
            "path": d.get("path"),
            "seqs": [ev.seq],
            "count": 1,
        }),
    })
}

/// The triggering seqs of the subjects that fired (the newest [`MAX_SEQS`], ascending) and how
/// many distinct events that is.
fn union_seqs(w: &Windows, fired: &[(String, usize)]) -> (Vec<i64>, usize) {
    let mut all: Vec<i64> = fired
        .iter()
        .filter_map(|(s, _)| w.get(s))
        .flat_map(Window::seqs)
        .collect();
    all.sort_unstable();
    all.dedup();
    let count = all.len();
    let keep = all.split_off(count.saturating_sub(MAX_SEQS));
    (keep, count)
}

fn site_of(ev: &EventView<'_>) -> Option<String> {
    ev.target.strip_prefix("site:").map(str::to_owned)
}

/// An event's details; an object that says nothing when they are not JSON (they always are,
/// the store writes them from a `Value`).
fn parse(details: &str) -> Value {
    serde_json::from_str(details).unwrap_or(Value::Null)
}
