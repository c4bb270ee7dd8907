//! One module per command group; `run` dispatches.

mod admin;
mod alerts;
mod audit;
mod checkpointer;
mod connect;
mod connector;
mod devices;
mod followers;
mod grants;
mod login;
mod logout;
mod migrate;
mod notify;
mod parts;
mod relay;
mod request;
mod serve;
mod siem;
mod tail;
mod watch;
mod web;

use std::process::ExitCode;

use crate::cli::{BrokerCommand, Cli, Command, VendorCommand};
use crate::config::Settings;
use crate::context::Context;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        // The vendor's commands run on the vendor's machine: no broker data directory, database
        // or broker config file is involved, so they do not resolve those settings at all.
        Command::Vendor(cmd) => vendor(cmd).await,
        // The site connector runs in the plant's OT zone, far from the broker's data.
        Command::Connector(cmd) => connector::run(cmd).await,
        Command::Broker(cmd) => {
            let ctx = Context {
                settings: Settings::resolve(&cli.globals)?,
            };
            tracing::debug!(settings = ?ctx.settings, "resolved settings");
            broker(&ctx, cmd).await
        }
    }
}

async fn broker(ctx: &Context, cmd: BrokerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BrokerCommand::Admin(cmd) => admin::run(ctx, cmd).await,
        BrokerCommand::Audit(cmd) => audit::run(ctx, cmd).await,
        BrokerCommand::Migrate => migrate::run(ctx).await,
        BrokerCommand::Serve(args) => serve::run(ctx, args).await,
        BrokerCommand::Web(args) => web::run(ctx, args).await,
        BrokerCommand::Relay(args) => relay::run(ctx, args).await,
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
