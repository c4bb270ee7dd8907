//! The broker's JSON API (`/api/v1`) over HTTPS, as a vendor uses it.
//!
//! The session token goes in `Authorization: Bearer` (never a cookie: bearer requests need no
//! anti-CSRF token, and nothing here is a browser). Errors come back as [`ApiError`], whose text
//! is the broker's own sentence for the vendor, or a plain description of a network failure.

mod error;
mod types;

use std::time::Duration;

use portcullis_api_types::access::{DeviceList, RequestList};
use portcullis_api_types::auth::SessionsEnded;
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use error::ApiError;
pub use types::{
    Created, Device, DeviceEntry, LoggedIn, NewRequest, OrUnknown, PendingMfa, RelayTicket,
    Request, WindowView,
};

use crate::config::StoredSession;
use crate::trust;

/// How long one API call may take in total. Login runs argon2 behind a bounded queue on the
/// broker, so this is generous; a broker that does not answer at all still fails in bounded time.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one broker, with or without a session.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: reqwest::Url,
    session: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("session", &self.session.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `https://host[:port]` from what a person typed: a missing scheme means https, a trailing
/// slash is dropped, and plain http is refused (the session token and password must never
/// travel in clear).
pub fn normalize_broker_url(text: &str) -> Result<reqwest::Url, ApiError> {
    let t = text.trim();
    let with_scheme = if t.contains("://") {
        t.to_owned()
    } else {
        format!("https://{t}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        ApiError::Setup(format!(
            "'{}' is not a broker URL ({e}); give it as https://host[:port]",
            crate::printable(text, 200)
        ))
    })?;
    if url.scheme() != "https" {
        return Err(ApiError::Setup(format!(
            "the broker URL must start with https:// (got {}://): passwords and session tokens \
             never travel unencrypted",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::Setup(format!(
            "'{}' names no host; give the broker as https://host[:port]",
            crate::printable(text, 200)
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(ApiError::Setup(
            "give the broker URL as https://host[:port], without query, fragment or user".into(),
        ));
    }
    Ok(url)
}

impl ApiClient {
    /// A client for the broker at `broker_url` trusting the CA certificates in `ca_pem` (or
    /// the public web PKI when None), with no session yet.
    pub fn new(broker_url: &str, ca_pem: Option<&str>) -> Result<Self, ApiError> {
        let base = normalize_broker_url(broker_url)?;
        let roots = trust::roots(ca_pem).map_err(|e| ApiError::Setup(e.to_string()))?;
        let tls = trust::https_config(roots).map_err(|e| ApiError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The API never redirects; following one could send the bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Setup(format!("cannot set up the HTTPS client: {e}")))?;
        Ok(Self {
            http,
            base,
            session: None,
        })
    }

    /// A client for a stored login. A session whose absolute end has passed is reported as
    /// expired without asking the broker.
    pub fn for_session(stored: &StoredSession) -> Result<Self, ApiError> {
        let mut client = Self::new(&stored.broker_url, stored.ca_pem.as_deref())?;
        if let Ok(end) = OffsetDateTime::parse(&stored.expires_at, &Rfc3339)
            && end <= OffsetDateTime::now_utc()
        {
            return Err(client.expired());
        }
        client.session = Some(stored.session_token.clone());
        Ok(client)
    }

    /// `https://host[:port]`, as stored and shown.
    pub fn base_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// The broker's host name or address (where the relay is, when the broker says only
    /// "all addresses").
    pub fn broker_host(&self) -> Option<String> {
        self.base
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_owned())
    }

    fn expired(&self) -> ApiError {
        ApiError::SessionExpired {
            url: self.base_url(),
        }
    }

    /// One call: JSON body out, status checked, and the raw answer back.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}/api/v1{path}", self.base_url());
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.session {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::unreachable(&self.base_url(), &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = resp.bytes().await.unwrap_or_default();
        let err = ApiError::from_body(status.as_u16(), &bytes, retry);
        // Only a request made with a session can find it over; a 401 at login is a wrong
        // password or code.
        if status == StatusCode::UNAUTHORIZED
            && self.session.is_some()
            && err.code() == Some("unauthenticated")
        {
            return Err(self.expired());
        }
        Err(err)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &'static str,
    ) -> Result<T, ApiError> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::unreachable(&self.base_url(), &e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadAnswer {
            what,
            detail: e.to_string(),
        })
    }

    /// The password step. The same answer for an unknown user, a wrong password and a locked
    /// account is the broker's choice; its sentence is passed on.
    pub async fn login(&self, username: &str, password: &str) -> Result<PendingMfa, ApiError> {
        let body = serde_json::json!({ "username": username, "password": password });
        self.json(Method::POST, "/auth/login", Some(&body), "the login")
            .await
    }

    /// The TOTP step; the answer holds the session token.
    pub async fn mfa(&self, pending: &PendingMfa, code: &str) -> Result<LoggedIn, ApiError> {
        let body = serde_json::json!({ "mfa_token": pending.mfa_token, "totp": code });
        self.json(Method::POST, "/auth/mfa", Some(&body), "the code")
            .await
    }

    /// Uses `session_token` for the calls that follow.
    pub fn with_session(mut self, session_token: &str) -> Self {
        self.session = Some(session_token.to_owned());
        self
    }

    /// A fresh authenticator code for the session (needed for relay tokens when the last
    /// code is older than the broker allows).
    pub async fn step_up(&self, code: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({ "totp": code });
        self.send(Method::POST, "/auth/step-up", Some(&body))
            .await
            .map(drop)
    }

    /// Ends the session on the broker.
    pub async fn logout(&self) -> Result<(), ApiError> {
        self.send(Method::POST, "/auth/logout", None)
            .await
            .map(drop)
    }

    /// "Log out everywhere": ends every session of the account (this one too), refuses the
    /// relay tokens issued so far and ends the account's live relay sessions. Returns how many
    /// web and CLI sessions ended.
    pub async fn logout_everywhere(&self) -> Result<u64, ApiError> {
        let ended: SessionsEnded = self
            .json(Method::POST, "/auth/logout-everywhere", None, "the logout")
            .await?;
        Ok(ended.sessions_ended)
    }

    /// The devices this account may request (as a vendor is offered them, also when another
    /// role asks and the broker answers with the inventory).
    pub async fn devices(&self) -> Result<Vec<Device>, ApiError> {
        let list: DeviceList = self
            .json(Method::GET, "/devices", None, "the device list")
            .await?;
        Ok(list.devices.into_iter().map(DeviceEntry::offered).collect())
    }

    /// The account's requests and grants (a vendor sees only their own).
    pub async fn requests(&self) -> Result<Vec<Request>, ApiError> {
        let list: RequestList = self
            .json(Method::GET, "/requests", None, "the request list")
            .await?;
        Ok(list.requests)
    }

    /// The signed-in account with its time zone (issue 15), for showing times as its owner chose.
    pub async fn me(&self) -> Result<portcullis_api_types::admin::User, ApiError> {
        self.json(Method::GET, "/me", None, "your account").await
    }

    /// One request or grant.
    pub async fn request(&self, id: i64) -> Result<Request, ApiError> {
        self.json(Method::GET, &format!("/requests/{id}"), None, "the request")
            .await
    }

    /// Asks for access.
    pub async fn create_request(&self, new: &NewRequest) -> Result<Created, ApiError> {
        let body = serde_json::to_value(new).map_err(|e| ApiError::Setup(e.to_string()))?;
        self.json(Method::POST, "/requests", Some(&body), "the new request")
            .await
    }

    /// A relay token for grant `grant_id`, bound to the client certificate whose SHA-256 is
    /// `cert_sha256` (hex). [`ApiError::is_step_up_required`] when the broker wants a fresh code
    /// first.
    pub async fn relay_token(
        &self,
        grant_id: i64,
        cert_sha256: &str,
    ) -> Result<RelayTicket, ApiError> {
        let body = serde_json::json!({ "client_cert_sha256": cert_sha256 });
        self.json(
            Method::POST,
            &format!("/grants/{grant_id}/token"),
            Some(&body),
            "the relay token request",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_https_without_a_trailing_slash() {
        let n = |s| normalize_broker_url(s).map(|u| u.as_str().trim_end_matches('/').to_owned());
        assert_eq!(
            n("https://broker.example:8443/").unwrap(),
            "https://broker.example:8443"
        );
        assert_eq!(n("127.0.0.1:8443").unwrap(), "https://127.0.0.1:8443");
        let e = n("http://broker.example").unwrap_err().to_string();
        assert!(e.contains("https://"), "{e}");
        assert!(n("https://").is_err());
        assert!(n("https://u:p@broker.example").is_err());
        assert!(n("https://broker.example/?x=1").is_err());
    }

    #[test]
    fn an_expired_stored_session_is_reported_without_a_network_call() {
        let stored = StoredSession {
            broker_url: "https://broker.invalid".into(),
            username: "vera".into(),
            role: "vendor".into(),
            session_token: "t".into(),
            expires_at: "2000-01-01T00:00:00Z".into(),
            ca_pem: None,
        };
        let e = ApiClient::for_session(&stored).unwrap_err().to_string();
        assert_eq!(
            e,
            "the session expired: log in again with `portcullis login https://broker.invalid`"
        );
    }

    #[test]
    fn debug_output_never_shows_the_session_token() {
        let c = ApiClient::new("https://broker.example", None)
            .unwrap()
            .with_session("very-secret-session");
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-session"), "{shown}");
    }

    #[test]
    fn the_broker_host_is_bare() {
        let c = ApiClient::new("https://[::1]:8443", None).unwrap();
        assert_eq!(c.broker_host().as_deref(), Some("::1"));
    }
}
