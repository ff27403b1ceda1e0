//! Where the submit path (`submit.rs`) meets the queue: a task no provider had room for
//! joins the queue (or, taken from it by the dispatcher, goes back with its place), and the
//! dispatcher's tasks go through the same submit path as a create's.

use crate::gateway::Gateway;
use crate::routing::Plan;
use crate::store::{now_ms, Enqueue, Enqueued, Holds, NewTask, TaskError, TaskRecord};
use crate::submit::{submit_in_order, Job, SubmitError, SubmitOutcome};

/// Why the task goes to the `index`th candidate, and which cheaper ones were full.
pub(crate) fn routing_reason(plan: &Plan, index: usize, full: &[String]) -> String {
    let reason = plan.reason_for(index);
    let cheapest = &plan.candidates[0];
    if index == 0 || !full.contains(&cheapest.upstream.name) {
        return reason;
    }
    let dearer = if cheapest.estimate_usd > 0.0 {
        (plan.candidates[index].estimate_usd / cheapest.estimate_usd - 1.0) * 100.0
    } else {
        0.0
    };
    format!("cheapest provider full; next at +{dearer:.0}% ({reason})")
}

/// No provider had room: the task waits (a new one joins the queue, refused past its key's
/// `max_queued`; one the dispatcher took goes back with its place).
pub(crate) async fn wait(gw: &Gateway, job: &Job) -> Result<SubmitOutcome, SubmitError> {
    let id = &job.task.id;
    let after_write = |source: anyhow::Error| SubmitError::StoreAfterWrite {
        task_id: id.clone(),
        source,
    };
    if job.from_queue {
        let back = gw
            .store
            .requeue(id, &job.token)
            .await
            .map_err(after_write)?;
        return Ok(if back {
            SubmitOutcome::Waiting
        } else {
            SubmitOutcome::TakenOver
        });
    }
    let req = &job.task.request;
    let max_wait_ms = crate::queue::max_wait_ms(&gw.config.queue, req).unwrap_or_default();
    let enqueue = Enqueue {
        id,
        token: &job.token,
        api_key_id: &job.task.api_key_id,
        priority: crate::queue::priority_rank(req),
        max_wait_until: now_ms() + max_wait_ms,
        default_max_queued: gw.config.queue.default_max_queued,
        needs_key_slot: job.waits_for_key_slot,
    };
    match gw.store.enqueue(&enqueue).await.map_err(after_write)? {
        Enqueued::Waiting(_) => Ok(SubmitOutcome::Waiting),
        Enqueued::LeaseLost => Ok(SubmitOutcome::TakenOver),
        Enqueued::QueueFull { max_queued } => {
            let refusal = SubmitError::QueueFull { max_queued };
            let error = TaskError {
                code: "queue_full".into(),
                message: refusal.to_string(),
                provider_message: None,
            };
            let ours = gw
                .store
                .fail_task(id, &job.token, &error)
                .await
                .map_err(after_write)?;
            if ours {
                Err(refusal)
            } else {
                Ok(SubmitOutcome::TakenOver)
            }
        }
    }
}

/// Submits a task the dispatcher took from the queue (claim `token`) under `plan`: the
/// normal path (failover, never twice, acceptance recorded first), or back in the queue.
/// True when it left the queue for good (accepted, failed or handed on).
pub(crate) async fn submit_from_queue(
    gw: &Gateway,
    task: &TaskRecord,
    token: String,
    plan: Plan,
) -> Result<bool, SubmitError> {
    let request = gw.store.task_request(&task.id).await?;
    let job = Job {
        task: NewTask {
            id: task.id.clone(),
            api_key_id: task.api_key_id.clone(),
            provider: task.provider.clone().unwrap_or_default(),
            sandbox: task.sandbox,
            cost_estimated_usd: task.cost_estimated_usd,
            routing_reason: task.routing_reason.clone().unwrap_or_default(),
            lease_owner: token.clone(),
            lease_until: 0,
            holds: Holds::default(),
            billed_seconds: None,
            request,
            upstream_callback_token: None,
        },
        created_at: task.created_at,
        token,
        plan,
        from_queue: true,
        waits_for_key_slot: false,
    };
    Ok(!matches!(
        submit_in_order(gw, &job).await?,
        SubmitOutcome::Waiting
    ))
}
