//! How full the data directory's filesystem is, as levels an operator is warned about.
//!
//! The watcher in the binary measures (statvfs) and acts (log, gauge, audit event); the decision
//! of when a level is crossed lives here, so it is tested without a filesystem. A level is
//! announced once per crossing: rising above 80 % warns, above 90 % warns again, and only after
//! usage has fallen back below a threshold (by [`HYSTERESIS`]) does rising past it warn anew.
//! Without the margin a disk hovering at 80.0 % would announce a crossing every check.

use std::fmt;

/// At or above this share of the filesystem used: a warning.
pub const WARN_RATIO: f64 = 0.80;
/// At or above this share: a critical warning (writes may soon fail; the broker then fails closed).
pub const CRITICAL_RATIO: f64 = 0.90;
/// How far below a threshold usage must fall before the level counts as left.
pub const HYSTERESIS: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskLevel {
    /// Below 80 %.
    Ok,
    /// 80 % or more.
    Warning,
    /// 90 % or more.
    Critical,
}

impl DiskLevel {
    /// The level a share of the filesystem used (0.0 ..= 1.0) is at, ignoring history.
    pub fn of(ratio: f64) -> DiskLevel {
        if ratio >= CRITICAL_RATIO {
            DiskLevel::Critical
        } else if ratio >= WARN_RATIO {
            DiskLevel::Warning
        } else {
            DiskLevel::Ok
        }
    }

    /// The name in logs and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskLevel::Ok => "ok",
            DiskLevel::Warning => "warning",
            DiskLevel::Critical => "critical",
        }
    }

    /// The usage this level starts at (0 for `Ok`).
    fn floor(self) -> f64 {
        match self {
            DiskLevel::Ok => 0.0,
            DiskLevel::Warning => WARN_RATIO,
            DiskLevel::Critical => CRITICAL_RATIO,
        }
    }
}

impl fmt::Display for DiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of level worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossing {
    pub from: DiskLevel,
    pub to: DiskLevel,
    pub ratio: f64,
}

impl Crossing {
    /// True when usage rose into a higher level (a warning), false when it fell back.
    pub fn rising(&self) -> bool {
        self.to > self.from
    }
}

/// The level last announced, and the rule for the next announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLevels {
    current: DiskLevel,
}

impl Default for DiskLevels {
    fn default() -> Self {
        Self::new()
    }
}

impl DiskLevels {
    /// Starts at `Ok`: a broker started on a disk already past 80 % warns at its first check.
    pub fn new() -> Self {
        Self {
            current: DiskLevel::Ok,
        }
    }

    pub fn current(&self) -> DiskLevel {
        self.current
    }

    /// Takes one measurement; returns the crossing when the level changed. Rising takes effect
    /// at the threshold, falling only `HYSTERESIS` below it.
    pub fn observe(&mut self, ratio: f64) -> Option<Crossing> {
        let raw = DiskLevel::of(ratio);
        let next = if raw >= self.current {
            raw
        } else if ratio < self.current.floor() - HYSTERESIS {
            // Fallen clearly below the current level (95 % to 85 %): to the level it is in now.
            raw
        } else {
            self.current
        };
        if next == self.current {
            return None;
        }
        let from = self.current;
        self.current = next;
        Some(Crossing {
            from,
            to: next,
            ratio,
        })
    }
}

/// The share of a filesystem in use, as `df` computes it: blocks used over the blocks used and
/// those an unprivileged process may still take (the reserve for root counts as not available).
/// `None` when the filesystem reports no blocks (a pseudo filesystem).
pub fn used_ratio(blocks: u64, free: u64, available: u64) -> Option<f64> {
    let used = blocks.saturating_sub(free);
    let usable = used.checked_add(available)?;
    if usable == 0 {
        return None;
    }
    // Block counts fit f64's 53-bit mantissa on any real filesystem (2^53 blocks of 4 KiB is
    // 32 ZiB); the ratio only feeds thresholds and a gauge.
    #[allow(clippy::cast_precision_loss)]
    let r = used as f64 / usable as f64;
    Some(r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_ratio_counts_the_root_reserve_as_unavailable() {
        assert_eq!(used_ratio(100, 100, 95), Some(0.0));
        // 50 used, 45 free to users (5 reserved): 50 / 95.
        let r = used_ratio(100, 50, 45).unwrap();
        assert!((r - 50.0 / 95.0).abs() < 1e-12, "{r}");
        // Full for users while root's reserve is left: 100 %.
        assert_eq!(used_ratio(100, 5, 0), Some(1.0));
        assert_eq!(used_ratio(0, 0, 0), None);
    }

    fn run(ratios: &[f64]) -> Vec<(DiskLevel, DiskLevel)> {
        let mut l = DiskLevels::new();
        ratios
            .iter()
            .filter_map(|&r| l.observe(r))
            .map(|c| (c.from, c.to))
            .collect()
    }

    #[test]
    fn levels_from_ratio() {
        assert_eq!(DiskLevel::of(0.0), DiskLevel::Ok);
        assert_eq!(DiskLevel::of(0.7999), DiskLevel::Ok);
        assert_eq!(DiskLevel::of(0.80), DiskLevel::Warning);
        assert_eq!(DiskLevel::of(0.8999), DiskLevel::Warning);
        assert_eq!(DiskLevel::of(0.90), DiskLevel::Critical);
        assert_eq!(DiskLevel::of(1.0), DiskLevel::Critical);
    }

    #[test]
    fn each_crossing_is_announced_once() {
        use DiskLevel::*;
        assert_eq!(
            run(&[0.5, 0.81, 0.82, 0.85, 0.91, 0.99, 0.95]),
            vec![(Ok, Warning), (Warning, Critical)]
        );
        // Straight from below 80 % to full: one crossing, to the level reached.
        assert_eq!(run(&[0.5, 1.0, 1.0]), vec![(Ok, Critical)]);
    }

    #[test]
    fn hovering_at_a_threshold_does_not_repeat_the_warning() {
        use DiskLevel::*;
        assert_eq!(
            run(&[0.80, 0.799, 0.80, 0.795, 0.801, 0.80]),
            vec![(Ok, Warning)]
        );
    }

    #[test]
    fn falling_back_and_rising_again_warns_again() {
        use DiskLevel::*;
        assert_eq!(
            run(&[0.85, 0.70, 0.85, 0.92, 0.895, 0.85, 0.93, 0.10]),
            vec![
                (Ok, Warning),
                (Warning, Ok),
                (Ok, Warning),
                (Warning, Critical),
                (Critical, Warning),
                (Warning, Critical),
                (Critical, Ok),
            ]
        );
        let mut l = DiskLevels::new();
        let c = l.observe(0.95).unwrap();
        assert!(c.rising());
        assert!(!l.observe(0.10).unwrap().rising());
    }
}
