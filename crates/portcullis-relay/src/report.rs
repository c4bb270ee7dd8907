//! The live view's numbers: every `report_every` the counters of all this relay's live
//! sessions (open streams, bytes each way, refused streams, Modbus activity) are written to the
//! store in one transaction, so the web service, in this process or another, can show them
//! (`GET /api/v1/sessions?live=true`). One write per tick for all sessions, never one per
//! session or per byte: at the default 2 s that is half a commit a second on SQLite however
//! busy the tunnels are. A session's final numbers are written with its end
//! (`Store::end_relay_session`); a report is never the record, the audit log is.
//!
//! A failed report (database down, disk full) is logged once and tried again at the next tick
//! with fresh numbers; nothing queues up, and no session is affected.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_store::{LiveCounters, StoreError};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::registry::Registry;

/// The relay's reporter: runs until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let store = shared.store.clone();
    every(
        shared.config.report_every,
        &shared.registry,
        stop,
        |batch| {
            let store = store.clone();
            async move { store.report_live_sessions(&batch).await }
        },
    )
    .await;
}

/// Every `period` (the first at once), hands `write` the counters of every session in
/// `registry`, as one batch; skips the tick when there are none.
async fn every<W, F>(period: Duration, registry: &Registry, stop: CancellationToken, mut write: W)
where
    W: FnMut(Vec<LiveCounters>) -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    let mut tick = tokio::time::interval(period);
    // After a slow write, the next report comes a period later, not in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let batch: Vec<LiveCounters> = registry.all().iter().map(|s| s.counters()).collect();
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        match write(batch).await {
            Ok(()) if failing => {
                tracing::info!("live session counters are written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "cannot write the counters of {n} live session(s): {e}; \
                         the live view shows older numbers until it works again"
                    );
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use portcullis_core::{GrantId, Timestamp, Username};
    use tokio::time::Instant;

    use super::*;
    use crate::grant::LiveGrant;
    use crate::registry::LiveSession;

    fn session(id: &str) -> Arc<LiveSession> {
        let grant = LiveGrant {
            id: GrantId::new(7),
            vendor: Username::parse("vera").unwrap(),
            device: "plc-7".into(),
            address: "127.0.0.1".into(),
            ports: Default::default(),
            modes: Default::default(),
            write_scope: Default::default(),
            window_end: Timestamp::MAX,
            site: None,
            not_before: Default::default(),
        };
        Arc::new(LiveSession::new(
            id.into(),
            grant,
            Timestamp::EPOCH,
            0,
            (1, Duration::from_secs(1)),
        ))
    }

    type Writes = Arc<Mutex<Vec<(Duration, Vec<LiveCounters>)>>>;

    /// Runs the reporter on `registry` in the background, recording each write and when it came
    /// (from now: the reporter has started when this returns).
    async fn start(registry: Arc<Registry>, fail: bool) -> (Writes, CancellationToken) {
        let writes: Writes = Arc::default();
        let stop = CancellationToken::new();
        let (w, s, t0) = (writes.clone(), stop.clone(), Instant::now());
        tokio::spawn(async move {
            every(Duration::from_secs(2), &registry, s, |batch| {
                w.lock().unwrap().push((t0.elapsed(), batch));
                async move {
                    if fail {
                        Err(StoreError::Unavailable("disk full".into()))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        });
        tokio::task::yield_now().await;
        (writes, stop)
    }

    async fn advance(d: Duration) {
        tokio::time::advance(d).await;
        // Let the reporter run what became due.
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn one_batch_of_every_session_per_period_with_the_numbers_of_the_moment() {
        let registry = Arc::new(Registry::default());
        let (a, b) = (session("rs_a"), session("rs_b"));
        registry.insert(a.clone());
        registry.insert(b.clone());
        let (writes, stop) = start(registry.clone(), false).await;
        a.bytes_up.fetch_add(100, Ordering::Relaxed);
        a.open_streams.fetch_add(1, Ordering::Relaxed);
        advance(Duration::from_millis(1999)).await;
        assert_eq!(
            writes.lock().unwrap().len(),
            1,
            "not before the period is up"
        );
        advance(Duration::from_millis(1)).await;
        b.bytes_down.fetch_add(5, Ordering::Relaxed);
        b.refused.fetch_add(2, Ordering::Relaxed);
        advance(Duration::from_secs(2)).await;

        let w = writes.lock().unwrap().clone();
        let at: Vec<_> = w.iter().map(|(t, _)| t.as_secs()).collect();
        assert_eq!(at, [0, 2, 4], "one write per period");
        for (_, batch) in &w {
            let mut ids: Vec<_> = batch.iter().map(|c| c.id.as_str()).collect();
            ids.sort_unstable();
            assert_eq!(ids, ["rs_a", "rs_b"], "every session in each batch");
        }
        let of = |i: usize, id: &str| w[i].1.iter().find(|c| c.id == id).unwrap().clone();
        assert_eq!((of(0, "rs_a").bytes_up, of(0, "rs_a").open_streams), (0, 0));
        assert_eq!(
            (of(1, "rs_a").bytes_up, of(1, "rs_a").open_streams),
            (100, 1)
        );
        assert_eq!(
            (of(1, "rs_b").bytes_down, of(1, "rs_b").refused_streams),
            (0, 0)
        );
        assert_eq!(
            (of(2, "rs_b").bytes_down, of(2, "rs_b").refused_streams),
            (5, 2)
        );
        assert_eq!(
            of(2, "rs_a").modbus,
            serde_json::Value::Null,
            "no Modbus yet"
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_written_without_live_sessions_and_a_failure_does_not_stop_it() {
        let registry = Arc::new(Registry::default());
        let (writes, stop) = start(registry.clone(), true).await;
        for _ in 0..5 {
            advance(Duration::from_secs(1)).await;
        }
        assert!(writes.lock().unwrap().is_empty(), "no sessions, no write");
        registry.insert(session("rs_a"));
        advance(Duration::from_secs(1)).await;
        advance(Duration::from_secs(2)).await;
        assert_eq!(
            writes.lock().unwrap().len(),
            2,
            "failed writes are tried again at the next period"
        );
        registry.remove("rs_a");
        for _ in 0..4 {
            advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            writes.lock().unwrap().len(),
            2,
            "an ended session is not reported"
        );
        stop.cancel();
    }
}
