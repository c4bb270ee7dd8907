//! A cap on a congestion controller's window that keeps the bottleneck's queue short (issue 16,
//! point 2).
//!
//! quinn paces at 1.25 x window / smoothed RTT, not at its BBR's own pacing rate, so whatever
//! window the controller allows beyond one bandwidth-delay product (BDP) becomes a standing queue
//! at the bottleneck. Its BBR allows 2 x BDP plus the largest ACK aggregation seen: across a
//! 40 ms, 50 Mbit/s link with a deep buffer, the round trip under a download grew to ~180 ms, and
//! every interactive packet of the same connection waited that long behind the download.
//!
//! [`ShortQueue`] wraps a controller and caps its window at [`GAIN`] x the measured BDP plus
//! [`SLACK`]: the highest delivery rate of the last [`SAMPLES`] intervals (each one minimum RTT
//! long, those limited by the application count only when they raise it) times
//! (`GAIN` x the minimum RTT + `SLACK`), and never below the controller's initial window. A window half again the measured BDP still finds more
//! bandwidth when there is more (the delivery rate can grow by half each round trip), and the
//! queue it leaves at the bottleneck is at most half a round trip.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// The window allowed, as a multiple of the measured BDP.
pub const GAIN: f64 = 1.5;
/// Queue allowed on top, in time at the measured rate: ACKs arrive in batches (receive
/// offload, scheduling), and on a path of a millisecond or less the BDP alone is smaller than one
/// batch. On a 40 ms path it adds little; on loopback it is what lets the window fill the CPU.
pub const SLACK: Duration = Duration::from_millis(5);
/// Delivery-rate samples the maximum is taken over (about as many round trips).
pub const SAMPLES: usize = 10;

/// The measured bandwidth-delay product, from ACKs.
#[derive(Debug, Clone, Default)]
pub struct BdpMeter {
    min_rtt: Option<Duration>,
    /// Start of the current interval and the bytes acknowledged in it.
    interval: Option<(Instant, u64, bool)>,
    /// Bytes per second of the last intervals, newest last.
    rates: VecDeque<f64>,
}

impl BdpMeter {
    /// `bytes` newly acknowledged at `now`; `app_limited` when the sender had nothing more to
    /// send (the rate then says nothing about the path, unless it is higher).
    pub fn on_ack(&mut self, now: Instant, bytes: u64, app_limited: bool, min_rtt: Duration) {
        if min_rtt.is_zero() {
            return;
        }
        self.min_rtt = Some(min_rtt);
        let (start, acked, limited) = self.interval.get_or_insert((now, 0, false));
        *acked += bytes;
        *limited |= app_limited;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < min_rtt {
            return;
        }
        let rate = *acked as f64 / elapsed.as_secs_f64();
        let limited = *limited;
        self.interval = Some((now, 0, false));
        if limited && rate <= self.max_rate() {
            return;
        }
        if self.rates.len() == SAMPLES {
            self.rates.pop_front();
        }
        self.rates.push_back(rate);
    }

    fn max_rate(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    /// The window to allow: bytes in [`GAIN`] round trips plus [`SLACK`] at the highest recent
    /// rate; `None` before the first sample.
    pub fn allowance(&self) -> Option<u64> {
        let rtt = self.min_rtt?;
        let time = rtt.as_secs_f64() * GAIN + SLACK.as_secs_f64();
        (!self.rates.is_empty()).then(|| (self.max_rate() * time) as u64)
    }
}

/// `inner` with its window capped at [`GAIN`] x the measured BDP.
pub struct ShortQueue {
    inner: Box<dyn Controller>,
    meter: BdpMeter,
}

impl std::fmt::Debug for ShortQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShortQueue")
            .field("window", &self.window())
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl ShortQueue {
    pub fn new(inner: Box<dyn Controller>) -> Self {
        ShortQueue {
            inner,
            meter: BdpMeter::default(),
        }
    }
}

/// `window` capped at the measured `allowance`, never below `floor` (the initial window), so a
/// connection that has measured little can still grow.
pub fn capped_window(window: u64, allowance: Option<u64>, floor: u64) -> u64 {
    match allowance {
        Some(a) => window.min(a.max(floor)),
        None => window,
    }
}

impl Controller for ShortQueue {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.meter.on_ack(now, bytes, app_limited, rtt.min());
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        capped_window(
            self.inner.window(),
            self.meter.allowance(),
            self.inner.initial_window(),
        )
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = self.inner.metrics();
        m.congestion_window = self.window();
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(ShortQueue {
            inner: self.inner.clone_box(),
            meter: self.meter.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Builds [`ShortQueue`]s around the controllers `inner` builds.
#[derive(Debug)]
pub struct ShortQueueFactory<F>(pub Arc<F>);

impl<F: ControllerFactory + Send + Sync + 'static> ControllerFactory for ShortQueueFactory<F> {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(ShortQueue::new(self.0.clone().build(now, current_mtu)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(40);

    /// ACKs of `rate` bytes/s every millisecond for `ms` milliseconds from `t`.
    fn feed(m: &mut BdpMeter, t: &mut Instant, rate: u64, ms: u64, app_limited: bool) {
        for _ in 0..ms {
            *t += Duration::from_millis(1);
            m.on_ack(*t, rate / 1000, app_limited, RTT);
        }
    }

    #[test]
    fn allows_half_again_the_bdp_of_a_saturated_path_plus_the_slack() {
        let (mut m, mut t) = (BdpMeter::default(), Instant::now());
        // 50 Mbit/s = 6.25 MB/s; 40 ms of it is 250 kB.
        assert_eq!(m.allowance(), None, "nothing measured yet");
        feed(&mut m, &mut t, 6_250_000, 400, false);
        // 1.5 x 250 kB plus 5 ms (31 kB) of it.
        let a = m.allowance().unwrap();
        assert!((390_000..=420_000).contains(&a), "{a}");
    }

    #[test]
    fn an_idle_spell_does_not_shrink_it_but_a_slower_path_does() {
        let (mut m, mut t) = (BdpMeter::default(), Instant::now());
        feed(&mut m, &mut t, 6_250_000, 400, false);
        let full = m.allowance().unwrap();
        // Keystrokes only: application-limited, slower; the path is no narrower for it.
        feed(&mut m, &mut t, 10_000, 2_000, true);
        assert_eq!(m.allowance(), Some(full));
        // Saturated again but at a fifth of the rate (the vendor moved to LTE): after
        // SAMPLES intervals the old maximum has aged out.
        feed(&mut m, &mut t, 1_250_000, 40 * (SAMPLES as u64 + 1), false);
        // 1.5 x 50 kB plus 5 ms (6 kB).
        let now = m.allowance().unwrap();
        assert!((75_000..=87_000).contains(&now), "{now}");
    }

    #[test]
    fn the_cap_is_the_allowance_but_never_below_the_floor() {
        assert_eq!(capped_window(1_000_000, Some(375_000), 12_000), 375_000);
        assert_eq!(
            capped_window(100_000, Some(375_000), 12_000),
            100_000,
            "below the cap: the controller's own window"
        );
        assert_eq!(capped_window(1_000_000, Some(1_000), 12_000), 12_000);
        assert_eq!(capped_window(1_000_000, None, 12_000), 1_000_000);
    }
}
