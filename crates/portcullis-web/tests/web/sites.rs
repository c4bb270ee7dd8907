//! Sites and connector enrollment through the JSON API (issue 5), through the real router on a
//! real SQLite store with a manual clock.

use std::ops::Deref;
use std::sync::Arc;

use axum::http::{Method, StatusCode, header};
use portcullis_auth::token::thumbprint;
use portcullis_core::{Clock, Role};
use portcullis_store::{AuditQuery, ConnectorPresence};
use portcullis_web::WebConfig;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};

use crate::helpers::{ApiResp as Resp, ORIGIN, TestApp, spawn_app, spawn_app_with};

/// The harness without a plant: these tests register their own sites.
struct App(TestApp);

impl Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

async fn app() -> App {
    App(spawn_app().await)
}

async fn app_with(site_ca: bool, tune: impl FnOnce(&mut WebConfig)) -> App {
    App(spawn_app_with(move |w| {
        if !site_ca {
            w.site_ca = None;
        }
        tune(w);
    })
    .await)
}

/// A connector's request: a fresh P-256 key, asking for a name it will not get.
fn csr() -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let params = CertificateParams::new(vec!["anything.example".into()]).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

impl App {
    async fn post(&self, path: &str, body: Value, auth: Option<&str>) -> Resp {
        self.call(Method::POST, path, Some(body), auth).await
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> Resp {
        self.call(Method::GET, path, None, auth).await
    }

    /// An enrolled, logged-in user's session token.
    async fn user(&self, name: &str, role: Role) -> String {
        self.api_user(name, role).await.token
    }

    async fn enroll(&self, token: &str, csr: &str) -> Resp {
        self.post(
            "/api/v1/connector/enroll",
            json!({ "token": token, "csr": csr }),
            None,
        )
        .await
    }

    async fn site_status(&self, auth: &str, site: &str) -> Value {
        let r = self.get("/api/v1/sites", Some(auth)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == site)
            .cloned()
            .unwrap_or_else(|| panic!("{site} not listed: {:?}", r.body))
    }
}

fn assert_bad_token(r: &Resp) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let msg = r.body["error"].as_str().unwrap();
    assert!(msg.contains("portcullis admin site token"), "{msg}");
    assert!(!msg.contains("plant-2"), "never names a site: {msg}");
}

#[tokio::test]
async fn an_admin_registers_a_site_and_its_connector_enrolls_once() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let sam = app.user("sam", Role::Supervisor).await;

    let r = app
        .post(
            "/api/v1/admin/sites",
            json!({ "name": "plant-2" }),
            Some(&adam),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["site"], "plant-2");
    let token = r.body["enrollment_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pcs_"));
    assert_eq!(r.body["expires_at"], "2026-11-26T08:01:00.000000Z");
    assert_eq!(
        r.body["enroll_command"],
        format!("portcullis connector enroll --url {ORIGIN} --token {token}")
    );
    assert_eq!(
        app.site_status(&sam, "plant-2").await["status"],
        "not enrolled"
    );

    // A bad request does not use the token up.
    let r = app.enroll(&token, "not a request").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("CERTIFICATE REQUEST")
    );
    assert_bad_token(&app.enroll("pcs_guess", &csr()).await);

    let r = app.enroll(&token, &csr()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["site"], "plant-2");
    assert_eq!(r.body["relay"], "127.0.0.1:4433");
    assert_eq!(r.body["relay_ca"], Value::Null);
    assert_eq!(r.body["ca"].as_str(), app.ca_pem.as_deref());
    assert!(
        r.body["not_after"].as_str().unwrap().starts_with("2027-"),
        "a year: {}",
        r.body["not_after"]
    );
    let cert =
        CertificateDer::from_pem_slice(r.body["certificate"].as_str().unwrap().as_bytes()).unwrap();
    // It chains to the CA the answer names, for client authentication.
    let ca = CertificateDer::from_pem_slice(r.body["ca"].as_str().unwrap().as_bytes()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), portcullis_net::crypto_provider())
        .build()
        .unwrap()
        .verify_client_cert(&cert, &[], UnixTime::now())
        .unwrap();
    let rec = app.store.site("plant-2").await.unwrap().unwrap();
    assert_eq!(rec.cert_fingerprint, Some(thumbprint(cert.as_ref())));

    // Once only.
    assert_bad_token(&app.enroll(&token, &csr()).await);

    let listed = app.site_status(&sam, "plant-2").await;
    assert_eq!(listed["status"], "offline");
    assert_eq!(listed["last_seen"], Value::Null);
    let now = app.clock.now();
    app.store
        .connector_online(
            "plant-2",
            &ConnectorPresence {
                connection_id: "c1".into(),
                relay: "relay".into(),
                source: "192.0.2.7:50000".into(),
                connected_at: now,
                last_seen_at: now,
            },
        )
        .await
        .unwrap();
    let listed = app.site_status(&sam, "plant-2").await;
    assert_eq!(listed["status"], "online");
    assert_eq!(listed["last_seen"], now.to_rfc3339());

    let events = app
        .store
        .audit_events(&AuditQuery::default())
        .await
        .unwrap();
    let enroll = events.iter().find(|e| e.action == "site.enroll").unwrap();
    assert_eq!(enroll.actor, "site:plant-2");
    assert!(enroll.details.contains(&thumbprint(cert.as_ref())));
    assert!(!events.iter().any(|e| e.details.contains(&token)));
}

#[tokio::test]
async fn only_admins_change_sites_and_vendors_see_none() {
    let app = app().await;
    let adam = app.user("adam", Role::Admin).await;
    let sam = app.user("sam", Role::Supervisor).await;
    let aude = app.user("aude", Role::Auditor).await;
    let vera = app.user("vera", Role::Vendor).await;

    for who in [&sam, &aude, &vera] {
        let r = app
            .post(
                "/api/v1/admin/sites",
                json!({ "name": "plant-2" }),
                Some(who),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            app.get("/api/v1/admin/sites", Some(who)).await.status,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        app.get("/api/v1/sites", Some(&vera)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v1/sites", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for who in [&sam, &aude, &adam] {
        assert_eq!(
            app.get("/api/v1/sites", Some(who)).await.status,
            StatusCode::OK
        );
    }

    let add =
        |name: &'static str| app.post("/api/v1/admin/sites", json!({ "name": name }), Some(&adam));
    assert_eq!(add("plant-2").await.status, StatusCode::CREATED);
    assert_eq!(add("plant-2").await.status, StatusCode::CONFLICT);
    let bad = add("Plant 2").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body["error"].as_str().unwrap().contains("site"));
    let extra = app
        .post(
            "/api/v1/admin/sites",
            json!({ "name": "x", "ca": true }),
            Some(&adam),
        )
        .await;
    assert_eq!(extra.status, StatusCode::UNPROCESSABLE_ENTITY);
    let list = app.get("/api/v1/admin/sites", Some(&adam)).await;
    assert_eq!(list.body["sites"].as_array().unwrap().len(), 1);

    // A new token replaces the old one.
    let old = app.store.list_sites().await.unwrap();
    assert_eq!(old.len(), 1);
    let r = app
        .post(
            "/api/v1/admin/sites/plant-2/token",
            json!(null),
            Some(&adam),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let token = r.body["enrollment_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/admin/sites/plant-2/token",
            None,
            Some(&sam)
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/admin/sites/plant-9/token",
            None,
            Some(&adam)
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let r = app
        .call(
            Method::POST,
            "/api/v1/admin/sites/plant-2/revoke",
            None,
            Some(&adam),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "revoked");
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/admin/sites/plant-2/revoke",
            None,
            Some(&adam)
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/admin/sites/plant-2/token",
            None,
            Some(&adam)
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    // The revoked site's token no longer enrolls.
    assert_bad_token(&app.enroll(&token, &csr()).await);
    assert_eq!(app.site_status(&aude, "plant-2").await["status"], "revoked");
}

#[tokio::test]
async fn enrollment_is_rate_limited_per_source_and_needs_a_site_ca() {
    let app = app_with(true, |w| w.login_rate_per_minute = 2).await;
    for _ in 0..2 {
        assert_bad_token(&app.enroll("pcs_guess", &csr()).await);
    }
    let r = app.enroll("pcs_guess", &csr()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));

    let app = app_with(false, |w| w.login_rate_per_minute = 1000).await;
    let r = app.enroll("pcs_guess", &csr()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
}
