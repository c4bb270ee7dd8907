//! Schemas for values whose Rust type lives in `portcullis-core`, which stays free of utoipa:
//! fields of those types name one of these with `#[schema(value_type = ...)]`. Each states the
//! rule the core type enforces (names.rs, device.rs, timestamp.rs, request.rs), so a generated
//! request a handler would refuse with 422 is not described as valid, and the other way round.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String))
}

/// A named schema with no Rust value: only its schema is used.
macro_rules! schema_only {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

schema_only!(
    /// `portcullis_core::Timestamp`: RFC 3339, always written in UTC.
    Time,
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some("RFC 3339; years 1970 to 9999; stored in UTC"))
        .into()
);

schema_only!(
    /// Usernames, organisations, devices and sites (`portcullis-core` names.rs). Surrounding
    /// spaces are trimmed by the server, so the document is a little stricter than the handlers.
    Name,
    string().pattern(Some("^[a-z0-9][a-z0-9._-]{0,63}$")).into()
);

schema_only!(
    /// `portcullis_core::Port`: a TCP port.
    Port,
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(1))
        .maximum(Some(65535))
        .into()
);

schema_only!(
    /// A non-empty list of ports, as a request or a policy names them.
    Ports,
    ArrayBuilder::new()
        .items(Port::schema())
        .min_items(Some(1))
        .into()
);

schema_only!(
    /// A six-digit TOTP code (RFC 6238).
    Totp,
    string().pattern(Some("^[0-9]{6}$")).into()
);

schema_only!(
    /// Why access is asked for, denied or revoked (`portcullis-core` request.rs).
    Reason,
    string().min_length(Some(1)).max_length(Some(1000)).into()
);

schema_only!(
    /// What `POST /api/v1/admin/users/{name}/{action}` does (`portcullis-web` api/admin.rs).
    UserActionName,
    string()
        .enum_values(Some(["disable", "unlock", "reset", "reset-enrollment"]))
        .into()
);

schema_only!(
    /// The `format` of `GET /api/v1/audit/export`.
    ExportFormat,
    string().enum_values(Some(["csv", "jsonl"])).into()
);
