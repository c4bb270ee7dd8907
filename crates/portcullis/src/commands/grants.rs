//! `portcullis grants`: the vendor's own requests and grants, with state and time left.

use std::process::ExitCode;
use std::time::Duration;

use portcullis_client::api::{ApiClient, Request};
use portcullis_client::config::ConfigDir;
use portcullis_client::when;
use portcullis_core::{RequestState, TimeZoneName, Timestamp};

use crate::cli::{Format, ListArgs};
use crate::commands::devices::join_ports;
use crate::output::table;

pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let session = ConfigDir::from_env()?.load_session()?;
    let api = ApiClient::for_session(&session)?;
    let mut list = api.requests().await?;
    // Times in the zone the person chose (issue 15); UTC when none, or from a broker too old
    // to say.
    let zone = api
        .me()
        .await
        .ok()
        .and_then(|me| me.time_zone)
        .and_then(|z| TimeZoneName::parse(&z).ok());
    list.sort_by_key(|r| std::cmp::Reverse(r.id));
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no requests yet: ask for access with `portcullis request`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list.iter().map(|r| row(r, zone.as_ref())).collect();
    let window = format!("WINDOW ({})", zone.as_ref().map_or("UTC", |z| z.as_str()));
    print!(
        "{}",
        table(
            &["ID", "DEVICE", "PORTS", "ACCESS", "STATE", &window, "LEFT"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn row(r: &Request, zone: Option<&TimeZoneName>) -> Vec<String> {
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
            shown(r.window.start, zone),
            shown(r.window.end, zone)
        ),
        left,
    ]
}

/// A time as `2026-05-01 08:00`, in `zone` (with its abbreviation) or UTC.
fn shown(t: Timestamp, zone: Option<&TimeZoneName>) -> String {
    match zone.and_then(|z| {
        jiff::Timestamp::from_microsecond(t.unix_micros())
            .ok()
            .map(|ts| ts.to_zoned(z.zone()))
    }) {
        Some(z) => z.strftime("%Y-%m-%d %H:%M %Z").to_string(),
        None => short(&t.to_rfc3339()),
    }
}

/// `2026-05-01T08:00:00.000000Z` as `2026-05-01 08:00`.
fn short(t: &str) -> String {
    match (t.get(..10), t.get(11..16)) {
        (Some(day), Some(hm)) if t.len() >= 16 => format!("{day} {hm}"),
        _ => t.to_owned(),
    }
}
