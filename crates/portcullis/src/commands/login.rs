//! `portcullis login <broker-url>`: password, then authenticator code; the session is kept in
//! the config directory (mode 0600) for the other vendor commands.
//!
//! Answers come from the terminal, or, when stdin is not one, as lines in this order: the
//! username (only without `--username`), the password, the authenticator code.

use std::process::ExitCode;

use anyhow::Context as _;
use portcullis_client::api::ApiClient;
use portcullis_client::config::{ConfigDir, StoredSession};
use portcullis_client::prompt::{Prompt, totp_code};
use portcullis_client::trust;
use portcullis_core::Role;

use crate::cli::LoginArgs;

/// Longest CA file read: a chain of a few certificates is a few KiB.
const MAX_CA_LEN: u64 = 1 << 20;

pub async fn run(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let dir = ConfigDir::from_env()?;
    let ca_pem = args.ca.as_deref().map(read_ca).transpose()?;
    let api = ApiClient::new(&args.broker_url, ca_pem.as_deref())?;
    let mut prompt = Prompt::stdin();

    let username = match args.username {
        Some(u) => u.trim().to_owned(),
        None => prompt.line("username: ", "username")?,
    };
    let password = prompt.secret(&format!("password for {username}: "), "password")?;
    let pending = api.login(&username, &password).await?;
    drop(password);
    let code = prompt.line("authenticator code: ", "authenticator code")?;
    let code = totp_code(&code).map_err(anyhow::Error::msg)?;
    let session = api.mfa(&pending, &code).await?;

    let stored = StoredSession {
        broker_url: api.base_url(),
        username: session.username.to_string(),
        role: session.role.to_string(),
        session_token: session.session_token.clone(),
        expires_at: session.expires_at.to_rfc3339(),
        ca_pem,
    };
    let path = dir.save_session(&stored)?;
    println!(
        "logged in to {} as {} ({}); session kept in {} until {} at the latest",
        stored.broker_url,
        session.username,
        session.role,
        path.display(),
        session.expires_at
    );
    if !session.role.is(Role::Vendor) {
        eprintln!(
            "note: {} is a {} account; requests and connections are for vendor accounts",
            session.username, session.role
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The CA file's text, checked to hold usable CA certificates before anything is sent.
fn read_ca(path: &std::path::Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("--ca: cannot read {}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_CA_LEN {
        anyhow::bail!("--ca: {} is not a PEM certificate file", path.display());
    }
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("--ca: cannot read {}", path.display()))?;
    trust::roots_from_pem(&pem, &path.display().to_string()).context("--ca")?;
    Ok(pem)
}
