//! Starts the notification worker in `serve` and `web` (issue 15): it routes the outbox's
//! notices and delivers them, and its counters join `/metrics`.

use std::sync::Arc;

use portcullis_notify::{Metrics, Notifier};
use portcullis_store::Store;
use portcullis_web::AppState;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// Checks the settings (so a bad one stops the broker at start) and spawns the worker; the
/// outbox page shows the settings.
pub fn start(
    ctx: &Context,
    store: &Store,
    web: &AppState,
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
    let mut summary = notifier.summary();
    let t = ctx.settings.alerts;
    summary.push((
        "Alert thresholds".into(),
        format!(
            "{} failed logins in {} min; {} relay refusals in {} min; a connector offline for {} s              ([alerts] in the config file)",
            t.login_failures,
            t.login_failures_window.as_secs() / 60,
            t.relay_refusals,
            t.relay_refusals_window.as_secs() / 60,
            t.connector_offline.as_secs()
        ),
    ));
    web.set_settings_summary(summary);
    tokio::spawn(notifier.run(stop));
    Ok(metrics)
}
