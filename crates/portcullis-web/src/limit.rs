//! A per-address token bucket for login endpoints. Time comes from the caller (the service's
//! clock), so tests drive it without sleeping; memory is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use portcullis_core::Timestamp;

const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Timestamp)>>,
}

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `addr`; `Err(seconds)` until one is free.
    pub fn check(&self, addr: IpAddr, now: Timestamp) -> Result<(), u64> {
        let rate = f64::from(self.per_minute) / 60.0;
        let cap = f64::from(self.per_minute);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&addr) {
            // Forget full buckets first (they carry no information); never grow without bound.
            map.retain(|_, (tokens, _)| *tokens < cap);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let (tokens, last) = map.entry(addr).or_insert((cap, now));
        let elapsed = now.duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(cap);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refuses_past_the_rate_then_refills() {
        let l = RateLimiter::per_minute(3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t = Timestamp::EPOCH;
        for _ in 0..3 {
            assert!(l.check(ip, t).is_ok());
        }
        assert_eq!(l.check(ip, t), Err(20));
        assert!(l.check(other, t).is_ok(), "counted per address");
        assert!(
            l.check(ip, t.saturating_add(Duration::from_secs(20)))
                .is_ok()
        );
    }
}
