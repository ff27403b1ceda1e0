//! Settles tasks whose submit outcome is unknown: the submitter crashed, or the provider
//! took the request but the answer was lost. Such a task is never submitted a second time
//! unless the provider positively says it does not have it, or its `unknown_submit`
//! policy says so; either way at most once.

use crate::config::UnknownSubmit;
use crate::gateway::Gateway;
use crate::providers::{ErrorKind, Lookup, Submitted};
use crate::routing::Candidate;
use crate::store::{now_ms, ClaimKind, TaskRecord};
use crate::submit::{accept_found, attempt_submit, task_error, Attempted};

use super::fail;

/// First pause before asking a provider again when a lookup itself failed; it doubles
/// with each failure up to `RETRY_LOOKUP_MAX_MS`.
const RETRY_LOOKUP_MS: i64 = 5_000;
const RETRY_LOOKUP_MAX_MS: i64 = 120_000;
/// Reconciles of one worker in flight at once.
const RECONCILE_CONCURRENCY: usize = 8;

/// A reconcile makes a lookup and perhaps a submit; the lease is pushed ahead while either
/// is in flight, so it need only cover one call at the slowest provider's timeout.
fn reconcile_lease_ms(gw: &Gateway) -> i64 {
    let slowest = gw
        .router
        .names()
        .filter_map(|n| gw.router.get(n))
        .map(|u| u.config.request_timeout().as_millis() as i64)
        .max()
        .unwrap_or_default();
    (slowest + 30_000).max(gw.config.poller.lease().as_millis() as i64)
}

pub async fn reconcile_once(gw: &Gateway) -> anyhow::Result<usize> {
    let lease_ms = reconcile_lease_ms(gw);
    super::claim_and_run(
        gw,
        ClaimKind::Reconcile,
        lease_ms,
        RECONCILE_CONCURRENCY,
        |gw, t, token| async move { reconcile_task(gw, &t, &token).await },
    )
    .await
}

async fn reconcile_task(gw: &Gateway, task: &TaskRecord, token: &str) -> anyhow::Result<()> {
    let provider = task.provider.as_deref().unwrap_or_default();
    let Some(up) = gw.router.get(provider) else {
        let message = format!(
            "the submit to {provider:?} was interrupted and that provider is no longer configured"
        );
        return fail(gw, task, token, "provider_unavailable", message, None).await;
    };
    let candidate = Candidate {
        upstream: up.clone(),
        estimate_usd: task.cost_estimated_usd.unwrap_or_default(),
        probe: false,
    };
    // A submit that was accepted but whose task update was lost left the provider's id on
    // its attempt row.
    if let Some(upstream_id) = gw.store.accepted_attempt(&task.id, provider).await? {
        tracing::info!(task_id = %task.id, provider, %upstream_id, "recovered an acceptance from its attempt record");
        let submitted = Submitted {
            upstream_id,
            status: crate::domain::TaskStatus::Queued,
        };
        return accept_found(gw, &task.id, token, &candidate, &submitted).await;
    }
    if !up.adapter.capabilities().external_task_id {
        // No submit was ever started (the process died between writing the task and
        // calling the provider): nothing can be at the provider, so it is sent now. Only
        // dialects without a lookup by our id keep the mark; the others are asked below.
        if !gw.store.submit_started(&task.id).await? {
            tracing::info!(task_id = %task.id, provider, "the interrupted submit never reached the provider; submitting it now");
            return submit_again(gw, task, token, &candidate).await;
        }
        return apply_unknown_submit_policy(gw, task, token, &candidate).await;
    }
    let Some(lookup) = gw
        .store
        .while_leased(
            &task.id,
            token,
            reconcile_lease_ms(gw),
            up.adapter.find_by_external_id(&task.id),
        )
        .await?
    else {
        return Ok(());
    };
    match lookup {
        Ok(Lookup::Found(seen)) => {
            tracing::info!(task_id = %task.id, provider, "found the interrupted submit upstream");
            let submitted = Submitted {
                upstream_id: seen.upstream_id,
                status: seen.status,
            };
            accept_found(gw, &task.id, token, &candidate, &submitted).await
        }
        Ok(Lookup::Absent) => {
            tracing::info!(task_id = %task.id, provider, "interrupted submit never landed; submitting again");
            resubmit_once(gw, task, token, &candidate).await
        }
        Err(e) => {
            tracing::warn!(task_id = %task.id, provider, error = ?e, "lookup by external_task_id failed");
            // A lookup the provider cannot serve (no such endpoint, refused) will not start
            // working by asking again; anything else may be a blip while the task is running
            // and billing, so it is asked again until the task's age limit.
            let hopeless = matches!(
                e.kind,
                ErrorKind::NotFound | ErrorKind::BadRequest | ErrorKind::Auth
            );
            if hopeless {
                apply_unknown_submit_policy(gw, task, token, &candidate).await
            } else {
                retry_later(gw, task, token).await
            }
        }
    }
}

/// What the provider's config says to do when whether it has the task cannot be known.
async fn apply_unknown_submit_policy(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    candidate: &Candidate,
) -> anyhow::Result<()> {
    let provider = &candidate.upstream.name;
    match candidate.upstream.config.unknown_submit {
        UnknownSubmit::Fail => {
            let message = format!(
                "the submit to {provider} got no answer and {provider} could not say whether it has \
                 the task; it was not resubmitted, so it is never run (or charged) twice"
            );
            fail(gw, task, token, "submit_outcome_unknown", message, None).await
        }
        UnknownSubmit::Resubmit => {
            tracing::warn!(task_id = %task.id, provider, "submit outcome unknown; resubmitting as configured (unknown_submit = resubmit)");
            resubmit_once(gw, task, token, candidate).await
        }
    }
}

/// Submits again to the same provider under the same id, at most once in a task's life:
/// a provider that keeps answering ambiguously must not get a paid task every few seconds.
async fn resubmit_once(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    candidate: &Candidate,
) -> anyhow::Result<()> {
    let provider = &candidate.upstream.name;
    if !gw.store.count_resubmit(&task.id, token).await? {
        let message = format!(
            "the submit to {provider} got no answer, and neither did the one resubmit allowed; \
             it is not submitted again, so it is never run (or charged) more than twice"
        );
        return fail(gw, task, token, "submit_outcome_unknown", message, None).await;
    }
    submit_again(gw, task, token, candidate).await
}

/// Submits the task to its provider under the same id, and records what came of it.
async fn submit_again(
    gw: &Gateway,
    task: &TaskRecord,
    token: &str,
    candidate: &Candidate,
) -> anyhow::Result<()> {
    let provider = &candidate.upstream.name;
    let request = gw.store.task_request(&task.id).await?;
    match attempt_submit(gw, &task.id, token, candidate, &request, false).await? {
        Attempted::Accepted { .. } | Attempted::LeaseLost => Ok(()),
        Attempted::Refused(e) if e.ambiguous => retry_later(gw, task, token).await,
        Attempted::Refused(e) => {
            let err = task_error(&e, provider);
            gw.store.fail_task(&task.id, token, &err).await?;
            Ok(())
        }
    }
}

async fn retry_later(gw: &Gateway, task: &TaskRecord, token: &str) -> anyhow::Result<()> {
    if now_ms() - task.created_at > gw.config.poller.max_task_age_secs as i64 * 1000 {
        let message = "the provider could not confirm the interrupted submit in time".into();
        return fail(gw, task, token, "submit_outcome_unknown", message, None).await;
    }
    let pause = (RETRY_LOOKUP_MS << task.poll_failures.clamp(0, 10)).min(RETRY_LOOKUP_MAX_MS);
    gw.store.poll_failed(task, token, now_ms() + pause).await?;
    Ok(())
}
