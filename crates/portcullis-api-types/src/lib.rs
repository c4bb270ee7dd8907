//! The JSON shapes of the broker's API under `/api/v1`, as Rust types: the broker serialises
//! them, the vendor client (`portcullis-client`) deserialises them, and the OpenAPI document at
//! `/api/v1/openapi.json` is derived from them (utoipa; docs/decisions/0011-api-types-and-openapi.md).
//! One definition, so the three cannot drift apart.
//!
//! Rules the types keep, because scripts outside drive this API:
//! - A field that is `null` when empty is an `Option` serialised as `null`; a field that is
//!   absent in some answers is `skip_serializing_if` and says when.
//! - Values are `portcullis-core`'s types (`Timestamp`, names, `Port`); their schemas are in
//!   [`schema`], because core does not depend on utoipa.
//! - `state` and `role` are [`OrUnknown`] of the core enums: readers keep a word from a newer
//!   broker instead of failing on it.
//! - Readers ignore fields they do not know: the document promises the named fields, not that
//!   there are no others.
//! - Types that carry a secret (session tokens, enrollment codes, relay tokens) never show it in
//!   `Debug`.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod clock;
mod open_enum;
pub mod schema;
pub mod sessions;
pub mod sites;

use serde::{Deserialize, Serialize};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{ToResponse, ToSchema};

pub use open_enum::{
    AccessName, CriticalityName, OrUnknown, ProtocolName, RoleName, State, WireEnum, WritesName,
};

/// Every error answer: a sentence a person can act on, and a stable code for programs
/// (`portcullis-web` error.rs). In the document as the response `Error`, which every operation
/// lists for its 4xx and 503 answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

impl<'s> ToResponse<'s> for ErrorBody {
    fn response() -> (&'s str, RefOr<Response>) {
        let r = ResponseBuilder::new()
            .description("An error with a message a person can act on")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build();
        ("Error", r.into())
    }
}

/// `GET /api/v1/keys`: the relay-token verification keys (RFC 7517, RFC 8037), as
/// `portcullis-auth`'s `KeyRing::jwks` builds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    pub kid: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
}

/// Shown in `Debug` instead of a secret: only its length.
pub(crate) struct Redacted(pub usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}
