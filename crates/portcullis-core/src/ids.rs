//! Identifiers that cross crate and process boundaries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A grant's number: the id the store gave the access request that was approved. The same
/// integer in the API's paths (`/api/v1/grants/7/token`), relay tokens (`grant`), audit events
/// (`grant_id`), and the wire's `Welcome` (written there as its decimal digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrantId(i64);

impl GrantId {
    /// The grant numbered `id` by the store.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<GrantId> for i64 {
    fn from(id: GrantId) -> Self {
        id.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A person's or a peer's text: a positive whole number, nothing around it.
impl FromStr for GrantId {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.parse::<i64>() {
            Ok(id) if id > 0 && !text.starts_with('+') => Ok(Self(id)),
            _ => Err(ValidationError::new(
                "grant",
                format!(
                    "'{}' is not a grant number (a positive whole number, such as 7)",
                    text.chars().take(32).collect::<String>()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_positive_numbers_only() {
        assert_eq!("7".parse::<GrantId>().unwrap(), GrantId::new(7));
        assert_eq!(GrantId::new(7).to_string(), "7");
        for bad in ["", "0", "-3", "+7", " 7", "7a", "99999999999999999999", "٣"] {
            let e = bad.parse::<GrantId>().unwrap_err();
            assert!(e.to_string().contains("not a grant number"), "{bad}: {e}");
        }
    }

    #[test]
    fn is_an_integer_in_json() {
        assert_eq!(serde_json::to_string(&GrantId::new(42)).unwrap(), "42");
        let id: GrantId = serde_json::from_str("42").unwrap();
        assert_eq!(id.get(), 42);
        assert!(serde_json::from_str::<GrantId>("\"42\"").is_err());
    }
}
