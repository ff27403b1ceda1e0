//! The `gauges` worker: refreshes the gauges read from the store (unfinished tasks by
//! provider and state, the oldest of them, poll lag, waiting tasks by key and model) every `metrics.store_gauges_interval_secs`.
//! Read from the shared database, they are right whatever the number of gateway
//! processes; nothing on a request's path queries the store for metrics.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::store::{now_ms, UNFINISHED_STATES};
use crate::telemetry::metrics;

/// The worker, when metrics are on (none otherwise).
pub fn spawn(gw: &Arc<Gateway>, cancel: &CancellationToken) -> Option<JoinHandle<()>> {
    if !gw.config.metrics.enabled {
        return None;
    }
    let every = gw.config.metrics.store_gauges_interval();
    Some(super::spawn_loop(
        "gauges",
        every,
        cancel.clone(),
        gw.clone(),
        |gw| async move { refresh_once(&gw).await },
    ))
}

/// One refresh; also drains the histograms' samples into their buckets. Returns 0 so
/// that its loop always sleeps a full interval.
pub async fn refresh_once(gw: &Gateway) -> anyhow::Result<usize> {
    metrics::upkeep();
    let groups = gw.store.waiting_groups(None).await?;
    let gauges = gw.store.store_gauges(now_ms(), &groups).await?;
    let providers: Vec<String> = gw.router.names().map(str::to_string).collect();
    metrics::set_store_gauges(&gauges, &providers, UNFINISHED_STATES);
    let waiting: Vec<(String, String, i64)> = groups
        .into_iter()
        .map(|g| (g.api_key_id, g.model, g.waiting))
        .collect();
    metrics::set_waiting_gauges(&waiting);
    Ok(0)
}
