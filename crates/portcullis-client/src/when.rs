//! Times people type on the command line, and the time left shown back to them.
//!
//! A time is RFC 3339 (`2026-11-25T08:00:00Z`, any offset), `now`, or `+<n><unit>` from now with
//! unit `s`, `m`, `h` or `d` (`+30m`, `+2h`, `+1d`). Everything takes `now` as an argument, so the
//! parsing is tested without a clock.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The longest relative time accepted (`+366d`): far beyond any window a broker grants (at most
/// 30 days ahead, a week long), and small enough that adding it to a date can never overflow.
pub const MAX_RELATIVE: Duration = Duration::from_secs(366 * 24 * 3600);

/// A time that could not be read, with a sentence saying what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WhenError(String);

fn not_a_time(text: &str) -> WhenError {
    WhenError(format!(
        "'{}' is not a time: give RFC 3339 (2026-11-25T08:00:00Z), `now`, or a time from now \
         such as +30m, +2h or +1d",
        crate::printable(text, 64)
    ))
}

/// Parses `text` as RFC 3339, `now`, or `+<n><s|m|h|d>` relative to `now`. The result is UTC.
pub fn parse(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, WhenError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now.to_offset(UtcOffset::UTC));
    }
    if let Some(rel) = t.strip_prefix('+') {
        let d = parse_relative(rel).ok_or_else(|| not_a_time(text))?;
        return now
            .checked_add(time::Duration::try_from(d).map_err(|_| not_a_time(text))?)
            .map(|t| t.to_offset(UtcOffset::UTC))
            .ok_or_else(|| not_a_time(text));
    }
    OffsetDateTime::parse(t, &Rfc3339)
        .map(|t| t.to_offset(UtcOffset::UTC))
        .map_err(|_| not_a_time(text))
}

/// `<n><unit>` (no sign) as a duration, or None. `n` is decimal digits; the unit is one of
/// `s`, `m`, `h`, `d`; the total is at most [`MAX_RELATIVE`].
pub fn parse_relative(text: &str) -> Option<Duration> {
    let unit_at = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let d = Duration::from_secs(n.checked_mul(secs_per)?);
    (d <= MAX_RELATIVE).then_some(d)
}

/// RFC 3339 in UTC to the second (`2026-11-25T08:00:00Z`): what the API is sent and what the
/// client prints. Sub-second digits are dropped (a window starting "now" starts on the second).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Whole minutes in `d`, rounded up: "1 min left" lasts until the very end, never "0 min left"
/// while access is still open.
pub fn minutes_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_millis().div_ceil(60_000)).unwrap_or(u64::MAX)
}

/// The time left as people read it: `45 s`, `12 min`, `2 h 05 min`, `3 d 4 h`.
pub fn left(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        return format!("{secs} s");
    }
    let mins = minutes_ceil(d);
    match (mins / 1440, (mins % 1440) / 60, mins % 60) {
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m:02} min"),
        (days, h, _) => format!("{days} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-05-01 08:00:30.250 UTC);

    #[test]
    fn now_and_relative_times_count_from_the_given_clock() {
        assert_eq!(parse("now", NOW).unwrap(), NOW);
        assert_eq!(parse(" NOW ", NOW).unwrap(), NOW);
        assert_eq!(
            parse("+2h", NOW).unwrap(),
            datetime!(2026-05-01 10:00:30.250 UTC)
        );
        assert_eq!(
            parse("+90m", NOW).unwrap(),
            datetime!(2026-05-01 09:30:30.250 UTC)
        );
        assert_eq!(
            parse("+45s", NOW).unwrap(),
            datetime!(2026-05-01 08:01:15.250 UTC)
        );
        assert_eq!(
            parse("+1d", NOW).unwrap(),
            datetime!(2026-05-02 08:00:30.250 UTC)
        );
        assert_eq!(parse("+0m", NOW).unwrap(), NOW);
    }

    #[test]
    fn rfc3339_with_any_offset_comes_back_in_utc() {
        assert_eq!(
            parse("2026-05-01T10:00:00+02:00", NOW).unwrap(),
            datetime!(2026-05-01 08:00:00 UTC)
        );
        assert_eq!(
            parse("2026-05-01T08:00:00Z", NOW).unwrap(),
            datetime!(2026-05-01 08:00:00 UTC)
        );
    }

    #[test]
    fn bad_times_say_what_is_accepted() {
        for bad in [
            "",
            "tomorrow",
            "+",
            "+h",
            "+2",
            "+2x",
            "+-2h",
            "+2.5h",
            "+ 2h",
            "2h",
            "-2h",
            "+2H",
            "2026-05-01",
            "2026-05-01 08:00",
            "+367d",
            "+99999999999999999999d",
        ] {
            let e = parse(bad, NOW).unwrap_err().to_string();
            assert!(e.contains("is not a time"), "{bad}: {e}");
            assert!(e.contains("RFC 3339") && e.contains("+2h"), "{bad}: {e}");
        }
        assert!(parse("+366d", NOW).is_ok());
    }

    #[test]
    fn bad_time_messages_stay_on_one_line() {
        let e = parse("x\ny", NOW).unwrap_err().to_string();
        assert!(!e.contains('\n'));
    }

    #[test]
    fn printed_times_are_utc_to_the_second() {
        assert_eq!(rfc3339(NOW), "2026-05-01T08:00:30Z");
        assert_eq!(
            rfc3339(datetime!(2026-05-01 10:00:00 +02:00)),
            "2026-05-01T08:00:00Z"
        );
    }

    #[test]
    fn time_left_reads_naturally_and_rounds_minutes_up() {
        assert_eq!(left(Duration::from_secs(45)), "45 s");
        assert_eq!(left(Duration::from_secs(60)), "1 min");
        assert_eq!(left(Duration::from_secs(61)), "2 min");
        assert_eq!(left(Duration::from_secs(3540)), "59 min");
        assert_eq!(left(Duration::from_secs(3599)), "1 h 00 min");
        assert_eq!(left(Duration::from_secs(3600)), "1 h 00 min");
        assert_eq!(left(Duration::from_secs(2 * 3600 + 5 * 60)), "2 h 05 min");
        assert_eq!(left(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3 d 4 h");
        assert_eq!(minutes_ceil(Duration::from_millis(300_000)), 5);
        assert_eq!(minutes_ceil(Duration::from_millis(60_001)), 2);
        assert_eq!(minutes_ceil(Duration::ZERO), 0);
    }
}
