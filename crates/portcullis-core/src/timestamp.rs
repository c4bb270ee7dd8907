//! UTC timestamps with microsecond precision.
//!
//! Stored and exported as fixed-width RFC 3339 (`2026-11-25T18:44:13.123456Z`) so that text order is
//! time order in both SQLite and PostgreSQL, and hashed as the integer microsecond count so the
//! audit encoding never depends on how a string was spelled.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ValidationError;

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Range accepted from people and files: years 1970..=9999 keep the fixed-width format valid.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_unix_micros(micros: i64) -> Result<Self, ValidationError> {
        if (0..=MAX_MICROS).contains(&micros) {
            Ok(Self(micros))
        } else {
            Err(ValidationError::new(
                "timestamp",
                format!("{micros} microseconds is outside 1970..9999"),
            ))
        }
    }

    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (JWT NumericDate), rounded down.
    pub fn unix_secs(self) -> u64 {
        // Never negative: the constructors keep the value at or after the epoch.
        u64::try_from(self.0.div_euclid(1_000_000)).unwrap_or(0)
    }

    /// The start of Unix second `secs`.
    pub fn from_unix_secs(secs: u64) -> Result<Self, ValidationError> {
        let micros = i64::try_from(secs)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000))
            .unwrap_or(i64::MAX);
        Self::from_unix_micros(micros)
    }

    /// The latest time the type holds (9999-12-31T23:59:59.999999Z): "no limit".
    pub const MAX: Timestamp = Timestamp(MAX_MICROS);

    /// Parses RFC 3339 with any offset; the result is UTC.
    pub fn parse_rfc3339(text: &str) -> Result<Self, ValidationError> {
        let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
            ValidationError::new(
                "timestamp",
                format!("'{text}' is not an RFC 3339 time such as 2026-11-25T08:00:00Z"),
            )
        })?;
        let micros = parsed.unix_timestamp_nanos() / 1_000;
        let micros = i64::try_from(micros)
            .map_err(|_| ValidationError::new("timestamp", format!("'{text}' is out of range")))?;
        Self::from_unix_micros(micros)
    }

    /// Fixed-width RFC 3339 in UTC with six fractional digits.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        // Invariant: the constructor keeps the value inside 1970..9999, which `time` can represent.
        let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            micros
        )
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let add = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(add).min(MAX_MICROS))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        let sub = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(sub).max(0))
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_and_round_trips() {
        let t = Timestamp::parse_rfc3339("2026-11-25T19:44:13.5+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T18:44:13.500000Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert_eq!(Timestamp::EPOCH.to_rfc3339(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn rejects_garbage_and_out_of_range() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::from_unix_micros(-1).is_err());
    }

    proptest::proptest! {
        #[test]
        fn text_order_is_time_order(a in 0..MAX_MICROS, b in 0..MAX_MICROS) {
            let (ta, tb) = (Timestamp(a), Timestamp(b));
            proptest::prop_assert_eq!(ta.cmp(&tb), ta.to_rfc3339().cmp(&tb.to_rfc3339()));
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&ta.to_rfc3339()).unwrap(), ta);
        }
    }
}
