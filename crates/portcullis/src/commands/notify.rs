//! Starts the notification worker in `serve` and `web` (issue 15): it routes the outbox's
//! notices and delivers them, and its counters join `/metrics`.

use std::sync::Arc;

use portcullis_notify::{Metrics, Notifier};
use portcullis_store::Store;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// Checks the settings (so a bad one stops the broker at start) and spawns the worker.
pub fn start(
    ctx: &Context,
    store: &Store,
    public_url: &str,
    time_zone: &str,
    stop: CancellationToken,
) -> anyhow::Result<Arc<Metrics>> {
    let config = ctx.settings.notify()?;
    if config.is_empty() {
        tracing::info!("no [smtp] or [[webhook]] in the config file: notices are kept, not sent");
    }
    let notifier = Notifier::new(store.clone(), config, public_url, time_zone)?;
    let metrics = notifier.metrics();
    tokio::spawn(notifier.run(stop));
    Ok(metrics)
}
