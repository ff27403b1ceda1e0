//! Background work, each a named loop under one cancellation token. Every loop body is
//! a `*_once` function that tests can call directly; rows are claimed through leases, so
//! any number of gateway processes can share the work.

pub mod gauges;
pub mod poller;
pub mod reconciler;
pub mod results;
pub mod retention;
pub mod timing;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::gateway::Gateway;
use crate::store::{lease_token, now_ms, ClaimKind, TaskRecord};
use crate::supervise::{self, Every};

pub fn spawn_all(gw: Arc<Gateway>, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
    let tick = Duration::from_millis(gw.config.poller.tick_ms);
    let mut all: Vec<_> = gauges::spawn(&gw, &cancel).into_iter().collect();
    all.extend(results::spawn(gw.clone(), cancel.clone()));
    all.extend([
        spawn_loop(
            "poller",
            tick,
            cancel.clone(),
            gw.clone(),
            |gw| async move { poller::poll_once(&gw).await },
        ),
        spawn_loop(
            "reconciler",
            tick,
            cancel.clone(),
            gw.clone(),
            |gw| async move { reconciler::reconcile_once(&gw).await },
        ),
        spawn_loop(
            "janitor",
            JANITOR_TICK,
            cancel.clone(),
            gw.clone(),
            |gw| async move { janitor_once(&gw).await },
        ),
        spawn_loop(
            "timing",
            timing::tick(&gw),
            cancel.clone(),
            gw.clone(),
            |gw| async move { timing::refresh_once(&gw).await },
        ),
        spawn_woken_loop(
            "dispatcher",
            gw.config.queue.tick(),
            Some(gw.store.slot_freed.clone()),
            cancel.clone(),
            gw.clone(),
            |gw| async move { crate::queue::dispatcher::dispatch_once(&gw).await },
        ),
        spawn_loop(
            "live",
            Duration::from_millis(gw.config.live.check_ms),
            cancel.clone(),
            gw.clone(),
            |gw| async move { crate::live::check_watched(&gw).await },
        ),
        spawn_loop(
            "finished_cache",
            Duration::from_millis(gw.config.live.cache_check_ms),
            cancel.clone(),
            gw.clone(),
            |gw| async move { crate::live::check_finished(&gw).await },
        ),
        webhooks::spawn(gw, cancel),
    ]);
    all
}

/// Claims up to a batch of due tasks of `kind` for `lease_ms` under a fresh lease token and
/// runs `step` on each, `concurrency` at a time. Returns how many it claimed.
async fn claim_and_run<'a, F, Fut>(
    gw: &'a Gateway,
    kind: ClaimKind,
    lease_ms: i64,
    concurrency: usize,
    step: F,
) -> anyhow::Result<usize>
where
    F: Fn(&'a Gateway, TaskRecord, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + 'a,
{
    let lease_until = now_ms() + lease_ms;
    let batch = gw.config.poller.batch_size;
    let token = lease_token(&gw.instance_id);
    let tasks = gw.store.claim_due(kind, &token, lease_until, batch).await?;
    let n = tasks.len();
    futures::stream::iter(tasks)
        .for_each_concurrent(concurrency, |t| {
            let id = t.id.clone();
            let span = tracing::info_span!("task_step", ?kind, task_id = %id);
            let run = step(gw, t, token.clone());
            async move {
                if let Err(e) = run.await {
                    tracing::error!(task_id = %id, ?kind, error = ?e, "task step failed to record");
                }
            }
            .instrument(span)
        })
        .await;
    Ok(n)
}

/// Fails a task held by claim `token`, logging why.
async fn fail(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    code: &str,
    message: String,
    provider_message: Option<String>,
) -> anyhow::Result<()> {
    tracing::warn!(task_id = %task.id, code, %message, "failing task");
    let error = crate::store::TaskError {
        code: code.into(),
        message,
        provider_message,
    };
    gw.store.fail_task(&task.id, token, &error).await?;
    Ok(())
}

const JANITOR_TICK: Duration = Duration::from_secs(60);

/// Forgets expired idempotency keys and deletes what retention no longer keeps
/// (`retention.rs`). Returns 0 so that its loop always sleeps a full tick.
pub async fn janitor_once(gw: &Gateway) -> anyhow::Result<usize> {
    let pruned = gw.store.prune_idempotency_keys().await?;
    if pruned > 0 {
        tracing::debug!(pruned, "expired idempotency keys removed");
    }
    retention::prune_once(gw).await?;
    Ok(0)
}

/// Runs `step` in a loop named `name` until `cancel`: again at once after a busy step
/// (it returned more than 0), after `tick` otherwise. Cancellation is seen between steps,
/// so a step is never cut in half. A panicking step is caught, logged and counted, and the
/// loop goes on; every completed step is a heartbeat for `/healthz`. Public so that tests
/// can run a step of their own under the same supervision.
pub fn spawn_loop<F, Fut>(
    name: &'static str,
    tick: Duration,
    cancel: CancellationToken,
    gw: Arc<Gateway>,
    step: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Gateway>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<usize>> + Send,
{
    spawn_woken_loop(name, tick, None, cancel, gw, step)
}

/// `spawn_loop` that `wake` also ends the pause of (the dispatcher, when a slot frees).
fn spawn_woken_loop<F, Fut>(
    name: &'static str,
    tick: Duration,
    wake: Option<Arc<tokio::sync::Notify>>,
    cancel: CancellationToken,
    gw: Arc<Gateway>,
    step: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Gateway>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<usize>> + Send,
{
    let beats = gw.heartbeats.clone();
    let every = Every { tick, wake };
    supervise::spawn(name, every, cancel, beats, move || step(gw.clone()))
}
