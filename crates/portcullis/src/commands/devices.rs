//! `portcullis devices`: what the logged-in vendor may request.

use std::process::ExitCode;

use std::collections::BTreeSet;

use portcullis_client::api::ApiClient;
use portcullis_client::config::ConfigDir;
use portcullis_client::when;
use portcullis_core::Port;

use crate::cli::{Format, ListArgs};
use crate::output::table;

pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let session = ConfigDir::from_env()?.load_session()?;
    let devices = ApiClient::for_session(&session)?.devices().await?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(ExitCode::SUCCESS);
    }
    if devices.is_empty() {
        println!("no devices: your organisation may not request any yet (ask the plant's admin)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.name.to_string(),
                d.device_type.clone(),
                d.site.clone(),
                d.criticality.to_string(),
                join_ports(&d.ports),
                when::left(std::time::Duration::from_secs(d.max_window_secs)),
                d.approvals_required.to_string(),
                modbus(d),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "DEVICE",
                "TYPE",
                "SITE",
                "CRITICALITY",
                "PORTS",
                "MAX WINDOW",
                "APPROVALS",
                "MODBUS"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The Modbus ports (`--access read` by default on them), and `(read only)` when the device
/// never grants writes; `-` for none.
fn modbus(d: &portcullis_client::api::Device) -> String {
    if d.protocols.is_empty() {
        return "-".into();
    }
    let ports: BTreeSet<Port> = d.protocols.keys().copied().collect();
    if d.writes.is(portcullis_core::WritePolicy::Never) {
        format!("{} (read only)", join_ports(&ports))
    } else {
        join_ports(&ports)
    }
}

pub fn join_ports(ports: &BTreeSet<Port>) -> String {
    Port::join(ports)
}
