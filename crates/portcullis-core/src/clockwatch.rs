//! Clock-step detection: the wall clock checked against the monotonic clock.
//!
//! Windows are wall-clock times (people book "until 17:00"), but a wall clock can be stepped:
//! by an operator, a bad NTP source, a virtual machine resumed from a snapshot. A step back
//! would make an ended window look open again; a step forward would end windows early. The
//! monotonic clock cannot be stepped, so the difference `offset = wall - monotonic` is constant
//! while both run at the same rate. [`ClockWatch`] is fed samples `(wall, monotonic)` and
//! reports when the offset leaves its reference by more than a tolerance (a step), and when it
//! comes back (the clocks agree again).
//!
//! NTP does not only step, it also slews: it runs the wall clock up to 500 ppm fast or slow to
//! correct a small error. A slew moves the offset slowly (at most 0.5 ms per second), so the
//! reference follows the offset while the clocks agree, at up to [`TRACK_PPM`] (twice the
//! slew limit): a slew is absorbed and never reported, a step of more than the tolerance is
//! always reported, and several smaller steps in a row add up and are reported too (the
//! reference moves only 1 ms per second towards them). During an anomaly the reference is
//! frozen: it is the last time both clocks were believed, and the anomaly ends only when the
//! offset is back within tolerance of it, or when an admin acknowledges the new time
//! ([`ClockWatch::acknowledge`] takes the current offset as the new reference).
//!
//! Pure: no clock is read here; the services sample both clocks and feed them in.

use std::time::Duration;

use serde::Serialize;

use crate::Timestamp;

/// How fast the reference follows the offset while healthy, in parts per million of monotonic
/// time: twice the 500 ppm NTP slews at most, so a slew never builds up a deviation.
pub const TRACK_PPM: i64 = 1000;

/// The default tolerance (issue 12: "a setting, default 2 s").
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(2);

/// One reading of both clocks, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Wall-clock time (what `Clock::now` says).
    pub wall: Timestamp,
    /// Monotonic time since any fixed point (e.g. the process start).
    pub monotonic: Duration,
}

impl ClockSample {
    /// `wall - monotonic` in microseconds: constant while both clocks agree.
    fn offset(self) -> i64 {
        let mono = i64::try_from(self.monotonic.as_micros()).unwrap_or(i64::MAX);
        self.wall.unix_micros().saturating_sub(mono)
    }
}

/// Both readings around a step, as the audit log records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockReadings {
    /// The wall clock at the previous sample...
    pub wall_before: Timestamp,
    /// ...and at this one.
    pub wall_after: Timestamp,
    /// Monotonic time between the two samples.
    pub monotonic_elapsed_ms: u64,
    /// How far the wall clock moved against the monotonic clock, from the reference: negative
    /// when it was stepped back.
    pub step_ms: i64,
    pub tolerance_ms: u64,
}

/// What a sample changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockEvent {
    /// The clocks disagree by more than the tolerance: fail closed from now on.
    Anomaly(ClockReadings),
    /// The clocks agree again (the offset is back within tolerance of the reference).
    Resolved(ClockReadings),
}

/// The state of the watch, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockState {
    /// No sample yet.
    Unknown,
    Healthy,
    /// Since the step described.
    Anomaly(ClockReadings),
}

/// Follows one process's clocks. See the module documentation.
#[derive(Debug, Clone)]
pub struct ClockWatch {
    tolerance: Duration,
    /// The offset believed correct, in microseconds.
    reference: Option<i64>,
    last: Option<ClockSample>,
    state: ClockState,
}

impl ClockWatch {
    pub fn new(tolerance: Duration) -> Self {
        Self {
            tolerance,
            reference: None,
            last: None,
            state: ClockState::Unknown,
        }
    }

    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    pub fn state(&self) -> &ClockState {
        &self.state
    }

    /// True while new tokens and sessions must be refused.
    pub fn in_anomaly(&self) -> bool {
        matches!(self.state, ClockState::Anomaly(_))
    }

    /// How far the last sample's offset is from the reference, in milliseconds (0 before the
    /// first sample).
    pub fn deviation_ms(&self) -> i64 {
        match (self.last, self.reference) {
            (Some(s), Some(r)) => (s.offset() - r) / 1000,
            _ => 0,
        }
    }

    fn tolerance_micros(&self) -> i64 {
        i64::try_from(self.tolerance.as_micros()).unwrap_or(i64::MAX)
    }

    fn readings(&self, before: ClockSample, after: ClockSample, deviation: i64) -> ClockReadings {
        ClockReadings {
            wall_before: before.wall,
            wall_after: after.wall,
            monotonic_elapsed_ms: u64::try_from(
                after.monotonic.saturating_sub(before.monotonic).as_millis(),
            )
            .unwrap_or(u64::MAX),
            step_ms: deviation / 1000,
            tolerance_ms: u64::try_from(self.tolerance.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Feeds one sample; returns what changed, if anything. Samples must come in monotonic
    /// order (a sample older than the last one is ignored).
    pub fn observe(&mut self, sample: ClockSample) -> Option<ClockEvent> {
        let (Some(last), Some(reference)) = (self.last, self.reference) else {
            // The first sample sets the reference: what the clocks say at start is believed
            // (the start itself records whether the wall clock is synchronised).
            self.reference = Some(sample.offset());
            self.last = Some(sample);
            self.state = ClockState::Healthy;
            return None;
        };
        if sample.monotonic < last.monotonic {
            return None;
        }
        let offset = sample.offset();
        let deviation = offset.saturating_sub(reference);
        let outside = deviation.unsigned_abs() > self.tolerance_micros().unsigned_abs();
        let event = match (&self.state, outside) {
            (ClockState::Anomaly(_), false) => {
                self.state = ClockState::Healthy;
                Some(ClockEvent::Resolved(self.readings(last, sample, deviation)))
            }
            (ClockState::Anomaly(_), true) => None,
            (_, true) => {
                let r = self.readings(last, sample, deviation);
                self.state = ClockState::Anomaly(r.clone());
                Some(ClockEvent::Anomaly(r))
            }
            (_, false) => None,
        };
        if !self.in_anomaly() {
            // Follow a slew, at a bounded rate: the reference moves towards the offset by at
            // most TRACK_PPM of the monotonic time since the last sample.
            let elapsed =
                i64::try_from(sample.monotonic.saturating_sub(last.monotonic).as_micros())
                    .unwrap_or(i64::MAX);
            let step = elapsed.saturating_mul(TRACK_PPM) / 1_000_000;
            let moved = deviation.clamp(-step, step);
            self.reference = Some(reference.saturating_add(moved));
        }
        self.last = Some(sample);
        event
    }

    /// An admin vouches for the wall clock as it is now: the current offset becomes the
    /// reference and an anomaly ends. Returns the readings of the anomaly it ended, if any.
    pub fn acknowledge(&mut self, sample: ClockSample) -> Option<ClockReadings> {
        let ended = match &self.state {
            ClockState::Anomaly(r) => Some(r.clone()),
            _ => None,
        };
        self.reference = Some(sample.offset());
        self.last = Some(sample);
        self.state = ClockState::Healthy;
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000_000;

    /// A process whose clocks are driven by hand: `mono` and `wall` in microseconds.
    struct Clocks {
        mono: i64,
        wall: i64,
    }

    impl Clocks {
        fn new() -> Self {
            Clocks { mono: 0, wall: T0 }
        }
        fn sample(&self) -> ClockSample {
            ClockSample {
                wall: Timestamp::from_unix_micros(self.wall).unwrap(),
                monotonic: Duration::from_micros(u64::try_from(self.mono).unwrap()),
            }
        }
        /// Both clocks run `micros` (the wall clock `ppm` fast).
        fn run(&mut self, micros: i64, ppm: i64) {
            self.mono += micros;
            self.wall += micros + micros * ppm / 1_000_000;
        }
        fn step_wall(&mut self, micros: i64) {
            self.wall += micros;
        }
    }

    fn watch() -> ClockWatch {
        ClockWatch::new(Duration::from_secs(2))
    }

    #[test]
    fn first_sample_sets_the_reference() {
        let mut w = watch();
        assert_eq!(*w.state(), ClockState::Unknown);
        assert_eq!(w.observe(Clocks::new().sample()), None);
        assert_eq!(*w.state(), ClockState::Healthy);
        assert!(!w.in_anomaly());
    }

    #[test]
    fn a_step_back_is_an_anomaly_with_both_readings() {
        let (mut w, mut c) = (watch(), Clocks::new());
        w.observe(c.sample());
        c.run(250_000, 0);
        w.observe(c.sample());
        c.run(250_000, 0);
        c.step_wall(-10_000_000);
        let Some(ClockEvent::Anomaly(r)) = w.observe(c.sample()) else {
            panic!("a 10 s step back must be reported");
        };
        assert_eq!(r.step_ms, -10_000);
        assert_eq!(r.monotonic_elapsed_ms, 250);
        assert_eq!(r.tolerance_ms, 2000);
        assert_eq!(r.wall_before.unix_micros(), T0 + 250_000);
        assert_eq!(r.wall_after.unix_micros(), T0 + 500_000 - 10_000_000);
        assert!(w.in_anomaly());
        // Still disagreeing: reported once, not on every sample.
        c.run(250_000, 0);
        assert_eq!(w.observe(c.sample()), None);
        assert!(w.in_anomaly());
    }

    #[test]
    fn a_step_forward_is_an_anomaly_too() {
        let (mut w, mut c) = (watch(), Clocks::new());
        w.observe(c.sample());
        c.run(250_000, 0);
        c.step_wall(3_000_000);
        assert!(matches!(
            w.observe(c.sample()),
            Some(ClockEvent::Anomaly(ClockReadings { step_ms: 3000, .. }))
        ));
    }

    #[test]
    fn a_step_within_tolerance_is_not_reported() {
        let (mut w, mut c) = (watch(), Clocks::new());
        w.observe(c.sample());
        c.run(250_000, 0);
        c.step_wall(-1_900_000);
        assert_eq!(w.observe(c.sample()), None);
        assert!(!w.in_anomaly());
    }

    #[test]
    fn small_steps_add_up() {
        let (mut w, mut c) = (watch(), Clocks::new());
        w.observe(c.sample());
        c.run(250_000, 0);
        c.step_wall(-1_500_000);
        assert_eq!(w.observe(c.sample()), None);
        c.run(250_000, 0);
        c.step_wall(-1_500_000);
        assert!(matches!(
            w.observe(c.sample()),
            Some(ClockEvent::Anomaly(_))
        ));
    }

    #[test]
    fn ntp_slew_never_triggers_it() {
        // 500 ppm for a day, both ways, sampled every 250 ms: 43 s of drift in total each way.
        for ppm in [500, -500] {
            let (mut w, mut c) = (watch(), Clocks::new());
            w.observe(c.sample());
            for _ in 0..(24 * 3600 * 4) {
                c.run(250_000, ppm);
                assert_eq!(w.observe(c.sample()), None, "{ppm} ppm reported as a step");
            }
            assert!(w.deviation_ms().abs() < 10, "{}", w.deviation_ms());
        }
    }

    #[test]
    fn resolves_when_the_clocks_agree_again() {
        let (mut w, mut c) = (watch(), Clocks::new());
        w.observe(c.sample());
        c.run(250_000, 0);
        c.step_wall(-10_000_000);
        assert!(matches!(
            w.observe(c.sample()),
            Some(ClockEvent::Anomaly(_))
        ));
        // The reference is frozen during the anomaly: an hour later it is still an anomaly.
        for _ in 0..(3600 * 4) {
            c.run(250_000, 0);
            assert_eq!(w.observe(c.sample()), None);
        }
        assert!(w.in_anomaly());
        // Someone steps it back where it was (less a little, within tolerance).
        c.run(250_000, 0);
        c.step_wall(9_500_000);
        let Some(ClockEvent::Resolved(r)) = w.observe(c.sample()) else {
            panic!("the clocks agree again");
        };
        assert_eq!(r.step_ms, -500);
        assert!(!w.in_anomaly());
    }

    #[test]
    fn acknowledging_takes_the_new_time() {
        let (mut w, mut c) = (watch(), Clocks::new());
        w.observe(c.sample());
        c.run(250_000, 0);
        c.step_wall(-10_000_000);
        w.observe(c.sample());
        c.run(250_000, 0);
        let ended = w.acknowledge(c.sample()).expect("an anomaly was ended");
        assert_eq!(ended.step_ms, -10_000);
        assert!(!w.in_anomaly());
        // The new time is the reference now: running on is healthy, and stepping back to the
        // old time would be a step again.
        c.run(250_000, 0);
        assert_eq!(w.observe(c.sample()), None);
        c.run(250_000, 0);
        c.step_wall(10_000_000);
        assert!(matches!(
            w.observe(c.sample()),
            Some(ClockEvent::Anomaly(_))
        ));
        // Acknowledging while healthy just re-baselines.
        let mut h = watch();
        h.observe(c.sample());
        assert_eq!(h.acknowledge(c.sample()), None);
    }

    #[test]
    fn an_older_sample_is_ignored() {
        let (mut w, mut c) = (watch(), Clocks::new());
        c.run(1_000_000, 0);
        w.observe(c.sample());
        let old = ClockSample {
            wall: Timestamp::from_unix_micros(T0).unwrap(),
            monotonic: Duration::ZERO,
        };
        assert_eq!(w.observe(old), None);
        assert!(!w.in_anomaly());
    }
}
