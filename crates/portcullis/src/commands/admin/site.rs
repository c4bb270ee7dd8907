//! `portcullis admin site add|list|revoke|token`, and what `admin device add` says about how a
//! new device will be reached (docs/decisions/0007-site-connectors.md).

use portcullis_core::{Device, SiteName};
use portcullis_store::{SiteStatus, SiteToken, Store};

use crate::cli::{Format, OutFormat, SiteCommand, SiteTokenArgs};
use crate::context::cli_actor;
use crate::output::table;

pub async fn run(store: &Store, cmd: SiteCommand) -> anyhow::Result<()> {
    match cmd {
        SiteCommand::Add { site, token } => {
            let name = SiteName::parse(&site)?;
            let (_, issued) = store.add_site(&cli_actor(), &name).await?;
            print_token(&name, &issued, &token, "registered site");
        }
        SiteCommand::Token { site, token } => {
            let name = SiteName::parse(&site)?;
            let issued = store.new_site_token(&cli_actor(), &name).await?;
            print_token(&name, &issued, &token, "new enrollment token for site");
        }
        SiteCommand::Revoke { site } => {
            let name = SiteName::parse(&site)?;
            store.revoke_site(&cli_actor(), &name).await?;
            println!(
                "revoked site '{name}': its connector is cut off and cannot enroll again; \
                 devices of this site are unreachable"
            );
        }
        SiteCommand::List { format } => list(store, format).await?,
    }
    Ok(())
}

fn print_token(name: &SiteName, issued: &SiteToken, args: &SiteTokenArgs, what: &str) {
    let url = args
        .public_url
        .as_deref()
        .map_or("<broker-url>", |u| u.trim_end_matches('/'));
    let command = format!(
        "portcullis connector enroll --url {url} --token {}",
        issued.token
    );
    match args.format {
        OutFormat::Json => println!(
            "{}",
            serde_json::json!({
                "site": name,
                "enrollment_token": issued.token,
                "expires_at": issued.expires_at,
                "enroll_command": command,
            })
        ),
        OutFormat::Text => {
            println!("{what} '{name}'");
            println!("enrollment token: {}", issued.token);
            println!(
                "it works once, until {}; give it to whoever installs the connector over a \
                 channel you trust",
                issued.expires_at
            );
            println!("on the connector, run: {command}");
            if args.public_url.is_none() {
                println!(
                    "(<broker-url> is the broker's web address, e.g. https://broker.plant.example:8443; \
                     pass --public-url to print it here)"
                );
            }
        }
    }
}

async fn list(store: &Store, format: Format) -> anyhow::Result<()> {
    let sites = store.list_sites().await?;
    let now = store.now();
    match format {
        Format::Json => {
            for s in &sites {
                let mut v = serde_json::to_value(s)?;
                v["status"] = serde_json::json!(s.status(now));
                v["last_seen"] = serde_json::json!(s.last_seen());
                println!("{v}");
            }
        }
        Format::Table => {
            let opt =
                |t: Option<portcullis_core::Timestamp>| t.map_or("-".into(), |t| t.to_string());
            let rows: Vec<_> = sites
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.status(now).to_string(),
                        opt(s.last_seen()),
                        opt(s.enrolled_at),
                        opt(s.cert_not_after),
                        s.cert_fingerprint.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NAME",
                        "STATUS",
                        "LAST SEEN",
                        "ENROLLED",
                        "CERT EXPIRES",
                        "FINGERPRINT"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// One line for `admin device add`: through which connector the relay will reach `device`, or
/// that it dials it directly.
pub async fn routing_line(store: &Store, device: &Device) -> anyhow::Result<String> {
    let site = device.profile.site.trim();
    if site.is_empty() {
        return Ok(
            "routing: dialed directly by the relay (no --site names a registered site)".into(),
        );
    }
    let Some(rec) = store.site(site).await? else {
        return Ok(format!(
            "routing: dialed directly by the relay (its --site '{}' names no registered site)",
            crate::output::one_line(site)
        ));
    };
    let note = match rec.status(store.now()) {
        SiteStatus::Revoked => "; the site is revoked, so its connections will be refused",
        SiteStatus::NotEnrolled => "; no connector has enrolled for it yet",
        SiteStatus::Offline => "; its connector is offline now",
        SiteStatus::Online => "",
    };
    Ok(format!(
        "routing: reached through the connector of registered site '{}'{note}",
        rec.name
    ))
}
