//! Copies of finished videos (`result_copies`): queued in the transaction that completes a
//! task, claimed by the results worker under a lease, and the facade's deletions and
//! cursor list (`GET /v1/videos`), which read tasks the way the OpenAI API orders them.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::task_record::{page_of, StoredVideo, TaskPage, TaskRecord, TASK_COLUMNS};
use super::{affected, now_ms, Store};
use crate::domain::{VideoRequest, VideoResult};

/// One copy to make (`pending`) or one stored object to remove (`delete_pending`).
#[derive(Debug, Clone)]
pub struct CopyJob {
    pub task_id: String,
    /// Which of the task's videos (its position in `result.videos`).
    pub video_index: i64,
    pub source_url: String,
    pub state: String,
    pub object_key: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// `GET /v1/videos?order=`: by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoOrder {
    Asc,
    Desc,
}

/// What `delete_video` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    /// The task exists but is not finished: there is nothing final to delete yet.
    Unfinished,
    NotFound,
}

const COPY_COLUMNS: &str = "task_id, video_index, source_url, state, object_key, attempts";

fn job_from_row(r: &AnyRow) -> anyhow::Result<CopyJob> {
    Ok(CopyJob {
        task_id: r.try_get("task_id")?,
        video_index: r.try_get("video_index")?,
        source_url: r.try_get("source_url")?,
        state: r.try_get("state")?,
        object_key: r.try_get("object_key")?,
        attempts: r.try_get("attempts")?,
    })
}

/// Where a task's copy of video `index` lives, relative to the configured prefix. The task
/// id and index alone name it, so a retried or repeated copy overwrites the same object
/// instead of leaving two. Video 0 keeps the name it had before tasks had several.
pub fn object_key(task_id: &str, index: usize) -> String {
    match index {
        0 => format!("videos/{task_id}.mp4"),
        i => format!("videos/{task_id}-{i}.mp4"),
    }
}

/// Queues the copy of each of a completing task's videos, in the transaction that
/// completes it: either all are written or none.
pub(super) async fn queue_copy(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    videos: &[VideoResult],
    now: i64,
) -> anyhow::Result<()> {
    for (index, video) in videos.iter().enumerate() {
        sqlx::query(
            "INSERT INTO result_copies (task_id, video_index, source_url, state, object_key, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $5) ON CONFLICT (task_id, video_index) DO NOTHING",
        )
        .bind(task_id)
        .bind(index as i64)
        .bind(&video.url)
        .bind(object_key(task_id, index))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Leases up to `limit` due jobs to `owner` until `lease_until`; `SKIP LOCKED`
    /// (PostgreSQL) lets several processes claim side by side.
    pub async fn claim_copies(
        &self,
        owner: &str,
        lease_until: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<CopyJob>> {
        let sql = format!(
            "UPDATE result_copies SET lease_owner = $1, lease_until = $2 WHERE (task_id, video_index) IN (\
               SELECT task_id, video_index FROM result_copies WHERE state IN ('pending', 'delete_pending') \
               AND next_attempt_at <= $3 AND lease_until <= $3 \
               ORDER BY next_attempt_at LIMIT $4 {skip}) \
             RETURNING {COPY_COLUMNS}",
            skip = self.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now_ms())
            .bind(limit as i64)
            .fetch_all(&self.writes)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The copy is in the object store and its size checked: the task now serves it.
    /// False if the claim was lost (or the client deleted the video meanwhile).
    pub async fn copy_stored(
        &self,
        job: &CopyJob,
        owner: &str,
        bytes: i64,
        content_type: Option<&str>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let done = affected(
            sqlx::query(
                "UPDATE result_copies SET state = 'stored', bytes = $3, content_type = $4, stored_at = $5, \
                 attempts = attempts + 1, last_error = NULL, lease_owner = NULL, lease_until = 0 \
                 WHERE task_id = $1 AND video_index = $6 AND lease_owner = $2 AND state = 'pending'",
            )
            .bind(&job.task_id)
            .bind(owner)
            .bind(bytes)
            .bind(content_type)
            .bind(now)
            .bind(job.video_index)
            .execute(&mut *tx)
            .await?,
        );
        if done {
            // One statement each, so copies of one task's videos finishing together (in
            // several processes) each add their own entry under the row lock.
            let query = if job.video_index == 0 {
                sqlx::query(
                    "UPDATE tasks SET stored_bytes = $2 WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(&job.task_id)
                .bind(bytes)
            } else {
                let entry = StoredVideo {
                    index: job.video_index as usize,
                    bytes,
                };
                sqlx::query(
                    "UPDATE tasks SET stored_videos_json = COALESCE(stored_videos_json, '') || $2 \
                     WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(&job.task_id)
                .bind(format!("{},", serde_json::to_string(&entry)?))
            };
            query.execute(&mut *tx).await?;
            super::live::note_finished_change(&mut tx, &job.task_id).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// An attempt failed: another at `retry_at`, or none (`failed`) when it is None.
    pub async fn copy_failed(
        &self,
        job: &CopyJob,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> anyhow::Result<bool> {
        let error: String = error.chars().take(500).collect();
        Ok(affected(
            sqlx::query(
                "UPDATE result_copies SET state = $4, next_attempt_at = $5, \
                 attempts = attempts + 1, last_error = $3, lease_owner = NULL, lease_until = 0 \
                 WHERE task_id = $1 AND video_index = $7 AND lease_owner = $2 AND state = $6",
            )
            .bind(&job.task_id)
            .bind(owner)
            .bind(error)
            .bind(if retry_at.is_some() {
                job.state.as_str()
            } else {
                "failed"
            })
            .bind(retry_at.unwrap_or_else(now_ms))
            .bind(&job.state)
            .bind(job.video_index)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// The object of a deleted video is gone from the object store.
    pub async fn copy_deleted(&self, job: &CopyJob, owner: &str) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE result_copies SET state = 'deleted', bytes = NULL, lease_owner = NULL, lease_until = 0 \
                 WHERE task_id = $1 AND video_index = $3 AND lease_owner = $2 AND state = 'delete_pending'",
            )
            .bind(&job.task_id)
            .bind(owner)
            .bind(job.video_index)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// The copy video `index` of a task is served from, if one is stored: its object key
    /// and the content type recorded for it.
    pub async fn stored_copy(
        &self,
        task_id: &str,
        index: usize,
    ) -> anyhow::Result<Option<(String, Option<String>)>> {
        let row = sqlx::query(
            "SELECT object_key, content_type FROM result_copies \
             WHERE task_id = $1 AND video_index = $2 AND state = 'stored'",
        )
        .bind(task_id)
        .bind(index as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("object_key")?, r.try_get("content_type")?)))
            .transpose()
    }

    /// `DELETE /v1/videos/{id}`: a finished task of `owner` disappears for it (reads,
    /// lists, content), and its stored copy is queued for removal, in one transaction.
    /// The row itself stays, for usage reports and the spend it was billed.
    ///
    /// The copy row is written before the task row, the order `copy_stored` takes them in
    /// too: PostgreSQL would otherwise let a delete and a finishing copy deadlock.
    pub async fn delete_video(&self, owner: &str, id: &str) -> anyhow::Result<Deleted> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        sqlx::query(
            "UPDATE result_copies SET state = 'delete_pending', next_attempt_at = $3 \
             WHERE task_id = $1 AND state IN ('pending', 'stored', 'failed') \
             AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = $1 AND t.api_key_id = $2 \
               AND t.deleted_at IS NULL AND t.state IN ('completed', 'failed', 'cancelled'))",
        )
        .bind(id)
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let hidden = affected(
            sqlx::query(
                "UPDATE tasks SET deleted_at = $3, stored_bytes = NULL, stored_videos_json = NULL \
                 WHERE id = $1 AND api_key_id = $2 AND deleted_at IS NULL \
                 AND state IN ('completed', 'failed', 'cancelled')",
            )
            .bind(id)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await?,
        );
        if hidden {
            super::live::note_finished_change(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(Deleted::Yes);
        }
        let exists = sqlx::query(
            "SELECT 1 AS one FROM tasks WHERE id = $1 AND api_key_id = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        tx.rollback().await?;
        Ok(if exists {
            Deleted::Unfinished
        } else {
            Deleted::NotFound
        })
    }

    /// The stored requests of `ids` (one query), for what only they know (prompt, size).
    /// A request retention emptied (`{}`) is left out rather than failing the read.
    pub async fn video_requests(
        &self,
        ids: &[&str],
    ) -> anyhow::Result<HashMap<String, VideoRequest>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let params: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, request FROM tasks WHERE id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            let body: String = r.try_get("request")?;
            if let Ok(req) = serde_json::from_str::<VideoRequest>(&body) {
                out.insert(id, req);
            }
        }
        Ok(out)
    }

    /// The owner's tasks in creation order (`asc` or `desc`), after the task `after`
    /// (exclusive); deleted ones are left out.
    pub async fn list_videos(
        &self,
        owner: &str,
        after: Option<&TaskRecord>,
        order: VideoOrder,
        limit: u32,
    ) -> anyhow::Result<TaskPage> {
        let (cmp, dir) = match order {
            VideoOrder::Desc => ("<", "DESC"),
            VideoOrder::Asc => (">", "ASC"),
        };
        let (at, id) = match (after, order) {
            (Some(c), _) => (c.created_at, c.id.clone()),
            (None, VideoOrder::Desc) => (i64::MAX, String::new()),
            (None, VideoOrder::Asc) => (i64::MIN, String::new()),
        };
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE api_key_id = $1 AND deleted_at IS NULL \
             AND (created_at {cmp} $2 OR (created_at = $2 AND id {cmp} $3)) \
             ORDER BY created_at {dir}, id {dir} LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(at)
            .bind(id)
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await?;
        page_of(&rows, limit)
    }
}
