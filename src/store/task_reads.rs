//! Reads of tasks: one task by id, owner or callback token, with its details, and the
//! owner's list.

use anyhow::Context;
use sqlx::Row;

use super::task_record::{page_of, task_from_row, TaskDetail, TaskPage, TaskRecord, TASK_COLUMNS};
use super::{Backend, Store};
use crate::domain::{TaskStatus, VideoRequest};

impl Store {
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
}
