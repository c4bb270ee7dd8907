#![allow(clippy::unwrap_used)]

use super::*;
use crate::audit::Digest;

/// A log of events under construction: seqs count up, times are seconds from a fixed start.
struct Log {
    seq: i64,
    rules: AlertRules,
}

const T0: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_micros((T0 + secs) * 1_000_000).unwrap()
}

struct Ev<'a> {
    actor: &'a str,
    role: &'a str,
    action: &'a str,
    target: &'a str,
    source: Option<&'a str>,
    details: Value,
}

fn ev<'a>(actor: &'a str, role: &'a str, action: &'a str, target: &'a str) -> Ev<'a> {
    Ev {
        actor,
        role,
        action,
        target,
        source: None,
        details: json!({}),
    }
}

impl Ev<'_> {
    fn from(mut self, s: &'static str) -> Self {
        self.source = Some(s);
        self
    }
    fn details(mut self, d: Value) -> Self {
        self.details = d;
        self
    }
}

impl Log {
    fn new(t: Thresholds) -> Self {
        Self {
            seq: 0,
            rules: AlertRules::new(t),
        }
    }

    fn feed(&mut self, secs: i64, e: Ev<'_>) -> Vec<Alert> {
        self.seq += 1;
        let details = e.details.to_string();
        let view = EventView {
            seq: self.seq,
            ts: at(secs),
            actor: e.actor,
            role: e.role,
            action: e.action,
            target: e.target,
            grant_id: None,
            session_id: None,
            source: e.source,
            details: &details,
            prev_hash: Digest::ZERO,
            hash: Digest::ZERO,
            mac: Digest::ZERO,
        };
        self.rules.observe(&view)
    }

    /// Feeds the alerts back, as the watcher does when it reads its own events.
    fn feed_alerts(&mut self, secs: i64, alerts: &[Alert]) {
        for a in alerts {
            let d = a.draft();
            let action = d.action.clone();
            let back = self.feed(
                secs,
                ev(ACTOR, "system", &action, &d.target).details(d.details.clone()),
            );
            assert!(back.is_empty(), "an alert raised an alert: {back:?}");
        }
    }
}

fn bad_login<'a>(user: &'a str, target: &'a str, from: &'static str) -> Ev<'a> {
    ev(user, "vendor", "login.fail", target)
        .from(from)
        .details(json!({ "reason": "bad_password" }))
}

fn kinds(alerts: &[Alert]) -> Vec<AlertKind> {
    alerts.iter().map(|a| a.kind).collect()
}

#[test]
fn five_failed_logins_alert_once_and_four_do_not() {
    let mut log = Log::new(Thresholds::default());
    for i in 0..4 {
        assert!(
            log.feed(i * 10, bad_login("bob", "user:bob", "198.51.100.7"))
                .is_empty()
        );
    }
    let fired = log.feed(40, bad_login("bob", "user:bob", "198.51.100.7"));
    assert_eq!(kinds(&fired), [AlertKind::LoginFailures], "{fired:?}");
    let a = &fired[0];
    assert_eq!(a.target, "user:bob");
    assert_eq!(a.draft().action, "alert.login_failures");
    assert_eq!(a.draft().actor, "portcullis");
    assert_eq!(a.draft().role, ActorRole::System);
    // Account and address reached the threshold on the same event: one alert naming both.
    assert_eq!(
        a.details["subjects"],
        json!(["account:bob", "address:198.51.100.7"])
    );
    assert_eq!(a.details["count"], 5);
    assert_eq!(a.details["threshold"], 5);
    assert_eq!(a.details["window_secs"], 600);
    assert_eq!(a.details["seqs"], json!([1, 2, 3, 4, 5]));
    assert_eq!(a.details["account"], "bob");
    assert_eq!(a.details["address"], "198.51.100.7");
    // More failures inside the window: quiet (no storm).
    for i in 5..30 {
        assert!(
            log.feed(40 + i, bad_login("bob", "user:bob", "198.51.100.7"))
                .is_empty()
        );
    }
}

#[test]
fn failures_spread_wider_than_the_window_never_reach_the_threshold() {
    let mut log = Log::new(Thresholds::default());
    // One failure every 3 minutes: at most 4 in any 10-minute window.
    for i in 0..20 {
        let out = log.feed(i * 180, bad_login("bob", "user:bob", "198.51.100.7"));
        assert!(out.is_empty(), "at failure {i}: {out:?}");
    }
}

#[test]
fn the_window_slides_and_a_subject_alerts_again_after_its_quiet_time() {
    let mut log = Log::new(Thresholds::default());
    let mut alerts = Vec::new();
    // Failures every 30 s for 25 minutes.
    for i in 0..50 {
        let out = log.feed(i * 30, bad_login("bob", "user:bob", "198.51.100.7"));
        alerts.extend(out.into_iter().map(|a| (i * 30, a)));
    }
    let times: Vec<i64> = alerts.iter().map(|(t, _)| *t).collect();
    // The 5th failure (t = 120 s), then the first failure after 10 quiet minutes, twice.
    assert_eq!(times, [120, 720, 1320], "{alerts:?}");
    // After the quiet time the window holds the last 10 minutes' failures (t = 150..=720).
    assert_eq!(alerts[1].1.details["count"], 20);
    assert_eq!(
        alerts[1].1.details["seqs"].as_array().unwrap().len(),
        MAX_SEQS
    );
}

#[test]
fn one_address_against_many_accounts_alerts_for_the_address() {
    let mut log = Log::new(Thresholds::default());
    let users = ["a", "b", "c", "d", "e"];
    let targets = ["user:a", "user:b", "user:c", "user:d", "user:e"];
    let mut out = Vec::new();
    for (i, (u, t)) in users.iter().zip(targets).enumerate() {
        out = log.feed(i as i64, bad_login(u, t, "203.0.113.5"));
        if i < 4 {
            assert!(out.is_empty());
        }
    }
    assert_eq!(kinds(&out), [AlertKind::LoginFailures]);
    assert_eq!(out[0].target, "address:203.0.113.5");
    assert_eq!(out[0].details["subjects"], json!(["address:203.0.113.5"]));
    assert_eq!(out[0].details["subject"]["address"]["count"], 5);
}

#[test]
fn one_account_from_many_addresses_alerts_for_the_account() {
    let mut log = Log::new(Thresholds::default());
    let from = [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
        "192.0.2.5",
    ];
    let mut out = Vec::new();
    for (i, f) in from.into_iter().enumerate() {
        out = log.feed(i as i64, bad_login("bob", "user:bob", f));
    }
    assert_eq!(kinds(&out), [AlertKind::LoginFailures]);
    assert_eq!(out[0].details["subjects"], json!(["account:bob"]));
}

#[test]
fn mfa_failures_count_with_password_failures() {
    let mut log = Log::new(Thresholds::default());
    for i in 0..3 {
        assert!(
            log.feed(i, bad_login("bob", "user:bob", "192.0.2.1"))
                .is_empty()
        );
    }
    let mfa = || {
        ev("bob", "vendor", "mfa.fail", "user:bob")
            .from("192.0.2.1")
            .details(json!({"reason": "wrong_code"}))
    };
    assert!(log.feed(3, mfa()).is_empty());
    assert_eq!(kinds(&log.feed(4, mfa())), [AlertKind::LoginFailures]);
}

#[test]
fn thresholds_are_honoured() {
    let t = Thresholds {
        login_failures: 2,
        login_failures_window: Duration::from_secs(60),
        ..Thresholds::default()
    };
    let mut log = Log::new(t);
    assert!(
        log.feed(0, bad_login("bob", "user:bob", "192.0.2.1"))
            .is_empty()
    );
    // 61 s later the first has left the window.
    assert!(
        log.feed(61, bad_login("bob", "user:bob", "192.0.2.1"))
            .is_empty()
    );
    assert_eq!(
        kinds(&log.feed(62, bad_login("bob", "user:bob", "192.0.2.1"))),
        [AlertKind::LoginFailures]
    );
}

#[test]
fn every_lockout_alerts() {
    let mut log = Log::new(Thresholds::default());
    for (i, who) in ["user:bob", "user:bob", "user:eve"].into_iter().enumerate() {
        let out = log.feed(
            i as i64 * 1000,
            ev("x", "vendor", "login.locked", who)
                .from("192.0.2.1")
                .details(json!({"until": at(900), "failures": 5})),
        );
        assert_eq!(kinds(&out), [AlertKind::Lockout]);
        assert_eq!(out[0].target, who);
        assert_eq!(out[0].details["failures"], 5);
        assert_eq!(out[0].details["seqs"], json!([i as i64 + 1]));
    }
}

fn refused_target(vendor: &str) -> Ev<'_> {
    ev(vendor, "vendor", "relay.stream.refuse", "device:plc-7").details(json!({
        "session": "s-1", "code": "target_not_granted", "device": "plc-9", "port": 22,
    }))
}

#[test]
fn a_refused_target_alerts_at_once_then_its_vendor_is_quiet_for_the_window() {
    let mut log = Log::new(Thresholds::default());
    let out = log.feed(0, refused_target("acme-ann"));
    assert_eq!(kinds(&out), [AlertKind::RelayRefusals]);
    let a = &out[0];
    assert_eq!(a.target, "vendor:acme-ann");
    assert_eq!(a.details["last"]["code"], "target_not_granted");
    assert_eq!(a.details["last"]["device"], "plc-9");
    assert_eq!(a.details["last"]["port"], 22);
    assert_eq!(a.details["last"]["session"], "s-1");
    assert_eq!(a.details["count"], 1);
    for i in 1..20 {
        assert!(log.feed(i * 25, refused_target("acme-ann")).is_empty());
    }
    // Another vendor is its own subject.
    assert_eq!(
        kinds(&log.feed(500, refused_target("other"))),
        [AlertKind::RelayRefusals]
    );
    // After the window, acme-ann alerts again, counting the refusals of the last 10 minutes.
    let again = log.feed(601, refused_target("acme-ann"));
    assert_eq!(kinds(&again), [AlertKind::RelayRefusals]);
    assert!(again[0].details["count"].as_u64().unwrap() > 1);
}

#[test]
fn bad_tokens_and_binding_mismatches_alert_per_address_but_expired_windows_do_not() {
    let mut log = Log::new(Thresholds::default());
    let session_refused = |code: &str| {
        ev("unknown", "system", "relay.session.refuse", "relay")
            .from("203.0.113.9")
            .details(json!({"code": code, "reason": "x", "jti": null}))
    };
    for benign in [
        "not_in_window",
        "token_expired",
        "grant_inactive",
        "dial_failed",
    ] {
        assert!(log.feed(0, session_refused(benign)).is_empty(), "{benign}");
    }
    let out = log.feed(1, session_refused("bad_token"));
    assert_eq!(kinds(&out), [AlertKind::RelayRefusals]);
    assert_eq!(out[0].target, "address:203.0.113.9");
    // The same address stays quiet; a binding mismatch by a known vendor is another subject.
    assert!(log.feed(2, session_refused("bad_token")).is_empty());
    let theft = log.feed(
        3,
        ev("acme-ann", "vendor", "relay.session.refuse", "relay")
            .from("203.0.113.9")
            .details(json!({"code": "binding_mismatch", "jti": "j"})),
    );
    assert_eq!(kinds(&theft), [AlertKind::RelayRefusals]);
    assert_eq!(theft[0].target, "vendor:acme-ann");
    assert_eq!(theft[0].details["last"]["code"], "binding_mismatch");
}

#[test]
fn a_higher_refusal_threshold_is_quiet_below_it() {
    let mut log = Log::new(Thresholds {
        relay_refusals: 3,
        ..Thresholds::default()
    });
    assert!(log.feed(0, refused_target("v")).is_empty());
    assert!(log.feed(1, refused_target("v")).is_empty());
    assert_eq!(
        kinds(&log.feed(2, refused_target("v"))),
        [AlertKind::RelayRefusals]
    );
}

#[test]
fn modbus_and_connector_refusals_alert() {
    let mut log = Log::new(Thresholds::default());
    let m = log.feed(
        0,
        ev("acme-ann", "vendor", "relay.modbus.refuse", "device:plc-7")
            .details(json!({"reason": "write_not_allowed", "function": 6})),
    );
    assert_eq!(kinds(&m), [AlertKind::RelayRefusals]);
    let c = log.feed(
        1,
        ev("unknown", "system", "relay.connector.refuse", "relay")
            .from("198.51.100.1")
            .details(json!({"code": "bad_certificate"})),
    );
    assert_eq!(kinds(&c), [AlertKind::RelayRefusals]);
    assert_eq!(c[0].target, "address:198.51.100.1");
}

#[test]
fn every_configuration_change_alerts_naming_actor_and_change() {
    let mut log = Log::new(Thresholds::default());
    for (i, (action, target)) in [
        ("user.add", "user:sam"),
        ("user.disable", "user:sam"),
        ("device.add", "device:plc-7"),
        ("device.set_policy", "device:plc-7"),
        ("site.add", "site:north"),
        ("site.token", "site:north"),
        ("org.add", "org:acme"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = log.feed(
            i as i64,
            ev("root", "admin", action, target)
                .from("cli")
                .details(json!({"max_connections": 2})),
        );
        assert_eq!(kinds(&out), [AlertKind::ConfigChange], "{action}");
        let d = &out[0].details;
        assert_eq!(out[0].target, target);
        assert_eq!(d["actor"], "root");
        assert_eq!(d["role"], "admin");
        assert_eq!(d["action"], action);
        assert_eq!(d["change"]["max_connections"], 2);
        assert_eq!(d["seqs"], json!([i as i64 + 1]));
    }
    // Ordinary work is not configuration.
    for action in [
        "request.create",
        "request.approve",
        "login.ok",
        "grant.revoke",
    ] {
        assert!(
            log.feed(100, ev("sue", "supervisor", action, "request:1"))
                .is_empty(),
            "{action}"
        );
    }
}

fn connect(site: &str, id: &str) -> Ev<'static> {
    let target: &'static str = Box::leak(format!("site:{site}").into_boxed_str());
    ev(target, "system", "relay.connector.connect", target)
        .from("192.0.2.50")
        .details(json!({"connection": id, "relay": "relay-1"}))
}

fn disconnect(site: &str, id: &str) -> Ev<'static> {
    let target: &'static str = Box::leak(format!("site:{site}").into_boxed_str());
    ev(target, "system", "relay.connector.disconnect", target)
        .details(json!({"connection": id, "reason": "lost"}))
}

#[test]
fn a_connector_offline_alerts_only_after_the_threshold_and_then_its_return() {
    let mut log = Log::new(Thresholds::default());
    assert!(log.feed(0, connect("north", "c1")).is_empty());
    assert!(log.feed(100, disconnect("north", "c1")).is_empty());
    assert_eq!(log.rules.next_deadline(), Some(at(160)));
    assert!(log.rules.tick(at(159)).is_empty());
    let off = log.rules.tick(at(160));
    assert_eq!(kinds(&off), [AlertKind::ConnectorOffline]);
    assert_eq!(off[0].target, "site:north");
    assert_eq!(off[0].details["threshold_secs"], 60);
    assert_eq!(off[0].details["offline_secs"], 60);
    assert_eq!(off[0].details["reason"], "lost");
    assert_eq!(off[0].details["seqs"], json!([2]));
    // Once only.
    assert!(log.rules.tick(at(500)).is_empty());
    assert_eq!(log.rules.next_deadline(), None);
    let back = log.feed(600, connect("north", "c2"));
    assert_eq!(kinds(&back), [AlertKind::ConnectorOnline]);
    assert_eq!(back[0].details["offline_secs"], 500);
    assert_eq!(back[0].details["seqs"], json!([2, 3]));
}

#[test]
fn a_short_blink_raises_nothing_not_even_a_return() {
    let mut log = Log::new(Thresholds::default());
    log.feed(0, connect("north", "c1"));
    log.feed(10, disconnect("north", "c1"));
    assert!(log.rules.tick(at(30)).is_empty());
    assert!(log.feed(40, connect("north", "c2")).is_empty());
    assert!(log.rules.tick(at(1000)).is_empty());
}

#[test]
fn a_replaced_connection_is_not_an_outage() {
    let mut log = Log::new(Thresholds::default());
    log.feed(0, connect("north", "c1"));
    // The new connection arrives before the old one's end is recorded.
    log.feed(10, connect("north", "c2"));
    log.feed(11, disconnect("north", "c1"));
    assert!(log.rules.tick(at(1000)).is_empty());
    assert_eq!(log.rules.next_deadline(), None);
}

#[test]
fn an_outage_seen_only_in_the_log_fires_at_the_next_later_event() {
    // A watcher that was away reads disconnect and reconnect together: the outage was longer
    // than the threshold, so both alerts come, in order.
    let mut log = Log::new(Thresholds::default());
    log.feed(0, connect("north", "c1"));
    log.feed(10, disconnect("north", "c1"));
    let out = log.feed(300, connect("north", "c2"));
    assert_eq!(
        kinds(&out),
        [AlertKind::ConnectorOffline, AlertKind::ConnectorOnline]
    );
}

#[test]
fn a_relay_restart_ends_the_connections_it_held() {
    let mut log = Log::new(Thresholds::default());
    log.feed(0, connect("north", "c1"));
    // The relay died without recording the end; it starts again and the connector stays away.
    log.feed(
        10,
        ev("relay", "system", "relay.start", "service").details(json!({"relay": "relay-1"})),
    );
    assert_eq!(
        kinds(&log.rules.tick(at(70))),
        [AlertKind::ConnectorOffline]
    );
}

#[test]
fn alerts_never_raise_alerts_and_reading_them_back_restores_suppression() {
    // A fresh rule set (a restarted watcher) that reads the old run's alert stays quiet.
    let mut first = Log::new(Thresholds::default());
    let mut alerts = Vec::new();
    for i in 0..5 {
        alerts = first.feed(i, bad_login("bob", "user:bob", "192.0.2.1"));
    }
    assert_eq!(alerts.len(), 1);
    let off_alerts = {
        first.feed(6, connect("north", "c1"));
        first.feed(7, disconnect("north", "c1"));
        first.rules.tick(at(67))
    };
    assert_eq!(off_alerts.len(), 1);

    let mut second = Log::new(Thresholds::default());
    second.feed(7, connect("north", "c1"));
    second.feed(7, disconnect("north", "c1"));
    second.feed_alerts(8, &alerts);
    second.feed_alerts(67, &off_alerts);
    // No window counts here, only suppression: 5 new failures inside the quiet time are quiet.
    for i in 0..5 {
        assert!(
            second
                .feed(100 + i, bad_login("bob", "user:bob", "192.0.2.1"))
                .is_empty()
        );
    }
    // The offline alert is known as sent: no second one; the return is reported.
    assert!(second.rules.tick(at(1000)).is_empty());
    assert_eq!(
        kinds(&second.feed(1001, connect("north", "c2"))),
        [AlertKind::ConnectorOnline]
    );

    // Every kind of alert event, forged or ours, raises nothing.
    for k in AlertKind::ALL {
        let action = k.action();
        assert_eq!(AlertKind::from_action(&action), Some(k));
        assert!(
            second
                .feed(2000, ev("mallory", "admin", &action, "user:x"))
                .is_empty()
        );
    }
}

#[test]
fn restarts_say_whether_the_previous_run_stopped_cleanly() {
    let mut log = Log::new(Thresholds::default());
    let start = || {
        ev("portcullis", "system", "service.start", "service")
            .details(json!({"web": "127.0.0.1:8443", "relay": "127.0.0.1:4433"}))
    };
    let first = log.feed(0, start());
    assert_eq!(kinds(&first), [AlertKind::Restart]);
    assert_eq!(first[0].details["clean_stop"], Value::Null);
    assert_eq!(first[0].details["part"], "web");
    log.feed(10, ev("portcullis", "system", "service.stop", "service"));
    let clean = log.feed(20, start());
    assert_eq!(clean[0].details["clean_stop"], true);
    assert_eq!(clean[0].details["previous_start_seq"], 1);
    let crashed = log.feed(30, start());
    assert_eq!(crashed[0].details["clean_stop"], false);
    let relay = log.feed(
        40,
        ev("portcullis", "system", "service.start", "service")
            .details(json!({"relay": "0.0.0.0:4433"})),
    );
    assert_eq!(relay[0].details["part"], "relay");
}

#[test]
fn clock_jumps_unsynchronised_clocks_and_a_filling_disk_alert() {
    let mut log = Log::new(Thresholds::default());
    let jump = log.feed(
        0,
        ev("portcullis", "system", "clock.anomaly", "clock")
            .details(json!({"step_ms": -3_600_000, "tolerance_ms": 2000})),
    );
    assert_eq!(kinds(&jump), [AlertKind::ClockJump]);
    assert_eq!(jump[0].details["step_ms"], -3_600_000);
    assert_eq!(jump[0].details["tolerance_ms"], 2000);
    let unsync = log.feed(
        1,
        ev("portcullis", "system", "clock.unsynchronised", "clock")
            .details(json!({"service": "serve", "time_sync": "unknown"})),
    );
    assert_eq!(kinds(&unsync), [AlertKind::ClockUnsynchronised]);
    let disk = |level: &str, previous: &str| {
        ev("portcullis", "system", "disk.usage", "service")
            .details(json!({"level": level, "previous": previous, "percent": 91.2}))
    };
    assert_eq!(
        kinds(&log.feed(2, disk("warning", "ok"))),
        [AlertKind::DiskUsage]
    );
    assert_eq!(
        kinds(&log.feed(3, disk("critical", "warning"))),
        [AlertKind::DiskUsage]
    );
    assert!(log.feed(4, disk("warning", "critical")).is_empty());
    assert!(log.feed(5, disk("ok", "warning")).is_empty());
}

#[test]
fn audit_unwritable_names_the_gap() {
    let a = audit_unwritable(at(0), at(95), "disk full");
    assert_eq!(a.draft().action, "alert.audit_unwritable");
    assert_eq!(a.details["duration_secs"], 95);
    assert_eq!(a.details["since"], json!(at(0)));
    assert_eq!(a.details["until"], json!(at(95)));
    assert_eq!(a.details["error"], "disk full");
}

#[test]
fn idle_windows_are_forgotten() {
    let mut log = Log::new(Thresholds::default());
    for i in 0..100 {
        let who: &'static str = Box::leak(format!("user:u{i}").into_boxed_str());
        log.feed(i, bad_login("u", who, "192.0.2.1"));
    }
    assert!(log.rules.logins.by_subject.len() > 100);
    log.rules.tick(at(100 + 601));
    // Only the address is left: it alerted and is quiet until t = 4 + 600.
    log.rules.tick(at(2000));
    assert!(log.rules.logins.by_subject.is_empty());
}
