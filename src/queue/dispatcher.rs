//! The dispatcher: a worker on every gateway process that ends waiting tasks past their
//! deadline and starts waiting tasks, in fair-share order, as providers get room. It is
//! woken at once when a task ending in this process gives back a slot; other processes'
//! ends reach it within a tick. Claims are leased per task (`store/queue.rs`), so any
//! number of processes can dispatch from one queue.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::gateway::Gateway;
use crate::store::{lease_token, now_ms, Claimed, TaskError, TaskRecord, TaskState};

/// Heads parked in one step at most (see `dispatch_once`).
const MAX_PARKS_PER_STEP: usize = 256;
use crate::submit::{self, SubmitError};

/// One dispatcher step: expire, then start as many waiting tasks as there is room for
/// (at most `queue.dispatch_batch`). Returns how many tasks left the queue.
pub async fn dispatch_once(gw: &Arc<Gateway>) -> anyhow::Result<usize> {
    // Room appeared at the wake this step serves (a slot freed in this process), or, when
    // nothing woke it, at this step (another process's slot, a cap rising, a tick).
    let woken_at = gw
        .store
        .slot_freed_at
        .swap(0, std::sync::atomic::Ordering::AcqRel);
    let step_at = now_ms();
    let room_since = if woken_at > 0 {
        woken_at.min(step_at)
    } else {
        step_at
    };
    let expired = expire_once(gw).await?;
    // Reads first: an idle step takes no write lock (on SQLite, the one creates need).
    let mut room = room_now(gw).await?;
    if room > 0 && !gw.store.any_waiting().await? {
        room = 0;
    }
    let mut claimed = Vec::new();
    // A parked head (its key at its `max_in_flight`) takes no room: the next claim goes on
    // past it. Each task is parked at most once per slot its key frees, so this is bounded
    // per step only to keep a step short.
    let mut parked = 0;
    while claimed.len() < room && parked < MAX_PARKS_PER_STEP {
        let token = lease_token(&gw.instance_id);
        match gw.store.claim_waiting(&token).await? {
            Some(Claimed::Task(task)) => claimed.push((*task, token)),
            Some(Claimed::Parked) => parked += 1,
            None => break,
        }
    }
    let started = futures::stream::iter(claimed)
        .map(|(task, token)| start(gw, task, token, room_since))
        .buffer_unordered(gw.config.queue.dispatch_batch as usize)
        .filter(|left| futures::future::ready(*left))
        .count()
        .await;
    Ok(expired + started)
}

/// How many waiting tasks to claim now: the free slots of the capped providers, or a full
/// batch while some uncapped provider is not cooling down. A task claimed for a provider
/// that turns out full goes back with its place, so this only needs to be a good guess.
async fn room_now(gw: &Gateway) -> anyhow::Result<usize> {
    let batch = gw.config.queue.dispatch_batch as usize;
    let rows = gw.queue.refresh(&gw.store).await?;
    let now = now_ms();
    let mut room = 0usize;
    for up in gw.router.names() {
        match rows.iter().find(|r| r.provider == up) {
            Some(r) => match r.room(now) {
                Some(free) => room += usize::try_from(free).unwrap_or_default(),
                None if r.cooldown_until <= now => return Ok(batch),
                None => {}
            },
            None => return Ok(batch),
        }
    }
    Ok(room.min(batch))
}

/// Ends waiting tasks whose `max_wait_secs` ran out: failed `queue_timeout`, nothing
/// charged. Returns how many.
async fn expire_once(gw: &Gateway) -> anyhow::Result<usize> {
    let due = gw
        .store
        .waiting_past_deadline(gw.config.queue.dispatch_batch)
        .await?;
    let mut ended = 0;
    for id in due {
        let error = TaskError {
            code: "queue_timeout".into(),
            message: "no provider had room before the task's max_wait_secs ran out".into(),
            provider_message: None,
        };
        if gw
            .store
            .end_waiting(&id, None, TaskState::Failed, Some(&error))
            .await?
        {
            tracing::info!(task_id = %id, "waiting task timed out");
            ended += 1;
        }
    }
    Ok(ended)
}

/// Submits one claimed task. True when it left the queue (accepted, failed or handed to
/// the reconciler), false when it went back to wait. `room_since`: when the room this step
/// fills appeared (Unix ms), for the dispatch latency.
async fn start(gw: &Arc<Gateway>, task: TaskRecord, token: String, room_since: i64) -> bool {
    let id = task.id.clone();
    let since = task.queue.map(|q| q.waiting_since);
    let outcome = match plan(gw, &task, &token).await {
        Ok(Planned::Go(plan)) => {
            let could_start = since.map_or(room_since, |s| s.max(room_since));
            let latency = Duration::from_millis((now_ms() - could_start).max(0) as u64);
            crate::telemetry::metrics::dispatch_latency(latency);
            super::admission::submit_from_queue(gw, &task, token, plan).await
        }
        Ok(Planned::Back) => Ok(false),
        Ok(Planned::Failed) => Ok(true),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(left) => {
            if let (true, Some(since)) = (left, since) {
                let waited = Duration::from_millis((now_ms() - since).max(0) as u64);
                crate::telemetry::metrics::queue_wait(waited);
            }
            left
        }
        // The task's own failure is recorded on it; only the store's is news here.
        Err(SubmitError::StoreAfterWrite { source, .. } | SubmitError::Store(source)) => {
            tracing::error!(task_id = %id, error = ?source, "dispatching a waiting task failed to record");
            false
        }
        Err(_) => true,
    }
}

enum Planned {
    Go(crate::routing::Plan),
    /// Every capable provider is failing: back to wait (a circuit closing lets it start).
    Back,
    /// No configured provider can carry it any more: failed.
    Failed,
}

/// The plan for a claimed task now, or what became of it without one.
async fn plan(gw: &Gateway, task: &TaskRecord, token: &str) -> Result<Planned, SubmitError> {
    let req = match gw.store.task_request(&task.id).await {
        Ok(req) => req,
        Err(e) => {
            // Nothing was called: back to wait, rather than to the reconciler at the lease's
            // end (which cannot know that no provider has it).
            if let Err(again) = gw.store.requeue(&task.id, token).await {
                tracing::warn!(task_id = %task.id, error = ?again, "could not put a claimed task back");
            }
            return Err(SubmitError::Store(e));
        }
    };
    match submit::plan_request(gw, &req).await {
        Ok(plan) => Ok(Planned::Go(plan)),
        Err(SubmitError::Unavailable { .. }) => {
            gw.store.requeue(&task.id, token).await?;
            Ok(Planned::Back)
        }
        Err(SubmitError::Store(e)) => Err(SubmitError::Store(e)),
        Err(e) => {
            let error = TaskError {
                code: "no_capable_provider".into(),
                message: e.to_string(),
                provider_message: None,
            };
            gw.store.fail_task(&task.id, token, &error).await?;
            Ok(Planned::Failed)
        }
    }
}
