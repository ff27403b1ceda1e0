//! Follows every accepted, unfinished task to its end at its provider's poll interval,
//! backing off after failed polls.
//!
//! One step claims up to `poll_batch_size` due tasks under one lease token (`SKIP LOCKED`
//! on PostgreSQL, so gateway processes sharing the database claim disjoint batches), polls
//! them `poll_concurrency` at a time, and writes the tasks found still running back in one
//! statement per batch. Anything else a poll finds (a state change, an end, a failure) is
//! written per task, as before. Every write checks the token, and a written task is not
//! due again for at least its interval: no task is polled twice within one interval, by
//! one process or several. Outcomes go to the in-memory health counters.

use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tracing::Instrument;

use crate::domain::TaskStatus;
use crate::gateway::Gateway;
use crate::health::Phase;
use crate::providers::{ErrorKind, ProviderError, UpstreamTask};
use crate::routing::{self, round_usd};
use crate::store::{
    lease_token, now_ms, ClaimKind, PollUpdate, StillRunning, TaskRecord, TaskState,
};
use crate::submit::{describe, task_error};

use super::fail;

/// Claims the due tasks, polls each once and records what was seen. Returns how many it
/// claimed.
pub async fn poll_once(gw: &Gateway) -> anyhow::Result<usize> {
    let cfg = &gw.config.poller;
    let lease_until = now_ms() + cfg.lease().as_millis() as i64;
    let token = lease_token(&gw.instance_id);
    let tasks = gw
        .store
        .claim_due(ClaimKind::Poll, &token, lease_until, cfg.poll_batch_size)
        .await?;
    let n = tasks.len();
    // Polls run `poll_concurrency` at a time, but what they found is written by at most
    // half the pool's connections at once: a provider failing many polls together (each
    // recording its failure in a transaction on the circuit row) must not starve creates.
    let writers =
        tokio::sync::Semaphore::new((gw.config.database.max_connections / 2).max(1) as usize);
    let claim = Claim {
        token: &token,
        lease_until,
        writers: &writers,
    };
    // Polls and the batch writes of the tasks still running go side by side: were the polls
    // paused while a batch is written, a paused poll could hold the only SQLite writer
    // connection mid-transaction while the batch waits for it (a 5 s stall until the
    // pool's acquire timeout).
    let (found, mut still_running) = tokio::sync::mpsc::unbounded_channel();
    let polls = futures::stream::iter(tasks)
        .map(|t| {
            let span = tracing::info_span!("task_step", kind = ?ClaimKind::Poll, task_id = %t.id);
            async move {
                poll_task(gw, &t, claim).await.unwrap_or_else(|e| {
                    tracing::error!(task_id = %t.id, error = ?e, "poll failed to record");
                    None
                })
            }
            .instrument(span)
        })
        .buffer_unordered(cfg.poll_concurrency.max(1))
        .for_each(move |seen| {
            if let Some(seen) = seen {
                let _ = found.send(seen);
            }
            std::future::ready(())
        });
    // Whatever has been polled is written while the rest of the claim is still being
    // polled: a task is never held long after its poll, whatever the batch's length.
    let writes = async {
        let mut seen = Vec::new();
        while still_running
            .recv_many(&mut seen, cfg.poll_batch_size as usize)
            .await
            > 0
        {
            // Should this fail, the claims run out and the tasks are polled again then.
            gw.store.reschedule_polls(&token, &seen).await?;
            seen.clear();
        }
        anyhow::Ok(())
    };
    let ((), written) = futures::join!(polls, writes);
    written?;
    Ok(n)
}

/// The lease one step's tasks were claimed under.
#[derive(Clone, Copy)]
struct Claim<'a> {
    token: &'a str,
    lease_until: i64,
    /// Permits to write a poll's outcome (see `poll_once`).
    writers: &'a tokio::sync::Semaphore,
}

/// Polls one claimed task. The task found still running comes back to be rescheduled
/// with its batch; everything else is written here.
async fn poll_task(
    gw: &Gateway,
    task: &TaskRecord,
    claim: Claim<'_>,
) -> anyhow::Result<Option<StillRunning>> {
    let token = claim.token;
    let provider = task.provider.as_deref().unwrap_or_default();
    let Some(up) = gw.router.get(provider) else {
        let message = format!("provider {provider:?} is no longer configured on this gateway");
        fail(gw, task, token, "provider_unavailable", message, None).await?;
        return Ok(None);
    };
    let upstream_id = task.provider_task_id.as_deref().unwrap_or_default();
    // A task given an upstream callback is polled only as a backstop, more slowly.
    let interval = crate::submit::poll_interval(gw, up, task.upstream_callback);
    let lease_ms = gw.config.poller.lease().as_millis() as i64;
    let started = std::time::Instant::now();
    let query = up.adapter.query(upstream_id);
    // A claim with at least half its lease left needs no write before the call (the lease
    // is pushed ahead only should the call run long); an older one is checked first.
    let result = if now_ms() + lease_ms / 2 < claim.lease_until {
        gw.store.keep_leased(&task.id, token, lease_ms, query).await
    } else {
        match gw
            .store
            .while_leased(&task.id, token, lease_ms, query)
            .await?
        {
            Some(result) => result,
            None => return Ok(None),
        }
    };
    let _writing = claim.writers.acquire().await?;
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
        fail(gw, task, token, "upstream_timeout", message, None).await?;
        return Ok(None);
    }
    match result {
        Ok(seen) => {
            let next = timed_next_poll_at(gw, task, provider, interval);
            record_seen(gw, task, token, &seen, next).await
        }
        Err(e) if e.kind == ErrorKind::Unreadable => {
            let next = next_poll_at(interval, gw.config.poller.poll_jitter);
            record_unreadable(gw, task, token, &e, next).await?;
            Ok(None)
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
            Ok(None)
        }
    }
}

/// When to poll a task next: one interval from now, plus up to `jitter` of it at random,
/// so that tasks polled together spread out over the following rounds.
fn next_poll_at(interval: Duration, jitter: f64) -> i64 {
    let interval_ms = interval.as_millis() as i64;
    let spread = (interval_ms as f64 * jitter) as i64;
    let jitter = if spread > 0 {
        rand::thread_rng().gen_range(0..=spread)
    } else {
        0
    };
    now_ms() + interval_ms + jitter
}

/// When to poll a task found still running: by its provider's completion times for its
/// group (`timing::schedule`) when polls are timed and there is history, else one interval
/// on. A task expecting an upstream callback keeps the backstop interval: the callback
/// tells of its end.
fn timed_next_poll_at(gw: &Gateway, task: &TaskRecord, provider: &str, interval: Duration) -> i64 {
    let cfg = &gw.config.poller;
    let dist = match (&task.timing_key, task.accepted_at) {
        (Some(key), Some(_)) if cfg.adaptive_polls && !task.upstream_callback => {
            gw.timings.distribution(provider, key)
        }
        _ => None,
    };
    let (Some(dist), Some(accepted_at)) = (dist, task.accepted_at) else {
        return next_poll_at(interval, cfg.poll_jitter);
    };
    let elapsed = Duration::from_millis((now_ms() - accepted_at).max(0) as u64);
    let gap = crate::timing::schedule::next_poll_after(
        Some(&dist),
        elapsed,
        interval,
        cfg.min_poll_gap(),
    );
    next_poll_at(gap, cfg.poll_jitter)
}

/// A status answer omnigate cannot interpret is kept and counted; after
/// `max_unreadable_answers` of them in a row the task fails rather than waiting, as if in
/// progress, until the age limit.
async fn record_unreadable(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    e: &ProviderError,
    next: i64,
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
    next: i64,
) -> anyhow::Result<Option<StillRunning>> {
    if seen.status == TaskStatus::Failed {
        let message = format!(
            "{} failed the generation",
            task.provider.as_deref().unwrap_or_default()
        );
        let provider_message = seen.failure_message.clone();
        fail(
            gw,
            task,
            token,
            "generation_failed",
            message,
            provider_message,
        )
        .await?;
        return Ok(None);
    }
    // A lagging provider replica may report an earlier state: a task never moves back.
    let state = match (task.state, TaskState::from_public(seen.status)) {
        (TaskState::InProgress, TaskState::Queued) => TaskState::InProgress,
        (_, state) => state,
    };
    if state == task.state && state != TaskState::Completed {
        let progress = seen.progress.map_or(task.progress, i64::from);
        return Ok(Some(StillRunning {
            id: task.id.clone(),
            progress: progress.max(task.progress),
            next_poll_at: next,
            claimed_next_poll_at: task.next_poll_at,
        }));
    }
    let final_cost = match state {
        TaskState::Completed => final_cost(gw, task, seen).await?,
        _ => None,
    };
    let update = PollUpdate {
        state,
        progress: seen.progress,
        videos: &seen.videos,
        cost_final_usd: final_cost,
        next_poll_at: next,
    };
    let recorded = match gw.store.apply_poll(task, token, &update).await {
        Ok(recorded) => recorded,
        Err(e) => {
            record_store_refusal(gw, task, token, &e, next).await?;
            return Ok(None);
        }
    };
    if recorded && state == TaskState::Completed && task.state != TaskState::Completed {
        let provider = task.provider.as_deref().unwrap_or("none");
        crate::telemetry::metrics::spend(provider, final_cost.unwrap_or(0.0));
    }
    Ok(None)
}

/// Refused writes of one task's poll outcome before the task fails (`store_refused`).
const STORE_REFUSALS_BEFORE_FAILING: i64 = 5;

/// The store refused to record what a poll found (PostgreSQL refusing a byte sequence,
/// say): asking the provider again gets the same answer, so after
/// [`STORE_REFUSALS_BEFORE_FAILING`] refusals in a row the task fails like any other,
/// releasing its key's slot and budget hold, instead of being polled for ever. A store
/// that is down cannot count either; that error goes up and the claim runs out as before.
async fn record_store_refusal(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    e: &anyhow::Error,
    next: i64,
) -> anyhow::Result<()> {
    let limit = STORE_REFUSALS_BEFORE_FAILING;
    let Some(refusals) = gw
        .store
        .count_store_refusal(&task.id, token, limit, next)
        .await?
    else {
        return Ok(());
    };
    tracing::error!(task_id = %task.id, refusals, error = ?e, "the store refused to record a poll's outcome");
    if refusals < limit {
        return Ok(());
    }
    let message = format!(
        "the gateway's store refused to record the provider's answer {refusals} times in a row"
    );
    fail(gw, task, token, "store_refused", message, None).await
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

    #[test]
    fn jitter_only_ever_adds_to_the_interval() {
        let i = Duration::from_secs(10);
        let (mut low, mut high) = (i64::MAX, i64::MIN);
        for _ in 0..2_000 {
            let before = now_ms();
            let wait = next_poll_at(i, 0.1) - before;
            low = low.min(wait);
            high = high.max(wait);
        }
        assert!(low >= 10_000, "never sooner than the interval: {low}");
        assert!(high <= 11_000 + 5, "at most a tenth later: {high}");
        assert!(high - low > 500, "spread out: {low}..{high}");
        assert!(next_poll_at(i, 0.0) - now_ms() >= 9_995);
    }
}
