//! `portcullis migrate`: bring the schema up to date (the owner's job in production).

use std::process::ExitCode;

use crate::context::Context;

pub async fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store_migrating().await?;
    println!(
        "schema is up to date ({})",
        portcullis_store::redact(&ctx.settings.database_url)
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
