//! How many refusals the relay writes to the audit log one by one.
//!
//! Every refusal is refused and counted in the metrics, but an audit event is a synchronous,
//! hash-chained database write: without a bound, anyone who can finish a TLS handshake (any
//! self-made client certificate will do) could fill the audit table with `relay.session.refuse`
//! rows, and a vendor inside a session with `relay.stream.refuse` rows. A token bucket bounds
//! each: a burst, then a steady rate. What the bucket holds back is not lost: the next event let
//! through carries `suppressed_before` (how many were held back since the previous one), and a
//! session's end event carries its total of refused streams.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Unauthenticated handshake refusals (no token that verified), for the whole relay.
pub(crate) const ANONYMOUS: (u32, Duration) = (20, Duration::from_secs(1));
/// Stream refusals, per session; also refused Modbus requests, per session.
pub(crate) const PER_SESSION: (u32, Duration) = (32, Duration::from_secs(1));
/// Answered Modbus writes, per session: a recipe download of a few hundred single-register
/// writes is recorded one by one; a loop writing as fast as it can is counted past this.
pub(crate) const MODBUS_WRITES: (u32, Duration) = (256, Duration::from_millis(100));

#[derive(Debug)]
pub(crate) struct AuditBudget {
    burst: u32,
    /// One token comes back every `refill`.
    refill: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: u32,
    /// When the last token was counted back in (advanced by whole `refill` periods).
    since: Instant,
    suppressed: u64,
}

impl AuditBudget {
    pub fn new((burst, refill): (u32, Duration)) -> Self {
        Self {
            burst,
            refill,
            state: Mutex::new(State {
                tokens: burst,
                since: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// `Some(held back since the last event let through)` when this event may be audited,
    /// `None` when it is over budget (and counted as held back).
    pub fn take(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let periods = now.saturating_duration_since(s.since).as_nanos() / self.refill.as_nanos();
        if periods > 0 {
            let back = u32::try_from(periods).unwrap_or(u32::MAX);
            s.tokens = s.tokens.saturating_add(back).min(self.burst);
            // Whole periods only, so a partial one is not lost.
            s.since += self.refill * back.min(self.burst);
            if s.tokens == self.burst {
                s.since = now;
            }
        }
        if s.tokens == 0 {
            s.suppressed += 1;
            return None;
        }
        s.tokens -= 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_period_and_the_held_back_are_counted() {
        let b = AuditBudget::new((3, Duration::from_secs(1)));
        assert_eq!(
            (0..3).map(|_| b.take()).collect::<Vec<_>>(),
            [Some(0), Some(0), Some(0)]
        );
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.take(), None, "no token before a whole period");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            b.take(),
            Some(3),
            "the three held back ride on the next event"
        );
        assert_eq!(b.take(), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        // Refilled to the burst, not beyond it.
        assert_eq!(
            (0..4).map(|_| b.take()).collect::<Vec<_>>(),
            [Some(1), Some(0), Some(0), None]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn partial_periods_add_up() {
        let b = AuditBudget::new((1, Duration::from_secs(1)));
        assert_eq!(b.take(), Some(0));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(b.take(), None);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(b.take(), Some(1), "1.2 s after the last token: one back");
    }
}
