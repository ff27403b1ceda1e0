//! Follows every accepted, unfinished task to its end at its provider's poll interval,
//! backing off after failed polls.

use std::time::Duration;

use crate::domain::TaskStatus;
use crate::gateway::Gateway;
use crate::health::Phase;
use crate::providers::{ErrorKind, ProviderError, UpstreamTask};
use crate::routing::{self, round_usd};
use crate::store::{now_ms, ClaimKind, PollUpdate, TaskRecord, TaskState};
use crate::submit::{describe, task_error};

use super::fail;

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
        |gw, t, token| async move { poll_task(gw, &t, &token).await },
    )
    .await
}

async fn poll_task(gw: &Gateway, task: &TaskRecord, token: &str) -> anyhow::Result<()> {
    let provider = task.provider.as_deref().unwrap_or_default();
    let Some(up) = gw.router.get(provider) else {
        let message = format!("provider {provider:?} is no longer configured on this gateway");
        return fail(gw, task, token, "provider_unavailable", message, None).await;
    };
    let upstream_id = task.provider_task_id.as_deref().unwrap_or_default();
    // A task given an upstream callback is polled only as a backstop, more slowly.
    let interval = crate::submit::poll_interval(gw, up, task.upstream_callback);
    let lease_ms = gw.config.poller.lease().as_millis() as i64;
    let started = std::time::Instant::now();
    let Some(result) = gw
        .store
        .while_leased(&task.id, token, lease_ms, up.adapter.query(upstream_id))
        .await?
    else {
        return Ok(());
    };
    crate::submit::record_health(
        gw,
        provider,
        Phase::Poll,
        result.as_ref().map(|_| ()),
        started.elapsed(),
    )
    .await;
    // The age limit is checked after this last look, so a task that finished while its
    // provider (or omnigate) was unreachable is not reported failed.
    let finished = matches!(&result, Ok(seen) if matches!(seen.status, TaskStatus::Completed | TaskStatus::Failed));
    if !finished && now_ms() - task.created_at > gw.config.poller.max_task_age_secs as i64 * 1000 {
        let message = format!(
            "{provider} did not finish the task within {} s",
            gw.config.poller.max_task_age_secs
        );
        return fail(gw, task, token, "upstream_timeout", message, None).await;
    }
    match result {
        Ok(seen) => record_seen(gw, task, token, &seen, interval).await,
        Err(e) if e.kind == ErrorKind::Unreadable => {
            record_unreadable(gw, task, token, &e, interval).await
        }
        Err(e) => {
            let failures = task.poll_failures as u32 + 1;
            tracing::warn!(task_id = %task.id, provider, failures, error = ?e, "poll failed");
            if failures >= gw.config.poller.max_poll_failures {
                let mut err = task_error(&e, provider);
                err.message = format!(
                    "{provider}: status polls kept failing ({})",
                    describe(e.kind)
                );
                gw.store.fail_task(&task.id, token, &err).await?;
            } else {
                let next = now_ms()
                    + backoff(interval, failures, gw.config.poller.max_backoff_secs).as_millis()
                        as i64;
                gw.store.poll_failed(task, token, next).await?;
            }
            Ok(())
        }
    }
}

/// A status answer omnigate cannot interpret is kept and counted; after
/// `max_unreadable_answers` of them in a row the task fails rather than waiting, as if in
/// progress, until the age limit.
async fn record_unreadable(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    e: &ProviderError,
    interval: Duration,
) -> anyhow::Result<()> {
    let provider = task.provider.as_deref().unwrap_or_default();
    let seen = task.unreadable_answers + 1;
    tracing::warn!(task_id = %task.id, provider, seen, error = ?e, raw = ?e.raw_body, "status answer could not be interpreted");
    if seen >= i64::from(gw.config.poller.max_unreadable_answers.max(1)) {
        let message = format!(
            "{provider}'s status answer could not be interpreted {seen} times in a row ({})",
            e.message
        );
        return fail(
            gw,
            task,
            token,
            "upstream_unreadable",
            message,
            e.raw_body.clone(),
        )
        .await;
    }
    let next = now_ms() + interval.as_millis() as i64;
    gw.store
        .poll_unreadable(task, token, e.raw_body.as_deref(), next)
        .await?;
    Ok(())
}

async fn record_seen(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    seen: &UpstreamTask,
    interval: Duration,
) -> anyhow::Result<()> {
    if seen.status == TaskStatus::Failed {
        let message = format!(
            "{} failed the generation",
            task.provider.as_deref().unwrap_or_default()
        );
        let provider_message = seen.failure_message.clone();
        return fail(
            gw,
            task,
            token,
            "generation_failed",
            message,
            provider_message,
        )
        .await;
    }
    // A lagging provider replica may report an earlier state: a task never moves back.
    let state = match (task.state, TaskState::from_public(seen.status)) {
        (TaskState::InProgress, TaskState::Queued) => TaskState::InProgress,
        (_, state) => state,
    };
    let final_cost = match state {
        TaskState::Completed => final_cost(gw, task, seen).await?,
        _ => None,
    };
    let next = now_ms() + interval.as_millis() as i64;
    let recorded = gw
        .store
        .apply_poll(
            task,
            token,
            &PollUpdate {
                state,
                progress: seen.progress,
                videos: &seen.videos,
                cost_final_usd: final_cost,
                next_poll_at: next,
            },
        )
        .await?;
    if recorded && state == TaskState::Completed && task.state != TaskState::Completed {
        let provider = task.provider.as_deref().unwrap_or("none");
        crate::telemetry::metrics::spend(provider, final_cost.unwrap_or(0.0));
    }
    Ok(())
}

/// A base-video edit is billed on the input's rounded length, which the result reveals;
/// anything else costs what was estimated.
async fn final_cost(
    gw: &Gateway,
    task: &TaskRecord,
    seen: &UpstreamTask,
) -> anyhow::Result<Option<f64>> {
    let request = gw.store.task_request(&task.id).await?;
    if request.base_video().is_none() {
        return Ok(task.cost_estimated_usd);
    }
    let Some(up) = task.provider.as_deref().and_then(|p| gw.router.get(p)) else {
        return Ok(task.cost_estimated_usd);
    };
    let seconds = seen.videos.first().and_then(|v| v.duration).map(f64::round);
    Ok(seconds
        .zip(routing::price_per_second(&up.config, &request))
        .map(|(s, per_second)| round_usd(per_second * s)))
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
