//! The submit loop: the candidates in order, failing over only when a refusal proves
//! nothing was accepted, and giving up with every provider's answer named.

use crate::gateway::Gateway;
use crate::providers::{ErrorKind, ProviderError};
use crate::queue::{admission, Admit, WhenFull};
use crate::routing::{Candidate, Plan};
use crate::store::{now_ms, TaskError, TaskRecord};

use super::attempt::{attempt_submit, describe, task_error, Attempted};
use super::{Job, SubmitError, SubmitOutcome};

/// Tries the candidates in order until one accepts, the request itself is refused, or
/// the outcome becomes unknown (then nobody else is tried). When every candidate refused
/// with a transient code, goes round again after a short jittered pause.
pub(crate) async fn submit_in_order(gw: &Gateway, job: &Job) -> Result<SubmitOutcome, SubmitError> {
    let id = &job.task.id;
    let after_write = |source: anyhow::Error| SubmitError::StoreAfterWrite {
        task_id: id.clone(),
        source,
    };
    let mut refusals: Vec<(String, ProviderError)> = Vec::new();
    // Providers without room: at their cap, or refusing for capacity.
    let mut full: Vec<String> = Vec::new();
    let may_wait = crate::queue::max_wait_ms(&gw.config.queue, &job.task.request).is_some();
    // `routing.when_full = "wait"`: a full cheapest provider makes the task wait for it.
    let wait_for_cheapest = may_wait && gw.config.routing.when_full == WhenFull::Wait;
    let cheapest = &job.plan.candidates[0].upstream.name;
    let mut target = job.task.provider.clone();
    let mut round: Vec<&Candidate> = job.plan.candidates.iter().collect();
    for n in 0..gw.config.submit.rounds.max(1) {
        if n > 0 {
            tokio::time::sleep(gw.config.submit.round_backoff()).await;
            tracing::info!(task_id = %id, round = n + 1, "every candidate refused transiently; going round again");
        }
        let mut again = Vec::new();
        for candidate in round {
            let up = &candidate.upstream;
            // A half-open circuit gets one probe, in the first round only.
            if candidate.probe
                && (n > 0
                    || !gw
                        .health
                        .try_claim_probe(&up.name)
                        .await
                        .map_err(after_write)?)
            {
                continue;
            }
            let slot = match gw
                .queue
                .admit(&gw.store, id, &job.token, &up.name)
                .await
                .map_err(after_write)?
            {
                Admit::Go { slot } => slot,
                Admit::Full if wait_for_cheapest && &up.name == cheapest => {
                    return admission::wait(gw, job).await;
                }
                Admit::Full => {
                    full.push(up.name.clone());
                    continue;
                }
            };
            if up.name != target {
                let i = plan_index(&job.plan, &up.name);
                let still_ours = gw
                    .store
                    .set_submit_target(
                        id,
                        &job.token,
                        &up.name,
                        up.config.sandbox,
                        Some(candidate.estimate_usd),
                        &admission::routing_reason(&job.plan, i, &full),
                    )
                    .await
                    .map_err(after_write)?;
                if !still_ours {
                    return Ok(SubmitOutcome::TakenOver);
                }
                target = up.name.clone();
            }
            // The insert took the lease for the first candidate's call: no need to push it.
            let fresh = !job.from_queue && n == 0 && up.name == job.task.provider;
            let attempted = attempt_submit(gw, id, &job.token, candidate, &job.task.request, fresh)
                .await
                .map_err(after_write)?;
            match attempted {
                Attempted::LeaseLost => return Ok(SubmitOutcome::TakenOver),
                Attempted::Accepted { state, upstream_id } => {
                    let mut task = TaskRecord::pending(&job.task, state, job.created_at);
                    task.provider = Some(up.name.clone());
                    task.provider_task_id = Some(upstream_id);
                    task.sandbox = up.config.sandbox;
                    task.cost_estimated_usd = Some(candidate.estimate_usd);
                    task.routing_reason = Some(admission::routing_reason(
                        &job.plan,
                        plan_index(&job.plan, &up.name),
                        &full,
                    ));
                    task.updated_at = now_ms();
                    return Ok(SubmitOutcome::Accepted(Box::new(task)));
                }
                Attempted::Refused(e) if e.ambiguous => {
                    // The provider may have the task: never submit it elsewhere. The
                    // reconciler takes over at once (looks it up by external_task_id, or
                    // applies the provider's unknown_submit policy).
                    tracing::warn!(task_id = %id, provider = %up.name, error = ?e, "submit outcome unknown; handing to the reconciler");
                    gw.store
                        .mark_submit_unknown(id, &job.token)
                        .await
                        .map_err(after_write)?;
                    return Ok(SubmitOutcome::HandedToReconciler);
                }
                Attempted::Refused(e) if e.kind == ErrorKind::ContentPolicy => {
                    let err = task_error(&e, &up.name);
                    let still_ours = gw
                        .store
                        .fail_task(id, &job.token, &err)
                        .await
                        .map_err(after_write)?;
                    if !still_ours {
                        return Ok(SubmitOutcome::TakenOver);
                    }
                    return Err(SubmitError::Refused {
                        code: e.kind.code(),
                        message: format!(
                            "provider {} refused the request ({})",
                            up.name,
                            describe(e.kind)
                        ),
                        provider_message: Some(e.message),
                    });
                }
                Attempted::Refused(e) => {
                    // The provider does not have the task: its slot is free again.
                    let capacity = crate::queue::is_capacity_refusal(e.kind);
                    if capacity {
                        gw.queue.refused(&gw.store, &up.name, slot).await;
                        full.push(up.name.clone());
                    }
                    if slot {
                        gw.store
                            .give_back_slot(id, &job.token)
                            .await
                            .map_err(after_write)?;
                    }
                    if capacity && wait_for_cheapest && &up.name == cheapest {
                        return admission::wait(gw, job).await;
                    }
                    // A task that may wait waits rather than hammering a full provider.
                    if is_transient(e.kind) && !(capacity && may_wait) {
                        again.push(candidate);
                    }
                    refusals.retain(|(p, _)| p != &up.name);
                    refusals.push((up.name.clone(), e));
                }
            }
        }
        if again.is_empty() {
            break;
        }
        round = again;
    }
    let only_capacity = refusals
        .iter()
        .all(|(_, e)| crate::queue::is_capacity_refusal(e.kind));
    if may_wait && !full.is_empty() && only_capacity {
        return admission::wait(gw, job).await;
    }
    give_up(gw, job, refusals, &full).await
}

/// Where a provider stands in the plan (for its routing reason).
fn plan_index(plan: &Plan, provider: &str) -> usize {
    plan.candidates
        .iter()
        .position(|c| c.upstream.name == provider)
        .unwrap_or_default()
}

/// Refusals that may pass within a second: worth another round at the same provider.
fn is_transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Retryable | ErrorKind::RateLimited | ErrorKind::ConcurrencyLimited
    )
}

/// Every candidate refused: fails the task and says why, naming every provider's answer.
async fn give_up(
    gw: &Gateway,
    job: &Job,
    refusals: Vec<(String, ProviderError)>,
    full: &[String],
) -> Result<SubmitOutcome, SubmitError> {
    let id = &job.task.id;
    let all_bad_request = !refusals.is_empty()
        && refusals
            .iter()
            .all(|(_, e)| e.kind == ErrorKind::BadRequest);
    let answers = refusals
        .iter()
        .map(|(p, e)| format!("{p}: {}", describe(e.kind)))
        .collect::<Vec<_>>()
        .join("; ");
    let provider_messages = refusals
        .iter()
        .filter(|(_, e)| !e.message.is_empty())
        .map(|(p, e)| format!("{p}: {}", e.message))
        .collect::<Vec<_>>();
    let provider_message = (!provider_messages.is_empty()).then(|| provider_messages.join("\n"));
    let (error, result) = if all_bad_request {
        let message = format!("every capable provider refused the parameters ({answers})");
        let error = TaskError {
            code: ErrorKind::BadRequest.code().into(),
            message: message.clone(),
            provider_message: provider_message.clone(),
        };
        let result = SubmitError::Refused {
            code: ErrorKind::BadRequest.code(),
            message,
            provider_message,
        };
        (error, result)
    } else {
        let message = if refusals.is_empty() && !full.is_empty() {
            format!(
                "every capable provider is at its capacity ({}); try again shortly",
                full.join(", ")
            )
        } else if refusals.is_empty() {
            "every capable provider is recovering from errors; try again shortly".to_string()
        } else {
            format!("no provider could take the task {id} ({answers})")
        };
        let error = TaskError {
            code: "no_provider_available".into(),
            message: message.clone(),
            provider_message: provider_message.clone(),
        };
        let result = SubmitError::Unavailable {
            code: "no_provider_available",
            message,
            provider_message,
            timed_out: refusals
                .last()
                .is_some_and(|(_, e)| e.kind == ErrorKind::Timeout),
        };
        (error, result)
    };
    let still_ours = gw
        .store
        .fail_task(id, &job.token, &error)
        .await
        .map_err(|source| SubmitError::StoreAfterWrite {
            task_id: id.clone(),
            source,
        })?;
    // Another claim took the task over (its lease ran out): it may yet be accepted there,
    // so the client gets the task, not a failure that would free its Idempotency-Key.
    if !still_ours {
        return Ok(SubmitOutcome::TakenOver);
    }
    Err(result)
}
