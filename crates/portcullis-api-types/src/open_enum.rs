//! The API's enums (`state`, `role`) on the wire: the domain's own enum from `portcullis-core`,
//! or, from a broker newer than the reader, a value the reader does not know.

use std::borrow::Cow;
use std::fmt;

use portcullis_core::{Access, Criticality, Protocol, RequestState, Role, WritePolicy};
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// An enum of `portcullis-core` that the API carries as a lowercase word.
pub trait WireEnum: Copy + Eq + fmt::Debug + 'static {
    /// The schema's name in the OpenAPI document.
    const SCHEMA_NAME: &'static str;
    /// Every value, in the order the document lists them.
    fn all() -> &'static [Self];
    fn as_str(self) -> &'static str;
}

impl WireEnum for RequestState {
    const SCHEMA_NAME: &'static str = "State";
    fn all() -> &'static [Self] {
        &RequestState::ALL
    }
    fn as_str(self) -> &'static str {
        RequestState::as_str(self)
    }
}

impl WireEnum for Role {
    const SCHEMA_NAME: &'static str = "Role";
    fn all() -> &'static [Self] {
        &Role::ALL
    }
    fn as_str(self) -> &'static str {
        Role::as_str(self)
    }
}

impl WireEnum for Criticality {
    const SCHEMA_NAME: &'static str = "Criticality";
    fn all() -> &'static [Self] {
        &Criticality::ALL
    }
    fn as_str(self) -> &'static str {
        Criticality::as_str(self)
    }
}

impl WireEnum for Access {
    const SCHEMA_NAME: &'static str = "Access";
    fn all() -> &'static [Self] {
        Access::ALL
    }
    fn as_str(self) -> &'static str {
        Access::as_str(self)
    }
}

impl WireEnum for Protocol {
    const SCHEMA_NAME: &'static str = "Protocol";
    fn all() -> &'static [Self] {
        Protocol::ALL
    }
    fn as_str(self) -> &'static str {
        Protocol::as_str(self)
    }
}

impl WireEnum for WritePolicy {
    const SCHEMA_NAME: &'static str = "Writes";
    fn all() -> &'static [Self] {
        WritePolicy::ALL
    }
    fn as_str(self) -> &'static str {
        WritePolicy::as_str(self)
    }
}

/// A value of one of the API's enums as a client reads it: one it knows, or one it does not,
/// kept as the broker spelt it.
///
/// A client reading an answer does not refuse it for a value it does not know: a broker that
/// adds a state (say `suspended`) would otherwise break every older `portcullis grants`
/// outright. Like the forward-compatible enums of mature API SDKs, the unknown word is kept, shown
/// as it is, and is never mistaken for a known one (an unknown state is not `active`, an unknown
/// role is not `vendor`), so code that matches on [`OrUnknown::Known`] acts only on what it
/// understands. Enforcement never rests on this: the broker and the relay decide. The broker
/// itself only ever sends `Known` values, and the OpenAPI document lists exactly those.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrUnknown<T> {
    Known(T),
    /// A word this build does not know (from a newer broker), as it came.
    Unknown(String),
}

impl<T: WireEnum> OrUnknown<T> {
    /// The known value, if it is one.
    pub fn known(&self) -> Option<T> {
        match self {
            OrUnknown::Known(v) => Some(*v),
            OrUnknown::Unknown(_) => None,
        }
    }

    /// The word on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            OrUnknown::Known(v) => v.as_str(),
            OrUnknown::Unknown(s) => s,
        }
    }

    /// Whether this is `v` (never true for an unknown word).
    pub fn is(&self, v: T) -> bool {
        self.known() == Some(v)
    }
}

impl<T> From<T> for OrUnknown<T> {
    fn from(v: T) -> Self {
        OrUnknown::Known(v)
    }
}

impl<T: WireEnum> fmt::Display for OrUnknown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: WireEnum> Serialize for OrUnknown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The longest unknown word kept; a longer one is no enum value from any broker, so the answer
/// is refused rather than carried around.
const MAX_UNKNOWN_LEN: usize = 64;

impl<'de, T: WireEnum> Deserialize<'de> for OrUnknown<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = Cow::<'de, str>::deserialize(d)?;
        if let Some(v) = T::all().iter().find(|v| v.as_str() == word) {
            return Ok(OrUnknown::Known(*v));
        }
        if word.len() > MAX_UNKNOWN_LEN || word.chars().any(char::is_control) {
            return Err(D::Error::custom(format_args!(
                "{} is not a {} value",
                word.escape_debug(),
                T::SCHEMA_NAME
            )));
        }
        Ok(OrUnknown::Unknown(word.into_owned()))
    }
}

impl<T: WireEnum> PartialSchema for OrUnknown<T> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(T::all().iter().map(|v| v.as_str())))
            .into()
    }
}

impl<T: WireEnum> ToSchema for OrUnknown<T> {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed(T::SCHEMA_NAME)
    }
}

/// A request's state on the wire.
pub type State = OrUnknown<RequestState>;
/// An account's role on the wire.
pub type RoleName = OrUnknown<Role>;
/// What a grant allows on its Modbus ports, on the wire.
pub type AccessName = OrUnknown<Access>;
/// What a port speaks, on the wire.
pub type ProtocolName = OrUnknown<Protocol>;
/// Whether a device grants writes, on the wire.
pub type WritesName = OrUnknown<WritePolicy>;
/// A device's criticality on the wire.
pub type CriticalityName = OrUnknown<Criticality>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_words_read_as_the_core_enum_and_write_back_the_same() {
        for s in RequestState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            let read: State = serde_json::from_str(&json).unwrap();
            assert_eq!(read, OrUnknown::Known(s));
            assert_eq!(serde_json::to_string(&read).unwrap(), json);
        }
        for r in Role::ALL {
            let read: RoleName = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert!(read.is(r));
        }
    }

    #[test]
    fn an_unknown_word_is_kept_and_never_taken_for_a_known_one() {
        let s: State = serde_json::from_str(r#""suspended""#).unwrap();
        assert_eq!(s, OrUnknown::Unknown("suspended".into()));
        assert!(!s.is(RequestState::Active));
        assert_eq!(s.to_string(), "suspended");
        // Case matters: "Active" is not "active".
        let s: State = serde_json::from_str(r#""Active""#).unwrap();
        assert_eq!(s.known(), None);
    }

    #[test]
    fn junk_is_an_error_not_a_value() {
        assert!(serde_json::from_str::<State>(&format!("\"{}\"", "x".repeat(65))).is_err());
        assert!(serde_json::from_str::<RoleName>(r#""ad\nmin""#).is_err());
        assert!(serde_json::from_str::<RoleName>("3").is_err());
    }

    #[test]
    fn the_schema_lists_exactly_the_core_values() {
        let v = serde_json::to_value(State::schema()).unwrap();
        let listed: Vec<&str> = v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        let core: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(listed, core);
        assert_eq!(State::name(), "State");
        assert_eq!(RoleName::name(), "Role");
    }
}
