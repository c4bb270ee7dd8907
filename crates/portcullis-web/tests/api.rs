//! The JSON API against SECURITY.md, through the real router (no socket) on a real SQLite store
//! with a manual clock. Every test here would fail if its rule broke.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use portcullis_auth::token::{KeyRing, TokenVerifier, thumbprint};
use portcullis_auth::totp::{TotpKey, TotpSecret};
use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::{
    Clock, Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName,
    Port, Role, Username,
};
use portcullis_store::{AuditActor, AuditQuery, NewUser, Store, StoreConfig};
use portcullis_testkit::{ManualClock, TestDb};
use portcullis_web::{AppState, WebConfig, WebKeys, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const ORIGIN: &str = "https://portcullis.test";
const PASSWORD: &str = "correct horse plant seven";

struct App {
    router: Router,
    store: Store,
    clock: Arc<ManualClock>,
    _db: TestDb,
    _keys: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// A logged-in user: the session token and the TOTP secret that produces codes.
struct User {
    name: String,
    token: String,
    csrf: String,
    secret: TotpSecret,
}

async fn app() -> App {
    app_with(|w| w.login_rate_per_minute = 1000).await
}

async fn app_with(tune: impl FnOnce(&mut WebConfig)) -> App {
    let db = TestDb::sqlite();
    let clock = Arc::new(ManualClock::at("2026-11-25T08:00:00Z"));
    let mut config = StoreConfig::new(MacKey::new([1; 32]));
    config.clock = clock.clone();
    let store = Store::open(db.url(), config).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(keys.path()).unwrap();
    let mut web = WebConfig::new(ORIGIN, "127.0.0.1:4433");
    web.hash_concurrency = 2;
    tune(&mut web);
    let web_keys = WebKeys {
        totp: TotpKey::from_bytes(zeroize::Zeroizing::new([2; 32])),
        signer: ring.signer(&web.token_issuer, &web.token_audience),
        jwks: ring.jwks(),
        audit_mac: MacKey::new([1; 32]),
    };
    let state = AppState::new(store.clone(), clock.clone(), web_keys, web);
    let admin = AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    };
    store
        .add_org(&admin, &OrgName::parse("acme").unwrap())
        .await
        .unwrap();
    store
        .add_org(&admin, &OrgName::parse("globex").unwrap())
        .await
        .unwrap();
    for (name, approvals, org) in [
        ("plc-7", 1, "acme"),
        ("hmi-2", 2, "acme"),
        ("rtu-9", 1, "globex"),
    ] {
        let d = Device {
            name: DeviceName::parse(name).unwrap(),
            address: NetworkAddress::parse("127.0.0.1").unwrap(),
            criticality: Criticality::High,
            profile: DeviceProfile {
                site: "Plant 2".into(),
                ..Default::default()
            },
            policy: DevicePolicy::new(
                Port::parse_list("502,80").unwrap(),
                Duration::from_secs(4 * 3600),
                approvals,
                [OrgName::parse(org).unwrap()].into(),
            )
            .unwrap(),
        };
        store.add_device(&admin, &d).await.unwrap();
    }
    App {
        router: router(state),
        store,
        clock,
        _db: db,
        _keys: keys,
    }
}

impl App {
    fn unix(&self) -> u64 {
        (self.clock.now().unix_micros() / 1_000_000) as u64
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, path: &str, body: Value, auth: Option<&str>) -> Resp {
        self.call(Method::POST, path, Some(body), auth).await
    }

    async fn get(&self, path: &str, auth: &str) -> Resp {
        self.call(Method::GET, path, None, Some(auth)).await
    }

    /// Creates, enrolls and logs in a user through the API.
    async fn user(&self, name: &str, role: Role) -> User {
        let admin = AuditActor {
            name: "cli:root".into(),
            role: ActorRole::Admin,
            source: None,
        };
        let org = (role == Role::Vendor).then(|| OrgName::parse("acme").unwrap());
        let (_, code) = self
            .store
            .add_user(
                &admin,
                &NewUser {
                    username: Username::parse(name).unwrap(),
                    role,
                    org,
                },
            )
            .await
            .unwrap();
        let r = self
            .post(
                "/api/v1/enroll",
                json!({ "code": code.code, "password": PASSWORD }),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert!(
            r.body["otpauth_uri"]
                .as_str()
                .unwrap()
                .starts_with("otpauth://totp/Portcullis:")
        );
        assert!(r.body["qr_svg"].as_str().unwrap().contains("<svg"));
        let secret = TotpSecret::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
        let totp = secret.code_at(self.unix());
        let r = self
            .post(
                "/api/v1/enroll/confirm",
                json!({ "code": code.code, "totp": totp }),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        // The enrollment code works once.
        let again = self
            .post(
                "/api/v1/enroll",
                json!({ "code": code.code, "password": PASSWORD }),
                None,
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        self.clock.advance(Duration::from_secs(30));
        self.login(name, secret).await
    }

    async fn login(&self, name: &str, secret: TotpSecret) -> User {
        let r = self
            .post(
                "/api/v1/auth/login",
                json!({ "username": name, "password": PASSWORD }),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
        let r = self
            .post(
                "/api/v1/auth/mfa",
                json!({ "mfa_token": mfa, "totp": secret.code_at(self.unix()) }),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        User {
            name: name.into(),
            token: r.body["session_token"].as_str().unwrap().into(),
            csrf: r.body["csrf_token"].as_str().unwrap().into(),
            secret,
        }
    }

    /// The next 30 s step's code (each code works once).
    async fn step_up(&self, u: &User) -> Resp {
        self.clock.advance(Duration::from_secs(30));
        self.post(
            "/api/v1/auth/step-up",
            json!({ "totp": u.secret.code_at(self.unix()) }),
            Some(&u.token),
        )
        .await
    }

    async fn actions(&self) -> Vec<String> {
        self.store
            .audit_events(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    fn at(&self, mins: u64) -> String {
        self.clock
            .now()
            .saturating_add(Duration::from_secs(mins * 60))
            .to_rfc3339()
    }

    async fn request(&self, vendor: &User, device: &str, from: u64, to: u64) -> i64 {
        let body = json!({ "device": device, "ports": [502], "start": self.at(from), "end": self.at(to),
                           "reason": "recipe update", "ticket": "CHG-1" });
        let r = self
            .post("/api/v1/requests", body, Some(&vendor.token))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_i64().unwrap()
    }
}

#[tokio::test]
async fn request_approve_and_token_flow_end_to_end() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let devices = app.get("/api/v1/devices", &vera.token).await;
    let names: Vec<_> = devices.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["hmi-2", "plc-7"],
        "only devices the vendor's org may request"
    );
    assert!(
        devices.body["devices"][0].get("address").is_none(),
        "vendors do not learn plant addresses"
    );

    let id = app.request(&vera, "plc-7", 0, 120).await;
    let approve = format!("/api/v1/requests/{id}/approve");
    // Approval needs a fresh step-up: the login was more than 5 minutes ago.
    app.clock.advance(Duration::from_secs(5 * 60));
    let r = app.post(&approve, json!({}), Some(&sam.token)).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_required"))
    );
    assert_eq!(app.step_up(&sam).await.status, StatusCode::NO_CONTENT);
    let r = app
        .post(&approve, json!({ "end": app.at(60) }), Some(&sam.token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "active");
    assert_eq!(r.body["window"]["end"], app.at(60), "narrowed");
    // Deciding again is a conflict.
    assert_eq!(
        app.post(&approve, json!({}), Some(&sam.token)).await.status,
        StatusCode::CONFLICT
    );

    // The vendor gets a token bound to its certificate; the relay's verifier accepts it only
    // on a connection presenting that certificate.
    let cert = b"a client certificate";
    let fp = portcullis_auth::token::parse_thumbprint(&hex::encode(sha256(cert))).unwrap();
    assert_eq!(fp, thumbprint(cert));
    let r = app
        .post(
            &format!("/api/v1/grants/{id}/token"),
            json!({ "client_cert_sha256": hex::encode(sha256(cert)) }),
            Some(&vera.token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["relay"], "127.0.0.1:4433");
    let token = r.body["token"].as_str().unwrap();
    let jwks = app.call(Method::GET, "/api/v1/keys", None, None).await.body;
    let verifier = TokenVerifier::from_jwks(&jwks, ORIGIN, "portcullis-relay").unwrap();
    let claims = verifier
        .verify(token, app.unix(), &thumbprint(cert))
        .unwrap();
    assert_eq!((claims.sub.as_str(), claims.grant), ("vera", id));
    assert!(claims.exp <= app.unix() + 300, "five minutes at most");
    assert!(
        verifier
            .verify(token, app.unix(), &thumbprint(b"another cert"))
            .is_err(),
        "bound to the certificate"
    );
    // Only the grant's vendor, and never for another vendor's grant.
    let otto = app.user("otto", Role::Vendor).await;
    let stolen = app
        .post(
            &format!("/api/v1/grants/{id}/token"),
            json!({ "client_cert_sha256": hex::encode(sha256(cert)) }),
            Some(&otto.token),
        )
        .await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    let mine = app.get("/api/v1/requests", &otto.token).await;
    assert_eq!(
        mine.body["requests"].as_array().unwrap().len(),
        0,
        "vendors see only their own requests"
    );

    // Revoked: no more tokens.
    let r = app
        .post(
            &format!("/api/v1/grants/{id}/revoke"),
            json!({ "reason": "done" }),
            Some(&sam.token),
        )
        .await;
    assert_eq!(r.body["state"], "revoked");
    let r = app
        .post(
            &format!("/api/v1/grants/{id}/token"),
            json!({ "client_cert_sha256": hex::encode(sha256(cert)) }),
            Some(&vera.token),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let actions = app.actions().await;
    for a in [
        "user.enroll",
        "login.ok",
        "auth.step_up",
        "request.create",
        "request.approve",
        "token.issue",
        "grant.revoke",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

#[tokio::test]
async fn totp_codes_work_once_even_in_parallel() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    // Replay of the code just used for login, in a new login.
    let r = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": PASSWORD }),
            None,
        )
        .await;
    let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
    let used = vera.secret.code_at(app.unix());
    let r = app
        .post(
            "/api/v1/auth/mfa",
            json!({ "mfa_token": mfa, "totp": used }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(app.actions().await.contains(&"mfa.replay".to_owned()));

    // 20 parallel submissions of one fresh code, each with its own password-stage token.
    app.clock.advance(Duration::from_secs(30));
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let r = app
            .post(
                "/api/v1/auth/login",
                json!({ "username": "vera", "password": PASSWORD }),
                None,
            )
            .await;
        tokens.push(r.body["mfa_token"].as_str().unwrap().to_owned());
    }
    app.store
        .unlock_user(
            &AuditActor {
                name: "t".into(),
                role: ActorRole::Admin,
                source: None,
            },
            &Username::parse("vera").unwrap(),
        )
        .await
        .unwrap();
    let code = vera.secret.code_at(app.unix());
    let app = Arc::new(app);
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let app = app.clone();
            let code = code.clone();
            tokio::spawn(async move {
                app.post(
                    "/api/v1/auth/mfa",
                    json!({ "mfa_token": t, "totp": code }),
                    None,
                )
                .await
                .status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(
            s == StatusCode::OK || s == StatusCode::UNAUTHORIZED || s == StatusCode::LOCKED,
            "{s}"
        );
        ok += usize::from(s == StatusCode::OK);
    }
    assert_eq!(ok, 1, "exactly one of 20 parallel submissions succeeds");
}

#[tokio::test]
async fn failures_lock_the_account_with_one_generic_error() {
    let app = app().await;
    let _vera = app.user("vera", Role::Vendor).await;
    let unknown = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "nobody", "password": PASSWORD }),
            None,
        )
        .await;
    let wrong = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": "wrong password entirely" }),
            None,
        )
        .await;
    let r = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": PASSWORD }),
            None,
        )
        .await;
    let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
    let bad_code = app
        .post(
            "/api/v1/auth/mfa",
            json!({ "mfa_token": mfa, "totp": "000000" }),
            None,
        )
        .await;
    for r in [&unknown, &wrong, &bad_code] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.body,
            json!({ "error": "wrong username, password or code", "code": "login_failed" })
        );
    }
    // Two failures so far (password, code); three more lock the account.
    for _ in 0..3 {
        app.post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": "wrong password entirely" }),
            None,
        )
        .await;
    }
    let locked = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": PASSWORD }),
            None,
        )
        .await;
    assert_eq!(locked.status, StatusCode::LOCKED);
    let retry: u64 = locked.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(app.actions().await.contains(&"login.locked".to_owned()));
    app.clock.advance(Duration::from_secs(15 * 60));
    let r = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": PASSWORD }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "the lock ends by itself");
}

#[tokio::test]
async fn login_is_rate_limited_per_address() {
    let app = app_with(|w| w.login_rate_per_minute = 20).await;
    let mut last = StatusCode::OK;
    for _ in 0..21 {
        last = app
            .post(
                "/api/v1/auth/login",
                json!({ "username": "nobody", "password": "x" }),
                None,
            )
            .await
            .status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn dual_approval_and_role_rules() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let sue = app.user("sue", Role::Supervisor).await;
    let ann = app.user("ann", Role::Auditor).await;
    let id = app.request(&vera, "hmi-2", 10, 70).await;
    let approve = format!("/api/v1/requests/{id}/approve");
    // A vendor cannot approve (their own or any), an auditor cannot either.
    assert_eq!(
        app.post(&approve, json!({}), Some(&vera.token))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&approve, json!({}), Some(&ann.token)).await.status,
        StatusCode::FORBIDDEN
    );
    app.step_up(&sam).await;
    let r = app.post(&approve, json!({}), Some(&sam.token)).await;
    assert_eq!(
        r.body["state"], "requested",
        "still needs a second supervisor"
    );
    assert_eq!(
        app.post(&approve, json!({}), Some(&sam.token)).await.status,
        StatusCode::CONFLICT
    );
    app.step_up(&sue).await;
    let r = app.post(&approve, json!({}), Some(&sue.token)).await;
    assert_eq!(r.body["state"], "approved");
    // A supervisor cannot request, so cannot approve their own request either.
    let own = app.post("/api/v1/requests", json!({ "device": "plc-7", "ports": [502], "start": app.at(0), "end": app.at(10), "reason": "x" }), Some(&sam.token)).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN);
    // Auditors read the log; vendors and supervisors do not.
    assert_eq!(
        app.get("/api/v1/audit", &vera.token).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v1/audit", &sam.token).await.status,
        StatusCode::FORBIDDEN
    );
    let log = app
        .get("/api/v1/audit?action=request.approve", &ann.token)
        .await;
    assert_eq!(log.body["events"].as_array().unwrap().len(), 2);
    let v = app.get("/api/v1/audit/verify", &ann.token).await;
    assert_eq!(v.body["intact"], true, "{:?}", v.body);
    let csv = app.get("/api/v1/audit/export?format=csv", &ann.token).await;
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(app.actions().await.contains(&"audit.export".to_owned()));
}

#[tokio::test]
async fn step_up_expires_after_five_minutes() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let id = app.request(&vera, "plc-7", 30, 90).await;
    app.step_up(&sam).await;
    app.clock.advance(Duration::from_secs(5 * 60));
    let r = app
        .post(
            &format!("/api/v1/requests/{id}/approve"),
            json!({}),
            Some(&sam.token),
        )
        .await;
    assert_eq!(r.body["code"], "step_up_required");
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_and_our_origin() {
    let app = app().await;
    let sam = app.user("sam", Role::Supervisor).await;
    let post = |csrf: Option<&str>, origin: Option<&str>| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/auth/logout")
            .header(header::COOKIE, format!("__Host-portcullis={}", sam.token));
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.body(Body::empty()).unwrap()
    };
    assert_eq!(
        app.send(post(None, Some(ORIGIN))).await.status,
        StatusCode::FORBIDDEN,
        "no CSRF token"
    );
    assert_eq!(
        app.send(post(Some("guess"), Some(ORIGIN))).await.status,
        StatusCode::FORBIDDEN,
        "wrong token"
    );
    assert_eq!(
        app.send(post(Some(&sam.csrf), Some("https://evil.example")))
            .await
            .status,
        StatusCode::FORBIDDEN,
        "foreign Origin"
    );
    assert_eq!(
        app.send(post(Some(&sam.csrf), Some(ORIGIN))).await.status,
        StatusCode::NO_CONTENT
    );
    // Logged out: the session is gone.
    assert_eq!(
        app.get("/api/v1/devices", &sam.token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let _ = &sam.name;
}

#[tokio::test]
async fn sessions_cookie_flags_and_timeouts() {
    let app = app().await;
    let sam = app.user("sam", Role::Supervisor).await;
    let r = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "sam", "password": PASSWORD }),
            None,
        )
        .await;
    let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::from_secs(30));
    let r = app
        .post(
            "/api/v1/auth/mfa",
            json!({ "mfa_token": mfa, "totp": sam.secret.code_at(app.unix()) }),
            None,
        )
        .await;
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    for flag in [
        "__Host-portcullis=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert_ne!(
        r.body["session_token"],
        json!(sam.token),
        "a new session id at each login"
    );
    // A password-only session can do nothing but submit the code.
    let r = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "sam", "password": PASSWORD }),
            None,
        )
        .await;
    let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/api/v1/devices", &mfa).await.status,
        StatusCode::UNAUTHORIZED
    );
    // 30 minutes idle ends a session.
    app.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        app.get("/api/v1/devices", &sam.token).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    let before = app.actions().await.len();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({ "device": "plc-7", "ports": [502], "start": app.at(0), "end": app.at(60), "reason": "x", "extra": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `extra`",
        ),
        (
            json!({ "device": "plc-7", "ports": [0], "start": app.at(0), "end": app.at(60), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "0 is not a TCP port",
        ),
        (
            json!({ "device": "plc-7", "ports": [70000], "start": app.at(0), "end": app.at(60), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "70000 is not a TCP port",
        ),
        (
            json!({ "device": "plc-7", "ports": [22], "start": app.at(0), "end": app.at(60), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "port 22 is not allowed",
        ),
        (
            json!({ "device": "plc-7", "ports": [502], "start": app.at(60), "end": app.at(0), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at or before it starts",
        ),
        (
            json!({ "device": "plc-7", "ports": [502], "start": app.at(0), "end": app.at(600), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "longer than this device allows",
        ),
        (
            json!({ "device": "rtu-9", "ports": [502], "start": app.at(0), "end": app.at(60), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "may not request this device",
        ),
        (
            json!({ "device": "nope", "ports": [502], "start": app.at(0), "end": app.at(60), "reason": "x" }),
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            json!({ "device": "plc-7", "ports": [502], "start": "tomorrow", "end": app.at(60), "reason": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "start:",
        ),
        (
            json!({ "device": "plc-7", "ports": [502], "start": app.at(0), "end": app.at(60), "reason": "" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason",
        ),
    ];
    for (body, status, msg) in cases {
        let r = app
            .post("/api/v1/requests", body.clone(), Some(&vera.token))
            .await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains(msg),
            "{body}: {:?}",
            r.body
        );
    }
    let malformed = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/requests")
        .header(header::AUTHORIZATION, format!("Bearer {}", vera.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"device\": "))
        .unwrap();
    assert_eq!(app.send(malformed).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.actions().await.len(),
        before,
        "nothing written for refused input"
    );
    assert_eq!(
        app.get("/api/v1/requests", &vera.token).await.body["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn security_headers_are_on_every_response_errors_included() {
    let app = app().await;
    for r in [
        app.call(Method::GET, "/no/such/page", None, None).await,
        app.call(Method::GET, "/api/v1/devices", None, None).await,
        app.call(Method::GET, "/healthz", None, None).await,
    ] {
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for part in [
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(
            r.headers[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers[header::REFERRER_POLICY], "no-referrer");
    }
}

#[tokio::test]
async fn the_service_fails_closed_when_the_database_is_gone() {
    let app = app().await;
    let vera = app.user("vera", Role::Vendor).await;
    app.store.close().await;
    let r = app
        .post(
            "/api/v1/auth/login",
            json!({ "username": "vera", "password": PASSWORD }),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(
        !r.body["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("sql")
    );
    assert_eq!(
        app.get("/api/v1/devices", &vera.token).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let app = app().await;
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .body;
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/enroll",
        "/api/v1/enroll/confirm",
        "/api/v1/auth/login",
        "/api/v1/auth/mfa",
        "/api/v1/auth/step-up",
        "/api/v1/auth/logout",
        "/api/v1/devices",
        "/api/v1/requests",
        "/api/v1/requests/{id}",
        "/api/v1/requests/{id}/approve",
        "/api/v1/requests/{id}/deny",
        "/api/v1/grants/{id}/revoke",
        "/api/v1/grants/{id}/token",
        "/api/v1/keys",
        "/api/v1/audit",
        "/api/v1/audit/export",
        "/api/v1/audit/verify",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
}
