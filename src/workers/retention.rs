//! Retention: what the janitor deletes once it is old. Finished tasks' details and final
//! webhook events past their `[retention]` periods, and expired console sessions. Each
//! delete is one bounded batch in its own short transaction, found through an index, so
//! no table is locked for long; a step runs a few batches and leaves the rest to the next.

use crate::gateway::Gateway;
use crate::store::now_ms;

/// Rows one batch deletes at most.
pub const BATCH: u32 = 500;
/// Batches of one kind a step runs at most; a backlog drains over several steps.
const MAX_BATCHES: u32 = 20;

/// What one retention step deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub task_details: u64,
    pub webhook_events: u64,
    pub console_sessions: u64,
}

/// Deletes, in bounded batches, what `[retention]` no longer keeps and the console
/// sessions that have expired.
pub async fn prune_once(gw: &Gateway) -> anyhow::Result<Pruned> {
    let store = &gw.store;
    let retention = &gw.config.retention;
    let mut pruned = Pruned::default();
    if let Some(before) = cutoff(retention.finished_task_details_days) {
        pruned.task_details = batches(|| store.prune_finished_details(before, BATCH)).await?;
    }
    if let Some(before) = cutoff(retention.webhook_events_days) {
        pruned.webhook_events = batches(|| store.prune_webhook_events(before, BATCH)).await?;
    }
    let now = now_ms();
    pruned.console_sessions = batches(|| store.prune_console_sessions(now, BATCH)).await?;
    if pruned != Pruned::default() {
        tracing::info!(
            task_details = pruned.task_details,
            webhook_events = pruned.webhook_events,
            console_sessions = pruned.console_sessions,
            "retention: old records deleted"
        );
    }
    Ok(pruned)
}

/// The instant before which records `days` old are due (None: 0 keeps them for ever).
fn cutoff(days: u64) -> Option<i64> {
    let age_ms = i64::try_from(days)
        .unwrap_or(i64::MAX)
        .saturating_mul(86_400_000);
    (days > 0).then(|| now_ms().saturating_sub(age_ms))
}

/// Runs `batch` until one comes back short of a full batch, or `MAX_BATCHES` times.
async fn batches<F, Fut>(mut batch: F) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let n = batch().await?;
        total += n;
        if n < u64::from(BATCH) {
            break;
        }
    }
    Ok(total)
}
