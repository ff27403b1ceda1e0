//! The admission queue's rows: a task that found no provider with room waits in state
//! `waiting`, ordered by a fair-share tag across keys (start-time fair queuing: each key's
//! tasks are spaced `SCALE / weight` apart in virtual time, and the clock is the tag of the
//! last task started). Every statement here reaches waiting tasks through a partial index
//! of them, so its cost does not grow with the queue.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::task_events::record_status;
use super::task_record::{task_from_row, QueueSpot, TaskRecord, TaskState, TASK_COLUMNS};
use super::{affected, now_ms, Store};

/// Virtual time one task of a key of weight 1 takes.
const SCALE: i64 = 1_000_000;

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
    /// The task holds no slot of its key's `max_in_flight` (its key was at the limit when
    /// it was written): if the key still is, it waits parked until one of its tasks ends.
    pub needs_key_slot: bool,
}

/// What the dispatcher's claim found at the head of the queue.
#[derive(Debug)]
pub enum Claimed {
    /// A task, moved to `submitting` under the claim (holding its key's slot if it needs one).
    Task(Box<TaskRecord>),
    /// The head's key is at its `max_in_flight`: the task was parked (it no longer stands
    /// in the dispatcher's way) until one of its key's tasks ends.
    Parked,
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
               SELECT id FROM tasks {} WHERE state = 'waiting' AND queue_parked = 0 AND lease_until <= $3 \
               ORDER BY queue_tag LIMIT 1 {}) \
             RETURNING id, api_key_id, queue_tag, queue_priority, waiting_since, holds_slot",
            self.sqlite_index("tasks_waiting_ready"),
            self.skip_locked()
        )
    }

    /// The parked task of key $1 that starts first (its `rank`: priority, age, tag). Skips a row another
    /// transaction holds (a cancel or deadline ending it), which could otherwise deadlock
    /// with this one over the key's rows.
    pub(super) fn parked_best_sql(&self) -> String {
        format!(
            "UPDATE tasks SET queue_parked = 0 WHERE id IN (\
               SELECT id FROM tasks {} WHERE state = 'waiting' AND queue_parked = 1 AND api_key_id = $1 \
               ORDER BY queue_priority, waiting_since, queue_tag LIMIT 1 {}) RETURNING id",
            self.sqlite_index("tasks_waiting_parked"),
            self.skip_locked()
        )
    }

    pub(super) fn key_best_sql(&self) -> String {
        format!(
            "SELECT id, queue_tag, queue_priority, waiting_since, holds_slot FROM tasks {} \
             WHERE state = 'waiting' AND api_key_id = $1 AND lease_until <= $2 \
             ORDER BY queue_priority, waiting_since, queue_tag LIMIT 1 {}",
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
        let mut tx = self.writes.begin().await?;
        // The key's row stays locked to the commit: a task of the key ending meanwhile
        // either freed its slot before (the task is not parked) or unparks it after.
        let key = sqlx::query(
            "UPDATE api_keys SET queued = queued + 1, queue_tag = \
               CASE WHEN queue_tag > (SELECT vtime FROM queue_clock WHERE id = 1) THEN queue_tag \
                 ELSE (SELECT vtime FROM queue_clock WHERE id = 1) END \
               + $2 / CASE WHEN queue_weight < 1 THEN 1 ELSE queue_weight END \
             WHERE id = $1 AND queued < COALESCE(max_queued, $3) \
             RETURNING queue_tag, in_flight, max_in_flight",
        )
        .bind(e.api_key_id)
        .bind(SCALE)
        .bind(i64::try_from(e.default_max_queued).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key) = key else {
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
        // Read under the key's lock, as its tag is: the key's tasks then have `waiting_since`
        // in the order they joined (read before it, a later joiner could show an earlier time).
        let now = now_ms();
        let tag: i64 = key.try_get("queue_tag")?;
        let parked = e.needs_key_slot && key_full(&key)?;
        let moved = sqlx::query(
            "UPDATE tasks SET state = 'waiting', queue_tag = $3, queue_priority = $4, \
             waiting_since = $5, max_wait_until = $6, updated_at = $5, lease_owner = NULL, lease_until = 0, \
             queue_parked = $7 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'submitting'",
        )
        .bind(e.id)
        .bind(e.token)
        .bind(tag)
        .bind(e.priority)
        .bind(now)
        .bind(e.max_wait_until)
        .bind(i64::from(parked))
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
    /// share is unchanged. A task without a slot of its key's `max_in_flight` takes one
    /// here; if the key has none free, the head is parked instead (`Claimed::Parked`).
    /// Advances the queue's clock to the started tag. None when no task waits unclaimed.
    /// The claimed task's `queue` is the place it left.
    pub async fn claim_waiting(&self, token: &str) -> anyhow::Result<Option<Claimed>> {
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
        let head_rank = rank(&head)?;
        // The key's row, locked to the commit (before any other task of the key, as a
        // task's end locks it before unparking one): its slots cannot change meanwhile.
        let key_row = sqlx::query(
            "UPDATE api_keys SET queued = queued WHERE id = $1 RETURNING in_flight, max_in_flight",
        )
        .bind(&key)
        .fetch_one(&mut *tx)
        .await?;
        let limited = key_row
            .try_get::<Option<i64>, _>("max_in_flight")?
            .is_some();
        let full = key_full(&key_row)?;
        let needs_slot = |holds: i64| limited && holds == 0;
        let head_holds: i64 = head.try_get("holds_slot")?;
        if full && needs_slot(head_holds) {
            sqlx::query(
                "UPDATE tasks SET queue_parked = 1, lease_owner = NULL, lease_until = 0 WHERE id = $1",
            )
            .bind(&head_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(Claimed::Parked));
        }
        let best = sqlx::query(&self.key_best_sql())
            .bind(&key)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let (mut chosen, mut chosen_holds) = (head_id.clone(), head_holds);
        if let Some(best) = best {
            let best_holds: i64 = best.try_get("holds_slot")?;
            if rank(&best)? < head_rank && !(full && needs_slot(best_holds)) {
                let best_id: String = best.try_get("id")?;
                let best_tag: i64 = best.try_get("queue_tag")?;
                // The head takes the best's place, unparked (the dispatcher checks it anew).
                sqlx::query(
                    "UPDATE tasks SET queue_tag = $2, queue_parked = 0, lease_owner = NULL, lease_until = 0 \
                     WHERE id = $1",
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
                (chosen, chosen_holds) = (best_id, best_holds);
            }
        }
        let takes_slot = needs_slot(chosen_holds);
        sqlx::query(
            "UPDATE tasks SET state = 'submitting', lease_owner = $2, lease_until = $3, updated_at = $4, \
             queue_parked = 0, holds_slot = CASE WHEN $5 = 1 THEN 1 ELSE holds_slot END WHERE id = $1",
        )
        .bind(&chosen)
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(takes_slot))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE api_keys SET queued = CASE WHEN queued > 0 THEN queued - 1 ELSE 0 END, \
             in_flight = in_flight + $2 WHERE id = $1",
        )
        .bind(&key)
        .bind(i64::from(takes_slot))
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
        let mut task = task_from_row(&row)?;
        // Now `submitting`, it no longer shows a place; the dispatcher still needs the one
        // it left (its wait is measured from it).
        task.queue = Some(QueueSpot {
            tag: head_tag,
            waiting_since: row
                .try_get::<Option<i64>, _>("waiting_since")?
                .unwrap_or(now),
            max_wait_until: row
                .try_get::<Option<i64>, _>("max_wait_until")?
                .unwrap_or(now),
        });
        Ok(Some(Claimed::Task(Box::new(task))))
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

    /// Whether any task waits unclaimed and not parked (a read).
    pub async fn any_waiting(&self) -> anyhow::Result<bool> {
        let sql = format!(
            "SELECT id FROM tasks {} WHERE state = 'waiting' AND queue_parked = 0 AND lease_until <= $1 LIMIT 1",
            self.sqlite_index("tasks_waiting_ready")
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
}

/// A waiting task's turn among its key's (priority, then age, then the tag: the order it
/// joined, which tells apart tasks that joined in the same millisecond). Every choice
/// within a key (the claim's, the unpark's) orders by it, so they agree with each other.
fn rank(row: &AnyRow) -> anyhow::Result<(i64, i64, i64)> {
    Ok((
        row.try_get("queue_priority")?,
        row.try_get("waiting_since")?,
        row.try_get("queue_tag")?,
    ))
}

/// Whether a key's row (`in_flight`, `max_in_flight`) has no slot free.
fn key_full(row: &AnyRow) -> anyhow::Result<bool> {
    let in_flight: i64 = row.try_get("in_flight")?;
    let max: Option<i64> = row.try_get("max_in_flight")?;
    Ok(max.is_some_and(|m| in_flight >= m))
}
