//! The `results` worker: claims queued copies under a lease token (several gateway
//! processes share the queue; SKIP LOCKED on PostgreSQL), copies each video into object
//! storage, and records the outcome with that token; failed attempts are retried with
//! exponential backoff up to `results.max_attempts`. It also removes the stored objects of
//! videos a client deleted. Everything it needs is in the database: a crash mid-copy
//! leaves a claim that runs out, and the copy is made again.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::results::{copy_video, CopyError, Results};
use crate::store::{lease_token, now_ms, CopyJob};

/// Claims the due jobs and runs each once. Returns how many it claimed.
pub async fn copy_once(gw: &Gateway) -> anyhow::Result<usize> {
    let Some(results) = &gw.results else {
        return Ok(0);
    };
    let cfg = &results.config;
    let lease_until = now_ms() + cfg.lease_secs as i64 * 1000;
    let token = lease_token(&gw.instance_id);
    let jobs = gw
        .store
        .claim_copies(&token, lease_until, cfg.batch_size)
        .await?;
    let n = jobs.len();
    futures::stream::iter(jobs)
        .for_each_concurrent(cfg.concurrency, |job| {
            let token = &token;
            async move {
                if let Err(e) = run(gw, results, &job, token).await {
                    tracing::error!(task_id = %job.task_id, error = ?e, "result copy failed to record");
                }
            }
        })
        .await;
    Ok(n)
}

async fn run(gw: &Gateway, results: &Results, job: &CopyJob, token: &str) -> anyhow::Result<()> {
    let path = results.path(&job.object_key);
    if job.state == "delete_pending" {
        return match results.object_store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                gw.store.copy_deleted(job, token).await?;
                tracing::info!(task_id = %job.task_id, "stored copy of a deleted video removed");
                Ok(())
            }
            Err(e) => {
                let retry = Some(retry_at(&results.config, job.attempts));
                gw.store
                    .copy_failed(job, token, &format!("removing the copy failed: {e}"), retry)
                    .await?;
                Ok(())
            }
        };
    }
    match copy_video(results, &job.source_url, &job.object_key).await {
        Ok(stored) => {
            let recorded = gw
                .store
                .copy_stored(
                    job,
                    token,
                    stored.bytes as i64,
                    stored.content_type.as_deref(),
                )
                .await?;
            // This process reads its own write at once; the others within a second.
            gw.live.finished.forget(&job.task_id);
            tracing::info!(task_id = %job.task_id, video = job.video_index, bytes = stored.bytes, recorded, "result copied");
        }
        Err(e) => {
            let last = job.attempts + 1 >= i64::from(results.config.max_attempts);
            let retry = match &e {
                CopyError::Retry(_) if !last => Some(retry_at(&results.config, job.attempts)),
                _ => None,
            };
            tracing::warn!(task_id = %job.task_id, video = job.video_index, error = %e, attempt = job.attempts + 1, will_retry = retry.is_some(), "result copy failed");
            gw.store
                .copy_failed(job, token, &e.to_string(), retry)
                .await?;
        }
    }
    Ok(())
}

/// When the next attempt is due after `attempts` earlier ones: `retry_base_secs`, doubled
/// each time, at most `max_backoff_secs`.
fn retry_at(cfg: &crate::results::ResultsConfig, attempts: i64) -> i64 {
    let exp = attempts.clamp(0, 30) as i32;
    let secs = (cfg.retry_base_secs * 2f64.powi(exp)).min(cfg.max_backoff_secs);
    now_ms() + (secs * 1000.0) as i64
}

/// The `results` loop, when `results.enabled`.
pub fn spawn(gw: Arc<Gateway>, cancel: CancellationToken) -> Option<JoinHandle<()>> {
    let tick = Duration::from_millis(gw.results.as_ref()?.config.tick_ms);
    Some(super::spawn_loop(
        "results",
        tick,
        cancel,
        gw,
        |gw| async move { copy_once(&gw).await },
    ))
}
