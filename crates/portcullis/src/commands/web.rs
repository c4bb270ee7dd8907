//! `portcullis web`: the approval service alone, for a split deployment on PostgreSQL (the
//! relay runs as `portcullis relay`; revocations reach it through PostgreSQL LISTEN/NOTIFY).

use std::io::Write;
use std::process::ExitCode;

use crate::cli::WebCommandArgs;
use crate::commands::checkpointer::Checkpointer;
use crate::commands::{followers, parts};
use crate::context::Context;

pub async fn run(ctx: &Context, args: WebCommandArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    let socket = parts::bind_web(&args.web).await?;
    let tls = parts::tls_material(ctx, &args.tls, parts::cert_hosts(&[socket.1])).await?;
    let web = parts::web_part(
        ctx,
        &store,
        &args.web,
        socket,
        args.relay_addr.clone(),
        &tls,
    )?;
    let stop = parts::shutdown_token()?;
    let checkpointer = Checkpointer::start(ctx, &store, args.web.checkpoint_every.0, stop.clone())?;
    web.state.set_metrics(followers::start(
        ctx,
        &store,
        &web,
        &args.web.time_zone,
        stop.clone(),
    )?);
    match &tls.dev_ca {
        Some(ca) => println!("web: {} (development CA: {})", web.public, ca.display()),
        None => println!("web: {}", web.public),
    }
    let time_sync = parts::start_clock(&store, "web", args.clock.clock_tolerance).await?;
    store
        .append(parts::system(
            "service.start",
            serde_json::json!({ "web": web.bound.to_string(), "relay": args.relay_addr,
                                "time_sync": time_sync }),
        ))
        .await?;
    parts::run_web(web, stop).await?;
    store
        .append(parts::system(
            "service.stop",
            serde_json::json!({ "reason": "shutdown" }),
        ))
        .await?;
    checkpointer.finish().await;
    store.close().await;
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(ExitCode::SUCCESS)
}
