//! `portcullis serve`: everything on one machine with the embedded default: the web service
//! (HTTPS) and the relay (QUIC) in one process, sharing one store, so revocations reach the relay
//! on an in-process channel. Makes a development CA and certificate on first start unless
//! certificate files are given, prints a one-time bootstrap link for the first admin on a fresh
//! database, and stops cleanly on SIGTERM/SIGINT (live sessions end as `shutdown`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use portcullis_core::Role;
use portcullis_core::audit::ActorRole;
use portcullis_store::{NewUser, Store};

use crate::cli::ServeArgs;
use crate::commands::checkpointer::Checkpointer;
use crate::commands::{followers, parts};
use crate::context::Context;

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    // Changes committed by other processes (the command line above all) reach this relay
    // within one poll on SQLite, through NOTIFY on PostgreSQL, like the web's own.
    store
        .follow_other_processes(&ctx.settings.database_url)
        .await?;
    let web_socket = parts::bind_web(&args.web).await?;
    let hosts = parts::cert_hosts(&[web_socket.1, args.relay.relay_listen]);
    let tls = parts::tls_material(ctx, &args.tls, hosts).await?;
    // The relay binds first so the web service can tell clients the port actually bound.
    let public_guess = args
        .web
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", web_socket.1));
    let verifier = parts::verifier_for_serve(ctx, &public_guess)?;
    let (relay, endpoint) = parts::relay_part(ctx, &store, &args.relay, verifier, &tls)?;
    let relay_bound = endpoint.local_addr()?;
    let web = parts::web_part(
        ctx,
        &store,
        &args.web,
        web_socket,
        relay_bound.to_string(),
        &tls,
    )?;
    let metrics = relay.metrics();
    let stop = parts::shutdown_token()?;
    let followers = followers::start(ctx, &store, &web, &args.web.time_zone, stop.clone())?;
    let checkpointer = Checkpointer::start(ctx, &store, args.web.checkpoint_every.0, stop.clone())?;
    web.state
        .set_metrics(Arc::new(move || metrics.render() + &followers()));
    bootstrap(&store, &web.public).await?;

    match &tls.dev_ca {
        Some(ca) => println!("web: {} (development CA: {})", web.public, ca.display()),
        None => println!("web: {}", web.public),
    }
    let time_sync = parts::start_clock(&store, "serve", args.clock.clock_tolerance).await?;
    println!("relay: {relay_bound} (QUIC)");
    store
        .append(parts::system(
            "service.start",
            serde_json::json!({ "web": web.bound.to_string(), "relay": relay_bound.to_string(),
                                "time_sync": time_sync }),
        ))
        .await?;

    let relay_stop = stop.clone();
    let (web_result, relay_result) = tokio::join!(parts::run_web(web, stop.clone()), async {
        let r = relay.run(endpoint, relay_stop.cancelled()).await;
        // If the relay fails, the whole broker stops: a web service that issues tokens for
        // a relay that is not there helps nobody.
        relay_stop.cancel();
        r
    });
    web_result?;
    relay_result.context("the relay stopped")?;
    store
        .append(parts::system(
            "service.stop",
            serde_json::json!({ "reason": "shutdown" }),
        ))
        .await?;
    checkpointer.finish().await;
    store.close().await;
    // Whoever started us may have closed our stdout by now; that is no reason to fail.
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(ExitCode::SUCCESS)
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
