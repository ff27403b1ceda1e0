//! Task rows: creation before the upstream submit, leases for pollers and reconcilers,
//! and every status change recorded with its time.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::limits::{self, Holds, LimitRefusal, HOLD_COLUMNS};
use super::task_writes::{AcceptRow, NewTaskRow, INSERT_TASK_INTO, NEW_TASK_ROW};
use super::{affected, now_ms, Backend, Store};
use crate::domain::{Model, TaskStatus, VideoRequest, VideoResult, WebhookEventName};

/// Where a task is in omnigate's own life cycle. `Submitting` is written before the
/// upstream call; `SubmitUnknown` means the call may have reached the provider but no
/// answer came. Clients see both as `queued`, and `Waiting` too: no provider had room,
/// so the task waits in omnigate's admission queue (`queue/`). `Cancelled` ends a task
/// its client cancelled while it waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Waiting,
    Submitting,
    SubmitUnknown,
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Waiting,
        TaskState::Submitting,
        TaskState::SubmitUnknown,
        TaskState::Queued,
        TaskState::InProgress,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Submitting => "submitting",
            TaskState::SubmitUnknown => "submit_unknown",
            TaskState::Queued => "queued",
            TaskState::InProgress => "in_progress",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<TaskState> {
        Ok(match s {
            "waiting" => TaskState::Waiting,
            "submitting" => TaskState::Submitting,
            "submit_unknown" => TaskState::SubmitUnknown,
            "queued" => TaskState::Queued,
            "in_progress" => TaskState::InProgress,
            "completed" => TaskState::Completed,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            other => anyhow::bail!("unknown task state in store: {other}"),
        })
    }

    pub fn public(self) -> TaskStatus {
        match self {
            TaskState::Waiting
            | TaskState::Submitting
            | TaskState::SubmitUnknown
            | TaskState::Queued => TaskStatus::Queued,
            TaskState::InProgress => TaskStatus::InProgress,
            TaskState::Completed => TaskStatus::Completed,
            TaskState::Failed => TaskStatus::Failed,
            TaskState::Cancelled => TaskStatus::Cancelled,
        }
    }

    pub fn from_public(s: TaskStatus) -> TaskState {
        match s {
            TaskStatus::Queued => TaskState::Queued,
            TaskStatus::InProgress => TaskState::InProgress,
            TaskStatus::Completed => TaskState::Completed,
            TaskStatus::Failed => TaskState::Failed,
            TaskStatus::Cancelled => TaskState::Cancelled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskError {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: String,
    pub api_key_id: String,
    /// The request body itself is not loaded with the task (it may hold base64 images):
    /// `Store::task_request` reads it where it is needed.
    pub model: Model,
    pub metadata: Option<serde_json::Value>,
    pub state: TaskState,
    pub progress: i64,
    pub provider: Option<String>,
    pub provider_task_id: Option<String>,
    pub sandbox: bool,
    pub videos: Vec<VideoResult>,
    pub error: Option<TaskError>,
    pub cost_estimated_usd: Option<f64>,
    pub cost_final_usd: Option<f64>,
    /// What the provider's answer said the completed task cost. Above `cost_final_usd`
    /// when the charge was clamped to what the task reserved of its key's budget.
    pub provider_reported_usd: Option<f64>,
    pub routing_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub next_poll_at: i64,
    pub poll_failures: i64,
    pub unreadable_answers: i64,
    /// The provider that accepted the task was given an upstream callback URL: polls are
    /// only the backstop, at `webhooks.callback_poll_interval_secs`.
    pub upstream_callback: bool,
    /// Bytes of omnigate's verified copy of the video (`results`), once there is one.
    pub stored_bytes: Option<i64>,
    /// Its place in the admission queue, while it is `Waiting`.
    pub queue: Option<super::queue::QueueSpot>,
    /// The verified copies of the task's other videos (1, 2, ...), once made.
    pub stored_more: Vec<super::results::StoredVideo>,
    /// When a provider accepted it (Unix ms).
    pub accepted_at: Option<i64>,
    /// The group its completion time counts in (`timing::timing_key`).
    pub timing_key: Option<String>,
    /// When it was expected to complete at acceptance (Unix ms), if there was history.
    pub eta_at: Option<i64>,
}

impl TaskRecord {
    /// Bytes of the verified copy of video `index`, if one is stored.
    pub fn stored_bytes_of(&self, index: usize) -> Option<i64> {
        match index {
            0 => self.stored_bytes,
            i => self
                .stored_more
                .iter()
                .find(|v| v.index == i)
                .map(|v| v.bytes),
        }
    }
}

impl TaskRecord {
    /// The task as it was just written, for answering a create when the store cannot be
    /// read back (the provider accepted it; its record follows).
    pub fn pending(t: &NewTask, state: TaskState, at: i64) -> TaskRecord {
        TaskRecord {
            id: t.id.clone(),
            api_key_id: t.api_key_id.clone(),
            model: t.request.model,
            metadata: t.request.metadata.clone(),
            state,
            progress: 0,
            provider: Some(t.provider.clone()),
            provider_task_id: None,
            sandbox: t.sandbox,
            videos: Vec::new(),
            error: None,
            cost_estimated_usd: t.cost_estimated_usd,
            cost_final_usd: None,
            provider_reported_usd: None,
            routing_reason: Some(t.routing_reason.clone()),
            created_at: at,
            updated_at: at,
            completed_at: None,
            next_poll_at: at,
            poll_failures: 0,
            unreadable_answers: 0,
            upstream_callback: false,
            stored_bytes: None,
            queue: None,
            stored_more: Vec::new(),
            accepted_at: None,
            timing_key: None,
            eta_at: None,
        }
    }
}

/// A task with everything its detailed read shows.
pub struct TaskDetail {
    pub task: TaskRecord,
    pub history: Vec<StatusChange>,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub provider: String,
    pub outcome: String,
    /// The provider's id for the task, on the attempt it accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub latency_ms: i64,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    pub status: String,
    pub at: i64,
}

/// What one poll saw, as the store records it.
#[derive(Debug, Clone, Copy)]
pub struct PollUpdate<'a> {
    pub state: TaskState,
    pub progress: Option<u8>,
    pub videos: &'a [VideoResult],
    pub cost_final_usd: Option<f64>,
    pub next_poll_at: i64,
}

/// A provider's acceptance, as the store records it.
#[derive(Debug, Clone, Copy)]
pub struct Acceptance<'a> {
    pub upstream_id: &'a str,
    pub state: TaskState,
    pub first_poll_at: i64,
    /// The submit attempt that was accepted (None when a lookup found the task).
    pub attempt: Option<&'a Attempt>,
    /// The request without its base64 images, to replace the stored one.
    pub slim_request: Option<&'a str>,
    /// The provider was given the task's upstream callback URL. If not, the task's token
    /// is dropped, so that the record says which tasks expect callbacks.
    pub callback_given: bool,
    /// The group its completion time counts in (`timing::timing_key`).
    pub timing_key: Option<&'a str>,
    /// When it is expected to complete (Unix ms), from its group's p50; None without history.
    pub eta_at: Option<i64>,
}

/// What the API writes before it calls any provider.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub api_key_id: String,
    pub request: VideoRequest,
    pub provider: String,
    pub sandbox: bool,
    pub cost_estimated_usd: Option<f64>,
    pub routing_reason: String,
    /// The submit's own lease token (see `lease_token`); until `lease_until` passes, no
    /// reconciler may take the task over.
    pub lease_owner: String,
    pub lease_until: i64,
    /// The key's slot and budget the task must take to be written.
    pub holds: Holds,
    /// Seconds of video it is billed for, as estimated (usage reports).
    pub billed_seconds: Option<u32>,
    /// The token in the task's upstream callback URL (set when `webhooks.public_base_url`
    /// is); the provider finally chosen may or may not take callbacks.
    pub upstream_callback_token: Option<String>,
}

/// A client's `Idempotency-Key` and a hash of the body it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub request_hash: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Written, at this time (Unix ms).
    New { created_at: i64 },
    /// Written, holding no slot: its key is at its `max_in_flight` (`Holds::wait_for_slot`),
    /// so it is to wait in the queue rather than go to a provider.
    WaitsForSlot { created_at: i64 },
    /// A limit of the key refused the task; nothing was written.
    Refused(LimitRefusal),
    /// The idempotency key was already taken, by this task.
    Existing { task_id: String, same_body: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// Accepted upstream and unfinished: to be polled.
    Poll,
    /// Written but the submit outcome is unknown (its submitter died, or no answer came).
    Reconcile,
}

pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    pub has_more: bool,
}

/// A page of at most `limit` tasks from `rows`, which were asked for one more than that
/// (the extra row only says whether there is a next page).
pub(super) fn page_of(rows: &[AnyRow], limit: u32) -> anyhow::Result<TaskPage> {
    let mut tasks = rows
        .iter()
        .map(task_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let has_more = tasks.len() > limit as usize;
    tasks.truncate(limit as usize);
    Ok(TaskPage { tasks, has_more })
}

/// Every column a task read returns: the request body is left out on purpose.
pub(super) const TASK_COLUMNS: &str =
    "id, api_key_id, model, metadata, state, progress, provider, provider_task_id, sandbox, \
    result, error_code, error_message, error_provider_message, cost_estimated_micros, cost_final_micros, \
    provider_reported_micros, routing_reason, created_at, updated_at, completed_at, next_poll_at, poll_failures, \
    unreadable_answers, upstream_callback_token, stored_bytes, stored_videos_json, \
    queue_tag, waiting_since, max_wait_until, accepted_at, timing_key, eta_at";

/// A fresh token for one claim of tasks. Every write of a claimed task checks it, so two
/// claims, even in one process, can never both write the same task.
pub fn lease_token(instance_id: &str) -> String {
    format!("{instance_id}/{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn task_from_row(row: &AnyRow) -> anyhow::Result<TaskRecord> {
    let model: String = row.try_get("model")?;
    let metadata: Option<String> = row.try_get("metadata")?;
    let result: Option<String> = row.try_get("result")?;
    let error_code: Option<String> = row.try_get("error_code")?;
    let error = match error_code {
        Some(code) => Some(TaskError {
            code,
            message: row
                .try_get::<Option<String>, _>("error_message")?
                .unwrap_or_default(),
            provider_message: row.try_get("error_provider_message")?,
        }),
        None => None,
    };
    Ok(TaskRecord {
        id: row.try_get("id")?,
        api_key_id: row.try_get("api_key_id")?,
        model: Model::parse(&model).with_context(|| format!("stored model {model:?}"))?,
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .context("stored metadata")?,
        state: TaskState::parse(&row.try_get::<String, _>("state")?)?,
        progress: row.try_get("progress")?,
        provider: row.try_get("provider")?,
        provider_task_id: row.try_get("provider_task_id")?,
        sandbox: row.try_get::<i64, _>("sandbox")? != 0,
        videos: match result {
            Some(r) => serde_json::from_str(&r).context("stored result")?,
            None => Vec::new(),
        },
        error,
        cost_estimated_usd: row
            .try_get::<Option<i64>, _>("cost_estimated_micros")?
            .map(from_micros),
        cost_final_usd: row
            .try_get::<Option<i64>, _>("cost_final_micros")?
            .map(from_micros),
        provider_reported_usd: row
            .try_get::<Option<i64>, _>("provider_reported_micros")?
            .map(from_micros),
        routing_reason: row.try_get("routing_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        completed_at: row.try_get("completed_at")?,
        next_poll_at: row.try_get("next_poll_at")?,
        poll_failures: row.try_get("poll_failures")?,
        unreadable_answers: row.try_get("unreadable_answers")?,
        upstream_callback: row
            .try_get::<Option<String>, _>("upstream_callback_token")?
            .is_some(),
        stored_bytes: row.try_get("stored_bytes")?,
        queue: super::queue::spot_from_row(row)?,
        stored_more: super::results::stored_videos(row.try_get("stored_videos_json")?),
        accepted_at: row.try_get("accepted_at")?,
        timing_key: row.try_get("timing_key")?,
        eta_at: row.try_get("eta_at")?,
    })
}

pub(super) fn to_micros(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}

fn from_micros(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// Takes `claim.key` for `task_id` unless a live holder has it. A racing request blocks on
/// the key's primary key until the first commits, then finds it taken.
async fn take_idempotency_key(
    tx: &mut Transaction<'_, Any>,
    api_key_id: &str,
    task_id: &str,
    claim: &IdempotencyClaim,
    now: i64,
) -> anyhow::Result<bool> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND expires_at <= $3",
    )
    .bind(api_key_id)
    .bind(&claim.key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let taken = sqlx::query(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, task_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (api_key_id, key) DO NOTHING",
    )
    .bind(api_key_id)
    .bind(&claim.key)
    .bind(&claim.request_hash)
    .bind(task_id)
    .bind(now)
    .bind(claim.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(affected(taken))
}

/// A submit attempt: its row, and its entry in the task's read copy.
pub(super) async fn insert_attempt(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    a: &Attempt,
) -> anyhow::Result<()> {
    insert_attempt_row(tx, task_id, a).await?;
    sqlx::query("UPDATE tasks SET attempts_json = attempts_json || $2 WHERE id = $1")
        .bind(task_id)
        .bind(attempt_entry(a)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn insert_attempt_row(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    a: &Attempt,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO task_attempts (task_id, provider, outcome, provider_task_id, error_code, message, latency_ms, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(task_id)
    .bind(&a.provider)
    .bind(&a.outcome)
    .bind(&a.provider_task_id)
    .bind(&a.error_code)
    .bind(&a.message)
    .bind(a.latency_ms)
    .bind(a.at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An attempt's entry in `tasks.attempts_json` (see migration 0013).
pub(super) fn attempt_entry(a: &Attempt) -> anyhow::Result<String> {
    Ok(serde_json::to_string(a)? + ",")
}

/// A status change's entry in `tasks.history_json` (see migration 0013).
pub(super) fn history_entry(state: TaskState, at: i64) -> String {
    format!("{{\"status\":\"{}\",\"at\":{at}}},", state.as_str())
}

pub(super) async fn record_status(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    state: TaskState,
    at: i64,
) -> anyhow::Result<()> {
    insert_status_change(tx, task_id, state, at).await?;
    sqlx::query("UPDATE tasks SET history_json = history_json || $2 WHERE id = $1")
        .bind(task_id)
        .bind(history_entry(state, at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The status change's row and its event, without the entry in the task's read copy (for
/// a caller whose own update of the task appends it).
pub(super) async fn insert_status_change(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    state: TaskState,
    at: i64,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO task_status_changes (task_id, status, at) VALUES ($1, $2, $3)")
        .bind(task_id)
        .bind(state.as_str())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    record_event(tx, task_id, state, at).await
}

/// The outbox: a status change the task's client asked to hear of becomes an event in the
/// same transaction, so no change goes without its event and no event without its change.
/// One statement that writes nothing for a task without a callback_url.
async fn record_event(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    state: TaskState,
    at: i64,
) -> anyhow::Result<()> {
    let Some(wanted) = event_wanted(state, "t") else {
        return Ok(());
    };
    let sql = format!(
        "INSERT INTO webhook_events (id, task_id, api_key_id, seq, type, url, progress, created_at, state, next_attempt_at) \
         SELECT $2, t.id, t.api_key_id, \
           (SELECT COUNT(*) FROM webhook_events e WHERE e.task_id = t.id), \
           $3, t.callback_url, t.progress, $4, \
           CASE WHEN (t.webhook_muted & $5) <> 0 THEN 'filtered' ELSE 'pending' END, $4 \
         FROM tasks t WHERE t.id = $1 AND t.callback_url IS NOT NULL AND {wanted}"
    );
    sqlx::query(&sql)
        .bind(task_id)
        .bind(new_event_id())
        .bind(event_type(state))
        .bind(at)
        .bind(mute_bit(state))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) fn new_event_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn event_type(state: TaskState) -> String {
    format!("video.generation.{}", state.public().as_str())
}

/// The bit of `tasks.webhook_muted` that keeps a change to `state` from delivery (0: no
/// event type of its own).
pub(super) fn mute_bit(state: TaskState) -> i64 {
    match state.public() {
        TaskStatus::Queued => 0,
        TaskStatus::InProgress => 1,
        TaskStatus::Completed => 2,
        TaskStatus::Failed => 4,
        TaskStatus::Cancelled => 8,
    }
}

/// `tasks.webhook_muted` for a request: the bits of the event types its `webhook_events`
/// leaves out.
pub(super) fn webhook_mute_mask(req: &VideoRequest) -> i64 {
    WebhookEventName::ALL
        .iter()
        .filter(|e| !req.delivers(**e))
        .map(|e| mute_bit(TaskState::from_public(e.status())))
        .sum()
}

/// The condition on task row `t` under which a change to `state` is an event its client
/// asked for (given a callback_url), or None when no such change ever is.
pub(super) fn event_wanted(state: TaskState, t: &str) -> Option<String> {
    match state {
        TaskState::Completed | TaskState::Failed | TaskState::Cancelled => Some("1 = 1".into()),
        TaskState::InProgress => Some(format!("{t}.callback_in_progress = 1")),
        _ => None,
    }
}

impl Store {
    /// Writes a new task in `submitting`, holding it for its submitter. With an
    /// idempotency claim, the key is taken in the same transaction: if another request
    /// already holds it, nothing is written and that request's task is returned instead.
    pub async fn insert_task(
        &self,
        t: &NewTask,
        idempotency: Option<&IdempotencyClaim>,
    ) -> anyhow::Result<Inserted> {
        let row = NewTaskRow::of(t)?;
        if idempotency.is_none() && t.holds.is_empty() {
            return self.hot_writes.create(row).await;
        }
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        if let Some(claim) = idempotency {
            if !take_idempotency_key(&mut tx, &t.api_key_id, &t.id, claim, now).await? {
                tx.rollback().await?;
                return self
                    .find_idempotency_key(&t.api_key_id, claim)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("idempotency key taken, then gone"));
            }
        }
        let taken = match limits::take(&mut tx, &t.api_key_id, &t.holds, now).await? {
            Ok(taken) => taken,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(Inserted::Refused(refusal));
            }
        };
        let sql = format!("{INSERT_TASK_INTO}{NEW_TASK_ROW}");
        row.bind(sqlx::query(&sql), now, "", taken.holds_slot, taken.reserved)
            .execute(&mut *tx)
            .await?;
        record_status(&mut tx, &t.id, TaskState::Submitting, now).await?;
        tx.commit().await?;
        Ok(if taken.waits_for_slot {
            Inserted::WaitsForSlot { created_at: now }
        } else {
            Inserted::New { created_at: now }
        })
    }

    /// The live holder of an idempotency key, if any.
    pub async fn find_idempotency_key(
        &self,
        api_key_id: &str,
        claim: &IdempotencyClaim,
    ) -> anyhow::Result<Option<Inserted>> {
        let row = sqlx::query(
            "SELECT task_id, request_hash FROM idempotency_keys \
             WHERE api_key_id = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(api_key_id)
        .bind(&claim.key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Inserted::Existing {
                task_id: r.try_get("task_id")?,
                same_body: r.try_get::<String, _>("request_hash")? == claim.request_hash,
            })
        })
        .transpose()
    }

    /// Frees a key whose task never reached a provider, so that a retry can create one.
    pub async fn release_idempotency_key(
        &self,
        api_key_id: &str,
        key: &str,
        task_id: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND task_id = $3",
        )
        .bind(api_key_id)
        .bind(key)
        .bind(task_id)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    /// Forgets idempotency keys past their window. Returns how many.
    pub async fn prune_idempotency_keys(&self) -> anyhow::Result<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now_ms())
                .execute(&self.writes)
                .await?
                .rows_affected(),
        )
    }

    /// The submit may have reached the provider but no answer came: hand the task to the
    /// reconciler now, and never to another provider.
    pub async fn mark_submit_unknown(&self, id: &str, owner: &str) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let done = affected(
            sqlx::query(
                "UPDATE tasks SET state = 'submit_unknown', updated_at = $2, next_poll_at = $2, \
                 lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND state = 'submitting' AND lease_owner = $3",
            )
            .bind(id)
            .bind(now)
            .bind(owner)
            .execute(&mut *tx)
            .await?,
        );
        if done {
            record_status(&mut tx, id, TaskState::SubmitUnknown, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points a still-submitting task at the provider about to be tried, so that a crash
    /// during the call leaves a record of where the request may have gone; its submit
    /// mark is cleared until that call starts. False if the claim `token` no longer holds
    /// the task.
    pub async fn set_submit_target(
        &self,
        id: &str,
        token: &str,
        provider: &str,
        sandbox: bool,
        cost_estimated_usd: Option<f64>,
        routing_reason: &str,
    ) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET provider = $2, sandbox = $3, cost_estimated_micros = $4, routing_reason = $5, updated_at = $6, \
                 submit_started_at = NULL \
                 WHERE id = $1 AND state = 'submitting' AND lease_owner = $7",
            )
            .bind(id)
            .bind(provider)
            .bind(sandbox as i64)
            .bind(cost_estimated_usd.map(to_micros))
            .bind(routing_reason)
            .bind(now_ms())
            .bind(token)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// Runs `call` (an upstream call) while holding the task for claim `token`: the lease is
    /// pushed `lease_ms` ahead before the call starts and every third of that while it runs,
    /// so a slow provider (or a long failover) cannot let another claim take over a call
    /// that is still in flight. None, without calling, when the claim is already lost.
    pub async fn while_leased<T>(
        &self,
        id: &str,
        token: &str,
        lease_ms: i64,
        call: impl std::future::Future<Output = T>,
    ) -> anyhow::Result<Option<T>> {
        if !self.extend_lease(id, token, now_ms() + lease_ms).await? {
            tracing::warn!(task_id = %id, "lease lost before an upstream call; not calling");
            return Ok(None);
        }
        Ok(Some(self.keep_leased(id, token, lease_ms, call).await))
    }

    /// `while_leased` for a claim that was just taken with at least `lease_ms` to run: the
    /// lease is only pushed ahead while the call runs.
    pub async fn keep_leased<T>(
        &self,
        id: &str,
        token: &str,
        lease_ms: i64,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(call);
        let every = std::time::Duration::from_millis((lease_ms / 3).max(100) as u64);
        loop {
            tokio::select! {
                out = &mut call => return out,
                _ = tokio::time::sleep(every) => {
                    match self.extend_lease(id, token, now_ms() + lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(task_id = %id, "lease lost during an upstream call"),
                        Err(e) => tracing::warn!(task_id = %id, error = ?e, "could not extend a lease"),
                    }
                }
            }
        }
    }

    /// Holds the task for claim `token` until `until`; false if the claim was lost.
    pub async fn extend_lease(&self, id: &str, token: &str, until: i64) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query("UPDATE tasks SET lease_until = $3 WHERE id = $1 AND lease_owner = $2")
                .bind(id)
                .bind(token)
                .bind(until)
                .execute(&self.writes)
                .await?,
        ))
    }

    /// Counts a resubmit of an unconfirmed submit; false (and nothing counted) when the task
    /// was already resubmitted once or the claim was lost.
    pub async fn count_resubmit(&self, id: &str, token: &str) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET resubmits = resubmits + 1 \
                 WHERE id = $1 AND lease_owner = $2 AND resubmits < 1",
            )
            .bind(id)
            .bind(token)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// The provider's id from an accepted submit attempt of `provider`, if one was recorded:
    /// an acceptance whose task update was lost can be recovered from it.
    pub async fn accepted_attempt(
        &self,
        id: &str,
        provider: &str,
    ) -> anyhow::Result<Option<String>> {
        let row = sqlx::query(
            "SELECT provider_task_id FROM task_attempts WHERE task_id = $1 AND provider = $2 \
             AND outcome = 'accepted' AND provider_task_id IS NOT NULL ORDER BY at DESC LIMIT 1",
        )
        .bind(id)
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("provider_task_id")).transpose()?)
    }

    /// The request as the client sent it (base64 images removed once a provider accepted).
    pub async fn task_request(&self, id: &str) -> anyhow::Result<VideoRequest> {
        let body = self.task_request_body(id).await?;
        serde_json::from_str(&body).context("stored request")
    }

    /// The stored request as JSON text (`{}` once retention pruned it).
    pub async fn task_request_body(&self, id: &str) -> anyhow::Result<String> {
        let row = sqlx::query("SELECT request FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("request")?)
    }

    pub async fn record_attempt(&self, task_id: &str, a: &Attempt) -> anyhow::Result<()> {
        let mut tx = self.writes.begin().await?;
        insert_attempt(&mut tx, task_id, a).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The provider accepted the task: record its id (with the attempt that got it, in the
    /// same transaction), slim the stored request, schedule the first poll and release the
    /// hold. Only the claim `token` may write; false if the task was no longer submitting or
    /// another claim had taken it over.
    pub async fn mark_accepted(
        &self,
        id: &str,
        token: &str,
        a: &Acceptance<'_>,
    ) -> anyhow::Result<bool> {
        self.injected_fault()?;
        self.hot_writes.accept(AcceptRow::of(id, token, a)).await
    }

    /// Fails an unfinished task held by `owner`. False if it had already finished or
    /// another process holds it.
    pub async fn fail_task(
        &self,
        id: &str,
        owner: &str,
        error: &TaskError,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let sql = format!(
            "UPDATE tasks SET state = 'failed', error_code = $2, error_message = $3, error_provider_message = $4, \
             updated_at = $5, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state IN ('submitting', 'submit_unknown', 'queued', 'in_progress') \
             AND lease_owner = $6 RETURNING {HOLD_COLUMNS}"
        );
        let ended = sqlx::query(&sql)
            .bind(id)
            .bind(&error.code)
            .bind(&error.message)
            .bind(&error.provider_message)
            .bind(now)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        let mut unparked = false;
        if let Some(row) = &ended {
            record_status(&mut tx, id, TaskState::Failed, now).await?;
            unparked = self.release_and_unpark(&mut tx, id, row, false).await?;
        }
        tx.commit().await?;
        self.wake_if_slot_freed(ended.as_ref(), unparked);
        Ok(ended.is_some())
    }

    /// Leases up to `limit` due tasks of one kind to `owner` until `lease_until`.
    pub async fn claim_due(
        &self,
        kind: ClaimKind,
        owner: &str,
        lease_until: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<TaskRecord>> {
        let now = now_ms();
        let rows = sqlx::query(&self.claim_due_sql(kind))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.writes)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    pub(super) fn claim_due_sql(&self, kind: ClaimKind) -> String {
        // Each filter repeats its partial index's WHERE (migration 0005).
        let (filter, index) = match kind {
            ClaimKind::Poll => (
                "state IN ('queued', 'in_progress') AND next_poll_at <= $3",
                "tasks_due_poll",
            ),
            ClaimKind::Reconcile => (
                "state IN ('submitting', 'submit_unknown') AND next_poll_at <= $3",
                "tasks_due_reconcile",
            ),
        };
        format!(
            "UPDATE tasks SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM tasks {indexed} WHERE {filter} AND lease_until <= $3 \
               ORDER BY next_poll_at LIMIT $4 {skip}) \
             RETURNING {TASK_COLUMNS}",
            indexed = self.sqlite_index(index),
            skip = self.skip_locked()
        )
    }

    /// Records what a poll saw and schedules the next one, releasing the lease. Only the
    /// lease holder may write; false if the lease was lost to another process.
    pub async fn apply_poll(
        &self,
        task: &TaskRecord,
        owner: &str,
        seen: &PollUpdate<'_>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let PollUpdate {
            state,
            progress,
            videos,
            cost_final_usd,
            next_poll_at,
        } = *seen;
        let completed_at = (state == TaskState::Completed).then_some(now);
        let result = (state == TaskState::Completed)
            .then(|| serde_json::to_string(videos))
            .transpose()?;
        let progress = match state {
            TaskState::Completed => 100,
            _ => progress
                .map(i64::from)
                .unwrap_or(task.progress)
                .max(task.progress),
        };
        let mut tx = self.writes.begin().await?;
        let sql = format!(
            "UPDATE tasks SET state = $3, progress = $4, result = COALESCE($5, result), \
             completed_at = COALESCE($6, completed_at), cost_final_micros = COALESCE($7, cost_final_micros), \
             next_poll_at = CASE WHEN next_poll_at = $10 THEN $8 ELSE next_poll_at END, \
             poll_failures = 0, unreadable_answers = 0, store_refusals = 0, updated_at = $9, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND lease_owner = $2 AND state IN ('queued', 'in_progress') RETURNING {HOLD_COLUMNS}"
        );
        let applied = sqlx::query(&sql)
            .bind(&task.id)
            .bind(owner)
            .bind(state.as_str())
            .bind(progress)
            .bind(result)
            .bind(completed_at)
            .bind(cost_final_usd.map(to_micros))
            .bind(next_poll_at)
            .bind(now)
            // An upstream callback during the poll moved next_poll_at (`hasten_poll`): the
            // poll it asked for is still owed, so the slower schedule does not replace it.
            .bind(task.next_poll_at)
            .fetch_optional(&mut *tx)
            .await?;
        let mut unparked = false;
        if let Some(row) = &applied {
            if state != task.state {
                record_status(&mut tx, &task.id, state, now).await?;
            }
            if state == TaskState::Completed {
                unparked = self
                    .release_and_unpark(&mut tx, &task.id, row, true)
                    .await?;
                // Sandbox videos are not real: there is nothing to copy.
                if self.copy_results && !task.sandbox {
                    super::results::queue_copy(&mut tx, &task.id, videos, now).await?;
                }
            }
        }
        tx.commit().await?;
        if state == TaskState::Completed {
            self.wake_if_slot_freed(applied.as_ref(), unparked);
        }
        Ok(applied.is_some())
    }

    /// A poll failed: count it and back off. Releases the lease.
    pub async fn poll_failed(
        &self,
        task: &TaskRecord,
        owner: &str,
        next_poll_at: i64,
    ) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET poll_failures = poll_failures + 1, next_poll_at = $3, \
                 lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(&task.id)
            .bind(owner)
            .bind(next_poll_at)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// A status answer could not be interpreted: count it, keep the answer and poll again at
    /// `next_poll_at`. Releases the lease.
    pub async fn poll_unreadable(
        &self,
        task: &TaskRecord,
        owner: &str,
        raw_answer: Option<&str>,
        next_poll_at: i64,
    ) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET unreadable_answers = unreadable_answers + 1, \
                 last_unreadable_answer = $3, next_poll_at = $4, lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(&task.id)
            .bind(owner)
            .bind(raw_answer)
            .bind(next_poll_at)
            .execute(&self.writes)
            .await?,
        ))
    }

    pub(super) fn prune_finished_sql(&self) -> String {
        format!(
            "UPDATE tasks SET details_pruned_at = $3, request = '{{}}', history_json = '', attempts_json = '' WHERE id IN (\
               SELECT id FROM tasks {} WHERE state IN ('completed', 'failed') AND details_pruned_at IS NULL \
               AND updated_at < $1 ORDER BY updated_at LIMIT $2) RETURNING id",
            self.sqlite_index("tasks_finished")
        )
    }

    /// Deletes the request body, status history and attempts of up to `limit` tasks that
    /// finished before `before`. Returns how many tasks it pruned.
    pub async fn prune_finished_details(&self, before: i64, limit: u32) -> anyhow::Result<u64> {
        let mut tx = self.writes.begin().await?;
        // The first statement writes, so SQLite takes the write lock at once rather than
        // failing to upgrade a read transaction under load.
        let ids: Vec<String> = sqlx::query(&self.prune_finished_sql())
            .bind(before)
            .bind(limit as i64)
            .bind(now_ms())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        for table in ["task_status_changes", "task_attempts"] {
            super::delete_where_in(&mut tx, table, "task_id", &ids).await?;
        }
        // Their reads change: cached copies are dropped (`crate::live`).
        super::live::note_finished_changes(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// The task whose upstream callback URL carries `token`, with the token as stored (for
    /// the caller's constant-time comparison).
    pub async fn task_by_callback_token(
        &self,
        token: &str,
    ) -> anyhow::Result<Option<(TaskRecord, String)>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE upstream_callback_token = $1");
        let row = sqlx::query(&sql)
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((task_from_row(&r)?, r.try_get("upstream_callback_token")?)))
            .transpose()
    }

    /// The token of the task's upstream callback URL, if it has one.
    pub async fn callback_token(&self, id: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT upstream_callback_token FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("upstream_callback_token"))
            .transpose()?
            .flatten())
    }

    /// Makes an unfinished, accepted task due for a poll now (an upstream callback said it
    /// moved on). Idempotent: many callbacks before the poll make one poll. A task being
    /// polled right now gets another poll after this one (`apply_poll` keeps a
    /// `next_poll_at` moved during the poll), since that poll may have read the provider
    /// before the change. False when the task is not being polled (finished, or not yet
    /// accepted) or already due.
    pub async fn hasten_poll(&self, id: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET next_poll_at = $2 \
                 WHERE id = $1 AND state IN ('queued', 'in_progress') \
                 AND (next_poll_at > $2 OR (lease_until > $2 AND next_poll_at <> $2))",
            )
            .bind(id)
            .bind(now)
            .execute(&self.writes)
            .await?,
        ))
    }

    pub async fn task(&self, id: &str) -> anyhow::Result<Option<TaskRecord>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// A task as its owner sees it: another key's task does not exist.
    pub async fn task_for_owner(
        &self,
        owner: &str,
        id: &str,
    ) -> anyhow::Result<Option<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND api_key_id = $2 AND deleted_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// The owner's tasks, newest first, after the task `cursor` (exclusive).
    pub async fn list_tasks(
        &self,
        owner: &str,
        status: Option<TaskStatus>,
        cursor: Option<&TaskRecord>,
        limit: u32,
    ) -> anyhow::Result<TaskPage> {
        let states = match status {
            None => {
                "'waiting', 'submitting', 'submit_unknown', 'queued', 'in_progress', 'completed', 'failed', 'cancelled'"
            }
            Some(TaskStatus::Queued) => "'waiting', 'submitting', 'submit_unknown', 'queued'",
            Some(TaskStatus::InProgress) => "'in_progress'",
            Some(TaskStatus::Completed) => "'completed'",
            Some(TaskStatus::Failed) => "'failed'",
            Some(TaskStatus::Cancelled) => "'cancelled'",
        };
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE api_key_id = $1 AND state IN ({states}) AND deleted_at IS NULL \
             AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let (before_at, before_id) = match cursor {
            Some(c) => (c.created_at, c.id.clone()),
            None => (i64::MAX, String::new()),
        };
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(before_at)
            .bind(before_id)
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await?;
        page_of(&rows, limit)
    }

    /// A task as its owner sees it, with its status history and submit attempts, in one
    /// query (the status read is the hottest path there is).
    pub async fn task_detail_for_owner(
        &self,
        owner: &str,
        id: &str,
    ) -> anyhow::Result<Option<TaskDetail>> {
        let (history, attempts) = match self.backend {
            Backend::Postgres => (
                "SELECT COALESCE(json_agg(json_build_object('status', status, 'at', at) ORDER BY at, status), '[]')::text \
                 FROM task_status_changes WHERE task_id = tasks.id",
                "SELECT COALESCE(json_agg(json_build_object('provider', provider, 'outcome', outcome, \
                   'provider_task_id', provider_task_id, 'error_code', error_code, 'message', message, \
                   'latency_ms', latency_ms, 'at', at) ORDER BY at), '[]')::text \
                 FROM task_attempts WHERE task_id = tasks.id",
            ),
            // SQLite's json_group_array keeps the order of the rows it is fed.
            Backend::Sqlite => (
                "SELECT json_group_array(json_object('status', status, 'at', at)) FROM \
                 (SELECT status, at FROM task_status_changes WHERE task_id = tasks.id ORDER BY at, status)",
                "SELECT json_group_array(json_object('provider', provider, 'outcome', outcome, \
                   'provider_task_id', provider_task_id, 'error_code', error_code, 'message', message, \
                   'latency_ms', latency_ms, 'at', at)) FROM \
                 (SELECT * FROM task_attempts WHERE task_id = tasks.id ORDER BY at)",
            ),
        };
        // The read copy, or for a task older than it, the tables.
        let sql = format!(
            "SELECT {TASK_COLUMNS}, \
               CASE WHEN history_json IS NULL THEN ({history}) ELSE '[' || rtrim(history_json, ',') || ']' END AS history_json, \
               CASE WHEN attempts_json IS NULL THEN ({attempts}) ELSE '[' || rtrim(attempts_json, ',') || ']' END AS attempts_json \
             FROM tasks WHERE id = $1 AND api_key_id = $2 AND deleted_at IS NULL"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let history: String = row.try_get("history_json")?;
        let attempts: String = row.try_get("attempts_json")?;
        Ok(Some(TaskDetail {
            task: task_from_row(&row)?,
            history: serde_json::from_str(&history).context("stored status history")?,
            attempts: serde_json::from_str(&attempts).context("stored attempts")?,
        }))
    }
}
