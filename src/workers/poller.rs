//! Follows every accepted, unfinished task to its end at its provider's poll interval,
//! backing off after failed polls.

use std::time::Duration;

use crate::domain::TaskStatus;
use crate::gateway::Gateway;
use crate::health::Phase;
use crate::providers::UpstreamTask;
use crate::routing::{self, round_usd};
use crate::store::{now_ms, ClaimKind, PollUpdate, TaskError, TaskRecord, TaskState};
use crate::submit::{describe, task_error};

/// Polls of one worker in flight at once.
const POLL_CONCURRENCY: usize = 8;

/// Claims the due tasks and polls each once. Returns how many it claimed.
pub async fn poll_once(gw: &Gateway) -> anyhow::Result<usize> {
    let lease_ms = gw.config.poller.lease().as_millis() as i64;
    super::claim_and_run(
        gw,
        ClaimKind::Poll,
        lease_ms,
        POLL_CONCURRENCY,
        |gw, t| async move { poll_task(gw, &t).await },
    )
    .await
}

async fn poll_task(gw: &Gateway, task: &TaskRecord) -> anyhow::Result<()> {
    let provider = task.provider.as_deref().unwrap_or_default();
    let Some(up) = gw.router.get(provider) else {
        gw.store
            .fail_task(
                &task.id,
                &gw.instance_id,
                &TaskError {
                    code: "provider_unavailable".into(),
                    message: format!(
                        "provider {provider:?} is no longer configured on this gateway"
                    ),
                    provider_message: None,
                },
            )
            .await?;
        return Ok(());
    };
    if now_ms() - task.created_at > gw.config.poller.max_task_age_secs as i64 * 1000 {
        gw.store
            .fail_task(
                &task.id,
                &gw.instance_id,
                &TaskError {
                    code: "upstream_timeout".into(),
                    message: format!(
                        "{provider} did not finish the task within {} s",
                        gw.config.poller.max_task_age_secs
                    ),
                    provider_message: None,
                },
            )
            .await?;
        return Ok(());
    }
    let upstream_id = task.provider_task_id.as_deref().unwrap_or_default();
    let interval = up.config.poll_interval();
    let started = std::time::Instant::now();
    let result = up.adapter.query(upstream_id).await;
    gw.health
        .record(
            provider,
            Phase::Poll,
            result.as_ref().map(|_| ()).map_err(|e| e.kind),
            result.as_ref().err().map(|e| e.message.as_str()),
            started.elapsed(),
        )
        .await?;
    match result {
        Ok(seen) => record_seen(gw, task, &seen, interval).await,
        Err(e) => {
            let failures = task.poll_failures as u32 + 1;
            tracing::warn!(task_id = %task.id, provider, failures, error = %e, "poll failed");
            if failures >= gw.config.poller.max_poll_failures {
                let mut err = task_error(&e, provider);
                err.message = format!(
                    "{provider}: status polls kept failing ({})",
                    describe(e.kind)
                );
                gw.store.fail_task(&task.id, &gw.instance_id, &err).await?;
            } else {
                let next = now_ms()
                    + backoff(interval, failures, gw.config.poller.max_backoff_secs).as_millis()
                        as i64;
                gw.store.poll_failed(task, &gw.instance_id, next).await?;
            }
            Ok(())
        }
    }
}

async fn record_seen(
    gw: &Gateway,
    task: &TaskRecord,
    seen: &UpstreamTask,
    interval: Duration,
) -> anyhow::Result<()> {
    if seen.status == TaskStatus::Failed {
        gw.store
            .fail_task(
                &task.id,
                &gw.instance_id,
                &TaskError {
                    code: "generation_failed".into(),
                    message: format!(
                        "{} failed the generation",
                        task.provider.as_deref().unwrap_or_default()
                    ),
                    provider_message: seen.failure_message.clone(),
                },
            )
            .await?;
        return Ok(());
    }
    let state = TaskState::from_public(seen.status);
    let final_cost = (state == TaskState::Completed)
        .then(|| final_cost(gw, task, seen))
        .flatten();
    let next = now_ms() + interval.as_millis() as i64;
    gw.store
        .apply_poll(
            task,
            &gw.instance_id,
            &PollUpdate {
                state,
                progress: seen.progress,
                videos: &seen.videos,
                cost_final_usd: final_cost,
                next_poll_at: next,
            },
        )
        .await?;
    Ok(())
}

/// A base-video edit is billed on the input's rounded length, which the result reveals;
/// anything else costs what was estimated.
fn final_cost(gw: &Gateway, task: &TaskRecord, seen: &UpstreamTask) -> Option<f64> {
    if task.request.base_video().is_none() {
        return task.cost_estimated_usd;
    }
    let up = gw.router.get(task.provider.as_deref()?)?;
    let seconds = seen.videos.first()?.duration?.round();
    Some(round_usd(
        routing::price_per_second(&up.config, &task.request)? * seconds,
    ))
}

fn backoff(interval: Duration, failures: u32, max_secs: f64) -> Duration {
    let factor = 2f64.powi(failures.min(16) as i32);
    Duration::from_secs_f64((interval.as_secs_f64() * factor).min(max_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let i = Duration::from_secs(10);
        assert_eq!(backoff(i, 1, 300.0), Duration::from_secs(20));
        assert_eq!(backoff(i, 3, 300.0), Duration::from_secs(80));
        assert_eq!(backoff(i, 10, 300.0), Duration::from_secs(300));
    }
}
