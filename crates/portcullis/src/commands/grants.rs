//! `portcullis grants`: the vendor's own requests and grants, with state and time left.

use std::process::ExitCode;
use std::time::Duration;

use portcullis_client::api::{ApiClient, Request};
use portcullis_client::config::ConfigDir;
use portcullis_client::when;
use portcullis_core::RequestState;

use crate::cli::{Format, ListArgs};
use crate::commands::devices::join_ports;
use crate::output::table;

pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let session = ConfigDir::from_env()?.load_session()?;
    let mut list = ApiClient::for_session(&session)?.requests().await?;
    list.sort_by_key(|r| std::cmp::Reverse(r.id));
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no requests yet: ask for access with `portcullis request`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list.iter().map(row).collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "DEVICE",
                "PORTS",
                "ACCESS",
                "STATE",
                "WINDOW (UTC)",
                "LEFT"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn row(r: &Request) -> Vec<String> {
    let left = match (r.state.known(), r.seconds_left) {
        (Some(RequestState::Active), Some(s)) => when::left(Duration::from_secs(s)),
        _ => String::new(),
    };
    let state = match &r.closing_reason {
        Some(why) if !why.is_empty() => format!("{} ({why})", r.state),
        _ => r.state.to_string(),
    };
    vec![
        r.id.to_string(),
        r.device.to_string(),
        join_ports(&r.ports),
        r.access.to_string(),
        state,
        format!(
            "{} to {}",
            short(&r.window.start.to_rfc3339()),
            short(&r.window.end.to_rfc3339())
        ),
        left,
    ]
}

/// `2026-05-01T08:00:00.000000Z` as `2026-05-01 08:00`.
fn short(t: &str) -> String {
    match (t.get(..10), t.get(11..16)) {
        (Some(day), Some(hm)) if t.len() >= 16 => format!("{day} {hm}"),
        _ => t.to_owned(),
    }
}
