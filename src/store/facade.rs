//! What the API facades other than omnigate's own keep beside a task: the shape its
//! callbacks are rendered in and the caller's `external_task_id` (`facade_tasks`), and
//! the Kling-style credentials of a key (`kling_credentials`, the secret sealed by the
//! caller: the store never sees it in the clear).

use std::collections::HashMap;

use sqlx::Row;

use super::keys::{key_from_row, KEY_COLUMNS};
use super::task_record::{page_of, TaskPage, TASK_COLUMNS};
use super::{affected, now_ms, ApiKey, Store};

/// How a task's webhook events are rendered at delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackShape {
    /// omnigate's own event: `{type, timestamp, data: <task object>}`.
    Omnigate,
    /// Kling's callback: the task object as a Kling query answers it.
    Kling { external_task_id: Option<String> },
}

const KLING: &str = "kling";

/// A reserved `external_task_id` is not taken over while its task may still be in the
/// middle of being written; past this, a reservation without a task is a create that died.
const ORPHAN_AFTER_MS: i64 = 60_000;

/// The outcome of reserving an `external_task_id` for a new task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    Yes,
    /// Another task of the key carries it.
    Duplicate,
}

impl Store {
    /// Records that task `task_id` (not yet written) is a Kling-facade task of `api_key_id`
    /// with `external_task_id`, unless another task of the key already carries that id. A
    /// reservation whose task was never written (its create died) is taken over once old.
    pub async fn reserve_kling_task(
        &self,
        task_id: &str,
        api_key_id: &str,
        external_task_id: Option<&str>,
    ) -> anyhow::Result<Reserved> {
        for _ in 0..2 {
            let inserted = sqlx::query(
                "INSERT INTO facade_tasks (task_id, api_key_id, callback_shape, external_task_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(task_id)
            .bind(api_key_id)
            .bind(KLING)
            .bind(external_task_id)
            .bind(now_ms())
            .execute(&self.writes)
            .await?;
            if affected(inserted) {
                return Ok(Reserved::Yes);
            }
            let orphan = sqlx::query(
                "DELETE FROM facade_tasks WHERE api_key_id = $1 AND external_task_id = $2 \
                 AND created_at < $3 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = facade_tasks.task_id)",
            )
            .bind(api_key_id)
            .bind(external_task_id)
            .bind(now_ms() - ORPHAN_AFTER_MS)
            .execute(&self.writes)
            .await?;
            if !affected(orphan) {
                break;
            }
        }
        Ok(Reserved::Duplicate)
    }

    /// Frees the `external_task_id` of a create the client was told failed, so the id can
    /// be used again: the reservation goes if no task was written, and a task that was
    /// (failed at its submit) keeps its callback shape but not the id.
    pub async fn release_kling_task(&self, task_id: &str) -> anyhow::Result<()> {
        let mut tx = self.writes.begin().await?;
        sqlx::query(
            "DELETE FROM facade_tasks WHERE task_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = facade_tasks.task_id)",
        )
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE facade_tasks SET external_task_id = NULL WHERE task_id = $1")
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The id of the owner's task carrying `external_task_id`, if any.
    pub async fn task_id_by_external_id(
        &self,
        owner: &str,
        external_task_id: &str,
    ) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT task_id FROM facade_tasks WHERE api_key_id = $1 AND external_task_id = $2",
        )
        .bind(owner)
        .bind(external_task_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The `external_task_id` of each of `task_ids` that has one.
    pub async fn external_task_ids(
        &self,
        task_ids: &[&str],
    ) -> anyhow::Result<HashMap<String, String>> {
        if task_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let params: Vec<String> = (1..=task_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT task_id, external_task_id FROM facade_tasks \
             WHERE external_task_id IS NOT NULL AND task_id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in task_ids {
            q = q.bind(*id);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("task_id")?, r.try_get("external_task_id")?)))
            .collect()
    }

    /// The shape the task's callbacks are rendered in.
    pub async fn callback_shape(&self, task_id: &str) -> anyhow::Result<CallbackShape> {
        let row = sqlx::query(
            "SELECT callback_shape, external_task_id FROM facade_tasks WHERE task_id = $1",
        )
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(CallbackShape::Omnigate);
        };
        let shape: String = row.try_get("callback_shape")?;
        Ok(match shape.as_str() {
            KLING => CallbackShape::Kling {
                external_task_id: row.try_get("external_task_id")?,
            },
            _ => CallbackShape::Omnigate,
        })
    }

    /// Page `page` (from 1) of the owner's tasks, `size` to a page, newest first.
    pub async fn task_page_numbered(
        &self,
        owner: &str,
        page: u32,
        size: u32,
    ) -> anyhow::Result<TaskPage> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE api_key_id = $1 AND deleted_at IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(i64::from(size) + 1)
            .bind(i64::from(page.saturating_sub(1)) * i64::from(size))
            .fetch_all(&self.pool)
            .await?;
        page_of(&rows, size)
    }

    /// Gives key `api_key_id` the Kling credentials `access_key` and the sealed secret,
    /// replacing any it had: the old pair stops working at once.
    pub async fn set_kling_credentials(
        &self,
        api_key_id: &str,
        access_key: &str,
        secret_sealed: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.writes.begin().await?;
        sqlx::query("DELETE FROM kling_credentials WHERE api_key_id = $1")
            .bind(api_key_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO kling_credentials (access_key, api_key_id, secret_sealed, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(access_key)
        .bind(api_key_id)
        .bind(secret_sealed)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The active key whose Kling access key is `access_key`, with its sealed secret.
    pub async fn kling_credential(
        &self,
        access_key: &str,
    ) -> anyhow::Result<Option<(ApiKey, String)>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, secret_sealed FROM api_keys \
             JOIN kling_credentials ON kling_credentials.api_key_id = api_keys.id \
             WHERE kling_credentials.access_key = $1 AND api_keys.revoked_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(access_key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some((key_from_row(&row)?, row.try_get("secret_sealed")?)))
    }
}
