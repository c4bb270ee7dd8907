//! Issue 12 at the relay, on an injected clock: a wall clock stepped back after a window's end
//! does not re-open it (the end is persisted when first seen), and while the store's clock
//! monitor sees the clocks disagree no session starts (`clock_anomaly`, audited) until an admin
//! acknowledges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use portcullis_core::Clock;
use portcullis_core::clockwatch::ClockSample;
use portcullis_store::ClockMonitorConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_after_the_end_does_not_reopen_the_window() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 10).await;
    let (_conn, _, _, _, f) = w.hello(&w.client(g)).await;
    assert!(matches!(f, Frame::Welcome { .. }), "{f:?}");
    // 1 s after the end, the relay's handshake sees the window over...
    w.clock.advance(Duration::from_secs(11));
    let (_, _, _, _, f) = w.hello(&w.client(g)).await;
    assert_eq!(refused(&f), RefusalCode::NotInWindow);
    // ...and the wall clock steps back 10 s, into the window: still refused, the device is
    // never dialed.
    w.clock.set(at(1));
    let accepted = w.device.accepted();
    let (_, _, _, _, f) = w.hello(&w.client(g)).await;
    assert_eq!(
        refused(&f),
        RefusalCode::NotInWindow,
        "the window re-opened"
    );
    assert_eq!(w.device.accepted(), accepted);
    let ended = w.audit("request.expire").await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["grant"], g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_starts_during_a_clock_anomaly_until_an_admin_acknowledges() {
    let w = world(RelayConfig::default()).await;
    let g = w.grant(-60, 3600).await;
    let mut monitor = w
        .store
        .clock_monitor(ClockMonitorConfig::new("relay", Duration::from_secs(2)));
    let mut mono = Duration::ZERO;
    let mut sample = |w: &World, run: Duration| {
        mono += run;
        ClockSample {
            wall: w.clock.now(),
            monotonic: mono,
        }
    };
    monitor.step(sample(&w, Duration::ZERO)).await;
    w.clock.advance(Duration::from_millis(250));
    monitor.step(sample(&w, Duration::from_millis(250))).await;
    let (_ok, _, _, _, f) = w.hello(&w.client(g)).await;
    assert!(matches!(f, Frame::Welcome { .. }), "{f:?}");
    // The wall clock steps back 10 s while the monotonic clock runs 250 ms.
    w.clock
        .set(w.clock.now().saturating_sub(Duration::from_secs(10)));
    monitor.step(sample(&w, Duration::from_millis(250))).await;
    let (_, _, _, _, f) = w.hello(&w.client(g)).await;
    assert_eq!(refused(&f), RefusalCode::ClockAnomaly);
    let refusals = w.audit("relay.session.refuse").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["details"]["code"], "clock_anomaly");
    assert_eq!(refusals[0]["actor"], "vera");
    assert_eq!(w.relay.metrics().refusals(RefusalCode::ClockAnomaly), 1);
    // The live session was not touched by the anomaly.
    assert!(w.audit("relay.session.end").await.is_empty());
    // An admin confirms the time; the monitor picks it up at its next sample.
    w.store.acknowledge_clock(&admin()).await.unwrap();
    w.clock.advance(Duration::from_millis(250));
    monitor.step(sample(&w, Duration::from_millis(250))).await;
    let (_again, _, _, _, f) = w.hello(&w.client(g)).await;
    assert!(matches!(f, Frame::Welcome { .. }), "{f:?}");
}
