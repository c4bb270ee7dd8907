//! How a person is reached: an e-mail address, and the time zone their messages and pages use.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// An e-mail address, checked for the shape a mail server accepts (`local@domain`), not for
/// whether the mailbox exists. Kept as typed, except that the domain is lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let text = text.trim();
        let bad = |why: &str| Err(ValidationError::new("email", format!("'{text}' {why}")));
        if text.is_empty() {
            return Err(ValidationError::new("email", "must not be empty"));
        }
        if text.len() > 254 {
            return bad("is longer than 254 characters");
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return bad("is not an e-mail address such as sam@plant.example");
        };
        if local.is_empty() || local.len() > 64 || domain.is_empty() {
            return bad("is not an e-mail address such as sam@plant.example");
        }
        // No spaces, controls, or characters that would let an address inject a header or a
        // second recipient.
        let forbidden =
            |c: char| c.is_whitespace() || c.is_control() || "<>,;:\"()[]\\@".contains(c);
        if local.chars().any(forbidden) || local.starts_with('.') || local.ends_with('.') {
            return bad("has a character an address may not carry here");
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !domain.split('.').all(label_ok) {
            return bad("has a domain that is not a host name");
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone name (`Europe/Berlin`, `UTC`) that the bundled time-zone database knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let name = text.trim();
        match jiff::tz::TimeZone::get(name) {
            Ok(_) if !name.is_empty() => Ok(Self(name.to_owned())),
            _ => Err(ValidationError::new(
                "time_zone",
                format!("'{name}' is not an IANA time zone such as Europe/Berlin or UTC"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn zone(&self) -> jiff::tz::TimeZone {
        // Checked at parse time; the database is bundled, so it cannot vanish later.
        jiff::tz::TimeZone::get(&self.0).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

impl TryFrom<String> for TimeZoneName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Self::parse(&s)
    }
}

impl From<TimeZoneName> for String {
    fn from(t: TimeZoneName) -> String {
        t.0
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_for_shape_and_injection() {
        assert_eq!(
            Email::parse(" Sam.Ortiz@Plant.Example ").unwrap().as_str(),
            "Sam.Ortiz@plant.example"
        );
        for bad in [
            "",
            "sam",
            "@plant.example",
            "sam@",
            "sam@plant..example",
            "sam ortiz@plant.example",
            "sam@plant.example\r\nBcc: eve@evil.example",
            "sam,eve@plant.example",
            "<sam@plant.example>",
            "sam@-plant.example",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(
            TimeZoneName::parse("Europe/Berlin").unwrap().as_str(),
            "Europe/Berlin"
        );
        assert!(TimeZoneName::parse("UTC").is_ok());
        let e = TimeZoneName::parse("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("IANA"), "{e}");
        assert!(TimeZoneName::parse("").is_err());
    }
}
