//! Telling vendors their window is about to end: at 15 and at 5 minutes before the end
//! (`portcullis_core::notify::WINDOW_NOTICES`), timed by tokio's clock so a test can run the
//! hours in paused time. Each notice is written once (the store's `dedupe_key`), so a restart or
//! a second process never repeats one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::notify::WINDOW_NOTICES;
use portcullis_core::{Clock, GrantId, Timestamp};
use tokio_util::sync::CancellationToken;

/// How often grants approved since the last look are picked up, at the latest.
pub const RESCAN: Duration = Duration::from_secs(30);

/// Where the scheduler reads grants and writes notices: the store, or a test's memory.
pub trait Windows: Send + Sync {
    /// Live grants whose window ends in `(after, until]`.
    fn ending(
        &self,
        after: Timestamp,
        until: Timestamp,
    ) -> impl Future<Output = anyhow::Result<Vec<(GrantId, Timestamp)>>> + Send;
    /// Writes the `minutes` notice of `grant` once; false when it was written before.
    fn notice(
        &self,
        grant: GrantId,
        minutes: u32,
        end: Timestamp,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

impl Windows for portcullis_store::Store {
    async fn ending(
        &self,
        after: Timestamp,
        until: Timestamp,
    ) -> anyhow::Result<Vec<(GrantId, Timestamp)>> {
        Ok(self.grants_ending(after, until).await?)
    }
    async fn notice(&self, grant: GrantId, minutes: u32, end: Timestamp) -> anyhow::Result<bool> {
        Ok(self.enqueue_window_notice(grant, minutes, end).await?)
    }
}

fn mark(minutes: u32) -> Duration {
    Duration::from_secs(u64::from(minutes) * 60)
}

/// The notice due at `now` for a window ending at `end`: the smallest mark not yet passed
/// (a grant approved with 10 minutes left gets the 15-minute notice at once, then the 5).
pub fn due(now: Timestamp, end: Timestamp) -> Option<u32> {
    if end <= now {
        return None;
    }
    let left = end.duration_since(now);
    WINDOW_NOTICES
        .iter()
        .rev()
        .copied()
        .find(|m| left <= mark(*m))
}

/// When the next notice of this window falls due, after `now`.
pub fn next_mark(now: Timestamp, end: Timestamp) -> Option<Timestamp> {
    WINDOW_NOTICES
        .iter()
        .map(|m| end.saturating_sub(mark(*m)))
        .filter(|t| *t > now)
        .min()
}

/// Runs until `stop`: writes each due notice, then sleeps until the next mark or [`RESCAN`].
pub async fn run<W: Windows>(windows: W, clock: Arc<dyn Clock>, stop: CancellationToken) {
    let horizon = mark(WINDOW_NOTICES[0]) + RESCAN;
    loop {
        let now = clock.now();
        let mut wake = RESCAN;
        match windows.ending(now, now.saturating_add(horizon)).await {
            Ok(grants) => {
                for (grant, end) in grants {
                    if let Some(m) = due(now, end)
                        && let Err(e) = windows.notice(grant, m, end).await
                    {
                        tracing::warn!(grant = grant.get(), error = %e, "cannot write a window notice; trying again");
                        wake = Duration::from_secs(5);
                    }
                    if let Some(t) = next_mark(now, end) {
                        wake = wake.min(t.duration_since(now));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the windows about to end; trying again");
                wake = Duration::from_secs(5);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wake.max(Duration::from_millis(1))) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Wall time that moves with tokio's (paused) clock.
    #[derive(Debug)]
    struct TokioClock {
        wall: Timestamp,
        base: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> Timestamp {
            self.wall.saturating_add(self.base.elapsed())
        }
    }

    #[derive(Default)]
    struct Memory {
        grants: Mutex<Vec<(GrantId, Timestamp)>>,
        /// (grant, minutes, when written), in order; a repeat is refused like the store does.
        written: Mutex<Vec<(GrantId, u32, Timestamp)>>,
        clock: Mutex<Option<Arc<dyn Clock>>>,
    }

    impl Windows for Arc<Memory> {
        async fn ending(
            &self,
            after: Timestamp,
            until: Timestamp,
        ) -> anyhow::Result<Vec<(GrantId, Timestamp)>> {
            Ok(self
                .grants
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, e)| *e > after && *e <= until)
                .copied()
                .collect())
        }
        async fn notice(
            &self,
            grant: GrantId,
            minutes: u32,
            _end: Timestamp,
        ) -> anyhow::Result<bool> {
            let mut w = self.written.lock().unwrap();
            if w.iter().any(|(g, m, _)| *g == grant && *m == minutes) {
                return Ok(false);
            }
            let now = self.clock.lock().unwrap().as_ref().unwrap().now();
            w.push((grant, minutes, now));
            Ok(true)
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_smallest_unpassed_mark_is_due() {
        let end = at("2026-12-02T10:00:00Z");
        assert_eq!(due(at("2026-12-02T09:44:00Z"), end), None);
        assert_eq!(due(at("2026-12-02T09:45:00Z"), end), Some(15));
        assert_eq!(due(at("2026-12-02T09:54:59Z"), end), Some(15));
        assert_eq!(due(at("2026-12-02T09:55:00Z"), end), Some(5));
        assert_eq!(due(at("2026-12-02T10:00:00Z"), end), None);
        assert_eq!(
            next_mark(at("2026-12-02T09:00:00Z"), end),
            Some(at("2026-12-02T09:45:00Z"))
        );
        assert_eq!(
            next_mark(at("2026-12-02T09:45:00Z"), end),
            Some(at("2026-12-02T09:55:00Z"))
        );
        assert_eq!(next_mark(at("2026-12-02T09:55:00Z"), end), None);
    }

    #[tokio::test(start_paused = true)]
    async fn notices_arrive_at_the_15_and_5_minute_marks() {
        let start = at("2026-12-02T09:00:00Z");
        let clock: Arc<dyn Clock> = Arc::new(TokioClock {
            wall: start,
            base: tokio::time::Instant::now(),
        });
        let mem = Arc::new(Memory::default());
        *mem.clock.lock().unwrap() = Some(clock.clone());
        // One window ends in an hour; one is approved later with 10 minutes left.
        let (a, b) = (GrantId::new(1), GrantId::new(2));
        mem.grants
            .lock()
            .unwrap()
            .push((a, at("2026-12-02T10:00:00Z")));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(mem.clone(), clock.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        mem.grants
            .lock()
            .unwrap()
            .push((b, at("2026-12-02T09:30:00Z")));
        tokio::time::sleep(Duration::from_secs(60 * 60)).await;
        stop.cancel();
        task.await.unwrap();
        let written = mem.written.lock().unwrap().clone();
        let of = |g: GrantId| -> Vec<(u32, Timestamp)> {
            written
                .iter()
                .filter(|w| w.0 == g)
                .map(|w| (w.1, w.2))
                .collect()
        };
        assert_eq!(
            of(a),
            vec![
                (15, at("2026-12-02T09:45:00Z")),
                (5, at("2026-12-02T09:55:00Z")),
            ],
            "exactly at the marks, once each"
        );
        // Picked up within one rescan of its approval, then the 5-minute mark on the dot.
        let late = of(b);
        assert_eq!(late.len(), 2, "{late:?}");
        assert_eq!(late[0].0, 15);
        assert!(late[0].1 >= at("2026-12-02T09:20:00Z") && late[0].1 <= at("2026-12-02T09:20:30Z"));
        assert_eq!(late[1], (5, at("2026-12-02T09:25:00Z")));
    }
}
