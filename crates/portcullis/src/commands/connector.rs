//! `portcullis connector enroll|run`: the site connector, on a machine in the plant's OT zone
//! (docs/guides/connector.md).
//!
//! Stdout gets a few lines for people and scripts (`enrolled as site ...`,
//! `connector: site <site>, relay <addr>`, `stopped`); everything while running goes to the log
//! on stderr (default level info for the connector, `PORTCULLIS_LOG` to change it).
//! Exit code: 0 after SIGTERM/SIGINT, 1 on a startup error (not enrolled, a bad allowlist, ...).

use std::process::ExitCode;

use portcullis_connector::{
    Allowlist, Connector, ConnectorConfig, EnrollOptions, Enrolled, StateDir, enroll,
};

use crate::cli::{ConnectorCommand, ConnectorEnrollArgs, ConnectorRunArgs};
use crate::commands::parts;

pub async fn run(cmd: ConnectorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConnectorCommand::Enroll(args) => enroll_command(args).await,
        ConnectorCommand::Run(args) => run_command(args).await,
    }
}

async fn enroll_command(args: ConnectorEnrollArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(args.dir.path);
    let opts = EnrollOptions {
        url: args.url,
        token: args.token,
        ca: args.ca,
        force: args.force,
    };
    let done = enroll(&state, &opts).await?;
    print_enrolled(&state, &done);
    println!(
        "next: list the devices this connector may dial in {}, then run `portcullis connector run --dir {}`",
        state.default_allowlist().display(),
        state.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_command(args: ConnectorRunArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(args.dir.path);
    if !state.is_enrolled()? {
        if let (Some(url), Some(token)) = (args.url, args.token) {
            let opts = EnrollOptions {
                url,
                token,
                ca: args.ca,
                force: false,
            };
            let done = enroll(&state, &opts).await?;
            print_enrolled(&state, &done);
        }
    } else if args.token.is_some() {
        tracing::info!(
            "{} is already enrolled; the enrollment token given is not used",
            state.path().display()
        );
    }
    // Not enrolled (and no token given): this says how to enroll.
    let identity = state.load_identity()?;
    let allowlist_path = args.allowlist.unwrap_or_else(|| state.default_allowlist());
    let allowlist = Allowlist::load(&allowlist_path)?;
    if allowlist.is_missing() {
        tracing::warn!(
            "there is no allowlist at {}: every dial will be refused. Create it with an [[allow]] entry (host, ports) for each device this connector may dial, then restart",
            allowlist_path.display()
        );
    } else if allowlist.is_empty() {
        tracing::warn!(
            "the allowlist {} lists no devices: every dial will be refused",
            allowlist_path.display()
        );
    } else {
        tracing::info!(
            "allowlist {}: {} entries",
            allowlist_path.display(),
            allowlist.len()
        );
    }
    let config = ConnectorConfig {
        congestion: args.quic.congestion,
        ..ConnectorConfig::default()
    };
    let connector = Connector::new(identity, allowlist, config, args.relay)?;
    println!(
        "connector: site {}, relay {}",
        connector.site(),
        connector.relay()
    );
    let stop = parts::shutdown_token()?;
    connector.run(stop).await;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn print_enrolled(state: &StateDir, done: &Enrolled) {
    println!(
        "enrolled as site {} (certificate valid until {}, SHA-256 {})",
        done.site, done.not_after, done.fingerprint
    );
    println!("relay: {}", done.relay);
    println!("state: {}", state.path().display());
}
