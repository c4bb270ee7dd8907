//! The web pages through the real router (no socket) on a real SQLite store with a manual
//! clock: the forms follow the API's rules (CSRF, MFA, step-up, policy, audit), times show in
//! the plant's zone, user text is escaped, and a refused form says what is wrong at the input
//! it is about, by the label on the screen.

use std::ops::Deref;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use portcullis_auth::totp::TotpSecret;
use portcullis_core::{Clock, DeviceName, DeviceProfile, RequestState, Role, Username};
use portcullis_store::RequestFilter;
use portcullis_web::WebConfig;

use crate::helpers::{ORIGIN, PASSWORD, PageResp as Resp, TestApp, device, root, spawn_app_with};

/// A form's fields, in order.
type Form<'a> = &'a [(&'a str, &'a str)];

/// The harness with this module's plant: acme may request plc-7 and hmi-2 (dual approval).
struct App(TestApp);

impl Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

/// A logged-in browser: its session cookie and anti-CSRF token, and the TOTP secret.
struct Browser {
    cookie: String,
    csrf: String,
    secret: TotpSecret,
}

async fn app() -> App {
    app_with(|_| {}).await
}

async fn app_with(tune: impl FnOnce(&mut WebConfig)) -> App {
    let app = spawn_app_with(tune).await;
    app.add_org("acme").await;
    for (name, approvals) in [("plc-7", 1), ("hmi-2", 2)] {
        let profile = DeviceProfile {
            site: "Plant 2".into(),
            device_type: "PLC".into(),
            firmware: "v4.1".into(),
            ..Default::default()
        };
        app.add_device(device(name, "10.1.2.3", approvals, "acme", profile))
            .await;
    }
    App(app)
}

fn copy(s: &TotpSecret) -> TotpSecret {
    TotpSecret::from_base32(&s.base32()).unwrap()
}

/// `application/x-www-form-urlencoded`, percent-encoding everything but unreserved bytes.
fn encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl App {
    /// The next 30 s step (each code works once).
    fn next_code(&self, secret: &TotpSecret) -> String {
        self.clock.advance(Duration::from_secs(30));
        secret.code_at(self.unix())
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        self.send_page(req).await
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let mut req = Request::builder().method(Method::GET).uri(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Resp {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(encode(fields))).unwrap())
            .await
    }

    /// A posted form of a logged-in browser, with its anti-CSRF field.
    async fn submit(&self, b: &Browser, path: &str, fields: &[(&str, &str)]) -> Resp {
        let mut all = vec![("csrf", b.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, Some(&b.cookie), &all).await
    }

    /// Enrolls through the pages; returns the TOTP secret read from the page.
    async fn enroll(&self, code: &str) -> TotpSecret {
        let r = self.get(&format!("/enroll?code={code}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.contains(r#"data-testid="enroll-form""#));
        let r = self
            .post(
                "/enroll",
                None,
                &[
                    ("code", code),
                    ("password", PASSWORD),
                    ("confirm", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.contains("<svg"), "the QR code is inline");
        assert!(!r.body.contains("style="), "no inline style (CSP)");
        let secret =
            TotpSecret::from_base32(&r.text_after(r#"data-testid="totp-secret""#)).unwrap();
        let r = self
            .post(
                "/enroll/confirm",
                None,
                &[("code", code), ("totp", &secret.code_at(self.unix()))],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location(), "/login?done=enrolled");
        secret
    }

    /// Logs in through the two forms; returns the browser and the final response.
    async fn login(&self, name: &str, secret: TotpSecret) -> (Browser, Resp) {
        let r = self
            .post(
                "/login",
                None,
                &[("username", name), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location(), "/login/mfa");
        let mfa_cookie = r.cookies()[0].split(';').next().unwrap().to_owned();
        assert!(mfa_cookie.starts_with("__Host-portcullis-mfa="));
        let page = self.get("/login/mfa", Some(&mfa_cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        let code = self.next_code(&secret);
        let r = self
            .post(
                "/login/mfa",
                Some(&mfa_cookie),
                &[("csrf", &page.csrf()), ("totp", &code)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let cookie = r
            .cookies()
            .iter()
            .find(|c| c.starts_with("__Host-portcullis="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let home = self.get("/", Some(&cookie)).await;
        let start = self.get(home.location(), Some(&cookie)).await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.body);
        let b = Browser {
            cookie,
            csrf: start.csrf(),
            secret,
        };
        (b, r)
    }

    async fn user(&self, name: &str, role: Role) -> Browser {
        let code = self.add_user(name, role).await;
        let secret = self.enroll(&code).await;
        self.login(name, secret).await.0
    }

    /// A vendor's request through the form; returns its id.
    async fn request(&self, vendor: &Browser, device: &str, reason: &str) -> i64 {
        let before = self.requests().await.len();
        let r = self
            .submit(
                vendor,
                "/requests",
                &[
                    ("device", device),
                    ("ports", "502"),
                    ("start", "2026-11-25T09:30"),
                    ("end", "2026-11-25T10:30"),
                    ("reason", reason),
                    ("ticket", "CHG-1"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location(), "/requests?done=requested");
        let list = self.requests().await;
        assert_eq!(list.len(), before + 1);
        list[0].id
    }

    async fn requests(&self) -> Vec<portcullis_store::RequestRecord> {
        self.store
            .list_requests(&RequestFilter::default())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_login_page_shows_the_banner_escaped_with_security_headers() {
    let app = app_with(|w| w.banner = "Authorised use only <b>& audited</b>".into()).await;
    let r = app.get("/login", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body
            .contains("Authorised use only &lt;b&gt;&amp; audited&lt;/b&gt;"),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"data-testid="banner""#));
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"));
    assert!(!r.body.contains("<script>"), "no inline script");
    assert!(!r.body.contains("style="), "no inline style");
    // The assets the CSP allows are served from here.
    let css = app.get("/static/app.css", None).await;
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let js = app.get("/static/app.js", None).await;
    assert!(
        js.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.body.contains("data-deadline"));
    // Not logged in: the start page and every role page lead to the login page.
    for path in ["/", "/requests", "/queue", "/audit", "/admin/users"] {
        let r = app.get(path, None).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/login"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn enrollment_and_login_through_the_forms_set_the_cookie_with_all_flags() {
    let app = app().await;
    let code = app.add_user("vera", Role::Vendor).await;
    let secret = app.enroll(&code).await;
    // The enrollment code works once.
    let again = app.get(&format!("/enroll?code={code}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.body.contains("not valid"), "{}", again.body);

    // A wrong password and a wrong code get the one generic answer.
    let r = app
        .post(
            "/login",
            None,
            &[
                ("username", "vera"),
                ("password", "wrong password entirely"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("wrong username, password or code"));
    let r = app
        .post(
            "/login",
            None,
            &[("username", "nobody"), ("password", PASSWORD)],
        )
        .await;
    assert!(r.body.contains("wrong username, password or code"));

    let (vera, last) = app.login("vera", secret).await;
    let cookies = last.cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-portcullis="))
        .unwrap();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-portcullis-mfa=;") && c.contains("Max-Age=0")),
        "the password-stage cookie is cleared: {cookies:?}"
    );
    assert_eq!(last.location(), "/");
    let home = app.get("/", Some(&vera.cookie)).await;
    assert_eq!(home.location(), "/requests", "the vendor's start page");
    let actions = app.actions().await;
    for a in ["user.enroll", "login.fail", "login.ok"] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }

    // A password-stage cookie is not a session.
    let r = app
        .post(
            "/login",
            None,
            &[("username", "vera"), ("password", PASSWORD)],
        )
        .await;
    let mfa = r.cookies()[0]
        .split(';')
        .next()
        .unwrap()
        .replace("-mfa", "");
    assert_eq!(
        app.get("/requests", Some(&mfa)).await.status,
        StatusCode::SEE_OTHER
    );

    // Logout ends the session.
    let r = app.submit(&vera, "/logout", &[]).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/login?done=logged_out")
    );
    assert!(r.cookies()[0].contains("Max-Age=0"));
    let r = app.get("/requests", Some(&vera.cookie)).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
}

#[tokio::test]
async fn form_posts_without_or_with_a_wrong_csrf_field_are_refused_and_change_nothing() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let before = app.actions().await;
    let form = [
        ("device", "plc-7"),
        ("ports", "502"),
        ("start", "2026-11-25T09:30"),
        ("end", "2026-11-25T10:30"),
        ("reason", "recipe update"),
    ];
    let r = app.post("/requests", Some(&vera.cookie), &form).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no csrf field");
    assert!(r.body.contains("anti-CSRF"));
    let mut wrong = vec![("csrf", "0000")];
    wrong.extend_from_slice(&form);
    let r = app.post("/requests", Some(&vera.cookie), &wrong).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong csrf field");
    let r = app
        .post("/logout", Some(&vera.cookie), &[("csrf", "")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "empty csrf field");
    // Another site's form, even with the right token, is refused by the Origin check.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/requests")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::COOKIE, &vera.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(encode(
            &[&[("csrf", vera.csrf.as_str())][..], &form].concat(),
        )))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.actions().await, before, "nothing audited");
    assert!(app.requests().await.is_empty(), "nothing written");
    assert_eq!(
        app.get("/requests", Some(&vera.cookie)).await.status,
        StatusCode::OK,
        "still logged in"
    );
}

#[tokio::test]
async fn a_request_outside_the_policy_rerenders_the_form_with_the_message_and_writes_nothing() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let devices = app.get("/devices", Some(&vera.cookie)).await;
    assert!(devices.body.contains("plc-7") && devices.body.contains("hmi-2"));
    assert!(
        !devices.body.contains("10.1.2.3"),
        "vendors do not learn addresses"
    );
    let form = app
        .get("/requests/new?device=plc-7", Some(&vera.cookie))
        .await;
    assert!(form.body.contains(r#"data-testid="port-502""#));
    assert!(
        !form.body.contains(r#"data-testid="port-22""#),
        "only the policy's ports"
    );

    let before = app.actions().await.len();
    // Each message is the API's for the same mistake; one about an input is shown at it, named
    // by its label (the old pages said `ports: ...` above the form).
    let cases: [(Form, StatusCode, &str, Option<&str>); 6] = [
        (
            &[
                ("device", "plc-7"),
                ("ports", "22"),
                ("start", "2026-11-25T09:30"),
                ("end", "2026-11-25T10:30"),
                ("reason", "x"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "port 22 is not allowed on this device (allowed: 80,502)",
            Some("ports"),
        ),
        (
            &[
                ("device", "plc-7"),
                ("ports", "502"),
                ("start", "2026-11-25T10:30"),
                ("end", "2026-11-25T09:30"),
                ("reason", "x"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "at or before it starts",
            Some("window"),
        ),
        (
            &[
                ("device", "plc-7"),
                ("ports", "502"),
                ("start", "2026-11-25T09:30"),
                ("end", "2026-11-25T19:30"),
                ("reason", "x"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "longer than this device allows",
            Some("window"),
        ),
        (
            &[
                ("device", "nope"),
                ("ports", "502"),
                ("start", "2026-11-25T09:30"),
                ("end", "2026-11-25T10:30"),
                ("reason", "x"),
            ],
            StatusCode::NOT_FOUND,
            "device 'nope' does not exist",
            None,
        ),
        (
            &[
                ("device", "plc-7"),
                ("start", "2026-11-25T09:30"),
                ("end", "2026-11-25T10:30"),
                ("reason", "x"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "Ports: name at least one port",
            Some("ports"),
        ),
        (
            &[
                ("device", "plc-7"),
                ("ports", "502"),
                ("start", "tomorrow"),
                ("end", "2026-11-25T10:30"),
                ("reason", "x"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "Start: 'tomorrow' is not a date and time",
            Some("start"),
        ),
    ];
    for (fields, status, message, at) in cases {
        let r = app.submit(&vera, "/requests", fields).await;
        assert_eq!(r.status, status, "{fields:?}: {}", r.body);
        let escaped = message.replace('\'', "&#39;");
        assert!(
            r.body.contains(message) || r.body.contains(&escaped),
            "{fields:?}: {}",
            r.body
        );
        assert!(
            r.body.contains(r#"data-testid="device-picker""#),
            "the form again"
        );
        match at {
            Some(name) => {
                let shown = r
                    .field_error(name)
                    .unwrap_or_else(|| panic!("{name}: {}", r.body));
                assert!(
                    shown.contains(message) || shown.contains(&escaped),
                    "{name}: {shown}"
                );
                assert_eq!(r.messages(), (1, false), "only at the input: {}", r.body);
            }
            None => assert_eq!(r.messages(), (0, true), "above the form: {}", r.body),
        }
    }
    // The form keeps what was typed.
    let r = app.submit(&vera, "/requests", cases[0].0).await;
    assert!(r.body.contains(r#"value="2026-11-25T09:30""#), "{}", r.body);
    assert_eq!(app.actions().await.len(), before, "nothing audited");
    assert!(app.requests().await.is_empty(), "nothing written");

    let id = app.request(&vera, "plc-7", "recipe update").await;
    let mine = app
        .get("/requests?done=requested", Some(&vera.cookie))
        .await;
    assert!(mine.body.contains("Request submitted."), "flash");
    assert!(mine.body.contains(&format!(r#"data-id="{id}""#)));
}

#[tokio::test]
async fn approval_needs_a_valid_code_in_the_form_and_audits_the_step_up() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let id = app.request(&vera, "plc-7", "recipe update").await;
    let queue = app.get("/queue", Some(&sam.cookie)).await;
    assert!(
        queue.body.contains(&format!(r#"data-id="{id}""#)),
        "{}",
        queue.body
    );
    let detail = app.get(&format!("/requests/{id}"), Some(&sam.cookie)).await;
    assert!(detail.body.contains(r#"data-testid="approve-form""#));
    assert!(
        detail.body.contains("10.1.2.3") && detail.body.contains("v4.1"),
        "inventory data"
    );
    // Vendors do not approve, not even their own.
    let approve = format!("/requests/{id}/approve");
    let r = app
        .submit(&vera, &approve, &[("ports", "502"), ("totp", "123456")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let before = app.actions().await.len();
    let r = app.submit(&sam, &approve, &[("ports", "502")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no code: {}", r.body);
    assert!(r.body.contains("nothing was approved"));
    let r = app
        .submit(&sam, &approve, &[("ports", "502"), ("totp", "000000")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong code");
    let actions = app.actions().await;
    assert!(
        !actions
            .iter()
            .any(|a| a == "request.approve" || a == "auth.step_up")
    );
    assert!(
        actions[before..].iter().all(|a| a == "mfa.fail"),
        "{actions:?}"
    );
    assert_eq!(
        app.requests().await[0].request.state,
        RequestState::Requested
    );
    app.store
        .unlock_user(&root(), &Username::parse("sam").unwrap())
        .await
        .unwrap();

    // A valid code, narrowing the window to end at 10:00 (plant time is UTC here).
    let code = app.next_code(&sam.secret);
    let r = app
        .submit(
            &sam,
            &approve,
            &[
                ("ports", "502"),
                ("start", "2026-11-25T09:30"),
                ("end", "2026-11-25T10:00"),
                ("totp", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("/requests/{id}?done=approved"));
    let rec = &app.requests().await[0];
    assert_eq!(rec.request.state, RequestState::Approved);
    assert_eq!(
        rec.request.window.end.to_rfc3339(),
        "2026-11-25T10:00:00.000000Z"
    );
    let actions = app.actions().await;
    let step = actions
        .iter()
        .position(|a| a == "auth.step_up")
        .expect("step-up audited");
    let approved = actions
        .iter()
        .position(|a| a == "request.approve")
        .expect("approval audited");
    assert!(step < approved, "the step-up comes first");
    // The same code again: refused (replay), and deciding twice is a conflict anyway.
    let r = app
        .submit(&sam, &approve, &[("ports", "502"), ("totp", &code)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Once active, the grant shows a countdown; the supervisor can revoke it.
    app.clock
        .set(portcullis_core::Timestamp::parse_rfc3339("2026-11-25T09:40:00Z").unwrap());
    // Both sessions have been idle for over 30 minutes by now: log in again.
    let vera = app.login("vera", copy(&vera.secret)).await.0;
    let sam = app.login("sam", copy(&sam.secret)).await.0;
    let mine = app.get("/requests", Some(&vera.cookie)).await;
    assert!(
        mine.body
            .contains(r#"data-deadline="2026-11-25T10:00:00Z""#),
        "{}",
        mine.body
    );
    let end = portcullis_core::Timestamp::parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
    let left = end.duration_since(app.clock.now()).as_secs();
    assert!(
        mine.body.contains(&format!(r#"data-seconds="{left}""#)),
        "counted from the server's clock"
    );
    let grants = app.get("/grants", Some(&sam.cookie)).await;
    assert!(grants.body.contains(&format!(r#"data-id="{id}""#)));
    let r = app
        .submit(&sam, &format!("/grants/{id}/revoke"), &[("reason", "")])
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is needed"
    );
    let r = app
        .submit(
            &sam,
            &format!("/grants/{id}/revoke"),
            &[("reason", "done early")],
        )
        .await;
    assert_eq!(r.location(), "/grants?done=revoked");
    assert_eq!(app.requests().await[0].request.state, RequestState::Revoked);
}

#[tokio::test]
async fn dual_approval_and_deny_through_the_forms() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let sue = app.user("sue", Role::Supervisor).await;
    let id = app.request(&vera, "hmi-2", "panel update").await;
    let approve = format!("/requests/{id}/approve");
    let code = app.next_code(&sam.secret);
    let r = app
        .submit(&sam, &approve, &[("ports", "502"), ("totp", &code)])
        .await;
    assert_eq!(
        r.location(),
        format!("/requests/{id}?done=approval_recorded")
    );
    let code = app.next_code(&sam.secret);
    let r = app
        .submit(&sam, &approve, &[("ports", "502"), ("totp", &code)])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "the same supervisor twice");
    assert!(r.body.contains("second, different supervisor"));
    let code = app.next_code(&sue.secret);
    let r = app
        .submit(&sue, &approve, &[("ports", "502"), ("totp", &code)])
        .await;
    assert_eq!(r.location(), format!("/requests/{id}?done=approved"));

    let other = app.request(&vera, "plc-7", "second").await;
    let r = app
        .submit(
            &sam,
            &format!("/requests/{other}/deny"),
            &[("reason", "not today")],
        )
        .await;
    assert_eq!(r.location(), "/queue?done=denied");
    let rec = app.store.request(other).await.unwrap().unwrap();
    assert_eq!(rec.request.state, RequestState::Denied);
}

#[tokio::test]
async fn times_show_and_are_read_in_the_plant_time_zone() {
    let app = app_with(|w| w.time_zone = "Europe/Berlin".into()).await;
    let vera = app.user("vera", Role::Vendor).await;
    // 10:00 in Berlin in November (CET, UTC+1) is 09:00 UTC.
    let r = app
        .submit(
            &vera,
            "/requests",
            &[
                ("device", "plc-7"),
                ("ports", "502"),
                ("start", "2026-11-25T10:00"),
                ("end", "2026-11-25T11:30"),
                ("reason", "x"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let rec = &app.requests().await[0];
    assert_eq!(
        rec.request.window.start.to_rfc3339(),
        "2026-11-25T09:00:00.000000Z"
    );
    assert_eq!(
        rec.request.window.end.to_rfc3339(),
        "2026-11-25T10:30:00.000000Z"
    );
    let page = app.get("/requests", Some(&vera.cookie)).await;
    assert!(page.body.contains("2026-11-25 10:00 CET"), "{}", page.body);
    assert!(page.body.contains("2026-11-25 11:30 CET"));
    assert!(page.body.contains("Window (Europe/Berlin)"));
    // The form's default start is now (08:00 UTC) in plant time.
    let form = app
        .get("/requests/new?device=plc-7", Some(&vera.cookie))
        .await;
    assert!(
        form.body.contains(r#"value="2026-11-25T09:0"#),
        "{}",
        form.body
    );
    // A local time that does not exist (clocks jump 02:00 -> 03:00) is refused, not guessed.
    let r = app
        .submit(
            &vera,
            "/requests",
            &[
                ("device", "plc-7"),
                ("ports", "502"),
                ("start", "2027-03-28T02:30"),
                ("end", "2027-03-28T04:00"),
                ("reason", "x"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("daylight saving"), "{}", r.body);
    assert!(portcullis_web::pages::check_time_zone("Europe/Berlin").is_ok());
    assert!(portcullis_web::pages::check_time_zone("Mars/Olympus").is_err());
    // Summer time is UTC+2.
    app.clock
        .set(portcullis_core::Timestamp::parse_rfc3339("2027-07-01T06:00:00Z").unwrap());
    let code = app.add_user("ann", Role::Auditor).await;
    let secret = app.enroll(&code).await;
    let (ann, _) = app.login("ann", secret).await;
    let log = app.get("/audit?action=login.ok", Some(&ann.cookie)).await;
    assert!(log.body.contains("2027-07-01 08:00 CEST"), "{}", log.body);
    // Audit filters are plant time too: since 08:00 CEST is 06:00 UTC.
    let log = app
        .get(
            "/audit?since=2027-07-01T08%3A00&action=login.ok",
            Some(&ann.cookie),
        )
        .await;
    assert_eq!(
        log.body.matches(r#"data-testid="event-row""#).count(),
        1,
        "{}",
        log.body
    );
}

#[tokio::test]
async fn pages_escape_user_controlled_text() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let id = app
        .request(&vera, "plc-7", "<script>alert(1)</script>")
        .await;
    for (who, path) in [
        (&vera, "/requests".to_owned()),
        (&sam, format!("/requests/{id}")),
        (&sam, "/queue".to_owned()),
    ] {
        let r = app.get(&path, Some(&who.cookie)).await;
        assert!(
            r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            r.body
        );
        assert!(!r.body.contains("<script>alert(1)"), "{path}");
    }
}

#[tokio::test]
async fn auditors_see_filter_export_and_verify_the_log() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let id = app.request(&vera, "plc-7", "recipe update").await;
    let ann = app.user("ann", Role::Auditor).await;
    let log = app.get("/audit", Some(&ann.cookie)).await;
    assert_eq!(log.status, StatusCode::OK);
    for a in ["user.add", "user.enroll", "login.ok", "request.create"] {
        assert!(log.body.contains(&format!(r#"data-action="{a}""#)), "{a}");
    }
    let only = app
        .get("/audit?action=request.create&actor=vera", Some(&ann.cookie))
        .await;
    assert_eq!(only.body.matches(r#"data-testid="event-row""#).count(), 1);
    let bad = app.get("/audit?since=yesterday", Some(&ann.cookie)).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let since = bad
        .field_error("since")
        .expect("the message at the Since input");
    assert!(since.starts_with("Since: 'yesterday' is not"), "{since}");
    let timeline = app
        .get(&format!("/audit/grant/{id}"), Some(&ann.cookie))
        .await;
    assert!(timeline.body.contains(r#"data-action="request.create""#));
    assert!(log.body.contains("/api/v1/audit/export?format=csv"));
    let csv = app
        .get("/api/v1/audit/export?format=csv", Some(&ann.cookie))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let v = app.get("/audit/verify", Some(&ann.cookie)).await;
    assert!(v.body.contains(r#"data-intact="true""#), "{}", v.body);
    // Without a signed checkpoint the page says what that leaves unchecked.
    assert!(
        v.body
            .contains("none signed yet: events cut from the end of the log would not be seen"),
        "{}",
        v.body
    );
    // Others do not read the log.
    assert_eq!(
        app.get("/audit", Some(&vera.cookie)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn admins_add_users_orgs_and_devices_through_the_forms() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let r = app
        .submit(&adam, "/admin/orgs", &[("name", "globex")])
        .await;
    assert_eq!(r.location(), "/admin/orgs?done=org_added");
    let r = app
        .submit(
            &adam,
            "/admin/users",
            &[("username", "gina"), ("role", "vendor"), ("org", "globex")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let code = r.text_after(r#"data-testid="enrollment-code""#);
    assert!(r.body.contains(&format!("{ORIGIN}/enroll?code={code}")));
    let again = app.get("/admin/users", Some(&adam.cookie)).await;
    assert!(!again.body.contains(&code), "the code is shown once");
    let r = app
        .submit(
            &adam,
            "/admin/users",
            &[("username", "gina"), ("role", "vendor"), ("org", "globex")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already exists"));

    let device = [
        ("name", "rtu-9"),
        ("address", "10.0.0.9"),
        ("criticality", "high"),
        ("device_type", "RTU"),
        ("site", "Plant 1"),
        ("ports", "502, 20000"),
        ("max_window", "2h"),
        ("approvals", "1"),
        ("orgs", "globex"),
    ];
    let r = app.submit(&adam, "/admin/devices", &device).await;
    assert_eq!(
        r.location(),
        "/admin/devices?done=device_added",
        "{}",
        r.body
    );
    let mut bad = device.to_vec();
    bad[0] = ("name", "rtu-10");
    bad[5] = ("ports", "0");
    let r = app.submit(&adam, "/admin/devices", &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("0 is not a TCP port"), "{}", r.body);
    let r = app
        .submit(
            &adam,
            "/admin/devices/rtu-9",
            &[
                ("ports", "502"),
                ("max_window", "1h"),
                ("approvals", "2"),
                ("orgs", "globex"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/admin/devices/rtu-9?done=policy_saved");
    let d = app
        .store
        .device(&DeviceName::parse("rtu-9").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.policy.approvals_required, d.policy.max_window),
        (2, Duration::from_secs(3600))
    );

    let r = app.submit(&adam, "/admin/users/gina/disable", &[]).await;
    assert_eq!(r.location(), "/admin/users?done=user_disabled");
    let r = app
        .submit(&adam, "/admin/users/gina/reset-enrollment", &[])
        .await;
    assert!(r.body.contains(r#"data-testid="enrollment-code""#));
    let actions = app.actions().await;
    for a in [
        "org.add",
        "user.add",
        "device.add",
        "device.set_policy",
        "user.disable",
        "user.reset_enrollment",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a}");
    }
    // Admins do not approve or audit.
    assert_eq!(
        app.get("/queue", Some(&adam.cookie)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/audit", Some(&adam.cookie)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn admins_manage_sites_and_supervisors_see_connector_status() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let page = app.get("/admin/sites", Some(&adam.cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"href="/admin/sites""#),
        "in the navigation"
    );
    assert!(page.body.contains(r#"data-testid="no-sites""#));
    let queue = app.get("/queue", Some(&sam.cookie)).await;
    assert!(queue.body.contains("Site connectors"), "{}", queue.body);
    assert!(queue.body.contains(r#"data-testid="no-sites""#));

    let r = app
        .submit(&adam, "/admin/sites", &[("name", "plant-2")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.text_after(r#"data-testid="site-token""#);
    assert!(token.starts_with("pcs_"), "{token}");
    assert!(
        r.body.contains(&format!(
            "portcullis connector enroll --url {ORIGIN} --token {token}"
        )),
        "{}",
        r.body
    );
    let again = app.get("/admin/sites", Some(&adam.cookie)).await;
    assert!(!again.body.contains(&token), "the token is shown once");
    assert!(again.body.contains("not enrolled"));
    let bad = app
        .submit(&adam, "/admin/sites", &[("name", "Plant <2>")])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("Plant &lt;2&gt;"),
        "typed name kept, escaped"
    );
    let dup = app
        .submit(&adam, "/admin/sites", &[("name", "plant-2")])
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup.body.contains("already exists"));

    // A connector enrolls and connects: the supervisor sees it online, then offline.
    let until = app.clock.now().saturating_add(Duration::from_secs(86_400));
    app.store
        .enroll_site(
            &token,
            "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg",
            until,
            None,
        )
        .await
        .unwrap();
    let now = app.clock.now();
    app.store
        .connector_online(
            "plant-2",
            &portcullis_store::ConnectorPresence {
                connection_id: "c1".into(),
                relay: "relay".into(),
                source: "192.0.2.7:50000".into(),
                connected_at: now,
                last_seen_at: now,
            },
        )
        .await
        .unwrap();
    let queue = app.get("/queue", Some(&sam.cookie)).await;
    assert!(
        queue.body.contains(r#"data-site="plant-2""#),
        "{}",
        queue.body
    );
    assert!(queue.body.contains("site-online"), "{}", queue.body);
    assert!(queue.body.contains("UTC"), "last seen in the plant's zone");
    app.clock.advance(Duration::from_secs(60));
    let queue = app.get("/queue", Some(&sam.cookie)).await;
    assert!(queue.body.contains("site-offline"), "{}", queue.body);
    let list = app.get("/admin/sites", Some(&adam.cookie)).await;
    assert!(list.body.contains("n4bQgYhMfWWa…"), "fingerprint prefix");

    let r = app.submit(&adam, "/admin/sites/plant-2/token", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let second = r.text_after(r#"data-testid="site-token""#);
    assert_ne!(second, token);
    // No anti-CSRF field: refused, nothing revoked.
    let forged = app
        .post("/admin/sites/plant-2/revoke", Some(&adam.cookie), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let r = app.submit(&adam, "/admin/sites/plant-2/revoke", &[]).await;
    assert_eq!(r.location(), "/admin/sites?done=site_revoked");
    let list = app.get(r.location(), Some(&adam.cookie)).await;
    assert!(list.body.contains("site-revoked"));
    assert!(list.body.contains("Site revoked"));
    let again = app.submit(&adam, "/admin/sites/plant-2/revoke", &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already revoked"));

    assert_eq!(
        app.get("/admin/sites", Some(&sam.cookie)).await.status,
        StatusCode::FORBIDDEN
    );
    let actions = app.actions().await;
    for a in ["site.add", "site.enroll", "site.token", "site.revoke"] {
        assert!(actions.iter().any(|x| x == a), "{a}");
    }
}

/// Issue 12: the pages' "Log out everywhere" button ends every session of the user, and the
/// admin Users page resets an account (new enrollment code, sessions ended, `user.reset`).
#[tokio::test]
async fn log_out_everywhere_and_the_admin_reset_through_the_forms() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let (other, _) = app.login("vera", copy(&vera.secret)).await;
    let page = app.get("/requests", Some(&vera.cookie)).await;
    assert!(
        page.body.contains(r#"action="/logout-everywhere""#),
        "{}",
        page.body
    );
    let r = app.submit(&vera, "/logout-everywhere", &[]).await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/login?done=logged_out_everywhere")
    );
    assert!(r.cookies()[0].contains("Max-Age=0"));
    for b in [&vera, &other] {
        let r = app.get("/requests", Some(&b.cookie)).await;
        assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    }
    let nb = app
        .store
        .not_before(&Username::parse("vera").unwrap())
        .await
        .unwrap();
    assert!(nb.tokens.is_some() && nb.sessions.is_some(), "{nb:?}");

    let adam = app.user("adam", Role::Admin).await;
    let (vera, _) = app.login("vera", copy(&vera.secret)).await;
    let users = app.get("/admin/users", Some(&adam.cookie)).await;
    assert!(
        users.body.contains(r#"data-testid="reset-vera""#),
        "{}",
        users.body
    );
    let r = app.submit(&adam, "/admin/users/vera/reset", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains(r#"data-testid="enrollment-code""#));
    let r = app.get("/requests", Some(&vera.cookie)).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    let actions = app.actions().await;
    for a in ["logout.everywhere", "user.reset"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

/// Issue 13: a refused policy says what is wrong at the input, by the label on the screen
/// ("Longest window: ..."), not as the CLI's `max-window: ...` above the form; what was typed
/// stays, and nothing is saved.
#[tokio::test]
async fn a_refused_policy_names_the_field_by_its_label_next_to_its_input() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let policy = |window: &'static str| {
        [
            ("ports", "502"),
            ("max_window", window),
            ("approvals", "1"),
            ("orgs", "acme"),
        ]
    };
    let before = app.actions().await.len();
    for (window, why) in [
        (
            "30d",
            "Longest window: 30days is longer than the limit of 7days",
        ),
        (
            "soon",
            "Longest window: 'soon' is not a duration such as 8h, 30m or 1h30m",
        ),
        ("0s", "Longest window: must be longer than zero"),
    ] {
        let r = app
            .submit(&adam, "/admin/devices/plc-7", &policy(window))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(
            r.field_error("max_window").as_deref(),
            Some(why),
            "{}",
            r.body
        );
        assert_eq!(r.messages(), (1, false), "at the input only: {}", r.body);
        assert!(!r.body.contains("max-window"), "no CLI flag: {}", r.body);
        assert!(
            r.body
                .contains(&format!(r#"name="max_window" value="{window}""#)),
            "what was typed stays"
        );
    }
    let r = app
        .submit(
            &adam,
            "/admin/devices/plc-7",
            &[
                ("ports", "502, x"),
                ("max_window", "2h"),
                ("approvals", "1"),
            ],
        )
        .await;
    assert_eq!(
        r.field_error("ports").as_deref(),
        Some("Allowed ports: 'x' is not a port number (1..65535)")
    );
    // The add-device form places its messages the same way, inventory fields included.
    let device = [
        ("name", "rtu-9"),
        ("address", "not an address!"),
        ("ports", "502"),
        ("max_window", "2h"),
        ("approvals", "1"),
    ];
    let r = app.submit(&adam, "/admin/devices", &device).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let shown = r.field_error("address").expect("at the address");
    assert!(shown.starts_with("Address: "), "{shown}");
    let mut long = device.to_vec();
    long[1] = ("address", "10.0.0.9");
    let firmware = "v".repeat(501);
    long.push(("firmware", &firmware));
    let r = app.submit(&adam, "/admin/devices", &long).await;
    assert_eq!(
        r.field_error("firmware").as_deref(),
        Some("Firmware: is longer than 500 characters"),
        "a store refusal at its input too"
    );
    assert_eq!(
        app.actions().await.len(),
        before,
        "nothing saved or audited"
    );
    let d = app
        .store
        .device(&DeviceName::parse("plc-7").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.policy.max_window, Duration::from_secs(4 * 3600));
}

/// Issue 13: the organisation forms speak of the web pages, never of `--org`: a bad name is
/// named by its label at the input, and a vendor without an organisation is told where to
/// choose or add one.
#[tokio::test]
async fn organisation_errors_name_the_field_and_speak_of_the_pages() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let r = app
        .submit(&adam, "/admin/orgs", &[("name", "Globex <Corp>")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let shown = r.field_error("name").expect("at the name");
    assert!(
        shown.starts_with("Name: 'Globex &lt;Corp&gt;' may use only lowercase letters"),
        "{shown}"
    );
    assert_eq!(r.messages(), (1, false));
    assert!(
        r.body.contains(r#"value="Globex &lt;Corp&gt;""#),
        "kept, escaped"
    );
    let r = app.submit(&adam, "/admin/orgs", &[("name", "")]).await;
    assert_eq!(
        r.field_error("name").as_deref(),
        Some("Name: must not be empty")
    );

    // A vendor without an organisation: the store's refusal names the CLI's flag, the page's
    // names the select.
    let r = app
        .submit(
            &adam,
            "/admin/users",
            &[("username", "gina"), ("role", "vendor"), ("org", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let shown = r.field_error("org").expect("at the organisation");
    assert!(
        shown.starts_with("Organisation: a vendor must belong to an organisation"),
        "{shown}"
    );
    assert!(!r.body.contains("--org"), "{}", r.body);
    assert!(r.body.contains(r#"value="gina""#), "the name typed stays");
    let r = app
        .submit(
            &adam,
            "/admin/users",
            &[("username", "Gina"), ("role", "vendor"), ("org", "acme")],
        )
        .await;
    let shown = r.field_error("username").expect("at the username");
    assert!(shown.starts_with("Username: 'Gina'"), "{shown}");
    // A supervisor's organisation select is ignored, not refused with a CLI hint.
    let r = app
        .submit(
            &adam,
            "/admin/users",
            &[("username", "sue"), ("role", "supervisor"), ("org", "acme")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains(r#"data-testid="enrollment-code""#));

    // With no organisation at all, the page says where to add one.
    let bare = App(crate::helpers::spawn_app().await);
    let adam = bare.user("adam", Role::Admin).await;
    let r = bare
        .submit(
            &adam,
            "/admin/users",
            &[("username", "gina"), ("role", "vendor"), ("org", "")],
        )
        .await;
    let shown = r.field_error("org").expect("at the organisation");
    assert!(shown.contains("on the Organisations page"), "{shown}");
    assert!(!r.body.contains("--org"));
}

/// Issue 13: enrollment is one implementation for the API and the pages; the pages put each
/// refusal at its input, the API keeps its words and status codes.
#[tokio::test]
async fn enrollment_errors_sit_at_their_inputs_and_the_api_keeps_its_words() {
    let app = app().await;
    let code = app.add_user("vera", Role::Vendor).await;
    let r = app.get("/enroll?code=not-a-code", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let shown = r.field_error("code").expect("at the code");
    assert!(
        shown.starts_with("Enrollment code: this enrollment code is not valid"),
        "{shown}"
    );

    let enroll = |pw: &'static str, again: &'static str| {
        [
            ("code", code.clone()),
            ("password", pw.into()),
            ("confirm", again.into()),
        ]
    };
    let pages = &app;
    let post = |fields: [(&'static str, String); 3]| async move {
        let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pages.post("/enroll", None, &f).await
    };
    let r = post(enroll(PASSWORD, "correct horse plant eight")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.field_error("confirm").as_deref(),
        Some("Password again: the two passwords differ")
    );
    let r = post(enroll("short", "short")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let shown = r.field_error("password").expect("at the password");
    assert!(
        shown.starts_with("Password: the password must be at least 15"),
        "{shown}"
    );
    assert_eq!(r.messages(), (1, false));

    // Confirming before a password: the API's 409 and words, the page's own words.
    let early = serde_json::json!({ "code": code, "totp": "123456" });
    let r = app
        .call(Method::POST, "/api/v1/enroll/confirm", Some(early), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["error"],
        "set a password first (POST /api/v1/enroll)"
    );
    let r = app
        .post(
            "/enroll/confirm",
            None,
            &[("code", &code), ("totp", "123456")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(!r.body.contains("POST /api"), "{}", r.body);

    let r = post(enroll(PASSWORD, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret = TotpSecret::from_base32(&r.text_after(r#"data-testid="totp-secret""#)).unwrap();
    let wrong = secret.code_at(app.unix() + 300);
    let r = app
        .post(
            "/enroll/confirm",
            None,
            &[("code", &code), ("totp", &wrong)],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let shown = r.field_error("totp").expect("at the code");
    assert!(
        shown.starts_with("Code: that code does not match"),
        "{shown}"
    );
    assert!(
        r.body.contains(&secret.base32()),
        "the same secret, shown again"
    );
    // The API's answer to the same mistake is unchanged.
    let body = serde_json::json!({ "code": code, "totp": wrong });
    let r = app
        .call(Method::POST, "/api/v1/enroll/confirm", Some(body), None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.body["error"],
        "that code does not match; check the authenticator app's clock"
    );
    let r = app
        .post(
            "/enroll/confirm",
            None,
            &[("code", &code), ("totp", &secret.code_at(app.unix()))],
        )
        .await;
    assert_eq!(r.location(), "/login?done=enrolled");
}

/// Page forms are read into typed bodies: a field the page does not have is refused (422), not
/// ignored, and the anti-CSRF check still comes first.
#[tokio::test]
async fn a_form_with_an_unknown_field_is_refused_after_the_csrf_check() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let before = app.actions().await;
    let r = app
        .submit(&adam, "/admin/orgs", &[("name", "globex"), ("nmae", "x")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app
        .post(
            "/admin/orgs",
            Some(&adam.cookie),
            &[("name", "globex"), ("nmae", "x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(app.actions().await, before, "nothing added or audited");
}

#[tokio::test]
async fn write_access_is_asked_for_shown_bold_and_narrowed_to_read_in_the_forms() {
    use portcullis_core::{Access, Port, Protocol, WritePolicy, WriteScope};
    let app = app().await;
    let plc = DeviceName::parse("plc-7").unwrap();
    let policy = app
        .store
        .device(&plc)
        .await
        .unwrap()
        .unwrap()
        .policy
        .with_protocols(
            [(Port::new(502).unwrap(), Protocol::Modbus)].into(),
            WritePolicy::Allowed,
            WriteScope::default(),
        )
        .unwrap();
    app.store
        .set_device_policy(&root(), &plc, &policy)
        .await
        .unwrap();
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;

    let form = app
        .get("/requests/new?device=plc-7", Some(&vera.cookie))
        .await;
    assert!(form.body.contains("502 (modbus)"), "{}", form.body);
    assert!(
        form.body.contains(r#"name="access""#),
        "the access choice is offered"
    );
    let r = app
        .submit(
            &vera,
            "/requests",
            &[
                ("device", "plc-7"),
                ("ports", "502"),
                ("ports", "80"),
                ("start", "2026-11-25T09:30"),
                ("end", "2026-11-25T10:30"),
                ("reason", "load recipe 12"),
                ("access", "write"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let id = app.requests().await[0].id;
    assert_eq!(app.requests().await[0].request.access, Access::Write);

    // The supervisor sees the write, per port, and may narrow it.
    let detail = app.get(&format!("/requests/{id}"), Some(&sam.cookie)).await;
    assert!(
        detail.body.contains(r#"data-mode="modbus-write""#) && detail.body.contains("access-write"),
        "{}",
        detail.body
    );
    assert!(
        detail.body.contains(r#"data-mode="tcp""#),
        "port 80 is raw TCP"
    );
    assert!(detail.body.contains(r#"data-testid="approve-access-read""#));
    let queue = app.get("/queue", Some(&sam.cookie)).await;
    assert!(
        queue.body.contains("access-write"),
        "the queue shows the write"
    );
    let code = app.next_code(&sam.secret);
    let r = app
        .submit(
            &sam,
            &format!("/requests/{id}/approve"),
            &[
                ("ports", "502"),
                ("ports", "80"),
                ("access", "read"),
                ("totp", &code),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let rec = &app.requests().await[0];
    assert_eq!(rec.request.state, RequestState::Approved);
    assert_eq!(rec.request.access, Access::Read, "narrowed to read");
    let page = app
        .get(&format!("/requests/{id}"), Some(&vera.cookie))
        .await;
    assert!(
        page.body.contains(r#"data-mode="modbus-read""#),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_person_sets_their_own_contact_details_after_a_step_up() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let page = app.get("/account", Some(&vera.cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(r#"data-testid="account-form""#));
    // The login's code is no longer fresh: the form asks for one.
    app.clock.advance(Duration::from_secs(6 * 60));
    let page = app.get("/account", Some(&vera.cookie)).await;
    assert!(
        page.body.contains(r#"data-testid="account-totp""#),
        "{}",
        page.body
    );
    let name = Username::parse("vera").unwrap();
    let fields = |email: &'static str, code: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("email", email),
            ("time_zone", "Europe/Berlin"),
            ("totp", code),
        ]
    };
    // No code: refused at the code's input, nothing changed.
    let r = app
        .submit(&vera, "/account", &fields("vera@acme.example", ""))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.field_error("totp").is_some(), "{}", r.body);
    // A bad address: refused at its input before a code is spent.
    let code = app.next_code(&vera.secret);
    let code: &'static str = Box::leak(code.into_boxed_str());
    let r = app
        .submit(&vera, "/account", &fields("vera at acme", code))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.field_error("email").is_some(), "{}", r.body);
    assert!(
        app.store
            .user(&name)
            .await
            .unwrap()
            .unwrap()
            .email
            .is_none()
    );
    let r = app
        .submit(&vera, "/account", &fields("vera@acme.example", code))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/account?done=account_saved");
    let u = app.store.user(&name).await.unwrap().unwrap();
    assert_eq!(u.email.unwrap().as_str(), "vera@acme.example");
    assert_eq!(u.time_zone.unwrap().as_str(), "Europe/Berlin");
    let set = app
        .store
        .audit_events(&portcullis_store::AuditQuery {
            action: Some("user.set".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].actor, "vera", "the owner changed it");
    // Her pages now show her own zone, while the plant's stays UTC.
    app.request(&vera, "plc-7", "zone check").await;
    let list = app.get("/requests", Some(&vera.cookie)).await;
    assert!(
        list.body.contains("Window (Europe/Berlin)"),
        "{}",
        list.body
    );
    assert!(list.body.contains("10:30 CET"), "{}", list.body);
}

#[tokio::test]
async fn admins_see_failed_deliveries_retry_them_and_set_addresses() {
    use portcullis_core::audit::{ActorRole, AuditDraft};
    use portcullis_store::{Channel, NewDelivery};
    let app = app().await;
    let ada = app.user("ada", Role::Admin).await;
    app.add_user("sam", Role::Supervisor).await;
    // A delivery that has used up its tries.
    let ev = app
        .store
        .append(AuditDraft::new(
            "portcullis",
            ActorRole::System,
            "alert.restart",
        ))
        .await
        .unwrap();
    let n = app.store.unrouted_notices(10).await.unwrap();
    assert_eq!(n[0].event_seq, Some(ev.seq));
    let d = NewDelivery {
        channel: Channel::Email,
        recipient: "ada@plant.example".into(),
        recipient_user: Some("ada".into()),
        subject: "[Portcullis] Alert: <restart>".into(),
        body: "x".into(),
    };
    assert!(app.store.route_notice(n[0].id, &[d]).await.unwrap());
    let claimed = app
        .store
        .claim_deliveries(Duration::from_secs(60), 10)
        .await
        .unwrap();
    app.store
        .mark_delivery_failed(claimed[0].id, "SMTP: connection refused", None)
        .await
        .unwrap();
    let page = app
        .get("/admin/outbox?state=failed", Some(&ada.cookie))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("SMTP: connection refused"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Alert: &lt;restart&gt;"),
        "escaped: {}",
        page.body
    );
    assert!(page.body.contains(r#"data-state="failed""#));
    let id = claimed[0].id.to_string();
    let r = app
        .submit(&ada, &format!("/admin/outbox/{id}/retry"), &[])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = app.get("/admin/outbox", Some(&ada.cookie)).await;
    assert!(
        page.body.contains(r#"data-state="pending""#),
        "{}",
        page.body
    );
    // Others may not look.
    let sam_browser = app.get("/admin/outbox", None).await;
    assert_ne!(sam_browser.status, StatusCode::OK);
    // An address from the users page.
    let r = app
        .submit(
            &ada,
            "/admin/users/sam/email",
            &[("email", "sam@plant.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let users = app.get("/admin/users", Some(&ada.cookie)).await;
    assert!(
        users.body.contains(r#"value="sam@plant.example""#),
        "{}",
        users.body
    );
}

#[tokio::test]
async fn the_queue_says_when_its_list_has_changed() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let key = |body: &str| {
        body.split("data-refresh-key=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    };
    let before = key(&app.get("/queue", Some(&sam.cookie)).await.body);
    let again = key(&app.get("/queue", Some(&sam.cookie)).await.body);
    assert_eq!(before, again, "an unchanged queue is never reloaded");
    let id = app.request(&vera, "plc-7", "refresh check").await;
    let after = key(&app.get("/queue", Some(&sam.cookie)).await.body);
    assert_ne!(before, after);
    assert!(after.contains(&format!("{id}:requested")), "{after}");
}
