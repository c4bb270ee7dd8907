//! Live relay sessions (issue 14, point 5) through the real router on a real SQLite store with a
//! manual clock: `GET /api/v1/sessions` (who sees what), `POST /api/v1/sessions/{id}/end` (roles,
//! step-up, CSRF, 404/409/422, the audit row and the relay's notice), and the pages: the live
//! section of the Grants and request pages, its fragment, the "End session" form and the top
//! bar's counts. Sessions are what a relay would record (`start_relay_session`, reports).

use std::ops::Deref;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use portcullis_core::{Clock, DeviceProfile, GrantId, Role};
use portcullis_store::{
    AuditQuery, GrantChange, LiveCounters, RelaySessionEnd, RelaySessionId, RelaySessionStart,
};
use serde_json::{Value, json};

use crate::helpers::{ApiResp as Resp, ApiUser, ORIGIN, PageResp, TestApp, device, spawn_app};

/// The harness with one device (plc-7, ports 502 and 80, for acme) and its people: vendor
/// vera, supervisor sam, auditor aude, admin adam, and vendor otto of the same org.
struct App {
    app: TestApp,
    vera: ApiUser,
    otto: ApiUser,
    sam: ApiUser,
    aude: ApiUser,
    adam: ApiUser,
}

impl Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

const A: &str = "rs_AAAAAAAAAAAAAAAA";
const B: &str = "rs_BBBBBBBBBBBBBBBB";

async fn app() -> App {
    let app = spawn_app().await;
    app.add_org("acme").await;
    app.add_device(device(
        "plc-7",
        "10.1.2.7",
        1,
        "acme",
        DeviceProfile::default(),
    ))
    .await;
    let vera = app.api_user("vera", Role::Vendor).await;
    let otto = app.api_user("otto", Role::Vendor).await;
    let sam = app.api_user("sam", Role::Supervisor).await;
    let aude = app.api_user("aude", Role::Auditor).await;
    let adam = app.api_user("adam", Role::Admin).await;
    App {
        app,
        vera,
        otto,
        sam,
        aude,
        adam,
    }
}

impl App {
    async fn get(&self, path: &str, who: &ApiUser) -> Resp {
        self.call(Method::GET, path, None, Some(&who.token)).await
    }

    async fn post(&self, path: &str, body: Value, who: &ApiUser) -> Resp {
        self.call(Method::POST, path, Some(body), Some(&who.token))
            .await
    }

    /// The next 30 s step's code (each works once), as a step-up.
    async fn step_up(&self, who: &ApiUser) {
        self.clock.advance(Duration::from_secs(30));
        let code = who.secret.code_at(self.unix());
        let r = self
            .post("/api/v1/auth/step-up", json!({ "totp": code }), who)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    }

    /// Vera's request for port 502 for the next two hours, approved by Sam (with a step-up).
    async fn grant(&self, vendor: &ApiUser) -> i64 {
        let now = self.clock.now();
        let body = json!({
            "device": "plc-7", "ports": [502], "start": now.to_rfc3339(),
            "end": now.saturating_add(Duration::from_secs(7200)).to_rfc3339(),
            "reason": "recipe update",
        });
        let r = self.post("/api/v1/requests", body, vendor).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["id"].as_i64().unwrap();
        self.step_up(&self.sam).await;
        let r = self
            .post(
                &format!("/api/v1/requests/{id}/approve"),
                json!({}),
                &self.sam,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        id
    }

    /// A session of `grant` as the relay records it, with a first report.
    async fn session(&self, id: &str, grant: i64, vendor: &str, bytes: u64) {
        self.store
            .start_relay_session(&RelaySessionStart {
                id: id.into(),
                relay: "relay-1".into(),
                grant: GrantId::new(grant),
                username: vendor.into(),
                device: "plc-7".into(),
                jti: format!("jti-{id}"),
                cnf: "thumb".into(),
                source: "192.0.2.7".into(),
                targets: vec!["plc-7:502".into()],
                window_end: self.clock.now().saturating_add(Duration::from_secs(7200)),
                site: None,
            })
            .await
            .unwrap();
        self.report(id, bytes).await;
    }

    async fn report(&self, id: &str, bytes: u64) {
        let modbus = json!({
            "reads": 3, "writes": 1, "refused": 1,
            "last": [
                { "at": self.clock.now(), "kind": "write", "unit": 1, "function": 6,
                  "address": 40, "quantity": 1 },
                { "at": self.clock.now(), "kind": "refused", "unit": 1, "function": 16,
                  "address": 100, "quantity": 2 },
            ],
        });
        self.store
            .report_live_sessions(&[LiveCounters {
                id: id.into(),
                open_streams: 2,
                bytes_up: bytes,
                bytes_down: 3 * bytes,
                refused_streams: 4,
                modbus,
            }])
            .await
            .unwrap();
    }

    /// The relay's end of session `id`.
    async fn end(&self, id: &str, grant: i64) {
        self.store
            .end_relay_session(&RelaySessionEnd {
                id: id.into(),
                grant: GrantId::new(grant),
                username: "vera".into(),
                device: "plc-7".into(),
                reason: "client_closed".into(),
                started_at: self.clock.now(),
                ended_at: self.clock.now(),
                bytes_up: 1,
                bytes_down: 1,
                streams: 1,
                refused_streams: 0,
                modbus: Value::Null,
                connectors: Vec::new(),
                ended_by: None,
            })
            .await
            .unwrap();
    }

    fn ids(r: &Resp) -> Vec<&str> {
        r.body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("{:?}", r.body))
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect()
    }

    async fn page(&self, path: &str, who: &ApiUser) -> PageResp {
        let req = Request::builder()
            .uri(path)
            .header(header::COOKIE, cookie(who))
            .body(Body::empty())
            .unwrap();
        self.send_page(req).await
    }

    /// A form posted by `who`'s browser, with the anti-CSRF field.
    async fn submit(&self, path: &str, who: &ApiUser, fields: &[(&str, &str)]) -> PageResp {
        let mut body = format!("csrf={}", who.csrf);
        for (k, v) in fields {
            body += &format!("&{k}={}", v.replace(' ', "+"));
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::COOKIE, cookie(who))
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send_page(req).await
    }
}

/// The browser cookie of an API-made session (one session table for both).
fn cookie(who: &ApiUser) -> String {
    format!("__Host-portcullis={}", who.token)
}

#[tokio::test]
async fn the_live_list_shows_each_session_to_those_who_may_see_it() {
    let app = app().await;
    let g = app.grant(&app.vera).await;
    let g2 = app.grant(&app.otto).await;
    app.session(A, g, "vera", 1500).await;
    app.clock.advance(Duration::from_secs(1));
    app.session(B, g2, "otto", 10).await;

    let r = app.get("/api/v1/sessions?live=true", &app.sam).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(App::ids(&r), [B, A], "newest first");
    let a = &r.body["sessions"][1];
    assert_eq!(a["grant"], g);
    assert_eq!(
        (a["vendor"].as_str(), a["device"].as_str()),
        (Some("vera"), Some("plc-7"))
    );
    assert_eq!(
        (a["source"].as_str(), a["relay"].as_str()),
        (Some("192.0.2.7"), Some("relay-1"))
    );
    assert_eq!(
        (a["open_streams"].as_u64(), a["refused"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(
        (a["bytes_up"].as_u64(), a["bytes_down"].as_u64()),
        (Some(1500), Some(4500))
    );
    assert_eq!(a["modbus"]["writes"], 1);
    assert_eq!(a["modbus"]["refused"], 1);
    assert_eq!(a["modbus"]["last"][1]["kind"], "refused");
    assert!(
        a["started_at"].is_string() && a["last_reported_at"].is_string(),
        "{a}"
    );
    assert!(
        a["ended_at"].is_null() && a["end_requested"].is_null(),
        "{a}"
    );

    // The numbers grow with the relay's reports.
    app.report(A, 9000).await;
    let r = app
        .get(&format!("/api/v1/sessions?live=true&grant={g}"), &app.sam)
        .await;
    assert_eq!(App::ids(&r), [A]);
    assert_eq!(r.body["sessions"][0]["bytes_up"], 9000);

    // Auditors and admins read everything; vendors only their own.
    for who in [&app.aude, &app.adam] {
        assert_eq!(
            App::ids(&app.get("/api/v1/sessions?live=true", who).await),
            [B, A]
        );
    }
    assert_eq!(
        App::ids(&app.get("/api/v1/sessions?live=true", &app.vera).await),
        [A]
    );
    let r = app
        .get(&format!("/api/v1/sessions?grant={g}"), &app.otto)
        .await;
    assert!(
        App::ids(&r).is_empty(),
        "not another vendor's: {:?}",
        r.body
    );

    // Without live=true: the most recent, ended ones too.
    app.end(B, g2).await;
    assert_eq!(
        App::ids(&app.get("/api/v1/sessions?live=true", &app.sam).await),
        [A]
    );
    let r = app.get("/api/v1/sessions", &app.sam).await;
    assert_eq!(App::ids(&r), [B, A]);
    assert_eq!(r.body["sessions"][0]["end_reason"], "client_closed");
    assert_eq!(
        App::ids(&app.get("/api/v1/sessions?limit=1", &app.sam).await),
        [B]
    );

    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("live=yes", "live"),
        ("grant=x", "grant"),
        ("vendor=vera", "vendor"),
    ] {
        let r = app
            .get(&format!("/api/v1/sessions?{query}"), &app.sam)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {:?}",
            r.body
        );
        assert!(
            r.body["error"].as_str().unwrap().contains(says),
            "{query}: {:?}",
            r.body
        );
    }
    let r = app.call(Method::GET, "/api/v1/sessions", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_supervisor_ends_one_session_with_a_step_up_and_it_is_audited() {
    let app = app().await;
    let g = app.grant(&app.vera).await;
    app.session(A, g, "vera", 100).await;
    app.session(B, g, "vera", 100).await;
    let mut changes = app.store.grant_changes();
    let end = |id: &str| format!("/api/v1/sessions/{id}/end");
    let why = json!({ "reason": "wrong PLC" });

    // Vendors and auditors do not end sessions, not even their own.
    for who in [&app.vera, &app.aude] {
        let r = app.post(&end(A), why.clone(), who).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    }
    // The step-up is as old as an approval may use (5 minutes): not fresh any more.
    app.clock.advance(Duration::from_secs(5 * 60));
    let r = app.post(&end(A), why.clone(), &app.sam).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_required"))
    );
    assert!(!app.actions().await.iter().any(|a| a == "session.end"));

    app.step_up(&app.sam).await;
    // A reason is required, and named when missing or wrong.
    for body in [
        json!({}),
        json!({ "reason": "" }),
        json!({ "reason": "a\u{7}b" }),
    ] {
        let r = app.post(&end(A), body.clone(), &app.sam).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
        assert!(
            r.body["error"].as_str().unwrap().contains("reason"),
            "{:?}",
            r.body
        );
    }
    let r = app
        .post(&end(A), json!({ "reason": "x", "why": "y" }), &app.sam)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown field");

    let r = app.post(&end(A), why.clone(), &app.sam).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["id"], A);
    assert_eq!(r.body["end_requested"]["by"], "sam");
    assert_eq!(r.body["end_requested"]["reason"], "wrong PLC");
    assert!(
        r.body["ended_at"].is_null(),
        "the relay ends it: {:?}",
        r.body
    );
    // The relay in this process is told at once.
    let told = changes.try_recv().unwrap();
    assert_eq!(
        told,
        GrantChange::Session(A.parse::<RelaySessionId>().unwrap())
    );

    // Audited: the supervisor, the session, its grant, the reason.
    let events = app
        .store
        .audit_events(&AuditQuery::default())
        .await
        .unwrap();
    let e = events.iter().find(|e| e.action == "session.end").unwrap();
    assert_eq!((e.actor.as_str(), e.role.as_str()), ("sam", "supervisor"));
    assert_eq!(e.target, format!("session:{A}"));
    assert_eq!(e.grant_id, Some(GrantId::new(g)));
    let d: Value = serde_json::from_str(&e.details).unwrap();
    assert_eq!(d["reason"], "wrong PLC");

    // Twice is a conflict, and so is a session already over; unknown and malformed ids differ.
    let r = app.post(&end(A), why.clone(), &app.sam).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("already being ended")
    );
    app.end(B, g).await;
    let r = app.post(&end(B), why.clone(), &app.sam).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("already over"));
    let r = app
        .post(&end("rs_CCCCCCCCCCCCCCCC"), why.clone(), &app.sam)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = app.post(&end("nonsense"), why.clone(), &app.sam).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("not a relay session id")
    );

    // The grant stays approved and active: the vendor may connect again.
    let r = app.get(&format!("/api/v1/requests/{g}"), &app.vera).await;
    assert_eq!(r.body["state"], "active");
    let ends = app.actions().await;
    assert_eq!(ends.iter().filter(|a| *a == "session.end").count(), 1);
    assert!(!ends.iter().any(|a| a == "grant.revoke"));
}

#[tokio::test]
async fn admins_may_end_sessions_and_a_cookie_needs_the_csrf_token() {
    let app = app().await;
    let g = app.grant(&app.vera).await;
    app.session(A, g, "vera", 100).await;
    // A browser's cookie without the anti-CSRF header (what another site could forge).
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/sessions/{A}/end"))
        .header(header::COOKIE, cookie(&app.adam))
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "reason": "x" }).to_string()))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("anti-CSRF"));
    // With it (and the admin's login as the step-up): ended.
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/sessions/{A}/end"))
        .header(header::COOKIE, cookie(&app.adam))
        .header(header::ORIGIN, ORIGIN)
        .header("x-csrf-token", &app.adam.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "reason": "site closed" }).to_string()))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["end_requested"]["by"], "adam");
}

#[tokio::test]
async fn the_grants_and_request_pages_show_live_sessions_and_end_one() {
    let app = app().await;
    let g = app.grant(&app.vera).await;
    app.session(A, g, "vera", 2048).await;

    let page = app.page("/grants", &app.sam).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let b = &page.body;
    assert!(b.contains(r#"data-live-src="/sessions/live""#), "{b}");
    assert!(b.contains(&format!(r#"data-session="{A}""#)), "{b}");
    assert!(
        b.contains(r#"data-bytes="2048""#) && b.contains("2.00 KiB"),
        "{b}"
    );
    assert!(b.contains("192.0.2.7") && b.contains("relay-1"), "{b}");
    assert!(b.contains("3 reads · 1 writes"), "Modbus counts: {b}");
    assert!(b.contains("refused fc 16"), "the refused write: {b}");
    assert!(b.contains(r#"data-testid="end-form""#), "{b}");
    assert!(
        !b.contains(r#"data-testid="end-totp""#),
        "a fresh step-up needs no code"
    );
    assert!(!b.contains("<script>"), "no inline script (CSP)");
    // The top bar: nothing pending, one live session.
    assert!(b.contains(r#"data-testid="attention""#), "{b}");
    assert!(b.contains("0 pending") && b.contains("1 live"), "{b}");

    // The fragment app.js polls has the same rows, with today's numbers.
    app.report(A, 5 * 1024 * 1024).await;
    let frag = app.page("/sessions/live", &app.sam).await;
    assert_eq!(frag.status, StatusCode::OK);
    assert!(
        frag.body.starts_with("<section"),
        "a fragment: {}",
        frag.body
    );
    assert!(
        frag.body.contains(r#"data-bytes="5242880""#),
        "{}",
        frag.body
    );
    assert!(frag.body.contains("5.00 MiB"));

    // The vendor sees the session on the request page, without an end form; the fragment of
    // another vendor's grant is not theirs to read.
    let mine = app.page(&format!("/requests/{g}"), &app.vera).await;
    assert!(
        mine.body
            .contains(&format!(r#"data-live-src="/sessions/live?grant={g}""#))
    );
    assert!(mine.body.contains(&format!(r#"data-session="{A}""#)));
    assert!(!mine.body.contains(r#"data-testid="end-form""#));
    assert!(
        !mine.body.contains(r#"data-testid="attention""#),
        "vendors have no counts"
    );
    let theirs = app
        .page(&format!("/sessions/live?grant={g}"), &app.otto)
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    // Ending: the reason is needed (at its input), a stale step-up needs a code (at its
    // input), and then it is done and audited.
    let path = format!("/sessions/{A}/end");
    let r = app
        .submit(&path, &app.sam, &[("back", "grants"), ("reason", "")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.field_error("reason")
            .unwrap()
            .contains("must not be empty")
    );
    app.clock.advance(Duration::from_secs(6 * 60));
    let r = app
        .submit(
            &path,
            &app.sam,
            &[("back", "grants"), ("reason", "wrong PLC")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.field_error("totp").unwrap().contains("step-up"),
        "{}",
        r.body
    );
    let stale = app.page("/grants", &app.sam).await;
    assert!(
        stale.body.contains(r#"data-testid="end-totp""#),
        "a code is asked for now"
    );
    let r = app
        .submit(
            &path,
            &app.sam,
            &[
                ("back", "grants"),
                ("reason", "wrong PLC"),
                ("totp", "000000"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.field_error("totp")
            .unwrap()
            .contains("the session goes on")
    );
    app.clock.advance(Duration::from_secs(30));
    let code = app.sam.secret.code_at(app.unix());
    let r = app
        .submit(
            &path,
            &app.sam,
            &[
                ("back", "request"),
                ("reason", "wrong PLC"),
                ("totp", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("/requests/{g}?done=session_ended"));
    let actions = app.actions().await;
    let step = actions.iter().rposition(|a| a == "auth.step_up").unwrap();
    let ended = actions.iter().position(|a| a == "session.end").unwrap();
    assert!(step < ended, "the step-up comes first: {actions:?}");
    let shown = app
        .page(&format!("/requests/{g}?done=session_ended"), &app.sam)
        .await;
    assert!(shown.body.contains("Session ended"), "{}", shown.body);
    assert!(
        shown.body.contains(r#"data-testid="ending""#),
        "{}",
        shown.body
    );
    // Again: a conflict, said on the page it came from.
    let r = app
        .submit(&path, &app.sam, &[("back", "grants"), ("reason", "again")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("already being ended"), "{}", r.body);
    // Vendors cannot post the form.
    let r = app
        .submit(&path, &app.vera, &[("back", "request"), ("reason", "x")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_top_bar_counts_pending_requests_and_live_sessions() {
    let app = app().await;
    let g = app.grant(&app.vera).await;
    let body = json!({
        "device": "plc-7", "ports": [502], "start": app.clock.now().to_rfc3339(),
        "end": app.clock.now().saturating_add(Duration::from_secs(3600)).to_rfc3339(),
        "reason": "second look",
    });
    assert_eq!(
        app.post("/api/v1/requests", body, &app.vera).await.status,
        StatusCode::CREATED
    );
    app.session(A, g, "vera", 1).await;
    app.session(B, g, "vera", 1).await;
    let sam = app.page("/queue", &app.sam).await;
    assert!(
        sam.body
            .contains(r#"<a href="/queue" data-testid="pending-count">1 pending</a>"#),
        "{}",
        sam.body
    );
    assert!(
        sam.body
            .contains(r#"<a href="/grants" data-testid="live-count">2 live</a>"#)
    );
    // Admins do not decide requests: the count is there, without a link to the queue.
    let adam = app.page("/admin/users", &app.adam).await;
    assert!(
        adam.body
            .contains(r#"<span data-testid="pending-count">1 pending</span>"#)
    );
    assert!(adam.body.contains("2 live"));
    for who in [&app.vera, &app.aude] {
        let p = app.page("/requests", who).await;
        assert!(!p.body.contains(r#"data-testid="attention""#));
    }
}

/// What `.ci/api-fuzz` checks answers against: the parameters' bounds and the 202's body.
#[tokio::test]
async fn the_openapi_document_describes_the_sessions_api() {
    let app = spawn_app().await;
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .body;
    let list = &doc["paths"]["/api/v1/sessions"]["get"];
    let params: Vec<_> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(
        params,
        [("live", "query"), ("grant", "query"), ("limit", "query")]
    );
    let limit = &list["parameters"][2]["schema"];
    assert_eq!(
        (limit["minimum"].as_u64(), limit["maximum"].as_u64()),
        (Some(1), Some(500)),
        "{limit}"
    );
    let end = &doc["paths"]["/api/v1/sessions/{id}/end"]["post"];
    assert_eq!(
        end["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RelaySession"
    );
    assert_eq!(
        end["parameters"][0]["schema"]["pattern"],
        "^rs_[A-Za-z0-9_-]{16}$"
    );
    let session = &doc["components"]["schemas"]["RelaySession"];
    let required: Vec<_> = session["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in [
        "id",
        "grant",
        "vendor",
        "device",
        "started_at",
        "source",
        "relay",
        "open_streams",
        "bytes_up",
        "bytes_down",
        "modbus",
        "refused",
        "last_reported_at",
        "ended_at",
        "end_reason",
        "end_requested",
    ] {
        assert!(
            required.contains(&field),
            "{field} is always there: {session}"
        );
    }
}
