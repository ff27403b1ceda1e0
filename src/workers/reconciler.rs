//! Settles tasks whose submit outcome is unknown: the submitter crashed, or the provider
//! took the request but the answer was lost. Such a task is never submitted a second time
//! unless the provider positively says it does not have it.

use crate::config::UnknownSubmit;
use crate::gateway::Gateway;
use crate::providers::{ErrorKind, Lookup};
use crate::routing::Candidate;
use crate::store::{now_ms, ClaimKind, TaskError, TaskRecord};
use crate::submit::{accept, task_error};

/// How long to wait before asking a provider again when a lookup itself failed.
const RETRY_LOOKUP_MS: i64 = 5_000;

/// Lookups that fail this many times in a row end in the provider's `unknown_submit` policy.
const MAX_LOOKUP_FAILURES: i64 = 5;
/// Reconciles of one worker in flight at once.
const RECONCILE_CONCURRENCY: usize = 8;

/// A reconcile may page through the provider's task list and then resubmit: its lease
/// covers that many calls at the slowest provider's timeout.
fn reconcile_lease_ms(gw: &Gateway) -> i64 {
    let slowest = gw
        .router
        .names()
        .filter_map(|n| gw.router.get(n))
        .map(|u| u.config.request_timeout().as_millis() as i64)
        .max()
        .unwrap_or_default();
    let calls = crate::providers::kling::LIST_MAX_PAGES as i64 + 2;
    (calls * slowest + 30_000).max(gw.config.poller.lease().as_millis() as i64)
}

pub async fn reconcile_once(gw: &Gateway) -> anyhow::Result<usize> {
    let lease_ms = reconcile_lease_ms(gw);
    super::claim_and_run(
        gw,
        ClaimKind::Reconcile,
        lease_ms,
        RECONCILE_CONCURRENCY,
        |gw, t| async move { reconcile_task(gw, &t).await },
    )
    .await
}

async fn reconcile_task(gw: &Gateway, task: &TaskRecord) -> anyhow::Result<()> {
    let provider = task.provider.as_deref().unwrap_or_default();
    let Some(up) = gw.router.get(provider) else {
        return fail(
            gw,
            task,
            "provider_unavailable",
            format!(
            "the submit to {provider:?} was interrupted and that provider is no longer configured"
        ),
        )
        .await;
    };
    let candidate = Candidate {
        upstream: up.clone(),
        estimate_usd: task.cost_estimated_usd.unwrap_or_default(),
        probe: false,
    };
    if !up.adapter.capabilities().external_task_id {
        return apply_unknown_submit_policy(gw, task, &candidate).await;
    }
    match up.adapter.find_by_external_id(&task.id).await {
        Ok(Lookup::Found(seen)) => {
            tracing::info!(task_id = %task.id, provider, "found the interrupted submit upstream");
            let submitted = crate::providers::Submitted {
                upstream_id: seen.upstream_id,
                status: seen.status,
            };
            accept(gw, &task.id, &candidate, &submitted).await
        }
        Ok(Lookup::Absent) => {
            tracing::info!(task_id = %task.id, provider, "interrupted submit never landed; submitting again");
            match up.adapter.submit(&task.id, &task.request).await {
                Ok(submitted) => accept(gw, &task.id, &candidate, &submitted).await,
                Err(e) if e.ambiguous => retry_later(gw, task).await,
                Err(e) => {
                    gw.store
                        .fail_task(&task.id, &gw.instance_id, &task_error(&e, provider))
                        .await?;
                    Ok(())
                }
            }
        }
        Err(e) => {
            tracing::warn!(task_id = %task.id, provider, error = %e, "lookup by external_task_id failed");
            // A lookup the provider cannot serve (no list endpoint, refused, unreadable)
            // will not start working by asking again.
            let hopeless = matches!(
                e.kind,
                ErrorKind::NotFound
                    | ErrorKind::BadRequest
                    | ErrorKind::Auth
                    | ErrorKind::Malformed
            );
            if hopeless || task.poll_failures + 1 >= MAX_LOOKUP_FAILURES {
                apply_unknown_submit_policy(gw, task, &candidate).await
            } else {
                retry_later(gw, task).await
            }
        }
    }
}

/// What the provider's config says to do when whether it has the task cannot be known.
async fn apply_unknown_submit_policy(
    gw: &Gateway,
    task: &TaskRecord,
    candidate: &Candidate,
) -> anyhow::Result<()> {
    let provider = &candidate.upstream.name;
    match candidate.upstream.config.unknown_submit {
        UnknownSubmit::Fail => {
            let message = format!(
                "the submit to {provider} got no answer and {provider} could not say whether it has \
                 the task; it was not resubmitted, so it is never run (or charged) twice"
            );
            fail(gw, task, "submit_outcome_unknown", message).await
        }
        UnknownSubmit::Resubmit => {
            tracing::warn!(task_id = %task.id, provider, "submit outcome unknown; resubmitting as configured (unknown_submit = resubmit)");
            resubmit(gw, task, candidate).await
        }
    }
}

/// Submits again to the same provider under the same id.
async fn resubmit(gw: &Gateway, task: &TaskRecord, candidate: &Candidate) -> anyhow::Result<()> {
    match candidate
        .upstream
        .adapter
        .submit(&task.id, &task.request)
        .await
    {
        Ok(submitted) => accept(gw, &task.id, candidate, &submitted).await,
        Err(e) if e.ambiguous => retry_later(gw, task).await,
        Err(e) => {
            let err = task_error(&e, &candidate.upstream.name);
            gw.store.fail_task(&task.id, &gw.instance_id, &err).await?;
            Ok(())
        }
    }
}

async fn retry_later(gw: &Gateway, task: &TaskRecord) -> anyhow::Result<()> {
    if now_ms() - task.created_at > gw.config.poller.max_task_age_secs as i64 * 1000 {
        return fail(
            gw,
            task,
            "submit_outcome_unknown",
            "the provider could not confirm the interrupted submit in time".into(),
        )
        .await;
    }
    gw.store
        .poll_failed(task, &gw.instance_id, now_ms() + RETRY_LOOKUP_MS)
        .await?;
    Ok(())
}

async fn fail(gw: &Gateway, task: &TaskRecord, code: &str, message: String) -> anyhow::Result<()> {
    tracing::warn!(task_id = %task.id, code, %message, "failing task");
    gw.store
        .fail_task(
            &task.id,
            &gw.instance_id,
            &TaskError {
                code: code.into(),
                message,
                provider_message: None,
            },
        )
        .await?;
    Ok(())
}
