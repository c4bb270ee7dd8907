//! The pieces `serve`, `web` and `relay` are built from: TLS material, the web service, the
//! relay endpoint, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use portcullis_auth::token::{KeyRing, TokenVerifier};
use portcullis_auth::totp::TotpKey;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_net::{devca, quic, tls};
use portcullis_relay::{Relay, RelayConfig};
use portcullis_store::{Store, SystemClock};
use portcullis_web::audit_check::CheckpointSource;
use portcullis_web::{AppState, WebConfig, WebKeys};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::checkpoints;
use crate::cli::{RelayArgs, TlsArgs, WebArgs};
use crate::context::Context;

/// The certificate chain and key both services present, and the development CA when we made
/// them ourselves.
pub struct TlsMaterial {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub dev_ca: Option<std::path::PathBuf>,
}

/// Loads `--tls-cert/--tls-key`, or makes (once) a development CA and a certificate for `hosts`.
pub async fn tls_material(
    ctx: &Context,
    args: &TlsArgs,
    hosts: Vec<String>,
) -> anyhow::Result<TlsMaterial> {
    let (cert, key, dev_ca) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), None),
        _ => {
            // Key generation and file locking block: keep them off the async workers.
            let dir = ctx.settings.data_dir.join("tls");
            let files =
                tokio::task::spawn_blocking(move || devca::ensure_dev_pki(&dir, &hosts)).await??;
            (files.cert, files.key, Some(files.ca_cert))
        }
    };
    let (certs, key) = tls::load_certified_key(&cert, &key)?;
    Ok(TlsMaterial { certs, key, dev_ca })
}

/// The host names a development certificate must carry: the listening addresses' IPs.
pub fn cert_hosts(addrs: &[SocketAddr]) -> Vec<String> {
    let mut hosts: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The web service, bound and ready to serve.
pub struct WebPart {
    pub listener: tokio::net::TcpListener,
    pub bound: SocketAddr,
    pub public: String,
    pub tls: Arc<rustls::ServerConfig>,
    pub state: AppState,
}

pub async fn bind_web(args: &WebArgs) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(args.web_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (in use, or not an address of this machine?)",
                args.web_listen
            )
        })?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

pub fn web_part(
    ctx: &Context,
    store: &Store,
    args: &WebArgs,
    (listener, bound): (tokio::net::TcpListener, SocketAddr),
    relay_addr: String,
    tls_material: &TlsMaterial,
) -> anyhow::Result<WebPart> {
    // Without --public-url, the origin is the address actually bound (port 0 picks one): it is
    // what browsers send as `Origin`, and what the bootstrap link must point at.
    let public = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{bound}"));
    let tls = tls::https_server_config(tls_material.certs.clone(), tls_material.key.clone_key())?;
    let mut config = WebConfig::new(public.clone(), relay_addr);
    if let Some(ca) = &tls_material.dev_ca {
        config.relay_ca_pem = Some(
            std::fs::read_to_string(ca)
                .with_context(|| format!("cannot read the development CA {}", ca.display()))?,
        );
    }
    config.time_zone = args.time_zone.clone();
    config.plant_name = args.plant_name.trim().to_owned();
    if let Some(b) = &args.banner {
        config.banner = b.clone();
    }
    let keys_dir = ctx.keys_dir();
    // Blocking file work and key generation, like the key ring below: done once at start.
    let site_ca_dir = keys_dir.join("site-ca");
    config.site_ca = Some(Arc::new(devca::ensure_ca(&site_ca_dir).with_context(
        || format!("cannot set up the site CA in {}", site_ca_dir.display()),
    )?));
    let ring = KeyRing::load_or_create(&keys_dir.join("relay-signing"))?;
    let keys = WebKeys {
        totp: TotpKey::load_or_create(&keys_dir.join("totp.key"))?,
        signer: ring.signer(&config.token_issuer, &config.token_audience),
        jwks: ring.jwks(),
        audit_mac: ctx.mac_key(true)?,
        checkpoints: Some(checkpoint_source(ctx)?),
    };
    let state = AppState::new(store.clone(), Arc::new(SystemClock), keys, config);
    Ok(WebPart {
        listener,
        bound,
        public,
        tls,
        state,
    })
}

/// The auditor's verify checks against the checkpoints in the data directory, as `audit verify`
/// does.
fn checkpoint_source(ctx: &Context) -> anyhow::Result<CheckpointSource> {
    let dir = ctx.checkpoints_dir();
    let key = ctx.checkpoint_key(true)?.verifying_key();
    Ok(CheckpointSource(Arc::new(move || {
        let files = checkpoints::files(&dir).map_err(|e| format!("{e:#}"))?;
        checkpoints::vouched(&files, &key).map_err(|bad| bad.to_string())
    })))
}

pub async fn run_web(part: WebPart, stop: CancellationToken) -> anyhow::Result<()> {
    portcullis_web::serve::serve_https(
        part.listener,
        part.tls,
        portcullis_web::router(part.state),
        async move { stop.cancelled().await },
    )
    .await
    .context("the web service stopped")
}

/// The audience relay tokens carry; the web service mints for it, the relay accepts only it.
pub const TOKEN_AUDIENCE: &str = "portcullis-relay";

/// The relay and its bound QUIC endpoint.
pub fn relay_part(
    ctx: &Context,
    store: &Store,
    args: &RelayArgs,
    verifier: TokenVerifier,
    tls_material: &TlsMaterial,
) -> anyhow::Result<(Relay, quinn::Endpoint)> {
    let mut server = quic::relay_server_config(
        tls_material.certs.clone(),
        tls_material.key.clone_key(),
        &[
            portcullis_core::wire::ALPN,
            portcullis_core::wire::CONNECTOR_ALPN,
        ],
    )?;
    server.transport_config(quic::transport_config_for(args.quic.congestion));
    let reset_key = ctx.relay_reset_key()?;
    let endpoint = quic::relay_endpoint(args.relay_listen, server, &reset_key).with_context(|| {
        format!(
            "cannot listen for the relay on UDP {} (in use, or not an address of this machine?)",
            args.relay_listen
        )
    })?;
    let config = RelayConfig {
        name: args.relay_name.clone(),
        idle_timeout: args.idle_timeout,
        max_streams_per_grant: args.max_streams_per_grant as usize,
        report_every: args.live_report_every,
        ..RelayConfig::default()
    };
    let relay = Relay::new(store.clone(), verifier, Arc::new(SystemClock), config);
    Ok((relay, endpoint))
}

/// A verifier for tokens the web service with public URL `issuer` mints: keys from a JWKS
/// file, or the key ring in the data directory.
pub fn verifier(
    ctx: &Context,
    issuer: &str,
    jwks: Option<&std::path::Path>,
) -> anyhow::Result<TokenVerifier> {
    match jwks {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the JWKS file {}", path.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Ok(TokenVerifier::from_jwks(&doc, issuer, TOKEN_AUDIENCE)
                .with_context(|| format!("{} is not a usable JWKS", path.display()))?)
        }
        None => {
            let dir = ctx.keys_dir().join("relay-signing");
            let ring = KeyRing::load(&dir).with_context(|| {
                format!(
                    "no token keys in {}: start `portcullis web` with this data directory first, or pass --jwks",
                    dir.display()
                )
            })?;
            Ok(ring.verifier(issuer, TOKEN_AUDIENCE))
        }
    }
}

pub fn system(action: &str, details: serde_json::Value) -> AuditDraft {
    AuditDraft::new("portcullis", ActorRole::System, action)
        .target("service")
        .details(details)
}

/// Cancelled on the first SIGTERM or SIGINT. Registers for both now, so a signal that arrives
/// right after start-up is already ours.
pub fn shutdown_token() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        t.cancel();
    });
    Ok(token)
}

/// The verifier of `serve`: the key ring the web service in the same process signs with
/// (created here if this is the first start).
pub fn verifier_for_serve(ctx: &Context, issuer: &str) -> anyhow::Result<TokenVerifier> {
    ctx.ensure_dirs()?;
    let ring = KeyRing::load_or_create(&ctx.keys_dir().join("relay-signing"))?;
    Ok(ring.verifier(issuer, TOKEN_AUDIENCE))
}

/// Starts this process's clock monitor and grant-end sweep (issue 12), and finds out whether
/// the clock is synchronised: not (or unknown) is logged as a warning and audited as
/// `clock.unsynchronised`, the alert until alerting exists. Returns the `time_sync` detail
/// for `service.start`.
pub async fn start_clock(
    store: &Store,
    service: &str,
    tolerance: std::time::Duration,
) -> anyhow::Result<serde_json::Value> {
    let sync = tokio::task::spawn_blocking(portcullis_store::probe_time_sync).await?;
    store.set_time_sync(sync.clone());
    if sync.synchronised != Some(true) {
        tracing::warn!(
            source = %sync.source,
            detail = %sync.detail,
            "the system clock is not known to be synchronised (NTP): time-bound access relies on it"
        );
        store
            .append(
                AuditDraft::new("portcullis", ActorRole::System, "clock.unsynchronised")
                    .target("clock")
                    .details(serde_json::json!({ "service": service, "time_sync": sync })),
            )
            .await?;
    }
    store
        .clock_monitor(portcullis_store::ClockMonitorConfig::new(
            service, tolerance,
        ))
        .spawn();
    Ok(serde_json::to_value(&sync)?)
}
