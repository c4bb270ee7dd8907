//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`, derived by utoipa
//! (docs/decisions/0011-api-types-and-openapi.md): response shapes from `portcullis-api-types`,
//! request bodies from the handlers' body types (`deny_unknown_fields` becomes
//! `additionalProperties: false`, and their fields name the domain types' limits), and each
//! operation from the `#[utoipa::path]` on its handler. What every operation shares is added
//! here once: the JSON error answers and the explicit empty security of the public ones.
//! `tests/api.rs` checks every route is described; `.ci/api-fuzz` runs schemathesis against the
//! served document and checks the responses match it.

use axum::Json;
use portcullis_api_types::schema::{ExportFormat, Name, Time, UserActionName};
use portcullis_api_types::{ErrorBody, State};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::api::{access, admin, audit, auth, clock, meta, sessions, sites};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis API",
        version = "1",
        description = "Time-bound vendor remote access: enrollment, MFA login, requests, approvals, relay tokens, live relay sessions, audit, site connectors.",
    ),
    paths(
        auth::enroll, auth::enroll_confirm, auth::login, auth::mfa, auth::step_up, auth::logout,
        auth::logout_everywhere,
        access::devices, access::list, access::create, access::get, access::approve, access::deny,
        access::revoke, access::token,
        sessions::list, sessions::end,
        meta::keys,
        audit::list, audit::export, audit::verify,
        admin::orgs, admin::add_org, admin::users, admin::add_user, admin::user_action,
        admin::set_user, admin::me, admin::set_me, admin::outbox, admin::retry_delivery,
        admin::add_device, admin::set_policy,
        sites::sites, sites::admin_sites, sites::add_site, sites::new_token, sites::revoke,
        sites::enroll,
        clock::status, clock::ack,
        document,
    ),
    // Schemas that parameters name (bodies' schemas are collected from the types).
    components(
        schemas(ErrorBody, Name, Time, State, UserActionName, ExportFormat),
        responses(ErrorBody),
    ),
    modifiers(&Shared),
)]
struct ApiDoc;

/// The status codes of [`crate::error::ApiError`] (`error.rs`): any operation may answer any
/// of them, always with the JSON error body.
const ERROR_STATUSES: [&str; 10] = [
    "400", "401", "403", "404", "409", "413", "422", "423", "429", "503",
];

/// What every operation shares, added once instead of on each handler.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The session_token from POST /api/v1/auth/mfa"))
                    .build(),
            ),
        );
        let (error, _) = <ErrorBody as ToResponse>::response();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for status in ERROR_STATUSES {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Ref::from_response_name(error).into());
                }
                // Public operations say so: no scheme, rather than leaving it unsaid.
                op.security.get_or_insert_with(Vec::new);
                if let Some(body) = &mut op.request_body {
                    optional_body_is_never_null(body);
                }
            }
        }
    }
}

/// `request_body = Option<T>` (approve: the body may be left out) comes out as "T or null".
/// `OptionalJson` takes no body or a T; a JSON `null` is refused (422), so the document says T.
fn optional_body_is_never_null(body: &mut RequestBody) {
    for content in body.content.values_mut() {
        if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema {
            let mut rest = one.items.iter().filter(|s| !is_null(s));
            if let (Some(only), None) = (rest.next(), rest.next()) {
                content.schema = Some(only.clone());
            }
        }
    }
}

fn is_null(s: &RefOr<Schema>) -> bool {
    matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

/// The document, built once per call (it is small, and only tools ask for it).
pub fn spec() -> Document {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn document() -> Json<Document> {
    Json(spec())
}
