//! The answers their handlers build with `json!`, described as types for the OpenAPI
//! document (`openapi.rs` assembles it; schemathesis checks, in tests/openapi.rs, that the
//! running gateway agrees with them). Handlers name these in their `#[utoipa::path]`.

#![allow(dead_code)] // never built: they only describe

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::TaskStatus;
use crate::health::ProviderReport;
use crate::store::{Attempt, KeyInfo, StatusChange, TaskError, UsageRow, WebhookAttempt};
use crate::supervise::WorkerStatus;

/// The task object.
#[derive(Serialize, ToSchema)]
pub struct TaskObject {
    #[schema(example = "vgt_01J...")]
    id: String,
    /// Always `video.generation`.
    #[schema(example = "video.generation")]
    object: String,
    /// The model's name (never an alias).
    #[schema(example = "kling-v3-omni")]
    model: String,
    status: TaskStatus,
    /// 0-100.
    #[schema(minimum = 0, maximum = 100)]
    progress: i64,
    /// The provider that has (or had) the task; null before one took it.
    provider: Option<String>,
    /// Present, and true, only for a task served by the sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<bool>,
    cost: TaskCost,
    /// Only when completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<TaskResult>,
    /// Only when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<TaskError>,
    /// The request's `metadata`, echoed.
    metadata: HashMap<String, String>,
    routing: TaskRouting,
    /// Only while the task waits in omnigate's queue for a provider with room.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<TaskQueue>,
    created_at: i64,
    updated_at: i64,
    completed_at: Option<i64>,
    /// While unfinished, when the task is expected to complete (RFC 3339, UTC): its
    /// acceptance plus the median completion time of its provider's recent tasks of
    /// the same model, mode and duration. Absent without such history.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-12-06T16:02:30Z")]
    eta: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskQueue {
    /// 1 starts next (among all keys' waiting tasks, in fair-share order).
    #[schema(minimum = 1)]
    position: i64,
    /// Unix seconds.
    waiting_since: i64,
    /// Unix seconds; still waiting then, the task fails with `queue_timeout`.
    max_wait_until: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TaskCost {
    estimated_usd: Option<f64>,
    /// Once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    final_usd: Option<f64>,
    /// Only where the provider billed more than the task reserved of its key's budget:
    /// its figure, while the key was charged `final_usd` (the reservation).
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_reported_usd: Option<f64>,
    #[schema(example = "USD")]
    currency: String,
}

#[derive(Serialize, ToSchema)]
pub struct TaskResult {
    videos: Vec<TaskVideo>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskVideo {
    /// The provider's URL (it may expire: 7 days at some providers).
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    /// omnigate's own copy (durable results), once stored: a path on this gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    omnigate_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored_bytes: Option<u64>,
}

/// Kling's error envelope (`data` is null).
#[derive(Serialize, ToSchema)]
pub struct KlingError {
    /// Kling's code: 1000-1004 auth, 1102 budget, 1200-1203 request, 1301 content
    /// policy, 1302-1303 rate and concurrency, 5000-5002 server.
    #[schema(minimum = 1000, maximum = 5002)]
    code: i64,
    message: String,
    request_id: String,
    data: Option<String>,
}

/// Kling's answer carrying one task.
#[derive(Serialize, ToSchema)]
pub struct KlingTaskAnswer {
    /// Always 0.
    #[schema(minimum = 0, maximum = 0)]
    code: i64,
    /// `SUCCEED`.
    message: String,
    request_id: String,
    data: KlingTask,
}

/// Kling's answer carrying a page of tasks.
#[derive(Serialize, ToSchema)]
pub struct KlingListAnswer {
    #[schema(minimum = 0, maximum = 0)]
    code: i64,
    message: String,
    request_id: String,
    data: Vec<KlingTask>,
}

/// Kling's task object (also the body of a Kling-shaped callback).
#[derive(Serialize, ToSchema)]
pub struct KlingTask {
    task_id: String,
    #[schema(pattern = "^(submitted|processing|succeed|failed)$")]
    task_status: String,
    /// The reason of a failure; empty otherwise.
    task_status_msg: String,
    task_info: KlingTaskInfo,
    /// `{}` until it succeeds.
    task_result: KlingTaskResult,
    /// Unix milliseconds.
    created_at: i64,
    updated_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct KlingTaskInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    external_task_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KlingTaskResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    videos: Option<Vec<KlingVideo>>,
}

#[derive(Serialize, ToSchema)]
pub struct KlingVideo {
    id: String,
    url: String,
    /// Seconds, as a string (`"5.000"`), as Kling writes it.
    duration: Option<String>,
}

/// OpenAI's Video object.
#[derive(Serialize, ToSchema)]
pub struct Video {
    id: String,
    /// Always `video`.
    object: String,
    created_at: i64,
    #[schema(pattern = "^(queued|in_progress|completed|failed)$")]
    status: String,
    model: String,
    #[schema(minimum = 0, maximum = 100)]
    progress: i64,
    seconds: String,
    size: String,
    prompt: Option<String>,
    completed_at: Option<i64>,
    /// Always null: omnigate's copy is kept until deleted.
    expires_at: Option<i64>,
    error: Option<VideoError>,
    remixed_from_video_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct VideoError {
    code: String,
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct VideoList {
    /// Always `list`.
    object: String,
    data: Vec<Video>,
    first_id: Option<String>,
    last_id: Option<String>,
    has_more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct VideoDeleted {
    id: String,
    /// Always `video.deleted`.
    object: String,
    deleted: bool,
}

/// `/readyz`: each check's result.
#[derive(Serialize, ToSchema)]
pub struct ReadyReport {
    status: String,
    #[schema(value_type = Object)]
    checks: HashMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskRouting {
    /// Why this provider was chosen.
    reason: Option<String>,
}

/// One task with its history: the task object plus `status_history` and `attempts`.
#[derive(Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    task: TaskObject,
    /// Every status change; the statuses include omnigate's own `submitting` and
    /// `submit_unknown`.
    status_history: Vec<StatusChange>,
    /// Every submit attempt: `outcome` is `accepted`, `refused` or `unknown`.
    attempts: Vec<Attempt>,
}

/// `GET /v1/video/generations` answers a page, or with `?task_id=` one task.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // never built: it only describes
pub enum TaskListOrTask {
    List(TaskList),
    Task(TaskDetail),
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    /// Always `list`.
    object: String,
    data: Vec<TaskObject>,
    has_more: bool,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// What a create with this body would do.
#[derive(Serialize, ToSchema)]
pub struct Quote {
    /// Always `video.quote`.
    object: String,
    model: String,
    provider: String,
    estimated_usd: f64,
    currency: String,
    billed_seconds: u32,
    reason: String,
    /// The providers tried next (`status: fallback`) and those passed over, with why.
    alternatives: Vec<QuoteAlternative>,
}

#[derive(Serialize, ToSchema)]
pub struct QuoteAlternative {
    provider: String,
    estimated_usd: Option<f64>,
    /// `fallback` or `passed_over`.
    status: String,
    reason: String,
    /// A fallback's place in the order (the chosen provider is 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<u32>,
    /// A passed-over provider: the kind of reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
    /// A passed-over provider: the request field behind the reason, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<String>,
}

/// A webhook event of a task, with its delivery attempts.
#[derive(Serialize, ToSchema)]
pub struct EventObject {
    id: String,
    /// Always `webhook.event`.
    object: String,
    /// `video.generation.completed`, `video.generation.failed`, ...
    #[serde(rename = "type")]
    kind: String,
    url: String,
    progress: i64,
    /// `pending`, `delivered`, `failed`, `disabled`, or `filtered` (left out by the
    /// task's `webhook_events`: recorded, not delivered unless redelivered by hand).
    state: String,
    created_at: i64,
    /// While pending.
    next_attempt_at: Option<i64>,
    delivered_at: Option<i64>,
    attempts: Vec<WebhookAttempt>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    object: String,
    data: Vec<EventObject>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    object: String,
    data: Vec<KeyInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderList {
    object: String,
    data: Vec<ProviderRow>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderRow {
    #[serde(flatten)]
    report: ProviderReport,
    task_outcomes: ProviderTaskOutcomes,
}

/// Outcomes after acceptance over the health window (refreshed every
/// `poller.timing_refresh_secs`).
#[derive(Serialize, ToSchema)]
pub struct ProviderTaskOutcomes {
    #[serde(flatten)]
    counts: crate::store::TaskOutcomes,
    /// completed / (completed + failed_after_accept + stuck); null below
    /// `routing.outcome_min_tasks` of them. Routing prefers the higher rate among
    /// providers priced within `routing.outcome_margin` of the cheapest.
    completed_rate: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    /// Always `usage`.
    object: String,
    /// Unix seconds, inclusive.
    from: i64,
    /// Unix seconds, exclusive.
    to: i64,
    group_by: String,
    currency: String,
    data: Vec<UsageRow>,
    total: UsageTotal,
}

#[derive(Serialize, ToSchema)]
pub struct UsageTotal {
    tasks: i64,
    seconds: i64,
    estimated_usd: f64,
    final_usd: f64,
    /// In `/admin/usage` only: what the providers reported for the completed tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_reported_usd: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok`.
    status: String,
    workers: Vec<WorkerStatus>,
}

/// A provider callback was taken.
#[derive(Serialize, ToSchema)]
pub struct CallbackReceived {
    received: bool,
    /// The callback moved the task ahead: it is polled now.
    poll_scheduled: bool,
}
