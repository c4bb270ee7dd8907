//! Names people type: usernames, vendor organisations, devices, sites.
//!
//! Kept to a small alphabet so they are safe in URLs, logs, CSV and shell scripts, and so that two
//! names that look alike on screen are the same name (no case or Unicode confusables).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

fn check_name(field: &'static str, text: &str, max: usize) -> Result<String, ValidationError> {
    let name = text.trim();
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.len() > max {
        return Err(ValidationError::new(
            field,
            format!("'{name}' is longer than {max} characters"),
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if !name.chars().all(ok_char) {
        return Err(ValidationError::new(
            field,
            format!("'{name}' may use only lowercase letters, digits, '-', '_' and '.'"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ValidationError::new(
            field,
            format!("'{name}' must start with a letter or digit"),
        ));
    }
    Ok(name.to_owned())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, ValidationError> {
                check_name($field, text, $max).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, ValidationError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A login name: `[a-z0-9][a-z0-9._-]{0,63}`.
    Username, "username", 64
);
name_type!(
    /// A vendor organisation (the machine builder a vendor works for).
    OrgName, "org", 64
);
name_type!(
    /// A device in the plant's inventory, e.g. `plc-7`.
    DeviceName, "device", 64
);
name_type!(
    /// A plant site whose devices are reached through its connector, e.g. `plant-2`.
    SiteName, "site", 64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_trims() {
        assert_eq!(Username::parse(" alice.v ").unwrap().as_str(), "alice.v");
        assert_eq!(DeviceName::parse("plc-7").unwrap().as_str(), "plc-7");
        assert_eq!(SiteName::parse("plant-2").unwrap().as_str(), "plant-2");
        assert_eq!(SiteName::parse("Plant 2").unwrap_err().field, "site");
    }

    #[test]
    fn refuses_confusable_or_unsafe_names() {
        for bad in [
            "",
            "Alice",
            "a b",
            "-x",
            "plc;rm",
            "ünï",
            "a\nb",
            &"x".repeat(65),
        ] {
            let err = Username::parse(bad).unwrap_err();
            assert_eq!(err.field, "username", "{bad:?}");
        }
    }
}
