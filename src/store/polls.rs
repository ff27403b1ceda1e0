//! The poller's batch write: tasks a poll found still running (state unchanged) are
//! rescheduled many to one statement. A poll that changes anything else (a state change,
//! an end, a failure) is written per task in `tasks.rs`, in its own transaction; when the
//! store refuses that write, the refusal is counted here.

use super::{now_ms, Store};

/// A task one poll found unchanged, to be polled again at `next_poll_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct StillRunning {
    pub id: String,
    /// The progress to record (never lower than the stored one).
    pub progress: i64,
    pub next_poll_at: i64,
    /// `next_poll_at` as the claim read it. An upstream callback during the poll moved it
    /// (`hasten_poll`): the poll it asked for is still owed, so it is kept.
    pub claimed_next_poll_at: i64,
}

/// Rows per statement: four bound values each, far under either database's limit.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Records one poll of each task in `tasks`, held by claim `owner`: progress, the next
    /// poll time, no failures in a row, and the claim released. A task whose claim was lost
    /// or that finished meanwhile is left alone. Returns how many were written.
    pub async fn reschedule_polls(
        &self,
        owner: &str,
        tasks: &[StillRunning],
    ) -> anyhow::Result<u64> {
        let mut written = 0;
        for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
            written += self.reschedule_chunk(owner, chunk).await?;
        }
        Ok(written)
    }

    /// The store refused to record what a poll of `task` (held by claim `owner`) found:
    /// counts it on the task row, where every gateway process sees it. Below `limit` the
    /// claim is released and the task polled again at `retry_at`; at `limit` the claim is
    /// kept, for the caller to fail the task. None if the claim was lost.
    pub async fn count_store_refusal(
        &self,
        task_id: &str,
        owner: &str,
        limit: i64,
        retry_at: i64,
    ) -> anyhow::Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE tasks SET store_refusals = store_refusals + 1, \
               lease_owner = CASE WHEN store_refusals + 1 >= $3 THEN lease_owner ELSE NULL END, \
               lease_until = CASE WHEN store_refusals + 1 >= $3 THEN lease_until ELSE 0 END, \
               next_poll_at = CASE WHEN store_refusals + 1 >= $3 THEN next_poll_at ELSE $4 END \
             WHERE id = $1 AND lease_owner = $2 RETURNING store_refusals",
        )
        .bind(task_id)
        .bind(owner)
        .bind(limit)
        .bind(retry_at)
        .fetch_optional(&self.writes)
        .await?;
        Ok(row.map(|(n,)| n))
    }

    async fn reschedule_chunk(&self, owner: &str, tasks: &[StillRunning]) -> anyhow::Result<u64> {
        // $1 the claim, $2 the time; then four per row.
        let rows = (0..tasks.len())
            .map(|i| {
                let p = 3 + i * 4;
                format!("(${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH seen (id, progress, next_at, claimed_at) AS (VALUES {rows}) \
             UPDATE tasks SET progress = seen.progress, \
               next_poll_at = CASE WHEN tasks.next_poll_at = seen.claimed_at THEN seen.next_at \
                 ELSE tasks.next_poll_at END, \
               poll_failures = 0, unreadable_answers = 0, updated_at = $2, \
               lease_owner = NULL, lease_until = 0 \
             FROM seen WHERE tasks.id = seen.id AND tasks.lease_owner = $1 \
             AND tasks.state IN ('queued', 'in_progress')"
        );
        let mut query = sqlx::query(&sql).bind(owner).bind(now_ms());
        for t in tasks {
            query = query
                .bind(&t.id)
                .bind(t.progress)
                .bind(t.next_poll_at)
                .bind(t.claimed_next_poll_at);
        }
        Ok(query.execute(&self.writes).await?.rows_affected())
    }
}
