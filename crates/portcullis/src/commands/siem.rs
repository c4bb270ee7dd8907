//! The SIEM stream in `serve` and `web`: when `[syslog]` is configured, a forwarder follows
//! the audit log to the collector until shutdown (decision 0016). Its counters join `/metrics`.

use std::sync::Arc;

use portcullis_siem::{Forwarder, SiemMetrics};
use portcullis_store::Store;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// Starts the stream if configured; returns a `/metrics` renderer (empty text without it).
/// A CA file that cannot be read stops the service here, before it serves anything.
pub fn start(
    ctx: &Context,
    store: &Store,
    stop: CancellationToken,
) -> anyhow::Result<Arc<dyn Fn() -> String + Send + Sync>> {
    let Some(config) = &ctx.settings.syslog else {
        return Ok(Arc::new(String::new));
    };
    let forwarder = Forwarder::new(store.clone(), config)?;
    let metrics: Arc<SiemMetrics> = forwarder.metrics();
    tokio::spawn(forwarder.run(stop));
    Ok(Arc::new(move || metrics.render()))
}
