//! The OpenAPI 3.0 document of `/api/v1`, served at `/api/v1/openapi.json`. Written by hand so
//! it states exactly what the handlers accept: every body schema has `additionalProperties:
//! false`, as the handlers' `deny_unknown_fields` do. A test checks every route is described.

use axum::Json;
use serde_json::{Value, json};

fn body(required: &[&str], props: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "additionalProperties": false, "required": required, "properties": props,
    }}}})
}

fn ok(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "type": "object" } } } })
}

fn errors() -> Value {
    let e = json!({ "$ref": "#/components/responses/Error" });
    json!({ "400": e, "401": e, "403": e, "404": e, "409": e, "422": e, "423": e, "429": e, "503": e })
}

fn op(
    summary: &str,
    responses: Value,
    request: Option<Value>,
    params: Value,
    secured: bool,
) -> Value {
    let mut r = errors();
    if let (Some(map), Some(extra)) = (r.as_object_mut(), responses.as_object()) {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    let mut o = json!({ "summary": summary, "responses": r, "parameters": params });
    if let Some(b) = request {
        o["requestBody"] = b;
    }
    o["security"] = if secured {
        json!([{ "bearer": [] }])
    } else {
        json!([])
    };
    o
}

fn id_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } }])
}

fn q(name: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema })
}

pub fn spec() -> Value {
    let text = json!({ "type": "string" });
    let ports = json!({ "type": "array", "items": { "type": "integer" } });
    let time = json!({ "type": "string", "format": "date-time" });
    let none = json!([]);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Portcullis API", "version": "1",
                  "description": "Time-bound vendor remote access: enrollment, MFA login, requests, approvals, relay tokens, audit." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "An error with a message a person can act on",
                "content": { "application/json": { "schema": { "type": "object", "required": ["error", "code"],
                    "properties": { "error": { "type": "string" }, "code": { "type": "string" } } } } } } }
        },
        "paths": {
            "/api/v1/enroll": { "post": op("Set a password and get a TOTP secret", json!({ "200": ok("otpauth URI") }),
                Some(body(&["code", "password"], json!({ "code": text, "password": text }))), none.clone(), false) },
            "/api/v1/enroll/confirm": { "post": op("Confirm the TOTP secret with a code", json!({ "204": { "description": "enrolled" } }),
                Some(body(&["code", "totp"], json!({ "code": text, "totp": text }))), none.clone(), false) },
            "/api/v1/auth/login": { "post": op("Password step of login", json!({ "200": ok("mfa_token") }),
                Some(body(&["username", "password"], json!({ "username": text, "password": text }))), none.clone(), false) },
            "/api/v1/auth/mfa": { "post": op("TOTP step of login", json!({ "200": ok("session") }),
                Some(body(&["mfa_token", "totp"], json!({ "mfa_token": text, "totp": text }))), none.clone(), false) },
            "/api/v1/auth/step-up": { "post": op("Fresh TOTP for approvals and tokens", json!({ "204": { "description": "done" } }),
                Some(body(&["totp"], json!({ "totp": text }))), none.clone(), true) },
            "/api/v1/auth/logout": { "post": op("End the session", json!({ "204": { "description": "done" } }), None, none.clone(), true) },
            "/api/v1/devices": { "get": op("Devices the caller may see", json!({ "200": ok("devices") }), None, none.clone(), true) },
            "/api/v1/requests": {
                "get": op("Requests and grants", json!({ "200": ok("requests") }), None,
                    json!([q("state", json!({ "type": "string", "enum": ["requested", "approved", "denied", "active", "expired", "revoked"] }))]), true),
                "post": op("Request access", json!({ "201": ok("id and state") }),
                    Some(body(&["device", "ports", "start", "end", "reason"], json!({
                        "device": text, "ports": ports, "start": time, "end": time, "reason": text,
                        "ticket": { "type": "string", "nullable": true } }))), none.clone(), true),
            },
            "/api/v1/requests/{id}": { "get": op("One request", json!({ "200": ok("request") }), None, id_param(), true) },
            "/api/v1/requests/{id}/approve": { "post": op("Approve (after a step-up), optionally narrowing", json!({ "200": ok("request") }),
                Some({ let mut b = body(&[], json!({ "ports": ports, "start": time, "end": time })); b["required"] = false.into(); b }), id_param(), true) },
            "/api/v1/requests/{id}/deny": { "post": op("Deny with a reason", json!({ "200": ok("request") }),
                Some(body(&["reason"], json!({ "reason": text }))), id_param(), true) },
            "/api/v1/grants/{id}/revoke": { "post": op("Revoke a grant", json!({ "200": ok("grant") }),
                Some(body(&["reason"], json!({ "reason": text }))), id_param(), true) },
            "/api/v1/grants/{id}/token": { "post": op("Mint a relay token bound to a client certificate", json!({ "200": ok("token") }),
                Some(body(&["client_cert_sha256"], json!({ "client_cert_sha256": text }))), id_param(), true) },
            "/api/v1/keys": { "get": op("Relay-token verification keys (JWKS)", json!({ "200": ok("JWKS") }), None, none.clone(), false) },
            "/api/v1/audit": { "get": op("Audit events, filtered and paged", json!({ "200": ok("events") }), None, json!([
                q("since", time.clone()), q("until", time.clone()), q("actor", text.clone()), q("device", text.clone()),
                q("action", text.clone()), q("grant", json!({ "type": "integer", "format": "int64" })),
                q("limit", json!({ "type": "integer", "minimum": 1, "maximum": 1000 })),
                q("after", json!({ "type": "integer", "format": "int64" }))]), true) },
            "/api/v1/audit/export": { "get": op("Export as CSV or JSON Lines", json!({ "200": { "description": "file" } }), None, json!([
                { "name": "format", "in": "query", "required": true, "schema": { "type": "string", "enum": ["csv", "jsonl"] } },
                q("since", time.clone()), q("until", time.clone())]), true) },
            "/api/v1/audit/verify": { "get": op("Verify the hash chain", json!({ "200": ok("result") }), None, none.clone(), true) },
            "/api/v1/admin/orgs": {
                "get": op("Vendor organisations", json!({ "200": ok("orgs") }), None, none.clone(), true),
                "post": op("Add an organisation", json!({ "201": { "description": "created" } }),
                    Some(body(&["name"], json!({ "name": text }))), none.clone(), true),
            },
            "/api/v1/admin/users": {
                "get": op("Users", json!({ "200": ok("users") }), None, none.clone(), true),
                "post": op("Add a user (returns the enrollment code)", json!({ "201": ok("user") }),
                    Some(body(&["username", "role"], json!({ "username": text,
                        "role": { "type": "string", "enum": ["vendor", "supervisor", "auditor", "admin"] },
                        "org": { "type": "string", "nullable": true } }))), none.clone(), true),
            },
            "/api/v1/admin/users/{name}/{action}": { "post": op("disable, unlock or reset-enrollment", json!({ "200": ok("user") }), None, json!([
                { "name": "name", "in": "path", "required": true, "schema": text },
                { "name": "action", "in": "path", "required": true, "schema": { "type": "string", "enum": ["disable", "unlock", "reset-enrollment"] } }]), true) },
            "/api/v1/admin/devices": { "post": op("Add a device", json!({ "201": { "description": "created" } }),
                Some(body(&["name", "address", "ports"], json!({ "name": text, "address": text, "ports": ports,
                    "device_type": text, "site": text, "owner": text, "vendor": text, "purpose": text, "data_handled": text,
                    "access_method": text, "firmware": text, "support_contact": text,
                    "criticality": { "type": "string", "enum": ["low", "medium", "high"] },
                    "approvals_required": { "type": "integer" }, "max_window_secs": { "type": "integer" },
                    "orgs": { "type": "array", "items": text } }))), none.clone(), true) },
            "/api/v1/admin/devices/{name}/policy": { "post": op("Replace a device's policy", json!({ "204": { "description": "done" } }),
                Some(body(&["ports", "approvals_required", "max_window_secs", "orgs"], json!({ "ports": ports,
                    "approvals_required": { "type": "integer" }, "max_window_secs": { "type": "integer" },
                    "orgs": { "type": "array", "items": text } }))),
                json!([{ "name": "name", "in": "path", "required": true, "schema": text }]), true) },
            "/api/v1/openapi.json": { "get": op("This document", json!({ "200": ok("OpenAPI") }), None, none, false) },
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
