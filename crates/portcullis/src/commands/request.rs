//! `portcullis request`: ask for access to a device's ports for a window.

use std::process::ExitCode;

use portcullis_client::api::ApiClient;
use portcullis_client::config::ConfigDir;
use portcullis_client::request::{RequestInput, build};
use time::OffsetDateTime;

use crate::cli::{OutFormat, RequestArgs};

pub async fn run(args: RequestArgs) -> anyhow::Result<ExitCode> {
    // Bad input is reported before the session is even read: nothing goes out for it.
    let input = RequestInput {
        device: &args.device,
        ports: &args.ports,
        from: &args.from,
        until: &args.until,
        reason: &args.reason,
        ticket: args.ticket.as_deref(),
        access: args.access.map(|a| a.as_str()),
    };
    let new = build(&input, OffsetDateTime::now_utc()).map_err(anyhow::Error::msg)?;
    let session = ConfigDir::from_env()?.load_session()?;
    let created = ApiClient::for_session(&session)?
        .create_request(&new)
        .await?;
    match args.format {
        OutFormat::Json => println!(
            "{}",
            serde_json::json!({ "id": created.id, "state": created.state,
                                "start": new.start, "end": new.end,
                                "access": new.access.as_deref().unwrap_or("read") })
        ),
        OutFormat::Text => println!(
            "request {}: {} ({} to {}); follow it with `portcullis grants`",
            created.id, created.state, new.start, new.end
        ),
    }
    Ok(ExitCode::SUCCESS)
}
