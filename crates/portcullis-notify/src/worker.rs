//! The delivery worker: routes new notices, tries due deliveries, and records each outcome.
//!
//! It runs in `serve` (or `web`), apart from the request that caused a notice: a mail server
//! that is down delays a message, never an approval. Each delivery is tried under a lease, so a
//! worker killed mid-try leaves it to be tried again (an e-mail may then arrive twice; none is
//! lost). Several workers on one database share the work safely (routing and claims are
//! compare-and-set), as two `web` processes on PostgreSQL would.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portcullis_store::{Channel, DeliveryRecord, OutboxStats, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::NotifyConfig;
use crate::email::Mailer;
use crate::message::Reader;
use crate::route;
use crate::webhook::Hook;

/// How often the worker looks for new notices and due deliveries.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a claimed delivery is left alone before another try may take it: more than an SMTP
/// conversation or a webhook post can take (their own timeouts are 20 s and 10 s).
const LEASE: Duration = Duration::from_secs(120);
/// Deliveries tried at once.
const PARALLEL: usize = 8;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    delivered_email: AtomicU64,
    delivered_webhook: AtomicU64,
    failed_tries: AtomicU64,
    given_up: AtomicU64,
    stats: std::sync::Mutex<OutboxStats>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let s = *self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP portcullis_notifications_delivered_total Notifications delivered, by channel.\n\
             # TYPE portcullis_notifications_delivered_total counter\n\
             portcullis_notifications_delivered_total{{channel=\"email\"}} {}\n\
             portcullis_notifications_delivered_total{{channel=\"webhook\"}} {}",
            self.delivered_email.load(Ordering::Relaxed),
            self.delivered_webhook.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_notification_tries_failed_total Delivery tries that failed (each is retried until its tries are spent).\n\
             # TYPE portcullis_notification_tries_failed_total counter\n\
             portcullis_notification_tries_failed_total {}\n\
             # HELP portcullis_notifications_failed_total Deliveries given up after their last try.\n\
             # TYPE portcullis_notifications_failed_total counter\n\
             portcullis_notifications_failed_total {}",
            self.failed_tries.load(Ordering::Relaxed),
            self.given_up.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_outbox_deliveries Deliveries in the outbox by state (failed: given up, see /admin/outbox).\n\
             # TYPE portcullis_outbox_deliveries gauge\n\
             portcullis_outbox_deliveries{{state=\"unrouted\"}} {}\n\
             portcullis_outbox_deliveries{{state=\"pending\"}} {}\n\
             portcullis_outbox_deliveries{{state=\"retrying\"}} {}\n\
             portcullis_outbox_deliveries{{state=\"failed\"}} {}",
            s.unrouted, s.pending, s.retrying, s.failed,
        );
        out
    }
}

#[derive(Clone)]
pub struct Notifier {
    store: Store,
    config: Arc<NotifyConfig>,
    plant: Reader,
    mailer: Option<Mailer>,
    hooks: Arc<Vec<Hook>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("mailer", &self.mailer)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl Notifier {
    /// `public_url` is where links point; `plant_tz` the zone of readers who chose none.
    pub fn new(
        store: Store,
        config: NotifyConfig,
        public_url: &str,
        plant_tz: &str,
    ) -> anyhow::Result<Notifier> {
        let tz = jiff::tz::TimeZone::get(plant_tz)
            .map_err(|_| anyhow::anyhow!("'{plant_tz}' is not an IANA time zone"))?;
        let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
        let hooks = config
            .webhooks
            .iter()
            .map(Hook::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Notifier {
            store,
            plant: Reader {
                tz,
                tz_name: plant_tz.to_owned(),
                public_url: public_url.to_owned(),
            },
            config: Arc::new(config),
            mailer,
            hooks: Arc::new(hooks),
            metrics: Arc::default(),
        })
    }

    pub fn summary(&self) -> Vec<(String, String)> {
        self.config.summary()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until `stop`: the delivery loop and the window-ending scheduler.
    pub async fn run(self, stop: CancellationToken) {
        let windows = tokio::spawn(crate::window::run(
            self.store.clone(),
            self.store_clock(),
            stop.clone(),
        ));
        loop {
            if let Err(e) = self.pass().await {
                // The database may be down; the notices wait in it, nothing is lost.
                tracing::warn!(error = %e, "notification pass failed; trying again");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(POLL) => {}
            }
        }
        let _ = windows.await;
    }

    fn store_clock(&self) -> Arc<dyn portcullis_core::Clock> {
        #[derive(Debug)]
        struct StoreClock(Store);
        impl portcullis_core::Clock for StoreClock {
            fn now(&self) -> portcullis_core::Timestamp {
                self.0.now()
            }
        }
        Arc::new(StoreClock(self.store.clone()))
    }

    /// One pass: route what is new, try what is due, refresh the gauges.
    pub async fn pass(&self) -> anyhow::Result<()> {
        self.route_new().await?;
        self.deliver_due().await?;
        let stats = self.store.outbox_stats().await?;
        *self.metrics.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
        Ok(())
    }

    async fn route_new(&self) -> anyhow::Result<()> {
        loop {
            let batch = self.store.unrouted_notices(100).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for n in &batch {
                let deliveries =
                    route::deliveries(&self.store, &self.config, &self.plant, n).await?;
                self.store.route_notice(n.id, &deliveries).await?;
            }
        }
    }

    async fn deliver_due(&self) -> anyhow::Result<()> {
        loop {
            let due = self.store.claim_deliveries(LEASE, PARALLEL as i64).await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut tries = JoinSet::new();
            for d in due {
                let me = self.clone();
                tries.spawn(async move { me.try_one(d).await });
            }
            while let Some(r) = tries.join_next().await {
                r??;
            }
        }
    }

    async fn try_one(&self, d: DeliveryRecord) -> anyhow::Result<()> {
        let outcome = match d.channel {
            Channel::Email => match &self.mailer {
                Some(m) => m.send(&d.recipient, &d.subject, &d.body).await,
                None => Err("no [smtp] server is configured any more".into()),
            },
            Channel::Webhook => match self.hooks.iter().find(|h| h.url.as_str() == d.recipient) {
                Some(h) => {
                    let now = i64::try_from(self.store.now().unix_secs()).unwrap_or(i64::MAX);
                    h.post(d.id, &d.action, &d.body, now).await
                }
                None => Err("this webhook is no longer in the config file".into()),
            },
        };
        match outcome {
            Ok(()) => {
                self.store.mark_delivered(d.id).await?;
                let c = match d.channel {
                    Channel::Email => &self.metrics.delivered_email,
                    Channel::Webhook => &self.metrics.delivered_webhook,
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                let attempt = u32::try_from(d.attempts).unwrap_or(u32::MAX);
                let retry = self.config.retry.after_failure(attempt);
                tracing::warn!(delivery = d.id, channel = d.channel.as_str(), to = %d.recipient,
                    attempt, error = %why, gives_up = retry.is_none(), "notification not delivered");
                self.metrics.failed_tries.fetch_add(1, Ordering::Relaxed);
                if retry.is_none() {
                    self.metrics.given_up.fetch_add(1, Ordering::Relaxed);
                }
                self.store.mark_delivery_failed(d.id, &why, retry).await?;
            }
        }
        Ok(())
    }
}
