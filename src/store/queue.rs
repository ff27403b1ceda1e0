//! The admission queue's rows: a task that found no provider with room waits in state
//! `waiting`, ordered by a fair-share tag across keys (start-time fair queuing: each key's
//! tasks are spaced `SCALE / weight` apart in virtual time, and the clock is the tag of the
//! last task started). Every statement here reaches waiting tasks through a partial index
//! of them, so its cost does not grow with the queue.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::limits::{self, HOLD_COLUMNS};
use super::tasks::{record_status, TaskError, TaskRecord, TaskState, TASK_COLUMNS};
use super::{affected, now_ms, Store};

/// Virtual time one task of a key of weight 1 takes.
const SCALE: i64 = 1_000_000;

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

/// How a task is to wait.
#[derive(Debug, Clone, Copy)]
pub struct Enqueue<'a> {
    pub id: &'a str,
    /// The submit's claim, which must still hold the task.
    pub token: &'a str,
    pub api_key_id: &'a str,
    /// 0 high, 1 normal, 2 low.
    pub priority: i64,
    pub max_wait_until: i64,
    /// `queue.default_max_queued`, for a key without its own `max_queued`.
    pub default_max_queued: u64,
}

/// What became of an enqueue.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    Waiting(QueueSpot),
    /// The key has `max_queued` tasks waiting already; nothing changed.
    QueueFull {
        max_queued: i64,
    },
    /// Another claim holds the task.
    LeaseLost,
}

/// Lease of a dispatcher's claim on a waiting task while it is submitted (pushed ahead
/// before each provider call, as for any submit).
const DISPATCH_LEASE_MS: i64 = 30_000;

/// Each statement that reads the queue, through its partial index (migration 0018; on
/// SQLite named, as its planner has no statistics to find it).
impl Store {
    pub(super) fn queue_position_sql(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM tasks {} WHERE state = 'waiting' AND queue_tag < $1",
            self.sqlite_index("tasks_waiting_tag")
        )
    }

    pub(super) fn claim_head_sql(&self) -> String {
        format!(
            "UPDATE tasks SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM tasks {} WHERE state = 'waiting' AND lease_until <= $3 \
               ORDER BY queue_tag LIMIT 1 {}) \
             RETURNING id, api_key_id, queue_tag, queue_priority, waiting_since",
            self.sqlite_index("tasks_waiting_tag"),
            self.skip_locked()
        )
    }

    pub(super) fn key_best_sql(&self) -> String {
        format!(
            "SELECT id, queue_tag, queue_priority, waiting_since FROM tasks {} \
             WHERE state = 'waiting' AND api_key_id = $1 AND lease_until <= $2 \
             ORDER BY queue_priority, waiting_since LIMIT 1 {}",
            self.sqlite_index("tasks_waiting_key"),
            self.skip_locked()
        )
    }

    pub(super) fn past_deadline_sql(&self) -> String {
        format!(
            "SELECT id FROM tasks {} WHERE state = 'waiting' AND max_wait_until <= $1 \
             ORDER BY max_wait_until LIMIT $2",
            self.sqlite_index("tasks_waiting_deadline")
        )
    }
}

impl Store {
    /// Moves a task its submit could not place into the queue: its fair-share tag, its
    /// key's count of waiting tasks (refused past `max_queued`) and its lease, in one
    /// transaction. The task keeps its budget reservation and key slot.
    pub async fn enqueue(&self, e: &Enqueue<'_>) -> anyhow::Result<Enqueued> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let tag: Option<i64> = sqlx::query_scalar(
            "UPDATE api_keys SET queued = queued + 1, queue_tag = \
               CASE WHEN queue_tag > (SELECT vtime FROM queue_clock WHERE id = 1) THEN queue_tag \
                 ELSE (SELECT vtime FROM queue_clock WHERE id = 1) END \
               + $2 / CASE WHEN queue_weight < 1 THEN 1 ELSE queue_weight END \
             WHERE id = $1 AND queued < COALESCE(max_queued, $3) RETURNING queue_tag",
        )
        .bind(e.api_key_id)
        .bind(SCALE)
        .bind(i64::try_from(e.default_max_queued).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(tag) = tag else {
            tx.rollback().await?;
            let max_queued: Option<i64> =
                sqlx::query_scalar("SELECT max_queued FROM api_keys WHERE id = $1")
                    .bind(e.api_key_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .flatten();
            return Ok(Enqueued::QueueFull {
                max_queued: max_queued
                    .unwrap_or(i64::try_from(e.default_max_queued).unwrap_or(i64::MAX)),
            });
        };
        let moved = sqlx::query(
            "UPDATE tasks SET state = 'waiting', queue_tag = $3, queue_priority = $4, \
             waiting_since = $5, max_wait_until = $6, updated_at = $5, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'submitting'",
        )
        .bind(e.id)
        .bind(e.token)
        .bind(tag)
        .bind(e.priority)
        .bind(now)
        .bind(e.max_wait_until)
        .execute(&mut *tx)
        .await?;
        if !affected(moved) {
            tx.rollback().await?;
            return Ok(Enqueued::LeaseLost);
        }
        record_status(&mut tx, e.id, TaskState::Waiting, now).await?;
        tx.commit().await?;
        Ok(Enqueued::Waiting(QueueSpot {
            tag,
            waiting_since: now,
            max_wait_until: e.max_wait_until,
        }))
    }

    /// Tasks waiting ahead of a task with fair-share tag `tag`, plus one: 1 starts next.
    /// Counts entries of the waiting tasks' index up to the tag, not the table.
    pub async fn queue_position(&self, tag: i64) -> anyhow::Result<i64> {
        let ahead: i64 = sqlx::query_scalar(&self.queue_position_sql())
            .bind(tag)
            .fetch_one(&self.pool)
            .await?;
        Ok(ahead + 1)
    }

    /// Claims the next waiting task for claim `token` and moves it to `submitting`: the
    /// task with the lowest tag, or, when its key has a task of higher priority (or the
    /// same priority and waiting longer), that one, the two swapping tags so the key's
    /// share is unchanged. Advances the queue's clock to the started tag. None when no
    /// task waits unclaimed.
    pub async fn claim_waiting(&self, token: &str) -> anyhow::Result<Option<TaskRecord>> {
        let now = now_ms();
        let lease_until = now + DISPATCH_LEASE_MS;
        let mut tx = self.writes.begin().await?;
        // A write first: SQLite takes its write lock at once, and on PostgreSQL the row lock
        // (with SKIP LOCKED) keeps two dispatchers off the same head.
        let Some(head) = sqlx::query(&self.claim_head_sql())
            .bind(token)
            .bind(lease_until)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let head_id: String = head.try_get("id")?;
        let key: String = head.try_get("api_key_id")?;
        let head_tag: i64 = head.try_get("queue_tag")?;
        let head_rank = (
            head.try_get::<i64, _>("queue_priority")?,
            head.try_get::<i64, _>("waiting_since")?,
        );
        let best = sqlx::query(&self.key_best_sql())
            .bind(&key)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let mut chosen = head_id.clone();
        if let Some(best) = best {
            let rank = (
                best.try_get::<i64, _>("queue_priority")?,
                best.try_get::<i64, _>("waiting_since")?,
            );
            if rank < head_rank {
                let best_id: String = best.try_get("id")?;
                let best_tag: i64 = best.try_get("queue_tag")?;
                sqlx::query(
                    "UPDATE tasks SET queue_tag = $2, lease_owner = NULL, lease_until = 0 WHERE id = $1",
                )
                .bind(&head_id)
                .bind(best_tag)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE tasks SET queue_tag = $2 WHERE id = $1")
                    .bind(&best_id)
                    .bind(head_tag)
                    .execute(&mut *tx)
                    .await?;
                chosen = best_id;
            }
        }
        sqlx::query(
            "UPDATE tasks SET state = 'submitting', lease_owner = $2, lease_until = $3, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(&chosen)
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE api_keys SET queued = queued - 1 WHERE id = $1 AND queued > 0")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE queue_clock SET vtime = CASE WHEN vtime < $1 THEN $1 ELSE vtime END WHERE id = 1",
        )
        .bind(head_tag)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(&chosen)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(super::tasks::task_from_row(&row)?))
    }

    /// Puts a claimed task back in the queue with its tag (no provider had room after all).
    /// False if claim `token` no longer holds it.
    pub async fn requeue(&self, id: &str, token: &str) -> anyhow::Result<bool> {
        let mut tx = self.writes.begin().await?;
        let row = sqlx::query(
            "UPDATE tasks SET state = 'waiting', lease_owner = NULL, lease_until = 0, updated_at = $3 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'submitting' AND queue_tag IS NOT NULL \
             RETURNING api_key_id",
        )
        .bind(id)
        .bind(token)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = &row {
            sqlx::query("UPDATE api_keys SET queued = queued + 1 WHERE id = $1")
                .bind(row.try_get::<String, _>("api_key_id")?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// Whether any task waits unclaimed (a read).
    pub async fn any_waiting(&self) -> anyhow::Result<bool> {
        let sql = format!(
            "SELECT id FROM tasks {} WHERE state = 'waiting' AND lease_until <= $1 LIMIT 1",
            self.sqlite_index("tasks_waiting_tag")
        );
        Ok(sqlx::query(&sql)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Waiting tasks past their deadline, oldest deadline first, at most `limit`.
    pub async fn waiting_past_deadline(&self, limit: u32) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(&self.past_deadline_sql())
            .bind(now_ms())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
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
        if let Some(row) = &ended {
            record_status(&mut tx, id, state, now).await?;
            // Before the key's row, as every transaction orders key_spend and api_keys
            // (see `limits::release`), so this cannot deadlock with a create.
            limits::release(&mut tx, id, row, false).await?;
            let key: String = row.try_get("api_key_id")?;
            sqlx::query("UPDATE api_keys SET queued = queued - 1 WHERE id = $1 AND queued > 0")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ended.is_some())
    }
}
