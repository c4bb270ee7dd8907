//! `portcullis`: the one binary. Parses the command line, sets up logging and the runtime, runs
//! the command, and turns any error into one line on stderr and a non-zero exit.
#![forbid(unsafe_code)]

mod checkpoints;
mod cli;
mod commands;
mod config;
mod context;
mod output;

use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ErrorKind};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return bad_arguments(&e),
    };
    // The site connector's log is its only status report: connects, dials and refusals at info.
    let default_log = match cli.command {
        cli::Command::Connector(_) => {
            "warn,portcullis_connector=info,portcullis::commands::connector=info"
        }
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: under systemd the log goes to the journal as text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// A value that parsed but is wrong (`--max-window 0s`) is bad input like any other: one
/// `error:` line naming the field, exit 1, as when a command refuses it. Everything else
/// (`--help`, an unknown flag, a value not among the choices) is clap's own output.
fn bad_arguments(e: &clap::Error) -> ExitCode {
    if e.kind() != ErrorKind::ValueValidation {
        e.exit();
    }
    let why = std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string);
    // Core's validation errors start with their field (`max-window: ...`); others get the flag.
    let names_field = why.split_once(": ").is_some_and(|(field, _)| {
        !field.contains(' ') && field.chars().all(|c| c.is_ascii_lowercase() || c == '-')
    });
    let line = match e.get(ContextKind::InvalidArg) {
        Some(arg) if !names_field => {
            let flag = arg.to_string();
            let flag = flag
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            format!("{flag}: {why}")
        }
        _ => why,
    };
    eprintln!("error: {}", output::one_line(&line));
    ExitCode::FAILURE
}
