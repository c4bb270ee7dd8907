//! One module per command group; `run` dispatches.

mod admin;
mod audit;
mod migrate;
mod serve;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::context::Context;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context {
        settings: Settings::resolve(&cli)?,
    };
    tracing::debug!(settings = ?ctx.settings, "resolved settings");
    match cli.command {
        Command::Admin(cmd) => admin::run(&ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&ctx, cmd).await,
        Command::Migrate => migrate::run(&ctx).await,
        Command::Serve(args) => serve::run(&ctx, args).await,
    }
}
