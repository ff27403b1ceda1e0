//! What every status change of a task writes beside the task: its row in the status
//! history, its webhook event (the outbox), and the submit attempts, with their entries
//! in the task's read copy (`history_json`, `attempts_json`).

use sqlx::{Any, Transaction};

use super::task_record::{Attempt, TaskState};
use crate::domain::{TaskStatus, VideoRequest, WebhookEventName};

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
