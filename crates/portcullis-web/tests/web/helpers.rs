//! The one harness of the web tests: [`spawn_app`] builds the real router on a fresh, migrated
//! store (SQLite unless a test asks for PostgreSQL) with a manual clock, fresh signing keys and
//! a site CA; requests go through `tower::ServiceExt::oneshot` (no socket). The modules seed the
//! plant they need and keep thin conveniences of their own.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use portcullis_auth::token::KeyRing;
use portcullis_auth::totp::{TotpKey, TotpSecret};
use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_core::{
    Clock, Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName,
    Port, Role, Username,
};
use portcullis_net::devca;
use portcullis_store::{AuditActor, AuditQuery, NewUser, Store, StoreConfig};
use portcullis_testkit::{ManualClock, TestDb};
use portcullis_web::audit_check::CheckpointSource;
use portcullis_web::{AppState, WebConfig, WebKeys, router};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ORIGIN: &str = "https://portcullis.test";
pub const PASSWORD: &str = "correct horse plant seven";

/// The service under test and what the tests look at behind it.
pub struct TestApp {
    pub router: Router,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    /// The site CA's certificate, when the app has one (the default).
    pub ca_pem: Option<String>,
    _db: TestDb,
    _keys: tempfile::TempDir,
}

/// The app with the defaults: SQLite, a login rate limit high enough not to matter, a site CA.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The app with its configuration changed by `tune` (set `site_ca = None` for none).
pub async fn spawn_app_with(tune: impl FnOnce(&mut WebConfig)) -> TestApp {
    spawn_app_on(TestDb::sqlite(), tune).await
}

/// The app on a given database (PostgreSQL refuses some text that SQLite stores).
pub async fn spawn_app_on(db: TestDb, tune: impl FnOnce(&mut WebConfig)) -> TestApp {
    spawn_app_checking(db, tune, None).await
}

/// The app whose audit verify checks against the checkpoints `checkpoints` yields.
pub async fn spawn_app_checking(
    db: TestDb,
    tune: impl FnOnce(&mut WebConfig),
    checkpoints: Option<CheckpointSource>,
) -> TestApp {
    let clock = Arc::new(ManualClock::at("2026-11-25T08:00:00Z"));
    let mut config = StoreConfig::new(MacKey::new([1; 32]));
    config.clock = clock.clone();
    let store = Store::open(db.url(), config).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(&keys.path().join("relay-signing")).unwrap();
    let mut web = WebConfig::new(ORIGIN, "127.0.0.1:4433");
    web.login_rate_per_minute = 1000;
    web.hash_concurrency = 2;
    web.site_ca = Some(Arc::new(
        devca::ensure_ca(&keys.path().join("site-ca")).unwrap(),
    ));
    tune(&mut web);
    let ca_pem = web.site_ca.as_ref().map(|ca| ca.cert_pem().to_owned());
    let web_keys = WebKeys {
        totp: TotpKey::from_bytes(zeroize::Zeroizing::new([2; 32])),
        signer: ring.signer(&web.token_issuer, &web.token_audience),
        jwks: ring.jwks(),
        audit_mac: MacKey::new([1; 32]),
        checkpoints,
    };
    let state = AppState::new(store.clone(), clock.clone(), web_keys, web);
    TestApp {
        router: router(state),
        store,
        clock,
        ca_pem,
        _db: db,
        _keys: keys,
    }
}

/// The command line's admin, who seeds the plant.
pub fn root() -> AuditActor {
    AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

/// A device of the seeded plant: ports 502 and 80, windows up to 4 h, requestable by `org`.
pub fn device(
    name: &str,
    address: &str,
    approvals: u8,
    org: &str,
    profile: DeviceProfile,
) -> Device {
    Device {
        name: DeviceName::parse(name).unwrap(),
        address: NetworkAddress::parse(address).unwrap(),
        criticality: Criticality::High,
        profile,
        policy: DevicePolicy::new(
            Port::parse_list("502,80").unwrap(),
            Duration::from_secs(4 * 3600),
            approvals,
            [OrgName::parse(org).unwrap()].into(),
        )
        .unwrap(),
    }
}

/// A JSON answer (or the text of one that is not JSON).
#[derive(Debug)]
pub struct ApiResp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// An HTML answer.
#[derive(Debug)]
pub struct PageResp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl PageResp {
    pub fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }

    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of the first `name="..."` or `data-testid` text after `marker`.
    pub fn text_after(&self, marker: &str) -> String {
        let at = self.body.find(marker).unwrap_or_else(|| {
            panic!("{marker} not in page:\n{}", self.body);
        });
        let rest = &self.body[at + marker.len()..];
        let rest = &rest[rest.find('>').unwrap() + 1..];
        rest[..rest.find('<').unwrap()].to_owned()
    }

    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let at = self.body.find(marker).expect("a csrf field") + marker.len();
        self.body[at..at + self.body[at..].find('"').unwrap()].to_owned()
    }

    /// The message shown at the input posted as `name`, if there is one: it must sit inside
    /// that field's container (`data-field`), after the input itself. Entities are left as
    /// the page has them.
    pub fn field_error(&self, name: &str) -> Option<String> {
        let open = format!(r#"data-field="{name}""#);
        let at = self.body.find(&open)?;
        let tag_at = self.body[..at].rfind('<').unwrap();
        let tag = self.body[tag_at + 1..at].split_whitespace().next().unwrap();
        let end = at + self.body[at..].find(&format!("</{tag}>")).unwrap();
        let container = &self.body[tag_at..end];
        let marker = format!(r#"data-testid="field-error" data-field="{name}">"#);
        let m = container.find(&marker)?;
        // A group (`window`) has no input of its own name; its inputs come before the message.
        let input = container
            .find(&format!(r#"name="{name}""#))
            .or_else(|| container.find("<input"))
            .unwrap_or_else(|| panic!("no input in the {name} field: {container}"));
        assert!(input < m, "the message follows the input: {container}");
        let text = &container[m + marker.len()..];
        Some(text[..text.find('<').unwrap()].to_owned())
    }

    /// How many messages the page shows at inputs, and whether it shows one above the form.
    pub fn messages(&self) -> (usize, bool) {
        (
            self.body.matches(r#"data-testid="field-error""#).count(),
            self.body.contains(r#"data-testid="error""#),
        )
    }
}

/// A user logged in through the API: the session token, its anti-CSRF token and the TOTP
/// secret that produces codes.
pub struct ApiUser {
    pub name: String,
    pub token: String,
    pub csrf: String,
    pub secret: TotpSecret,
}

impl TestApp {
    pub fn unix(&self) -> u64 {
        (self.clock.now().unix_micros() / 1_000_000) as u64
    }

    async fn oneshot(&self, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    pub async fn send(&self, req: Request<Body>) -> ApiResp {
        let (status, headers, text) = self.oneshot(req).await;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        ApiResp {
            status,
            headers,
            body,
        }
    }

    pub async fn send_page(&self, req: Request<Body>) -> PageResp {
        let (status, headers, body) = self.oneshot(req).await;
        PageResp {
            status,
            headers,
            body,
        }
    }

    /// A JSON request, with a bearer token if `auth` is given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> ApiResp {
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

    pub async fn actions(&self) -> Vec<String> {
        self.store
            .audit_events(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    pub async fn add_org(&self, name: &str) {
        self.store
            .add_org(&root(), &OrgName::parse(name).unwrap())
            .await
            .unwrap();
    }

    pub async fn add_device(&self, d: Device) {
        self.store.add_device(&root(), &d).await.unwrap();
    }

    /// A new account (vendors in `acme`, made if missing) and its enrollment code.
    pub async fn add_user(&self, name: &str, role: Role) -> String {
        let org = (role == Role::Vendor).then(|| OrgName::parse("acme").unwrap());
        if let Some(o) = &org
            && !self
                .store
                .list_orgs()
                .await
                .unwrap()
                .iter()
                .any(|(n, _)| n == o)
        {
            self.store.add_org(&root(), o).await.unwrap();
        }
        let new = NewUser {
            username: Username::parse(name).unwrap(),
            role,
            org,
        };
        self.store.add_user(&root(), &new).await.unwrap().1.code
    }

    /// Creates, enrolls and logs in a user through the API.
    pub async fn api_user(&self, name: &str, role: Role) -> ApiUser {
        let code = self.add_user(name, role).await;
        let enroll = json!({ "code": code, "password": PASSWORD });
        let r = self
            .call(Method::POST, "/api/v1/enroll", Some(enroll.clone()), None)
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
            .call(
                Method::POST,
                "/api/v1/enroll/confirm",
                Some(json!({ "code": code, "totp": totp })),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
        // The enrollment code works once.
        let again = self
            .call(Method::POST, "/api/v1/enroll", Some(enroll), None)
            .await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        self.clock.advance(Duration::from_secs(30));
        self.api_login(name, secret).await
    }

    /// Logs in through the API with the current code.
    pub async fn api_login(&self, name: &str, secret: TotpSecret) -> ApiUser {
        let login = json!({ "username": name, "password": PASSWORD });
        let r = self
            .call(Method::POST, "/api/v1/auth/login", Some(login), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
        let body = json!({ "mfa_token": mfa, "totp": secret.code_at(self.unix()) });
        let r = self
            .call(Method::POST, "/api/v1/auth/mfa", Some(body), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        ApiUser {
            name: name.into(),
            token: r.body["session_token"].as_str().unwrap().into(),
            csrf: r.body["csrf_token"].as_str().unwrap().into(),
            secret,
        }
    }
}
