//! `portcullis serve`: everything on one machine with the embedded default. Makes a development
//! CA and certificate on first start unless certificate files are given, prints a one-time
//! bootstrap link for the first admin on a fresh database, and stops cleanly on SIGTERM/SIGINT.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use portcullis_auth::token::KeyRing;
use portcullis_auth::totp::TotpKey;
use portcullis_core::Role;
use portcullis_core::audit::{ActorRole, AuditDraft};
use portcullis_net::{devca, tls};
use portcullis_store::{NewUser, Store, SystemClock};
use portcullis_web::{AppState, WebConfig, WebKeys};

use crate::cli::ServeArgs;
use crate::context::Context;

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    let keys_dir = ctx.keys_dir();
    let listener = tokio::net::TcpListener::bind(args.web_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (in use, or not an address of this machine?)",
                args.web_listen
            )
        })?;
    let bound = listener.local_addr()?;
    // Without --public-url, the origin is the address actually bound (port 0 picks one): it is
    // what browsers send as `Origin`, and what the bootstrap link must point at.
    let public = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{bound}"));
    let host = args.web_listen.ip().to_string();
    let (cert, key, ca) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), None),
        _ => {
            // Key generation and file locking block: keep them off the async workers.
            let dir = ctx.settings.data_dir.join("tls");
            let files =
                tokio::task::spawn_blocking(move || devca::ensure_dev_pki(&dir, &[host])).await??;
            (files.cert, files.key, Some(files.ca_cert))
        }
    };
    let (certs, private) = tls::load_certified_key(&cert, &key)?;
    let tls_config = tls::https_server_config(certs, private)?;

    portcullis_web::pages::check_time_zone(&args.time_zone)
        .map_err(|e| anyhow::anyhow!("--time-zone: {e}"))?;
    let mut config = WebConfig::new(public.clone(), args.relay_listen.to_string());
    config.time_zone = args.time_zone.clone();
    if let Some(b) = &args.banner {
        config.banner = b.clone();
    }
    let ring = KeyRing::load_or_create(&keys_dir.join("relay-signing"))?;
    let keys = WebKeys {
        totp: TotpKey::load_or_create(&keys_dir.join("totp.key"))?,
        signer: ring.signer(&config.token_issuer, &config.token_audience),
        jwks: ring.jwks(),
        audit_mac: ctx.mac_key(true)?,
    };
    bootstrap(&store, &public).await?;
    let stop = shutdown_signal()?;

    let shown = public.clone();
    match &ca {
        Some(ca) => println!("web: {shown} (development CA: {})", ca.display()),
        None => println!("web: {shown}"),
    }
    store
        .append(system(
            "service.start",
            serde_json::json!({ "web": bound.to_string() }),
        ))
        .await?;

    let state = AppState::new(store.clone(), Arc::new(SystemClock), keys, config);
    portcullis_web::serve::serve_https(listener, tls_config, portcullis_web::router(state), stop)
        .await
        .context("the web service stopped")?;
    store
        .append(system(
            "service.stop",
            serde_json::json!({ "reason": "shutdown" }),
        ))
        .await?;
    store.close().await;
    // Whoever started us may have closed our stdout by now; that is no reason to fail.
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(ExitCode::SUCCESS)
}

fn system(action: &str, details: serde_json::Value) -> AuditDraft {
    AuditDraft::new("portcullis", ActorRole::System, action)
        .target("service")
        .details(details)
}

/// On a database with no users at all, creates the first admin and prints its one-time link.
async fn bootstrap(store: &Store, public: &str) -> anyhow::Result<()> {
    if !store.list_users().await?.is_empty() {
        return Ok(());
    }
    let actor = portcullis_store::AuditActor {
        name: "portcullis".into(),
        role: ActorRole::System,
        source: None,
    };
    let new = NewUser {
        username: portcullis_core::Username::parse("admin")?,
        role: Role::Admin,
        org: None,
    };
    let (_, code) = store.add_user(&actor, &new).await?;
    println!(
        "bootstrap: open {public}/enroll?code={} to enroll the first admin 'admin' (works once, until {})",
        code.code, code.expires_at
    );
    Ok(())
}

/// Registers for SIGTERM and SIGINT now, so a signal that arrives right after start-up is
/// already ours, and returns a future that completes on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
