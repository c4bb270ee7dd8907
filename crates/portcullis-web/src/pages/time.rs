//! Times on pages are in the plant's time zone (`config.time_zone`); the API, the store and the
//! audit log stay in UTC. jiff carries its own copy of the time-zone database, so this works on
//! a machine without /usr/share/zoneinfo.

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use portcullis_core::{Timestamp, ValidationError};

use crate::state::AppState;

/// Whether `name` is a time zone the pages can use, for checking the setting at start-up.
pub fn check_time_zone(name: &str) -> Result<(), String> {
    TimeZone::get(name.trim())
        .map(|_| ())
        .map_err(|_| format!("'{name}' is not an IANA time zone such as Europe/Berlin or UTC"))
}

/// The plant's time zone, for showing and reading times.
#[derive(Debug, Clone)]
pub(crate) struct PlantTime {
    tz: TimeZone,
    name: String,
}

impl PlantTime {
    pub(crate) fn of(state: &AppState) -> Self {
        let name = state.0.config.time_zone.trim();
        match TimeZone::get(name) {
            Ok(tz) => Self {
                tz,
                name: name.to_owned(),
            },
            Err(e) => {
                // The binary checks the setting at start; never guess a zone silently here.
                tracing::error!(zone = name, error = %e, "unknown time zone; showing UTC");
                Self {
                    tz: TimeZone::UTC,
                    name: "UTC".into(),
                }
            }
        }
    }

    /// The zone of the person reading: their own if they chose one, else the plant's.
    pub(crate) fn of_reader(state: &AppState, who: &crate::pages::session::Browser) -> Self {
        match &who.0.user.time_zone {
            Some(tz) => Self {
                tz: tz.zone(),
                name: tz.as_str().to_owned(),
            },
            None => Self::of(state),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn zoned(&self, t: Timestamp) -> Option<jiff::Zoned> {
        jiff::Timestamp::from_microsecond(t.unix_micros())
            .ok()
            .map(|ts| ts.to_zoned(self.tz.clone()))
    }

    /// For reading: `2026-11-25 09:00 CET`.
    pub(crate) fn show(&self, t: Timestamp) -> String {
        self.zoned(t).map_or_else(
            || t.to_rfc3339(),
            |z| z.strftime("%Y-%m-%d %H:%M %Z").to_string(),
        )
    }

    /// The time of day to the second, for things that change by the second: `09:00:07`.
    pub(crate) fn clock(&self, t: Timestamp) -> String {
        self.zoned(t)
            .map_or_else(|| t.to_rfc3339(), |z| z.strftime("%H:%M:%S").to_string())
    }

    /// The value of a `datetime-local` input: `2026-11-25T09:00`.
    pub(crate) fn input(&self, t: Timestamp) -> String {
        self.zoned(t)
            .map_or_else(String::new, |z| z.strftime("%Y-%m-%dT%H:%M").to_string())
    }

    /// Reads a `datetime-local` value as plant time (or a full RFC 3339 time with an offset). A
    /// local time that does not exist or happens twice (daylight saving changes) is refused
    /// rather than guessed: a window must mean exactly what the person saw.
    pub(crate) fn parse(
        &self,
        field: &'static str,
        text: &str,
    ) -> Result<Timestamp, ValidationError> {
        let text = text.trim();
        if let Ok(t) = Timestamp::parse_rfc3339(text) {
            return Ok(t);
        }
        let bad = |why: String| ValidationError::new(field, why);
        let dt: DateTime = text.parse().map_err(|_| {
            bad(format!(
                "'{text}' is not a date and time such as 2026-11-25T09:00"
            ))
        })?;
        let zoned = self.tz.to_ambiguous_zoned(dt).unambiguous().map_err(|_| {
            bad(format!(
                "{text} does not exist or happens twice in {} (a daylight saving change); \
                     pick another time",
                self.name
            ))
        })?;
        Timestamp::from_unix_micros(zoned.timestamp().as_microsecond()).map_err(|e| bad(e.message))
    }
}

/// UTC RFC 3339 to the second, which every browser's `Date.parse` reads.
pub(crate) fn deadline(t: Timestamp) -> String {
    jiff::Timestamp::from_microsecond(t.unix_micros()).map_or_else(
        |_| t.to_rfc3339(),
        |ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// `1h 05m left`, for the page before the script takes over the countdown.
pub(crate) fn left(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s left"),
        (0, m, s) => format!("{m}m {s:02}s left"),
        (h, m, _) => format!("{h}h {m:02}m left"),
    }
}
