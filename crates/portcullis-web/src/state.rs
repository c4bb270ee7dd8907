//! What every handler shares: the store, the clock, keys, settings and the limiters.

use std::sync::Arc;
use std::time::Duration;

use portcullis_auth::password::HashPool;
use portcullis_auth::token::TokenSigner;
use portcullis_auth::totp::TotpKey;
use portcullis_core::Clock;
use portcullis_core::audit::MacKey;
use portcullis_net::devca::DevCa;
use portcullis_store::{LockoutPolicy, SessionPolicy, Store};
use tokio::sync::Semaphore;

use crate::audit_check::CheckpointSource;
use crate::limit::RateLimiter;

/// Settings of the approval service.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The origin browsers see, e.g. `https://127.0.0.1:8443`: same-origin checks compare with it.
    pub public_origin: String,
    /// Where vendor clients reach the relay, e.g. `127.0.0.1:4433`, told to them with each token.
    pub relay_addr: String,
    /// PEM of the CA that signs the relay's certificate, told to clients with each token when it
    /// is not one they would trust anyway (the development CA).
    pub relay_ca_pem: Option<String>,
    /// `iss` of relay tokens.
    pub token_issuer: String,
    /// `aud` of relay tokens: the relay accepts only this.
    pub token_audience: String,
    /// Relay tokens live at most this long (and never past the window's end).
    pub token_ttl: Duration,
    /// The last MFA must be this recent to mint a relay token.
    pub token_mfa_max_age: Duration,
    /// Approvals need a TOTP step-up this recent (SECURITY.md: 5 minutes).
    pub step_up_max_age: Duration,
    /// System-use notification shown before login (IEC 62443 SR 1.12).
    pub banner: String,
    pub sessions: SessionPolicy,
    pub lockout: LockoutPolicy,
    /// Concurrent argon2 computations at most, so a login flood cannot starve other requests.
    pub hash_concurrency: usize,
    /// Login attempts per source address per minute.
    pub login_rate_per_minute: u32,
    /// The plant's IANA time zone (e.g. `Europe/Berlin`): pages show and read times in it; the
    /// API and the audit log stay in UTC.
    pub time_zone: String,
    /// The plant's name (e.g. `Riverside Bottling`), empty when not set. Passwords built from it
    /// are the first an attacker tries here, so the strength check treats it as a known word.
    pub plant_name: String,
    /// The CA that signs site connectors' certificates at enrollment
    /// (`POST /api/v1/connector/enroll`); without it, connectors cannot enroll here.
    pub site_ca: Option<Arc<DevCa>>,
}

impl WebConfig {
    pub fn new(public_origin: impl Into<String>, relay_addr: impl Into<String>) -> Self {
        let public_origin = public_origin.into();
        Self {
            token_issuer: public_origin.clone(),
            public_origin,
            relay_addr: relay_addr.into(),
            relay_ca_pem: None,
            token_audience: "portcullis-relay".into(),
            token_ttl: Duration::from_secs(300),
            token_mfa_max_age: Duration::from_secs(30 * 60),
            step_up_max_age: Duration::from_secs(5 * 60),
            banner: "Authorised use only. Activity on this system is recorded and audited.".into(),
            sessions: SessionPolicy::default(),
            lockout: LockoutPolicy::default(),
            hash_concurrency: 2,
            login_rate_per_minute: 20,
            time_zone: "UTC".into(),
            plant_name: String::new(),
            site_ca: None,
        }
    }
}

/// Keys the service holds.
#[derive(Debug)]
pub struct WebKeys {
    pub totp: TotpKey,
    pub signer: TokenSigner,
    /// The published verification keys (JWKS).
    pub jwks: serde_json::Value,
    /// For `GET /api/v1/audit/verify`.
    pub audit_mac: MacKey,
    /// The signed checkpoints the verify checks against; `None`: only the chain and MACs.
    pub checkpoints: Option<CheckpointSource>,
}

#[derive(Debug, Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub keys: WebKeys,
    pub config: WebConfig,
    pub hashing: Semaphore,
    /// One argon2 block buffer per `hashing` permit, reused (memory stays bounded after a burst).
    pub passwords: Arc<HashPool>,
    pub login_limiter: RateLimiter,
    /// More Prometheus text for `/metrics` (the relay's, when one runs in this process).
    pub metrics: MetricsSlot,
    /// What the config file says about notifications and alerts, as lines for the outbox page
    /// (no secrets): set once by the binary.
    pub settings_summary: std::sync::OnceLock<Vec<(String, String)>>,
}

#[derive(Default)]
pub(crate) struct MetricsSlot(pub std::sync::OnceLock<MetricsSource>);

impl std::fmt::Debug for MetricsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "MetricsSlot(set)"
        } else {
            "MetricsSlot(empty)"
        })
    }
}

/// Renders Prometheus text on demand.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

impl AppState {
    pub fn new(store: Store, clock: Arc<dyn Clock>, keys: WebKeys, config: WebConfig) -> Self {
        let hashing = Semaphore::new(config.hash_concurrency.max(1));
        let passwords = Arc::new(HashPool::new(config.hash_concurrency.max(1)));
        let login_limiter = RateLimiter::per_minute(config.login_rate_per_minute);
        AppState(Arc::new(Inner {
            store,
            clock,
            keys,
            config,
            hashing,
            passwords,
            login_limiter,
            metrics: MetricsSlot::default(),
            settings_summary: std::sync::OnceLock::new(),
        }))
    }

    /// Adds `source`'s text to `/metrics` (once; later calls are ignored).
    pub fn set_metrics(&self, source: MetricsSource) {
        let _ = self.0.metrics.0.set(source);
    }

    /// The notification and alert settings the outbox page shows (once; later calls ignored).
    pub fn set_settings_summary(&self, lines: Vec<(String, String)>) {
        let _ = self.0.settings_summary.set(lines);
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }
}
