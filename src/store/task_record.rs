//! The task record as every read returns it: its types, the columns a read selects and
//! the decoding of a row, shared by every module that reads tasks. It calls nothing
//! else in the store.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::from_micros;
use super::limits::{Holds, LimitRefusal};
use crate::domain::{Model, TaskStatus, VideoRequest, VideoResult};

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
    pub queue: Option<QueueSpot>,
    /// The verified copies of the task's other videos (1, 2, ...), once made.
    pub stored_more: Vec<StoredVideo>,
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
        queue: spot_from_row(row)?,
        stored_more: stored_videos(row.try_get("stored_videos_json")?),
        accepted_at: row.try_get("accepted_at")?,
        timing_key: row.try_get("timing_key")?,
        eta_at: row.try_get("eta_at")?,
    })
}

/// A waiting task's place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpot {
    pub tag: i64,
    pub waiting_since: i64,
    pub max_wait_until: i64,
}

pub(super) fn spot_from_row(row: &AnyRow) -> anyhow::Result<Option<QueueSpot>> {
    if row.try_get::<String, _>("state")? != TaskState::Waiting.as_str() {
        return Ok(None);
    }
    let tag: Option<i64> = row.try_get("queue_tag")?;
    let since: Option<i64> = row.try_get("waiting_since")?;
    let until: Option<i64> = row.try_get("max_wait_until")?;
    Ok(match (tag, since, until) {
        (Some(tag), Some(waiting_since), Some(max_wait_until)) => Some(QueueSpot {
            tag,
            waiting_since,
            max_wait_until,
        }),
        _ => None,
    })
}

/// A verified copy of one of a task's videos after the first (whose bytes are the task's
/// `stored_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredVideo {
    pub index: usize,
    pub bytes: i64,
}

/// Reads `tasks.stored_videos_json` (a run of objects, each followed by a comma). A run
/// that does not read is treated as no copies: the provider's URLs still serve.
pub(super) fn stored_videos(run: Option<String>) -> Vec<StoredVideo> {
    run.and_then(|r| serde_json::from_str(&format!("[{}]", r.trim_end_matches(','))).ok())
        .unwrap_or_default()
}
