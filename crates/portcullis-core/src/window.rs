//! Time windows: half-open intervals `[start, end)` in UTC.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Timestamp, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// A window must end after it starts.
    pub fn new(start: Timestamp, end: Timestamp) -> Result<Self, ValidationError> {
        if end <= start {
            return Err(ValidationError::new(
                "window",
                format!("ends ({end}) at or before it starts ({start})"),
            ));
        }
        Ok(Self { start, end })
    }

    pub fn length(&self) -> Duration {
        self.end.duration_since(self.start)
    }

    /// `start <= now < end`: the end instant itself is already outside.
    pub fn contains(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.end
    }

    pub fn has_ended(&self, now: Timestamp) -> bool {
        now >= self.end
    }

    pub fn within(&self, outer: &Window) -> bool {
        outer.start <= self.start && self.end <= outer.end
    }

    /// Time left at `now`, zero once ended.
    pub fn remaining(&self, now: Timestamp) -> Duration {
        self.end.duration_since(now)
    }
}

/// Parses a window length such as `8h`, `30m`, `1h 30m` or `2days`. Zero is refused.
pub fn parse_window_length(text: &str) -> Result<Duration, ValidationError> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        ValidationError::new(
            "max-window",
            format!("'{text}' is not a duration such as 8h, 30m or 1h30m"),
        )
    })?;
    if d.is_zero() {
        return Err(ValidationError::new(
            "max-window",
            "must be longer than zero",
        ));
    }
    Ok(d)
}

pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_unix_micros(s * 1_000_000).unwrap()
    }

    #[test]
    fn end_is_exclusive() {
        let w = Window::new(ts(100), ts(200)).unwrap();
        assert!(!w.contains(ts(99)));
        assert!(w.contains(ts(100)));
        assert!(w.contains(ts(199)));
        assert!(!w.contains(ts(200)));
        assert!(w.has_ended(ts(200)));
    }

    #[test]
    fn reversed_or_empty_windows_are_refused() {
        assert!(Window::new(ts(200), ts(100)).is_err());
        assert!(Window::new(ts(100), ts(100)).is_err());
    }

    #[test]
    fn window_lengths_parse() {
        assert_eq!(
            parse_window_length("8h").unwrap(),
            Duration::from_secs(8 * 3600)
        );
        assert_eq!(
            parse_window_length("1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
        for bad in ["0s", "0h", "-1h", "forever", ""] {
            assert!(parse_window_length(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn contains_agrees_with_bounds(a in 0i64..1_000_000, len in 1i64..100_000, t in 0i64..2_000_000) {
            let w = Window::new(ts(a), ts(a + len)).unwrap();
            prop_assert_eq!(w.contains(ts(t)), a <= t && t < a + len);
            prop_assert_eq!(w.length(), Duration::from_secs(len as u64));
            prop_assert!(w.remaining(ts(t)) <= w.length() || t < a);
            prop_assert_eq!(w.has_ended(ts(t)), w.remaining(ts(t)).is_zero());
        }

        #[test]
        fn within_is_a_partial_order(a in 0i64..1000, b in 1i64..1000, c in 0i64..1000, d in 1i64..1000) {
            let outer = Window::new(ts(a), ts(a + b)).unwrap();
            let inner = Window::new(ts(c), ts(c + d)).unwrap();
            prop_assert!(outer.within(&outer));
            if inner.within(&outer) && outer.within(&inner) {
                prop_assert_eq!(inner, outer);
            }
            if inner.within(&outer) {
                prop_assert!(inner.length() <= outer.length());
            }
        }
    }
}
