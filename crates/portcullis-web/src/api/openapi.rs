//! The OpenAPI 3.0 document of `/api/v1`, served at `/api/v1/openapi.json`. Written by hand so
//! it states exactly what the handlers accept: every body schema has `additionalProperties:
//! false`, as the handlers' `deny_unknown_fields` do, and the limits of the domain types (names,
//! ports, text lengths, policy bounds). A test checks every route is described; `.ci/api-fuzz`
//! runs schemathesis against it and checks the responses match it.

use axum::Json;
use serde_json::{Value, json};

/// A required JSON request body that refuses unknown fields.
fn body(required: &[&str], props: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "additionalProperties": false, "required": required, "properties": props,
    }}}})
}

/// An object schema for a response: the fields named are always there; more may be added.
fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn no_content(description: &str) -> Value {
    json!({ "description": description })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `s` or null. `s` must be inline: OpenAPI 3.0 ignores keywords beside a `$ref`.
fn nullable(mut s: Value) -> Value {
    s["nullable"] = true.into();
    s
}

/// Usernames, organisations and devices (`portcullis-core` names.rs; surrounding spaces are
/// trimmed by the server, so the document is a little stricter than the handlers).
fn name() -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" })
}

fn ports() -> Value {
    json!({ "type": "array", "minItems": 1, "items": { "type": "integer", "minimum": 1, "maximum": 65535 } })
}

/// The bounds `DevicePolicy::new` enforces.
fn policy_props() -> Value {
    json!({
        "ports": ports(),
        "approvals_required": { "type": "integer", "minimum": 1, "maximum": 2 },
        "max_window_secs": { "type": "integer", "minimum": 1, "maximum": 604_800,
                             "description": "at most a week" },
        "orgs": { "type": "array", "items": name() },
    })
}

fn errors() -> Value {
    let e = json!({ "$ref": "#/components/responses/Error" });
    json!({ "400": e, "401": e, "403": e, "404": e, "409": e, "413": e, "422": e, "423": e,
            "429": e, "503": e })
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

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": schema("Name") })
}

fn q(name: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema })
}

fn text(max: u32) -> Value {
    json!({ "type": "string", "maxLength": max })
}

/// Reusable schemas: the domain types' rules (`portcullis-core`) and the response shapes.
fn components() -> Value {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer", "format": "int64" });
    let time = schema("Time");
    json!({
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
            "description": "The session_token from POST /api/v1/auth/mfa" } },
        "responses": { "Error": ok("An error with a message a person can act on",
            obj(&["error", "code"], json!({ "error": string, "code": string }))) },
        "schemas": {
            "Name": name(),
            "Time": { "type": "string", "format": "date-time",
                      "description": "RFC 3339; years 1970 to 9999; stored in UTC" },
            "Port": { "type": "integer", "minimum": 1, "maximum": 65535 },
            "Ports": ports(),
            "Totp": { "type": "string", "pattern": "^[0-9]{6}$" },
            "Reason": { "type": "string", "minLength": 1, "maxLength": 1000 },
            "Role": { "type": "string", "enum": ["vendor", "supervisor", "auditor", "admin"] },
            "State": { "type": "string",
                       "enum": ["requested", "approved", "denied", "active", "expired", "revoked"] },
            "Request": obj(&["id", "requester", "org", "device", "ports", "window", "reason",
                             "ticket", "created_at", "state", "approvals", "closing_reason",
                             "closed_by", "seconds_left"], json!({
                "id": int, "requester": string, "org": string, "device": string,
                "ports": { "type": "array", "items": schema("Port") },
                "window": obj(&["start", "end"], json!({ "start": time, "end": time })),
                "reason": string, "ticket": nullable(string.clone()), "created_at": time,
                "state": schema("State"),
                "approvals": { "type": "array", "items": obj(&["by", "at"], json!({ "by": string, "at": time })) },
                "closing_reason": nullable(string.clone()), "closed_by": nullable(string.clone()),
                "seconds_left": nullable(json!({ "type": "integer", "minimum": 0 })),
                "ended_at": { "type": "string", "format": "date-time", "nullable": true,
                              "description": "when the broker first saw the window over (state expired, persisted)" },
            })),
            "User": obj(&["username", "role", "org", "enrolled", "failed_logins", "locked_until",
                          "disabled_at", "created_at"], json!({
                "username": string, "role": schema("Role"), "org": nullable(string.clone()),
                "enrolled": { "type": "boolean" }, "failed_logins": int,
                "locked_until": nullable(string.clone()), "disabled_at": nullable(string.clone()),
                "created_at": time, "status": { "type": "string" },
            })),
            "Site": site_schema(),
            "AuditEvent": obj(&["seq", "ts", "actor", "role", "action", "target", "grant_id",
                                "session_id", "source", "details", "prev_hash", "hash"], json!({
                "seq": int, "ts": time, "actor": string, "role": string, "action": string,
                "target": string, "grant_id": nullable(int.clone()),
                "session_id": nullable(string.clone()), "source": nullable(string.clone()),
                "details": {}, "prev_hash": string, "hash": string,
            })),
        }
    })
}

/// A site as `GET /api/v1/sites` lists it (`api/sites.rs`, `portcullis-store` sites.rs).
fn site_schema() -> Value {
    let string = json!({ "type": "string" });
    let time = schema("Time");
    let maybe_time = json!({ "type": "string", "format": "date-time", "nullable": true });
    let presence = nullable(obj(
        &[
            "connection_id",
            "relay",
            "source",
            "connected_at",
            "last_seen_at",
        ],
        json!({ "connection_id": string, "relay": string, "source": string,
                "connected_at": time, "last_seen_at": time }),
    ));
    obj(
        &[
            "name",
            "status",
            "last_seen",
            "created_at",
            "created_by",
            "enrolled_at",
            "cert_fingerprint",
            "cert_not_after",
            "revoked_at",
            "presence",
        ],
        json!({
            "name": string, "created_at": time, "created_by": string,
            "status": { "type": "string", "enum": ["not enrolled", "online", "offline", "revoked"] },
            "last_seen": maybe_time, "enrolled_at": maybe_time,
            "cert_fingerprint": nullable(string.clone()),
            "cert_not_after": maybe_time, "revoked_at": maybe_time, "presence": presence,
        }),
    )
}

/// Sites, their connectors' status, and a connector's enrollment.
fn site_paths() -> Value {
    let string = json!({ "type": "string" });
    let none = json!([]);
    let list = || {
        ok(
            "sites",
            obj(
                &["sites"],
                json!({ "sites": { "type": "array", "items": schema("Site") } }),
            ),
        )
    };
    let issued = |what: &str| {
        ok(
            what,
            obj(
                &["site", "enrollment_token", "expires_at"],
                json!({
        "site": string, "enrollment_token": string, "expires_at": schema("Time"),
        "enroll_command": string }),
            ),
        )
    };
    json!({
        "/api/v1/sites": { "get": op("Sites and whether their connectors are online (supervisors, admins, auditors)",
            json!({ "200": list() }), None, none.clone(), true) },
        "/api/v1/admin/sites": {
            "get": op("Sites", json!({ "200": list() }), None, none.clone(), true),
            "post": op("Register a site (returns its one-time enrollment token)",
                json!({ "201": issued("The site and its enrollment token, shown this once") }),
                Some(body(&["name"], json!({ "name": schema("Name") }))), none.clone(), true),
        },
        "/api/v1/admin/sites/{name}/token": { "post": op("A new one-time enrollment token (replaces an unused one)",
            json!({ "200": issued("The new enrollment token, shown this once") }), None, json!([name_param()]), true) },
        "/api/v1/admin/sites/{name}/revoke": { "post": op("Revoke a site for good: its connector is cut off",
            json!({ "200": ok("The site", schema("Site")) }), None, json!([name_param()]), true) },
        "/api/v1/connector/enroll": { "post": op("A site connector trades its one-time token and a PKCS#10 request for its certificate",
            json!({ "200": ok("The site's certificate and where the relay is", obj(
                &["site", "certificate", "ca", "relay", "relay_ca", "not_after"], json!({
                "site": string, "certificate": string, "ca": string, "relay": string,
                "relay_ca": { "type": "string", "nullable": true, "description": "PEM of the CA that signs the relay's certificate (development CA), or null" },
                "not_after": schema("Time") }))) }),
            Some(body(&["token", "csr"], json!({ "token": string,
                "csr": { "type": "string", "description": "PEM PKCS#10 request for a P-256 ECDSA or Ed25519 key" } }))),
            none, false) },
    })
}

/// Enrollment and login.
fn auth_paths() -> Value {
    let string = json!({ "type": "string" });
    let none = json!([]);
    json!({
        "/api/v1/enroll": { "post": op("Set a password and get a TOTP secret",
            json!({ "200": ok("The TOTP secret, shown this once", obj(&["otpauth_uri", "secret", "qr_svg"],
                json!({ "otpauth_uri": string, "secret": string, "qr_svg": string }))) }),
            Some(body(&["code", "password"], json!({ "code": string,
                "password": { "type": "string", "minLength": 15, "maxLength": 256 } }))), none.clone(), false) },
        "/api/v1/enroll/confirm": { "post": op("Confirm the TOTP secret with a code", json!({ "204": no_content("enrolled") }),
            Some(body(&["code", "totp"], json!({ "code": string, "totp": schema("Totp") }))), none.clone(), false) },
        "/api/v1/auth/login": { "post": op("Password step of login",
            json!({ "200": ok("A token good only for the TOTP step", obj(&["mfa_token", "expires_at"],
                json!({ "mfa_token": string, "expires_at": schema("Time") }))) }),
            Some(body(&["username", "password"], json!({ "username": string, "password": string }))), none.clone(), false) },
        "/api/v1/auth/mfa": { "post": op("TOTP step of login",
            json!({ "200": ok("The session", obj(&["session_token", "expires_at", "csrf_token", "username", "role"],
                json!({ "session_token": string, "expires_at": schema("Time"), "csrf_token": string,
                        "username": string, "role": schema("Role") }))) }),
            Some(body(&["mfa_token", "totp"], json!({ "mfa_token": string, "totp": schema("Totp") }))), none.clone(), false) },
        "/api/v1/auth/step-up": { "post": op("Fresh TOTP for approvals and tokens", json!({ "204": no_content("done") }),
            Some(body(&["totp"], json!({ "totp": schema("Totp") }))), none.clone(), true) },
        "/api/v1/auth/logout": { "post": op("End the session; relay tokens issued before are refused", json!({ "204": no_content("done") }), None, none.clone(), true) },
        "/api/v1/auth/logout-everywhere": { "post": op("End every session of the caller: web and CLI sessions, relay tokens issued before, live relay sessions",
            json!({ "200": ok("How many web and CLI sessions ended", obj(&["sessions_ended"],
                json!({ "sessions_ended": { "type": "integer", "minimum": 0 } }))) }), None, none, true) },
    })
}

/// Devices, requests, approvals, grants and relay tokens.
fn access_paths() -> Value {
    let time = schema("Time");
    let request = || ok("The request", schema("Request"));
    let none = json!([]);
    json!({
        "/api/v1/devices": { "get": op("Devices the caller may see (vendors: only what they may request, without addresses)",
            json!({ "200": ok("devices", obj(&["devices"], json!({ "devices": { "type": "array",
                "items": obj(&["name"], json!({ "name": { "type": "string" } })) } }))) }),
            None, none.clone(), true) },
        "/api/v1/requests": {
            "get": op("Requests and grants (vendors: their own)",
                json!({ "200": ok("requests", obj(&["requests"], json!({ "requests": { "type": "array", "items": schema("Request") } }))) }),
                None, json!([q("state", schema("State"))]), true),
            "post": op("Request access",
                json!({ "201": ok("The new request", obj(&["id", "state"], json!({
                    "id": { "type": "integer", "format": "int64" }, "state": schema("State") }))) }),
                Some(body(&["device", "ports", "start", "end", "reason"], json!({
                    "device": schema("Name"), "ports": schema("Ports"), "start": time, "end": time,
                    "reason": schema("Reason"), "ticket": nullable(text(100)) }))), none.clone(), true),
        },
        "/api/v1/requests/{id}": { "get": op("One request", json!({ "200": request() }), None, id_param(), true) },
        "/api/v1/requests/{id}/approve": { "post": op("Approve (after a step-up), optionally narrowing ports or window",
            json!({ "200": request() }),
            Some({
                let mut b = body(&[], json!({ "ports": nullable(ports()),
                    "start": nullable(json!({ "type": "string", "format": "date-time" })),
                    "end": nullable(json!({ "type": "string", "format": "date-time" })) }));
                b["required"] = false.into();
                b
            }), id_param(), true) },
        "/api/v1/requests/{id}/deny": { "post": op("Deny with a reason", json!({ "200": request() }),
            Some(body(&["reason"], json!({ "reason": schema("Reason") }))), id_param(), true) },
        "/api/v1/grants/{id}/revoke": { "post": op("Revoke a grant", json!({ "200": request() }),
            Some(body(&["reason"], json!({ "reason": schema("Reason") }))), id_param(), true) },
        "/api/v1/grants/{id}/token": { "post": op("Mint a relay token bound to a client certificate",
            json!({ "200": ok("The relay token", obj(&["token", "expires_at", "relay"], json!({
                "token": { "type": "string" }, "expires_at": time, "relay": { "type": "string" },
                "relay_ca": { "type": "string", "nullable": true, "description": "PEM of the CA that signs the relay's certificate (development CA), or null" } }))) }),
            Some(body(&["client_cert_sha256"], json!({ "client_cert_sha256": {
                "type": "string", "description": "SHA-256 of the client certificate: 64 hex digits, colon-separated hex or base64url" } }))),
            id_param(), true) },
        "/api/v1/keys": { "get": op("Relay-token verification keys (JWKS)",
            json!({ "200": ok("JWKS", obj(&["keys"], json!({ "keys": { "type": "array",
                "items": obj(&["kty", "kid"], json!({ "kty": { "type": "string" }, "kid": { "type": "string" } })) } }))) }),
            None, none, false) },
    })
}

/// The audit log (auditors) and administration (admins).
fn audit_admin_paths() -> Value {
    let time = schema("Time");
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer", "format": "int64" });
    let none = json!([]);
    let policy = |required: &[&str], mut props: Value| {
        if let (Some(p), Value::Object(limits)) = (props.as_object_mut(), policy_props()) {
            p.extend(limits);
        }
        body(required, props)
    };
    json!({
        "/api/v1/audit": { "get": op("Audit events, filtered and paged",
            json!({ "200": ok("events", obj(&["events", "next_after"], json!({
                "events": { "type": "array", "items": schema("AuditEvent") }, "next_after": nullable(int.clone()) }))) }),
            None, json!([
                q("since", time.clone()), q("until", time.clone()), q("actor", string.clone()), q("device", string.clone()),
                q("action", string.clone()), q("grant", int.clone()),
                q("limit", json!({ "type": "integer", "minimum": 1, "maximum": 1000 })),
                q("after", int.clone())]), true) },
        "/api/v1/audit/export": { "get": op("Export as CSV or JSON Lines",
            json!({ "200": { "description": "The events as a file", "content": {
                "text/csv": { "schema": { "type": "string" } },
                "application/x-ndjson": { "schema": { "type": "string" } } } } }),
            None, json!([
                { "name": "format", "in": "query", "required": true, "schema": { "type": "string", "enum": ["csv", "jsonl"] } },
                q("since", time.clone()), q("until", time.clone())]), true) },
        "/api/v1/audit/verify": { "get": op("Verify the hash chain and the append-only guards",
            json!({ "200": ok("result", obj(&["intact", "first_bad_seq", "message", "guards"], json!({
                "intact": { "type": "boolean" }, "first_bad_seq": nullable(int.clone()), "message": string,
                "guards": { "type": "boolean" }, "events": int, "head_seq": int, "head_hash": string }))) }),
            None, none.clone(), true) },
        "/api/v1/admin/orgs": {
            "get": op("Vendor organisations", json!({ "200": ok("orgs", obj(&["orgs"], json!({ "orgs": { "type": "array",
                "items": obj(&["name", "created_at"], json!({ "name": string, "created_at": time })) } }))) }),
                None, none.clone(), true),
            "post": op("Add an organisation", json!({ "201": no_content("created") }),
                Some(body(&["name"], json!({ "name": schema("Name") }))), none.clone(), true),
        },
        "/api/v1/admin/users": {
            "get": op("Users", json!({ "200": ok("users", obj(&["users"], json!({ "users": { "type": "array", "items": schema("User") } }))) }),
                None, none.clone(), true),
            "post": op("Add a user (returns the one-time enrollment code)",
                json!({ "201": ok("The user and the enrollment code", obj(&["username", "role", "org", "enrollment_code", "expires_at"], json!({
                    "username": string, "role": schema("Role"), "org": nullable(string.clone()),
                    "enrollment_code": string, "expires_at": time }))) }),
                Some(body(&["username", "role"], json!({ "username": schema("Name"), "role": schema("Role"),
                    "org": nullable(name()) }))), none.clone(), true),
        },
        "/api/v1/admin/users/{name}/{action}": { "post": op("disable, unlock, reset (password, TOTP, sessions and relay tokens; returns a new enrollment code) or reset-enrollment",
            json!({ "200": ok("The user, or the new enrollment code", obj(&["username"], json!({ "username": string }))) }),
            None, json!([name_param(),
                { "name": "action", "in": "path", "required": true, "schema": { "type": "string", "enum": ["disable", "unlock", "reset", "reset-enrollment"] } }]), true) },
        "/api/v1/admin/devices": { "post": op("Add a device", json!({ "201": no_content("created") }),
            Some(policy(&["name", "address", "ports"], json!({ "name": schema("Name"), "address": string,
                "device_type": text(500), "site": text(500), "owner": text(500), "vendor": text(500), "purpose": text(500),
                "data_handled": text(500), "access_method": text(500), "firmware": text(500), "support_contact": text(500),
                "criticality": nullable(json!({ "type": "string", "enum": ["low", "medium", "high"] })) }))),
            none.clone(), true) },
        "/api/v1/admin/devices/{name}/policy": { "post": op("Replace a device's policy", json!({ "204": no_content("done") }),
            Some(policy(&["ports", "approvals_required", "max_window_secs", "orgs"], json!({}))),
            json!([name_param()]), true) },
        "/api/v1/openapi.json": { "get": op("This document", json!({ "200": ok("OpenAPI 3.0", json!({ "type": "object" })) }), None, none, false) },
    })
}

pub fn spec() -> Value {
    let mut paths = auth_paths();
    for more in [
        access_paths(),
        audit_admin_paths(),
        site_paths(),
        clock_paths(),
    ] {
        if let (Some(p), Value::Object(m)) = (paths.as_object_mut(), more) {
            p.extend(m);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Portcullis API", "version": "1",
                  "description": "Time-bound vendor remote access: enrollment, MFA login, requests, approvals, relay tokens, audit, site connectors." },
        "components": components(),
        "paths": paths,
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

/// The clock monitor's status and an admin's acknowledgement (issue 12, `api/clock.rs`).
fn clock_paths() -> Value {
    let int = json!({ "type": "integer", "format": "int64" });
    let readings = obj(
        &[
            "wall_before",
            "wall_after",
            "monotonic_elapsed_ms",
            "step_ms",
            "tolerance_ms",
        ],
        json!({ "wall_before": schema("Time"), "wall_after": schema("Time"),
                "monotonic_elapsed_ms": int, "step_ms": int, "tolerance_ms": int }),
    );
    let mut maybe_readings = readings;
    maybe_readings["nullable"] = true.into();
    let sync = json!({ "type": "object", "nullable": true, "required": ["synchronised", "source", "detail"],
        "properties": { "synchronised": { "type": "boolean", "nullable": true },
                        "source": { "type": "string" }, "detail": { "type": "string" } } });
    let props = json!({
        "monitored": { "type": "boolean" },
        "state": { "type": "string", "enum": ["unknown", "ok", "anomaly"] },
        "tolerance_ms": int, "deviation_ms": int, "anomaly": maybe_readings,
        "anomaly_seq": { "type": "integer", "format": "int64", "nullable": true },
        "time_sync": sync, "wall_clock": schema("Time"), "ack_seq": int,
    });
    let status = obj(
        &[
            "monitored",
            "state",
            "tolerance_ms",
            "deviation_ms",
            "anomaly",
            "anomaly_seq",
            "time_sync",
            "wall_clock",
        ],
        props,
    );
    json!({
        "/api/v1/admin/clock": { "get": op("The clock monitor: whether the wall clock agrees with the monotonic clock (admins)",
            json!({ "200": ok("The clock's status", status.clone()) }), None, json!([]), true) },
        "/api/v1/admin/clock/ack": { "post": op("Confirm the wall clock as it is now: ends a clock anomaly (admins)",
            json!({ "200": ok("The status, and the seq of the clock.ack event", status) }), None, json!([]), true) },
    })
}
