//! The end of a task: the transactions that fail, complete or end a waiting task, each
//! giving back what the task held from one place (`settle_end`: the key's limits, the
//! provider's slot, the next parked task, the copies of its videos); and the pruning of
//! finished tasks' details.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::limits::{self, HOLD_COLUMNS};
use super::task_events::record_status;
use super::task_record::{PollUpdate, TaskError, TaskRecord, TaskState};
use super::{now_ms, to_micros, Store};
use crate::domain::VideoResult;

/// How a task ended, for what its end gives back.
enum Ending<'a> {
    /// Failed or cancelled: nothing charged, nothing to copy.
    Failed,
    /// Completed with `videos` at `at`: charged, and its videos to be copied.
    Completed {
        videos: &'a [VideoResult],
        sandbox: bool,
        at: i64,
    },
}

impl Store {
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
            unparked = self.settle_end(&mut tx, id, row, Ending::Failed).await?;
        }
        tx.commit().await?;
        self.wake_if_slot_freed(ended.as_ref(), unparked);
        Ok(ended.is_some())
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
                let ending = Ending::Completed {
                    videos,
                    sandbox: task.sandbox,
                    at: now,
                };
                unparked = self.settle_end(&mut tx, &task.id, row, ending).await?;
            }
        }
        tx.commit().await?;
        if state == TaskState::Completed {
            self.wake_if_slot_freed(applied.as_ref(), unparked);
        }
        Ok(applied.is_some())
    }

    /// Ends a task that is waiting (and not claimed by a dispatcher right now) in `state`
    /// (`Failed` with `error`, or `Cancelled`): nothing charged, its reservation and slots
    /// released, its event written. `owner` restricts it to that key's task. False when
    /// the task was not waiting unclaimed.
    pub async fn end_waiting(
        &self,
        id: &str,
        owner: Option<&str>,
        state: TaskState,
        error: Option<&TaskError>,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let of_owner = if owner.is_some() {
            "AND api_key_id = $6"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE tasks SET state = $2, error_code = $3, error_message = $4, updated_at = $5, \
             lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND state = 'waiting' AND lease_until <= $5 {of_owner} \
             RETURNING {HOLD_COLUMNS}"
        );
        let mut q = sqlx::query(&sql)
            .bind(id)
            .bind(state.as_str())
            .bind(error.map(|e| e.code.clone()))
            .bind(error.map(|e| e.message.clone()))
            .bind(now);
        if let Some(owner) = owner {
            q = q.bind(owner);
        }
        let ended = q.fetch_optional(&mut *tx).await?;
        let mut unparked = false;
        if let Some(row) = &ended {
            record_status(&mut tx, id, state, now).await?;
            // Before the key's row, as every transaction orders key_spend and api_keys
            // (see `limits::release`), so this cannot deadlock with a create.
            unparked = self.settle_end(&mut tx, id, row, Ending::Failed).await?;
            let key: String = row.try_get("api_key_id")?;
            sqlx::query("UPDATE api_keys SET queued = queued - 1 WHERE id = $1 AND queued > 0")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.wake_if_slot_freed(ended.as_ref(), unparked);
        Ok(ended.is_some())
    }

    /// Gives back what an ending task held (`limits::release`, in its transaction `tx`)
    /// and, when that was a slot of its key's `max_in_flight`, unparks the key's next
    /// parked task. True when it unparked one (the dispatcher is to be woken).
    async fn release_and_unpark(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: &str,
        row: &AnyRow,
        completed: bool,
    ) -> anyhow::Result<bool> {
        if !limits::release(tx, id, row, completed).await? {
            return Ok(false);
        }
        let key: String = row.try_get("api_key_id")?;
        Ok(sqlx::query(&self.parked_best_sql())
            .bind(&key)
            .fetch_optional(&mut **tx)
            .await?
            .is_some())
    }

    /// Everything an ending task gives back, in the transaction `tx` that ends it and in
    /// this order: what it held (`release_and_unpark`), then for a completed task the
    /// copies of its videos (`results::queue_copy`). True when it unparked a task of its
    /// key (the dispatcher is to be woken).
    async fn settle_end(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: &str,
        row: &AnyRow,
        ending: Ending<'_>,
    ) -> anyhow::Result<bool> {
        let completed = matches!(ending, Ending::Completed { .. });
        let unparked = self.release_and_unpark(tx, id, row, completed).await?;
        if let Ending::Completed {
            videos,
            sandbox,
            at,
        } = ending
        {
            // Sandbox videos are not real: there is nothing to copy.
            if self.copy_results && !sandbox {
                super::results::queue_copy(tx, id, videos, at).await?;
            }
        }
        Ok(unparked)
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
}
