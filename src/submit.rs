//! Taking a new task: validate, choose providers, write the task, then submit it,
//! falling over to the next candidate only when the refusal proves nothing was accepted.
//!
//! The order of writes is what keeps a task from being lost or paid twice: the task row
//! exists (held by this submit's own lease token) before any provider is called, the
//! provider's acceptance is recorded before anything else, and statistics come last and
//! may fail without consequence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::domain::{TaskStatus, VideoRequest};
use crate::gateway::Gateway;
use crate::health::Phase;
use crate::providers::{ErrorKind, ProviderError, Submitted};
use crate::queue::{admission, Admit, WhenFull};
use crate::routing::{Candidate, PassReason, Plan};
use crate::store::{
    lease_token, now_ms, Acceptance, ApiKey, Attempt, Budget, Holds, IdempotencyClaim, Inserted,
    LimitRefusal, NewTask, TaskError, TaskRecord, TaskState,
};
use crate::validation;

/// Extra time on top of an upstream call's timeout before another claim may decide the
/// submitter died. The lease is pushed ahead while a call is in flight.
const SUBMIT_LEASE_MARGIN_MS: i64 = 30_000;
/// Pauses before each retry of recording an acceptance (the provider has the task, and
/// will bill it: its id must not be lost to a blip of the database).
const RECORD_RETRY_DELAYS_MS: [u64; 4] = [50, 200, 500, 1_000];

/// Why a create did not produce an accepted task. The API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request breaks a rule; names the field.
    #[error("{message}")]
    Invalid {
        param: Option<String>,
        message: String,
    },
    /// Well-formed, but no configured provider can carry it.
    #[error("{message}")]
    NoCapableProvider {
        param: Option<String>,
        message: String,
    },
    /// A provider refused the request itself: content policy, or every candidate refused
    /// the parameters.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        provider_message: Option<String>,
    },
    /// No provider could take the task now; `timed_out` when the last one did not answer.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        provider_message: Option<String>,
        timed_out: bool,
    },
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    /// A limit of the caller's key refused the task before anything was written.
    #[error("{}", describe_limit(.0))]
    Limited(LimitRefusal),
    /// No provider had room and the key already has `max_queued` tasks waiting.
    #[error("no provider has room and this key already has {max_queued} tasks waiting, its limit")]
    QueueFull { max_queued: i64 },
    /// The store failed after the task was written: the id lets the client find it.
    #[error("task {task_id}: the store failed while recording it")]
    StoreAfterWrite {
        task_id: String,
        #[source]
        source: anyhow::Error,
    },
    /// The store failed before anything was written.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Time-ordered (UUIDv7): new ids land at the right edge of the primary-key index and of
/// the history and attempt tables' task indexes, instead of on a random page each (on
/// SQLite, with the larger page cache, the sustained create rate rose by half and decays
/// less as the store grows: see docs/performance.md).
pub fn new_task_id() -> String {
    format!("vgt_{}", uuid::Uuid::now_v7().simple())
}

/// 32 random bytes (the OS-seeded CSPRNG), URL-safe base64: the only secret in a task's
/// upstream callback URL, which never contains the task id.
fn new_callback_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The URL `provider` is to call back on for task `id`, if callbacks are on and its
/// dialect takes one. A failed read of the token means no callback (the task is then
/// polled at its provider's pace), never a failed submit.
async fn upstream_callback_url(gw: &Gateway, id: &str, candidate: &Candidate) -> Option<String> {
    let webhooks = &gw.config.webhooks;
    if webhooks.public_base_url.is_none()
        || !candidate.upstream.adapter.capabilities().upstream_callback
    {
        return None;
    }
    match gw.store.callback_token(id).await {
        Ok(token) => webhooks.upstream_callback_url(&token?),
        Err(e) => {
            tracing::warn!(task_id = %id, error = ?e, "could not read the upstream callback token; submitting without one");
            None
        }
    }
}

/// Seconds between polls of a task at `upstream`: its own interval, or the backstop pace
/// (never faster than its own) when it was given an upstream callback.
pub(crate) fn poll_interval(
    gw: &Gateway,
    upstream: &crate::routing::Upstream,
    with_callback: bool,
) -> Duration {
    let own = upstream.config.poll_interval();
    if with_callback && upstream.adapter.capabilities().upstream_callback {
        own.max(gw.config.webhooks.callback_poll_interval())
    } else {
        own
    }
}

/// Checks a request against the rules and the configured providers (and their health)
/// without writing anything: the plan is what a create would try, in order.
pub async fn plan_request(gw: &Gateway, req: &VideoRequest) -> Result<Plan, SubmitError> {
    let allow_private = gw.config.webhooks.allow_private_targets;
    validation::validate_for_gateway(req, allow_private).map_err(|e| SubmitError::Invalid {
        param: Some(e.param),
        message: e.message,
    })?;
    if let Some(names) = req.routing.as_ref().and_then(|r| r.providers.as_ref()) {
        if let Some(unknown) = names.iter().find(|n| gw.router.get(n).is_none()) {
            return Err(SubmitError::Invalid {
                param: Some("routing.providers".into()),
                message: format!(
                    "unknown provider {unknown:?}; configured: {}",
                    gw.router.names().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let health = gw.health.snapshot().await?;
    let mut plan = gw.router.plan(req, &health);
    let routing = &gw.config.routing;
    let timings = gw.timings.snapshot();
    let rate_of = |p: &str| timings.completed_rate(p, routing.outcome_min_tasks);
    crate::routing::outcomes::prefer_completed(&mut plan, rate_of, routing.outcome_margin);
    if plan.candidates.is_empty() {
        return Err(nobody_can_take(&plan));
    }
    Ok(plan)
}

fn nobody_can_take(plan: &Plan) -> SubmitError {
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
        return SubmitError::Unavailable {
            code: "no_provider_available",
            message: format!(
                "every capable provider is unavailable ({})",
                reasons.join("; ")
            ),
            provider_message: None,
            timed_out: false,
        };
    }
    SubmitError::NoCapableProvider {
        param: plan.passed_over.iter().find_map(|p| p.param.clone()),
        message: format!(
            "no configured provider can serve this request ({})",
            reasons.join("; ")
        ),
    }
}

/// The result of a create: the task, and whether it was an idempotent replay.
pub struct Created {
    pub task: TaskRecord,
    pub replayed: bool,
}

/// One written task on its way to a provider.
pub(crate) struct Job {
    pub(crate) task: NewTask,
    /// When the task was written (Unix ms).
    pub(crate) created_at: i64,
    /// This submit's lease token: every write of the task checks it.
    pub(crate) token: String,
    pub(crate) plan: Plan,
    /// The dispatcher took the task from the queue: its lease was not taken for the first
    /// candidate's call, and no room puts it back in the queue rather than in anew.
    pub(crate) from_queue: bool,
    /// Written without a slot of its key's `max_in_flight` (the key was at it): the task
    /// goes straight to the queue, and takes a slot when the dispatcher starts it.
    pub(crate) waits_for_key_slot: bool,
}

/// How a submit ended when it did not fail the task.
pub(crate) enum SubmitOutcome {
    /// A provider accepted it: the task as recorded (or, while the record is still being
    /// retried in the background, as it will be), so the answer needs no read.
    Accepted(Box<TaskRecord>),
    /// The outcome is unknown: the reconciler has the task now.
    HandedToReconciler,
    /// Another claim took the task over mid-submit: it answers for the task.
    TakenOver,
    /// No provider had room: the task waits in the queue (`queue/`).
    Waiting,
}

pub async fn create_task(
    gw: &Arc<Gateway>,
    owner: &ApiKey,
    req: VideoRequest,
    idempotency_key: Option<String>,
) -> Result<Created, SubmitError> {
    create_task_as(gw, owner, req, idempotency_key, new_task_id()).await
}

/// `create_task` for a task whose id (from `new_task_id`) the caller chose beforehand: a
/// facade records what it keeps beside the task under that id before the task exists.
pub async fn create_task_as(
    gw: &Arc<Gateway>,
    owner: &ApiKey,
    req: VideoRequest,
    idempotency_key: Option<String>,
    id: String,
) -> Result<Created, SubmitError> {
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
    let first = &plan.candidates[0];
    let token = lease_token(&gw.instance_id);
    let task = NewTask {
        id,
        api_key_id: owner.id.clone(),
        provider: first.upstream.name.clone(),
        sandbox: first.upstream.config.sandbox,
        cost_estimated_usd: Some(first.estimate_usd),
        routing_reason: plan.reason_for(0),
        lease_owner: token.clone(),
        lease_until: now_ms() + submit_lease_ms(first),
        holds: holds_for(gw, owner, &plan, &req),
        billed_seconds: Some(crate::routing::billed_seconds(&req)),
        request: req,
        // Made whatever the first candidate's dialect: a failover may land elsewhere.
        upstream_callback_token: gw
            .config
            .webhooks
            .public_base_url
            .is_some()
            .then(new_callback_token),
    };
    let (created_at, waits_for_key_slot) = match gw.store.insert_task(&task, claim.as_ref()).await?
    {
        Inserted::New { created_at } => (created_at, false),
        Inserted::WaitsForSlot { created_at } => (created_at, true),
        other => return replay(gw, other).await,
    };
    let job = Job {
        task,
        created_at,
        token,
        plan,
        from_queue: false,
        waits_for_key_slot,
    };
    let id = job.task.id.clone();
    // The submit runs on its own task: a client that hangs up (or a proxy timeout) must
    // not cancel it between the provider's acceptance and our record of it. It is tracked
    // so that a graceful shutdown waits for it.
    let submit = {
        let gw = gw.clone();
        // `carry`: the request's id and span go with it, onto its upstream calls and logs.
        gw.submits.clone().spawn(crate::telemetry::request_id::carry(async move {
            let outcome = if job.waits_for_key_slot {
                admission::wait(&gw, &job).await
            } else {
                submit_in_order(&gw, &job).await
            };
            if let (
                Err(
                    SubmitError::Refused { .. }
                    | SubmitError::Unavailable { .. }
                    | SubmitError::QueueFull { .. },
                ),
                Some(c),
            ) =
                (&outcome, &claim)
            {
                // No provider took the task: the key must not pin the client to this failure.
                if let Err(e) = gw
                    .store
                    .release_idempotency_key(&job.task.api_key_id, &c.key, &job.task.id)
                    .await
                {
                    tracing::warn!(task_id = %job.task.id, error = ?e, "could not release the idempotency key");
                }
            }
            outcome
        }))
    };
    let outcome = submit.await.map_err(|e| SubmitError::StoreAfterWrite {
        task_id: id.clone(),
        source: anyhow::anyhow!("the submit ended abnormally: {e}"),
    })??;
    let task = match outcome {
        SubmitOutcome::Accepted(task) => *task,
        SubmitOutcome::HandedToReconciler | SubmitOutcome::TakenOver | SubmitOutcome::Waiting => {
            match gw.store.task(&id).await {
                Ok(Some(task)) => task,
                Ok(None) => {
                    return Err(SubmitError::StoreAfterWrite {
                        task_id: id,
                        source: anyhow::anyhow!("the task vanished after it was written"),
                    })
                }
                Err(source) => {
                    return Err(SubmitError::StoreAfterWrite {
                        task_id: id,
                        source,
                    })
                }
            }
        }
    };
    Ok(Created {
        task,
        replayed: false,
    })
}

/// What a new task of `owner` must hold: a slot if the key limits tasks in flight, and if
/// the key has a budget, the most any candidate could bill for it (a base-video edit at
/// the longest input, see `routing::reserved_seconds`), so neither a failover nor a longer
/// video than declared can overspend. A create that may wait waits for a slot of its key
/// rather than being refused one.
fn holds_for(gw: &Gateway, owner: &ApiKey, plan: &Plan, req: &VideoRequest) -> Holds {
    let limits = &owner.limits;
    Holds {
        max_in_flight: limits.max_in_flight,
        wait_for_slot: crate::queue::max_wait_ms(&gw.config.queue, req).is_some(),
        spend_period: limits.budget_period,
        budget: limits.budget_usd.map(|limit_usd| Budget {
            limit_usd,
            period: limits.budget_period,
            reserve_usd: plan
                .candidates
                .iter()
                .map(|c| {
                    crate::routing::reservation(&c.upstream.config, req).unwrap_or(c.estimate_usd)
                })
                .fold(0.0, f64::max),
        }),
    }
}

fn describe_limit(refusal: &LimitRefusal) -> String {
    match refusal {
        LimitRefusal::Concurrency { max_in_flight } => format!(
            "this key already has {max_in_flight} tasks in flight, its limit; \
             wait for one to finish"
        ),
        LimitRefusal::Budget {
            limit_usd,
            committed_usd,
            needed_usd,
            period,
        } => format!(
            "this key's budget of ${limit_usd:.2} per {} has ${:.4} left (${committed_usd:.4} \
             spent or reserved); this task needs ${needed_usd:.4}",
            period.as_str(),
            (limit_usd - committed_usd).max(0.0),
        ),
    }
}

async fn replay(gw: &Gateway, existing: Inserted) -> Result<Created, SubmitError> {
    match existing {
        Inserted::Refused(refusal) => Err(SubmitError::Limited(refusal)),
        Inserted::Existing {
            same_body: false, ..
        } => Err(SubmitError::IdempotencyConflict),
        Inserted::Existing { task_id, .. } => match gw.store.task(&task_id).await? {
            Some(task) => Ok(Created {
                task,
                replayed: true,
            }),
            None => Err(SubmitError::Store(anyhow::anyhow!(
                "idempotency key points at a missing task {task_id}"
            ))),
        },
        Inserted::New { .. } | Inserted::WaitsForSlot { .. } => Err(SubmitError::Store(
            anyhow::anyhow!("replay of a key that was not taken"),
        )),
    }
}

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

/// Identifies a body for idempotency: the parsed request re-serialized, so key order and
/// whitespace do not matter.
fn request_hash(req: &VideoRequest) -> String {
    let canonical = serde_json::to_vec(req).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// How long a submit to this provider may hold its task before the lease is pushed ahead.
fn submit_lease_ms(candidate: &Candidate) -> i64 {
    candidate.upstream.config.request_timeout().as_millis() as i64 + SUBMIT_LEASE_MARGIN_MS
}

/// What one submit to one provider came to.
pub(crate) enum Attempted {
    /// Its record is written, or still being retried in the background.
    Accepted {
        state: TaskState,
        upstream_id: String,
    },
    Refused(ProviderError),
    /// Another claim holds the task now: the provider was not called.
    LeaseLost,
}

/// One submit to one provider by the holder of `token`: the acceptance is recorded first
/// (retried briefly, then in the background), the attempt and health statistics after it
/// and only best-effort.
pub(crate) async fn attempt_submit(
    gw: &Gateway,
    id: &str,
    token: &str,
    candidate: &Candidate,
    req: &VideoRequest,
    lease_is_fresh: bool,
) -> anyhow::Result<Attempted> {
    let up = &candidate.upstream;
    // Durable before the call: after a crash, a task without the mark is known never to
    // have been sent (the reconciler submits it again safely), and only one with it may
    // be at the provider (issue 19.16). A dialect that can look a task up by our id needs
    // no mark (the reconciler asks the provider), so it pays no extra write.
    if !up.adapter.capabilities().external_task_id
        && !gw.store.mark_submit_started(id, token).await?
    {
        return Ok(Attempted::LeaseLost);
    }
    let started = Instant::now();
    let lease_ms = submit_lease_ms(candidate);
    let callback_url = upstream_callback_url(gw, id, candidate).await;
    let submit = up
        .adapter
        .submit_with_callback(id, req, callback_url.as_deref());
    let result = if lease_is_fresh {
        gw.store.keep_leased(id, token, lease_ms, submit).await
    } else {
        let Some(result) = gw.store.while_leased(id, token, lease_ms, submit).await? else {
            return Ok(Attempted::LeaseLost);
        };
        result
    };
    let latency = started.elapsed();
    let mut attempt = Attempt {
        provider: up.name.clone(),
        outcome: "accepted".into(),
        provider_task_id: None,
        error_code: None,
        message: None,
        latency_ms: latency.as_millis() as i64,
        at: now_ms(),
    };
    let attempted = match result {
        Ok(submitted) => {
            attempt.provider_task_id = Some(submitted.upstream_id.clone());
            let given = callback_url.is_some();
            let recorded =
                record_acceptance(gw, id, token, candidate, &submitted, &attempt, req, given).await;
            match recorded {
                Recorded::Yes | Recorded::Pending => Attempted::Accepted {
                    state: first_state(&submitted),
                    upstream_id: submitted.upstream_id,
                },
                Recorded::ByAnotherClaim => Attempted::LeaseLost,
            }
        }
        Err(e) => {
            attempt.outcome = if e.ambiguous { "unknown" } else { "refused" }.into();
            attempt.error_code = Some(e.kind.code().to_string());
            attempt.message = Some(e.message.clone());
            if let Err(err) = gw.store.record_attempt(id, &attempt).await {
                tracing::warn!(task_id = %id, error = ?err, "could not record a submit attempt");
            }
            Attempted::Refused(e)
        }
    };
    let outcome = match &attempted {
        Attempted::Refused(e) => Err(e),
        _ => Ok(()),
    };
    record_health(gw, &up.name, Phase::Submit, outcome, latency).await;
    Ok(attempted)
}

/// Statistics are never worth failing a task over.
pub(crate) async fn record_health(
    gw: &Gateway,
    provider: &str,
    phase: Phase,
    outcome: Result<(), &ProviderError>,
    latency: Duration,
) {
    let recorded = gw
        .health
        .record(
            provider,
            phase,
            outcome.map_err(|e| e.kind),
            outcome.err().map(|e| e.message.as_str()),
            latency,
        )
        .await;
    if let Err(e) = recorded {
        tracing::warn!(provider, error = ?e, "could not record a provider outcome");
    }
}

/// Whether a provider's acceptance made it into the store.
enum Recorded {
    Yes,
    /// Still being retried in the background.
    Pending,
    /// Another claim holds the task: it answers for it (the attempt row keeps the id).
    ByAnotherClaim,
}

/// Records a provider's acceptance, retrying a failed write briefly and then in the
/// background for as long as the lease lasts.
// Each argument is a distinct part of the one record; a struct for them would only be
// unpacked again at once.
#[allow(clippy::too_many_arguments)]
async fn record_acceptance(
    gw: &Gateway,
    id: &str,
    token: &str,
    candidate: &Candidate,
    submitted: &Submitted,
    attempt: &Attempt,
    req: &VideoRequest,
    callback_given: bool,
) -> Recorded {
    let slim_request = slim_request(req);
    let timed = AcceptTiming::of(gw, &candidate.upstream, req, callback_given);
    let acceptance = Acceptance {
        upstream_id: &submitted.upstream_id,
        state: first_state(submitted),
        first_poll_at: timed.first_poll_at,
        attempt: Some(attempt),
        slim_request: slim_request.as_deref(),
        callback_given,
        timing_key: Some(&timed.key),
        eta_at: timed.eta_at,
    };
    for delay in RECORD_RETRY_DELAYS_MS {
        match gw.store.mark_accepted(id, token, &acceptance).await {
            Ok(true) => return Recorded::Yes,
            Ok(false) => {
                // Another claim holds the task (it found our submit late): it answers for it,
                // and the attempt row just written lets it recover the provider's id.
                tracing::warn!(task_id = %id, upstream_id = %submitted.upstream_id, "accepted after another claim took the task over");
                return Recorded::ByAnotherClaim;
            }
            Err(e) => {
                tracing::warn!(task_id = %id, upstream_id = %submitted.upstream_id, error = ?e, "recording the acceptance failed; retrying");
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
    tracing::error!(task_id = %id, provider = %candidate.upstream.name, upstream_id = %submitted.upstream_id,
        "could not record the provider's acceptance; retrying in the background");
    let (store, id, token) = (gw.store.clone(), id.to_string(), token.to_string());
    let (upstream_id, attempt) = (submitted.upstream_id.clone(), attempt.clone());
    let (state, first_poll_at, eta_at) = (
        acceptance.state,
        acceptance.first_poll_at,
        acceptance.eta_at,
    );
    let deadline = Instant::now() + Duration::from_millis(submit_lease_ms(candidate) as u64);
    gw.submits.spawn(crate::telemetry::request_id::carry(async move {
        let acceptance = Acceptance {
            upstream_id: &upstream_id,
            state,
            first_poll_at,
            attempt: Some(&attempt),
            slim_request: slim_request.as_deref(),
            callback_given,
            timing_key: Some(&timed.key),
            eta_at,
        };
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if store.mark_accepted(&id, &token, &acceptance).await.is_ok() {
                tracing::info!(task_id = %id, %upstream_id, "acceptance recorded after retries");
                return;
            }
        }
        tracing::error!(task_id = %id, %upstream_id, "acceptance never recorded; the reconciler will look the task up");
    }));
    Recorded::Pending
}

/// What an acceptance records of the provider's completion times (`timing/`).
struct AcceptTiming {
    first_poll_at: i64,
    key: String,
    eta_at: Option<i64>,
}

impl AcceptTiming {
    /// The first poll at the p10 of `upstream`'s tasks like `req` (one interval without
    /// history, or when an upstream callback is expected: polls are then the backstop),
    /// and the expected completion at their p50.
    fn of(
        gw: &Gateway,
        upstream: &crate::routing::Upstream,
        req: &VideoRequest,
        callback_given: bool,
    ) -> AcceptTiming {
        let now = now_ms();
        let key = crate::timing::timing_key(req);
        let dist = gw.timings.distribution(&upstream.name, &key);
        let interval = poll_interval(gw, upstream, callback_given);
        let timed = dist.filter(|_| gw.config.poller.adaptive_polls && !callback_given);
        let first = crate::timing::schedule::first_poll_after(
            timed.as_ref(),
            interval,
            gw.config.poller.min_poll_gap(),
        );
        AcceptTiming {
            first_poll_at: now + first.as_millis() as i64,
            key,
            eta_at: dist.map(|d| now + d.p50_ms),
        }
    }
}

/// The request to keep once a provider has the task: without its base64 images (None when
/// it has none, so the stored one stays).
fn slim_request(req: &VideoRequest) -> Option<String> {
    req.without_inline_images()
        .and_then(|r| serde_json::to_string(&r).ok())
}

fn first_state(submitted: &Submitted) -> TaskState {
    match submitted.status {
        TaskStatus::InProgress => TaskState::InProgress,
        _ => TaskState::Queued,
    }
}

/// Records a task the reconciler found at its provider (no submit attempt of ours got it).
pub(crate) async fn accept_found(
    gw: &Gateway,
    id: &str,
    token: &str,
    candidate: &Candidate,
    submitted: &Submitted,
) -> anyhow::Result<()> {
    let request = gw.store.task_request(id).await?;
    let slim = slim_request(&request);
    // Found after an interrupted submit to this same provider: its URL went with that
    // submit when the dialect takes one (and the task has a token).
    let callback_given = candidate.upstream.adapter.capabilities().upstream_callback
        && gw.config.webhooks.public_base_url.is_some();
    let timed = AcceptTiming::of(gw, &candidate.upstream, &request, callback_given);
    let acceptance = Acceptance {
        upstream_id: &submitted.upstream_id,
        state: first_state(submitted),
        first_poll_at: timed.first_poll_at,
        attempt: None,
        slim_request: slim.as_deref(),
        callback_given,
        timing_key: Some(&timed.key),
        eta_at: timed.eta_at,
    };
    gw.store.mark_accepted(id, token, &acceptance).await?;
    Ok(())
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
