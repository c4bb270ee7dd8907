//! `portcullis connect <grant-id> [-L [addr:]local:remote]...`: local ports that reach the
//! granted device through the relay, until the window ends.
//!
//! Stdout carries the lines scripts read, one per line and flushed:
//! `window ends <RFC 3339> (<n> min left)`, `access PORT: modbus, read-only: ...` (one per
//! Modbus port), `listening 127.0.0.1:PORT -> DEVICE:PORT`,
//! `warning: N min left`, `session ended (window_end): ...`. Problems go to stderr.
//! Exit code: 0 when the window ended or the vendor stopped (Ctrl-C, SIGTERM), 3 when access
//! was taken away (revoked, account disabled, policy changed, relay shut down), 1 on errors.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use portcullis_client::api::ApiClient;
use portcullis_client::config::ConfigDir;
use portcullis_client::prompt::Prompt;
use portcullis_client::tunnel::{self, BrokerTokens, Event, ForwardSpec, Outcome, TunnelOptions};
use portcullis_client::{trust, when};
use portcullis_core::wire::EndReason;

use crate::cli::ConnectArgs;

pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let forwards = args
        .forward
        .iter()
        .map(|f| f.parse::<ForwardSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    let session = ConfigDir::from_env()?.load_session()?;
    let api = ApiClient::for_session(&session)?;
    let opts = TunnelOptions {
        grant_id: args.grant_id,
        forwards,
        roots: trust::roots(session.ca_pem.as_deref())?,
        broker_host: api.broker_host(),
        congestion: args.quic.congestion,
    };
    let mut tokens = BrokerTokens::new(api, Prompt::stdin());
    let outcome = tunnel::run(opts, &mut tokens, Arc::new(print_event), stop_signal()?).await?;
    match &outcome {
        Outcome::Interrupted => say("disconnected"),
        Outcome::Ended {
            reason: EndReason::WindowEnd,
            message,
        } => say(&format!("session ended (window_end): {message}")),
        Outcome::Ended { reason, message } => {
            eprintln!("session ended ({}): {message}", reason.as_str());
        }
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// One line on stdout, flushed at once: scripts wait for these lines.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn print_event(e: &Event) {
    match e {
        Event::Connected {
            relay,
            welcome,
            reconnected,
        } => {
            let end = welcome
                .window_end
                .map(when::rfc3339)
                .unwrap_or_else(|| "unknown".into());
            if *reconnected {
                say(&format!("reconnected to the relay at {relay}"));
            } else {
                say(&format!(
                    "connected to the relay at {relay} (grant {}, session {})",
                    welcome.grant_id, welcome.session_id
                ));
            }
            say(&format!(
                "window ends {end} ({} min left)",
                when::minutes_ceil(welcome.remaining)
            ));
            for (port, mode) in &welcome.modes {
                let what = match mode.as_str() {
                    "modbus-read" => {
                        "modbus, read-only: writes are answered with Modbus exception 01 (illegal function)"
                    }
                    "modbus-write" => {
                        "modbus, read and write: every write is recorded with its values"
                    }
                    other => other,
                };
                say(&format!("access {port}: {what}"));
            }
        }
        Event::Listening { local, target, .. } => {
            say(&format!(
                "listening {local} -> {}:{}",
                target.device, target.port
            ));
        }
        Event::Warning { remaining } => {
            say(&format!(
                "warning: {} min left",
                when::minutes_ceil(*remaining)
            ));
        }
        Event::ConnectionLost { detail } => {
            eprintln!("connection to the relay lost ({detail}); reconnecting");
        }
        Event::Retrying { detail, after } => {
            eprintln!(
                "reconnect failed ({detail}); trying again in {}",
                when::left(*after)
            );
        }
        Event::StreamRefused {
            peer,
            target,
            code,
            message,
        } => eprintln!(
            "refused: {peer} -> {}:{}: {message} ({code})",
            target.device, target.port
        ),
        Event::StreamFailed {
            peer,
            target,
            detail,
        } => eprintln!(
            "connection {peer} -> {}:{} ended: {detail}",
            target.device, target.port
        ),
        Event::AcceptFailed { local, detail } => {
            eprintln!("cannot accept on {local}: {detail}");
        }
        other => eprintln!("{other:?}"),
    }
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM; registered now, so a signal that comes
/// while connecting is already ours.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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
