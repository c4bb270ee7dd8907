//! One module per command group; `run` dispatches.

mod admin;
mod audit;
mod connect;
mod connector;
mod devices;
mod grants;
mod login;
mod logout;
mod migrate;
mod parts;
mod relay;
mod request;
mod serve;
mod watch;
mod web;

use std::process::ExitCode;

use crate::cli::{Cli, Command, VendorCommand};
use crate::config::Settings;
use crate::context::Context;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The vendor's commands run on the vendor's machine: no broker data directory, database or
    // broker config file is involved, so they do not resolve those settings at all.
    let command = match cli.command {
        Command::Vendor(cmd) => return vendor(cmd).await,
        // The site connector runs in the plant's OT zone, far from the broker's data.
        Command::Connector(cmd) => return connector::run(cmd).await,
        broker => broker,
    };
    let cli = Cli { command, ..cli };
    let ctx = Context {
        settings: Settings::resolve(&cli)?,
    };
    tracing::debug!(settings = ?ctx.settings, "resolved settings");
    match cli.command {
        Command::Admin(cmd) => admin::run(&ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&ctx, cmd).await,
        Command::Migrate => migrate::run(&ctx).await,
        Command::Serve(args) => serve::run(&ctx, args).await,
        Command::Web(args) => web::run(&ctx, args).await,
        Command::Relay(args) => relay::run(&ctx, args).await,
        Command::Vendor(cmd) => vendor(cmd).await,
        Command::Connector(cmd) => connector::run(cmd).await,
    }
}

async fn vendor(cmd: VendorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VendorCommand::Login(args) => login::run(args).await,
        VendorCommand::Logout(args) => logout::run(args).await,
        VendorCommand::Devices(args) => devices::run(args).await,
        VendorCommand::Request(args) => request::run(args).await,
        VendorCommand::Grants(args) => grants::run(args).await,
        VendorCommand::Connect(args) => connect::run(args).await,
    }
}
