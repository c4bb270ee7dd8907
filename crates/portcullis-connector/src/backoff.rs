//! Reconnect waits: exponential backoff with jitter, pure and with an injectable RNG.
//!
//! The base wait `d` starts at `initial` and doubles after each wait up to `max`; each wait is
//! drawn uniformly from `[d/2, d]`. Jitter keeps the connectors of many sites from reconnecting
//! in lockstep after a relay restart; the half-width floor keeps a flapping link from being
//! hammered. With the defaults (250 ms, 2 s): 125-250 ms, 250-500 ms, 0.5-1 s, then 1-2 s.

use std::time::Duration;

use rand::Rng;

/// The wait sequence for one run of the connector.
#[derive(Debug, Clone)]
pub struct Backoff<R> {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: R,
}

impl<R: Rng> Backoff<R> {
    /// Waits from `initial` doubling to `max` (a `max` below `initial` is raised to it).
    pub fn new(initial: Duration, max: Duration, rng: R) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
            rng,
        }
    }

    /// The wait before the next attempt, and the base wait moves on (doubled, capped).
    pub fn next_wait(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        self.jitter(d)
    }

    /// A wait at the cap, for a failure that retrying sooner cannot fix (the relay refused this
    /// site's certificate). The sequence stays at the cap.
    pub fn at_cap(&mut self) -> Duration {
        self.next = self.max;
        self.jitter(self.max)
    }

    /// Back to the initial wait, after a connection that lasted.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        let hi = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let lo = hi / 2;
        Duration::from_nanos(self.rng.gen_range(lo..=hi))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand::rngs::mock::StepRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(seed: u64) -> Backoff<StdRng> {
        Backoff::new(250 * MS, 2000 * MS, StdRng::seed_from_u64(seed))
    }

    fn within(d: Duration, lo_ms: u64, hi_ms: u64) -> bool {
        d >= Duration::from_millis(lo_ms) && d <= Duration::from_millis(hi_ms)
    }

    #[test]
    fn waits_double_to_the_cap_each_within_half_to_full() {
        for seed in 0..200 {
            let mut b = backoff(seed);
            let waits: Vec<_> = (0..7).map(|_| b.next_wait()).collect();
            let bounds = [
                (125, 250),
                (250, 500),
                (500, 1000),
                (1000, 2000),
                (1000, 2000),
                (1000, 2000),
                (1000, 2000),
            ];
            for (w, (lo, hi)) in waits.iter().zip(bounds) {
                assert!(within(*w, lo, hi), "seed {seed}: {waits:?}");
            }
        }
    }

    #[test]
    fn the_lowest_draw_is_half_the_base_wait() {
        // StepRng(0, 0) always yields 0: the bottom of every range.
        let mut b = Backoff::new(250 * MS, 2000 * MS, StepRng::new(0, 0));
        let waits: Vec<_> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [125 * MS, 250 * MS, 500 * MS, 1000 * MS, 1000 * MS]);
    }

    #[test]
    fn the_jitter_spreads_over_the_whole_range() {
        let mut lowest = Duration::MAX;
        let mut highest = Duration::ZERO;
        for seed in 0..500 {
            let w = backoff(seed).next_wait();
            lowest = lowest.min(w);
            highest = highest.max(w);
        }
        assert!(within(lowest, 125, 135), "{lowest:?}");
        assert!(within(highest, 240, 250), "{highest:?}");
    }

    #[test]
    fn reset_starts_over_and_at_cap_stays_at_the_cap() {
        let mut b = backoff(7);
        for _ in 0..5 {
            b.next_wait();
        }
        b.reset();
        assert!(within(b.next_wait(), 125, 250));
        assert!(within(b.next_wait(), 250, 500));

        let mut b = backoff(8);
        assert!(within(b.at_cap(), 1000, 2000));
        assert!(
            within(b.next_wait(), 1000, 2000),
            "the sequence is at the cap"
        );
        b.reset();
        assert!(within(b.next_wait(), 125, 250));
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let a: Vec<_> = {
            let mut b = backoff(42);
            (0..6).map(|_| b.next_wait()).collect()
        };
        let b: Vec<_> = {
            let mut b = backoff(42);
            (0..6).map(|_| b.next_wait()).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn a_cap_below_the_initial_wait_is_raised_to_it() {
        let mut b = Backoff::new(500 * MS, 100 * MS, StepRng::new(0, 0));
        assert_eq!(b.next_wait(), 250 * MS);
        assert_eq!(b.next_wait(), 250 * MS);
    }
}
