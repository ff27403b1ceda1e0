//! Keeps the completion times and provider outcomes (`timing/`) fresh: one process per
//! `poller.timing_refresh_secs` recomputes them from bounded reads of recent tasks, and
//! every process reads the result into its own copy each step.

use std::time::Duration;

use crate::gateway::Gateway;
use crate::store::now_ms;
use crate::timing::{self, Bounds};

/// How often each process reads the shared figures: at most every few seconds, so a
/// refresh made by another process is seen soon.
pub fn tick(gw: &Gateway) -> Duration {
    Duration::from_secs(gw.config.poller.timing_refresh_secs.clamp(1, 5))
}

/// Recomputes the figures if it is this process's turn, then reads them. Returns 0: the
/// loop always sleeps its tick.
pub async fn refresh_once(gw: &Gateway) -> anyhow::Result<usize> {
    let cfg = &gw.config.poller;
    let now = now_ms();
    let every_ms = (cfg.timing_refresh_secs as i64).saturating_mul(1000);
    if gw.store.take_timing_turn(now, every_ms).await? {
        recompute(gw, now).await?;
    }
    gw.timings.load(&gw.store).await?;
    Ok(0)
}

/// Two bounded reads (the newest finished tasks; the oldest unfinished ones old enough to
/// be stuck) and one transaction replacing both tables.
pub async fn recompute(gw: &Gateway, now: i64) -> anyhow::Result<()> {
    let cfg = &gw.config.poller;
    let bounds = Bounds {
        samples: cfg.timing_samples as usize,
        min_samples: cfg.timing_min_samples as usize,
        outcomes_since: now - (gw.config.health.window_secs as i64).saturating_mul(1000),
        stuck_factor: cfg.stuck_factor,
    };
    let since = now - (cfg.timing_window_secs as i64).saturating_mul(1000);
    let finished = gw
        .store
        .finished_tasks(since, cfg.timing_read_limit)
        .await?;
    let times = timing::completion_times(&finished, bounds);
    let running = match timing::stuck_after_ms(&times, cfg.stuck_factor) {
        Some(after) => {
            gw.store
                .long_running_tasks(now - after, cfg.timing_read_limit)
                .await?
        }
        None => Vec::new(),
    };
    let outcomes = timing::outcomes(&finished, &running, &times, bounds, now);
    gw.store.replace_timing(&times, &outcomes, now).await?;
    tracing::debug!(
        groups = times.len(),
        providers = outcomes.len(),
        "completion times refreshed"
    );
    Ok(())
}
