//! The alert watcher of `serve` and `web` (issue 15, point 4; decision 0017). `portcullis relay`
//! does not run one: one watcher per database is enough, and the web service (or `serve`) is
//! the process every deployment has exactly one kind of.

use std::sync::Arc;

use portcullis_alerts::Metrics;
use portcullis_store::Store;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// Starts following the audit log with the thresholds of the config file's `[alerts]`; stops
/// with `stop`. Returns its counters for `/metrics`.
pub fn start(ctx: &Context, store: &Store, stop: CancellationToken) -> Arc<Metrics> {
    let thresholds = ctx.settings.alerts;
    tracing::info!(?thresholds, "alert watcher starting");
    let (metrics, _task) = portcullis_alerts::spawn(store.clone(), thresholds, stop);
    metrics
}
