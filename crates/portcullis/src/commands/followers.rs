//! What `serve` and `web` run beside the web service, each until shutdown: the disk and
//! audit-write watch, the notification worker (decision 0015), the alert watcher (0017) and the
//! SIEM stream (0016). Their counters join `/metrics` as one text.

use std::sync::Arc;

use portcullis_store::Store;
use portcullis_web::MetricsSource;
use tokio_util::sync::CancellationToken;

use crate::commands::parts::WebPart;
use crate::commands::{alerts, notify, siem, watch};
use crate::context::Context;

/// Starts them all; a bad notification or syslog setting stops the service here, before it
/// serves anything.
pub fn start(
    ctx: &Context,
    store: &Store,
    web: &WebPart,
    time_zone: &str,
    stop: CancellationToken,
) -> anyhow::Result<MetricsSource> {
    let watch = watch::start(ctx, store, stop.clone());
    let notices = notify::start(ctx, store, &web.state, &web.public, time_zone, stop.clone())?;
    let alerts = alerts::start(ctx, store, stop.clone());
    let siem = siem::start(ctx, store, stop)?;
    Ok(Arc::new(move || {
        watch.render() + &notices.render() + &alerts.render() + &siem()
    }))
}
