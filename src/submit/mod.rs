//! Taking a new task: validate, choose providers, write the task, then submit it,
//! falling over to the next candidate only when the refusal proves nothing was accepted.
//!
//! The order of writes is what keeps a task from being lost or paid twice: the task row
//! exists (held by this submit's own lease token) before any provider is called, the
//! provider's acceptance is recorded before anything else, and statistics come last and
//! may fail without consequence.
//!
//! The parts: `plan` (which providers may take a request, in order), `failover` (the
//! submit loop over them), `attempt` (one submit to one provider and recording what came
//! of it). This file is the create path that writes the task and hands it to them.

mod attempt;
mod failover;
mod plan;

use attempt::submit_lease_ms;
pub(crate) use attempt::{accept_found, attempt_submit, poll_interval, record_health, Attempted};
pub use attempt::{describe, task_error};
pub(crate) use failover::submit_in_order;
pub use plan::plan_request;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::VideoRequest;
use crate::gateway::Gateway;
use crate::queue::admission;
use crate::routing::Plan;
use crate::store::{
    lease_token, now_ms, ApiKey, Budget, Holds, IdempotencyClaim, Inserted, LimitRefusal, NewTask,
    TaskRecord,
};

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

/// Identifies a body for idempotency: the parsed request re-serialized, so key order and
/// whitespace do not matter.
fn request_hash(req: &VideoRequest) -> String {
    let canonical = serde_json::to_vec(req).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}
