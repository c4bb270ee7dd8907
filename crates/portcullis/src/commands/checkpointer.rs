//! The broker signs checkpoints by itself (issue 17, point 4): every `--checkpoint-every`
//! (default 1 h) while `serve` or `web` runs, and once more at shutdown after its last event, so
//! a tail cut from the audit log is caught by `audit verify` without anyone having remembered to
//! run `audit checkpoint`. A period with no new events signs nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_store::Store;
use tokio::sync::Mutex;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::checkpoints::Signer;
use crate::context::Context;

/// The broker's own signer; `finish` signs the last head at shutdown.
pub struct Checkpointer {
    signer: Arc<Mutex<Signer>>,
}

impl Checkpointer {
    /// Starts the schedule (`None`: only at shutdown); it stops with `stop`.
    pub fn start(
        ctx: &Context,
        store: &Store,
        every: Option<Duration>,
        stop: CancellationToken,
    ) -> anyhow::Result<Checkpointer> {
        let signer = Signer::new(
            ctx.checkpoints_dir(),
            ctx.checkpoint_key(true)?,
            store.clone(),
        )?;
        let signer = Arc::new(Mutex::new(signer));
        if let Some(every) = every {
            let s = signer.clone();
            tokio::spawn(schedule(every, stop, move || {
                let s = s.clone();
                async move { sign(&s, "scheduled").await }
            }));
        }
        Ok(Checkpointer { signer })
    }

    /// Signs the head as the service stops (after its `service.stop` event).
    pub async fn finish(self) {
        sign(&self.signer, "at shutdown").await;
    }
}

/// One signing; a failure (a full disk, the database away) is logged and the next period tries
/// again: the events stay in the log either way.
async fn sign(signer: &Mutex<Signer>, when: &str) {
    match signer.lock().await.sign_if_new().await {
        Ok(Some(s)) => {
            tracing::info!(seq = s.seq, file = %s.path.display(), "audit checkpoint signed {when}")
        }
        Ok(None) => tracing::debug!("no new audit events since the last checkpoint"),
        Err(e) => tracing::warn!("cannot sign an audit checkpoint {when}: {e:#}"),
    }
}

/// Calls `tick` every `every`, the first time one period after the start, until `stop`. Periods
/// missed while a tick ran long (a database that hung, a suspended host) are made up once, not
/// in a burst.
async fn schedule<F, Fut>(every: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut timer = tokio::time::interval_at(Instant::now() + every, every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = timer.tick() => tick().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_once_a_period_from_one_period_after_the_start_until_stopped() {
        let start = Instant::now();
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let seen = ticks.clone();
        let task = tokio::spawn(schedule(
            Duration::from_secs(3600),
            stop.clone(),
            move || {
                seen.lock().unwrap().push(start.elapsed());
                async {}
            },
        ));
        tokio::time::sleep(Duration::from_secs(3 * 3600 + 1800)).await;
        stop.cancel();
        task.await.unwrap();
        let hours: Vec<u64> = ticks.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(hours, [3600, 7200, 10800]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_tick_is_followed_by_a_full_period_not_a_burst() {
        let start = Instant::now();
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let seen = ticks.clone();
        let task = tokio::spawn(schedule(Duration::from_secs(60), stop.clone(), move || {
            seen.lock().unwrap().push(start.elapsed().as_secs());
            // The first signing takes three periods (a database that hangs, say).
            let slow = seen.lock().unwrap().len() == 1;
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(180)).await;
                }
            }
        }));
        tokio::time::sleep(Duration::from_secs(400)).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(*ticks.lock().unwrap(), [60, 240, 300, 360]);
    }
}
