//! Taking a new task: validate, choose providers, write the task, then submit it,
//! falling over to the next candidate only when the refusal proves nothing was accepted.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::domain::{TaskStatus, VideoRequest};
use crate::gateway::Gateway;
use crate::health::Phase;
use crate::providers::{ErrorKind, ProviderError, Submitted};
use crate::routing::{Candidate, PassReason, Plan};
use crate::store::{
    now_ms, ApiKey, Attempt, IdempotencyClaim, Inserted, NewTask, TaskError, TaskRecord, TaskState,
};
use crate::validation;

/// Extra time on top of the upstream timeouts before another process may decide the
/// submitter died.
const SUBMIT_LEASE_MARGIN_MS: i64 = 30_000;

pub fn new_task_id() -> String {
    format!("vgt_{}", uuid::Uuid::new_v4().simple())
}

/// Checks a request against the rules and the configured providers without writing
/// anything: the plan is what a create would try, in order.
/// Checks a request against the rules and the configured providers (and their health)
/// without writing anything: the plan is what a create would try, in order.
pub async fn plan_request(gw: &Gateway, req: &VideoRequest) -> Result<Plan, ApiError> {
    validation::validate(req).map_err(|e| ApiError::invalid(e.param, e.message))?;
    if let Some(names) = req.routing.as_ref().and_then(|r| r.providers.as_ref()) {
        if let Some(unknown) = names.iter().find(|n| gw.router.get(n).is_none()) {
            return Err(ApiError::invalid(
                "routing.providers",
                format!(
                    "unknown provider {unknown:?}; configured: {}",
                    gw.router.names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let health = gw.health.snapshot().await?;
    let plan = gw.router.plan(req, &health);
    if plan.candidates.is_empty() {
        return Err(nobody_can_take(&plan));
    }
    Ok(plan)
}

fn nobody_can_take(plan: &Plan) -> ApiError {
    let reasons: Vec<String> = plan
        .passed_over
        .iter()
        .map(|p| format!("{}: {}", p.provider, p.reason))
        .collect();
    // Capable providers exist but are all failing: that is the providers' trouble (503),
    // not the request's (422).
    if plan
        .passed_over
        .iter()
        .any(|p| p.why == PassReason::CircuitOpen)
    {
        return ApiError::Upstream {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            code: "no_provider_available",
            message: format!(
                "every capable provider is unavailable ({})",
                reasons.join("; ")
            ),
            provider_message: None,
        };
    }
    ApiError::Unprocessable {
        code: "no_capable_provider",
        param: plan.passed_over.iter().find_map(|p| p.param.clone()),
        message: format!(
            "no configured provider can serve this request ({})",
            reasons.join("; ")
        ),
        provider_message: None,
    }
}

/// The result of a create: the task, and whether it was an idempotent replay.
pub struct Created {
    pub task: TaskRecord,
    pub replayed: bool,
}

pub async fn create_task(
    gw: &Arc<Gateway>,
    owner: &ApiKey,
    req: VideoRequest,
    idempotency_key: Option<String>,
) -> Result<Created, ApiError> {
    let claim = idempotency_key.map(|key| IdempotencyClaim {
        key,
        request_hash: request_hash(&req),
        expires_at: now_ms() + gw.config.idempotency_ttl().as_millis() as i64,
    });
    // A replay answers with the task it made, whatever the providers' state is now.
    if let Some(claim) = &claim {
        if let Some(existing) = gw.store.find_idempotency_key(&owner.id, claim).await? {
            return replay(gw, existing).await;
        }
    }
    let plan = plan_request(gw, &req).await?;
    let id = new_task_id();
    let first = &plan.candidates[0];
    let budget_ms: i64 = plan
        .candidates
        .iter()
        .map(|c| c.upstream.config.request_timeout().as_millis() as i64)
        .sum();
    let inserted = gw
        .store
        .insert_task(
            &NewTask {
                id: id.clone(),
                api_key_id: owner.id.clone(),
                request: req.clone(),
                provider: first.upstream.name.clone(),
                sandbox: first.upstream.config.sandbox,
                cost_estimated_usd: Some(first.estimate_usd),
                routing_reason: plan.reason_for(0),
                lease_owner: gw.instance_id.clone(),
                lease_until: now_ms() + budget_ms + SUBMIT_LEASE_MARGIN_MS,
            },
            claim.as_ref(),
        )
        .await?;
    if let existing @ Inserted::Existing { .. } = inserted {
        return replay(gw, existing).await;
    }
    // The submit runs on its own task: a client that hangs up (or a proxy timeout) must
    // not cancel it between the provider's acceptance and our record of it.
    let submit = {
        let (gw, id, owner_id) = (gw.clone(), id.clone(), owner.id.clone());
        tokio::spawn(async move {
            let outcome = submit_in_order(&gw, &id, &plan, &req).await;
            if let (Err(ApiError::Unprocessable { .. } | ApiError::Upstream { .. }), Some(claim)) =
                (&outcome, &claim)
            {
                // No provider took the task: the key must not pin the client to this failure.
                gw.store
                    .release_idempotency_key(&owner_id, &claim.key, &id)
                    .await?;
            }
            outcome
        })
    };
    let outcome = submit
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("submit task ended abnormally: {e}")))?;
    outcome?;
    Ok(Created {
        task: load(gw, &id).await?,
        replayed: false,
    })
}

async fn replay(gw: &Gateway, existing: Inserted) -> Result<Created, ApiError> {
    match existing {
        Inserted::Existing {
            same_body: false, ..
        } => Err(ApiError::Conflict(
            "this Idempotency-Key was already used with a different request body".into(),
        )),
        Inserted::Existing { task_id, .. } => Ok(Created {
            task: load(gw, &task_id).await?,
            replayed: true,
        }),
        Inserted::New => Err(ApiError::Internal(anyhow::anyhow!(
            "replay of a key that was not taken"
        ))),
    }
}

/// Tries the candidates in order until one accepts, the request itself is refused, or
/// the outcome becomes unknown (then nobody else is tried).
async fn submit_in_order(
    gw: &Gateway,
    id: &str,
    plan: &Plan,
    req: &VideoRequest,
) -> Result<(), ApiError> {
    let mut last_error = None;
    for (i, candidate) in plan.candidates.iter().enumerate() {
        let up = &candidate.upstream;
        if candidate.probe && !gw.health.try_claim_probe(&up.name).await? {
            continue;
        }
        if i > 0 {
            gw.store
                .set_submit_target(
                    id,
                    &up.name,
                    up.config.sandbox,
                    Some(candidate.estimate_usd),
                    &plan.reason_for(i),
                )
                .await?;
        }
        match attempt_submit(gw, id, candidate, req).await? {
            Ok(submitted) => {
                accept(gw, id, candidate, &submitted).await?;
                return Ok(());
            }
            Err(e) if e.ambiguous => {
                // The provider may have the task: never submit it elsewhere. The reconciler
                // takes over at once (looks it up by external_task_id, or applies the
                // provider's unknown_submit policy).
                tracing::warn!(task_id = %id, provider = %up.name, error = %e, "submit outcome unknown; handing to the reconciler");
                gw.store.mark_submit_unknown(id, &gw.instance_id).await?;
                return Ok(());
            }
            Err(e) if e.kind.is_final_for_request() => {
                gw.store
                    .fail_task(id, &gw.instance_id, &task_error(&e, &up.name))
                    .await?;
                return Err(ApiError::Unprocessable {
                    code: e.kind.code(),
                    param: None,
                    message: format!(
                        "provider {} refused the request ({})",
                        up.name,
                        describe(e.kind)
                    ),
                    provider_message: Some(e.message),
                });
            }
            Err(e) => last_error = Some((up.name.clone(), e)),
        }
    }
    let Some((provider, e)) = last_error else {
        // Every candidate was a half-open circuit whose probe another request holds.
        let err = TaskError {
            code: "no_provider_available".into(),
            message: "every capable provider is recovering from errors; try again shortly".into(),
            provider_message: None,
        };
        gw.store.fail_task(id, &gw.instance_id, &err).await?;
        return Err(ApiError::Upstream {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            code: "no_provider_available",
            message: err.message,
            provider_message: None,
        });
    };
    gw.store
        .fail_task(id, &gw.instance_id, &task_error(&e, &provider))
        .await?;
    let status = if e.kind == ErrorKind::Timeout {
        axum::http::StatusCode::GATEWAY_TIMEOUT
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    Err(ApiError::Upstream {
        status,
        code: "no_provider_available",
        message: format!(
            "no provider could take the task {id}; the last, {provider}, answered: {}",
            describe(e.kind)
        ),
        provider_message: Some(e.message),
    })
}

/// Identifies a body for idempotency: the parsed request re-serialized, so key order and
/// whitespace do not matter.
fn request_hash(req: &VideoRequest) -> String {
    let canonical = serde_json::to_vec(req).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// One submit to one provider, recorded as an attempt on the task.
async fn attempt_submit(
    gw: &Gateway,
    id: &str,
    candidate: &Candidate,
    req: &VideoRequest,
) -> anyhow::Result<Result<Submitted, ProviderError>> {
    let started = Instant::now();
    let result = candidate.upstream.adapter.submit(id, req).await;
    gw.health
        .record(
            &candidate.upstream.name,
            Phase::Submit,
            result.as_ref().map(|_| ()).map_err(|e| e.kind),
            result.as_ref().err().map(|e| e.message.as_str()),
            started.elapsed(),
        )
        .await?;
    let (outcome, error_code, message) = match &result {
        Ok(_) => ("accepted", None, None),
        Err(e) if e.ambiguous => (
            "unknown",
            Some(e.kind.code().to_string()),
            Some(e.message.clone()),
        ),
        Err(e) => (
            "refused",
            Some(e.kind.code().to_string()),
            Some(e.message.clone()),
        ),
    };
    gw.store
        .record_attempt(
            id,
            &Attempt {
                provider: candidate.upstream.name.clone(),
                outcome: outcome.into(),
                error_code,
                message,
                latency_ms: started.elapsed().as_millis() as i64,
                at: now_ms(),
            },
        )
        .await?;
    Ok(result)
}

pub(crate) async fn accept(
    gw: &Gateway,
    id: &str,
    candidate: &Candidate,
    submitted: &Submitted,
) -> anyhow::Result<()> {
    let state = match submitted.status {
        TaskStatus::InProgress => TaskState::InProgress,
        _ => TaskState::Queued,
    };
    let first_poll = now_ms() + candidate.upstream.config.poll_interval().as_millis() as i64;
    gw.store
        .mark_accepted(
            id,
            &gw.instance_id,
            &submitted.upstream_id,
            state,
            first_poll,
        )
        .await?;
    Ok(())
}

async fn load(gw: &Gateway, id: &str) -> Result<TaskRecord, ApiError> {
    gw.store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("task {id} vanished after insert")))
}

pub fn task_error(e: &ProviderError, provider: &str) -> TaskError {
    TaskError {
        code: e.kind.code().to_string(),
        message: format!("{provider}: {}", describe(e.kind)),
        provider_message: Some(e.message.clone()).filter(|m| !m.is_empty()),
    }
}

pub fn describe(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Retryable => "the provider is unavailable (server error or connection refused)",
        ErrorKind::RateLimited => "the provider is rate limiting us",
        ErrorKind::ConcurrencyLimited => "the provider's limit on parallel tasks is reached",
        ErrorKind::Billing => "the provider account is out of balance or credits",
        ErrorKind::BadRequest => "the provider rejected the parameters",
        ErrorKind::ContentPolicy => "the provider refused the content (content policy)",
        ErrorKind::Auth => "the provider refused our credentials",
        ErrorKind::NotFound => "the provider does not know the task or model",
        ErrorKind::Timeout => "the provider did not answer in time",
        ErrorKind::Malformed => "the provider's answer could not be read",
        ErrorKind::Unreadable => "the provider's answer could not be interpreted",
    }
}
