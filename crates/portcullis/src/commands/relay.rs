//! `portcullis relay`: the QUIC relay alone, for a split deployment on PostgreSQL. Grant changes
//! the web service (or the command line) commits arrive through PostgreSQL LISTEN/NOTIFY (on
//! SQLite, through the `grant_changes` feed); a periodic reconciliation covers notifications
//! lost while the listener reconnects.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::RelayCommandArgs;
use crate::commands::{parts, watch};
use crate::context::Context;

pub async fn run(ctx: &Context, args: RelayCommandArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    store
        .follow_other_processes(&ctx.settings.database_url)
        .await?;
    let hosts = parts::cert_hosts(&[args.relay.relay_listen]);
    let tls = parts::tls_material(ctx, &args.tls, hosts).await?;
    let verifier = parts::verifier(ctx, &args.public_url, args.jwks.as_deref())?;
    let (relay, endpoint) = parts::relay_part(ctx, &store, &args.relay, verifier, &tls)?;
    let bound = endpoint.local_addr()?;
    let stop = parts::shutdown_token()?;
    let watch = watch::start(ctx, &store, stop.clone());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        println!("metrics: http://{}/metrics", listener.local_addr()?);
        let metrics = relay.metrics();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (m, w) = (metrics.clone(), watch.clone());
                async move { m.render() + &w.render() }
            }),
        );
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
    }
    let time_sync = parts::start_clock(&store, "relay", args.clock.clock_tolerance).await?;
    store
        .append(parts::system(
            "service.start",
            serde_json::json!({ "relay": bound.to_string(), "time_sync": time_sync }),
        ))
        .await?;
    println!("relay: {bound} (QUIC)");
    relay
        .run(endpoint, async move { stop.cancelled().await })
        .await
        .context("the relay stopped")?;
    store.close().await;
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(ExitCode::SUCCESS)
}
