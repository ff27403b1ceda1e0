//! A task's state changes short of its end: claims and leases for submitters, pollers and
//! reconcilers, the submit's marks and acceptance, and what a poll that ends nothing
//! records.

use super::task_events::{insert_attempt, record_status};
use super::task_record::{
    task_from_row, Acceptance, Attempt, ClaimKind, TaskRecord, TaskState, TASK_COLUMNS,
};
use super::task_writes::AcceptRow;
use super::{affected, now_ms, to_micros, Store};

impl Store {
    /// The submit may have reached the provider but no answer came: hand the task to the
    /// reconciler now, and never to another provider.
    pub async fn mark_submit_unknown(&self, id: &str, owner: &str) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let done = affected(
            sqlx::query(
                "UPDATE tasks SET state = 'submit_unknown', updated_at = $2, next_poll_at = $2, \
                 lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND state = 'submitting' AND lease_owner = $3",
            )
            .bind(id)
            .bind(now)
            .bind(owner)
            .execute(&mut *tx)
            .await?,
        );
        if done {
            record_status(&mut tx, id, TaskState::SubmitUnknown, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points a still-submitting task at the provider about to be tried, so that a crash
    /// during the call leaves a record of where the request may have gone; its submit
    /// mark is cleared until that call starts. False if the claim `token` no longer holds
    /// the task.
    pub async fn set_submit_target(
        &self,
        id: &str,
        token: &str,
        provider: &str,
        sandbox: bool,
        cost_estimated_usd: Option<f64>,
        routing_reason: &str,
    ) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET provider = $2, sandbox = $3, cost_estimated_micros = $4, routing_reason = $5, updated_at = $6, \
                 submit_started_at = NULL \
                 WHERE id = $1 AND state = 'submitting' AND lease_owner = $7",
            )
            .bind(id)
            .bind(provider)
            .bind(sandbox as i64)
            .bind(cost_estimated_usd.map(to_micros))
            .bind(routing_reason)
            .bind(now_ms())
            .bind(token)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// Runs `call` (an upstream call) while holding the task for claim `token`: the lease is
    /// pushed `lease_ms` ahead before the call starts and every third of that while it runs,
    /// so a slow provider (or a long failover) cannot let another claim take over a call
    /// that is still in flight. None, without calling, when the claim is already lost.
    pub async fn while_leased<T>(
        &self,
        id: &str,
        token: &str,
        lease_ms: i64,
        call: impl std::future::Future<Output = T>,
    ) -> anyhow::Result<Option<T>> {
        if !self.extend_lease(id, token, now_ms() + lease_ms).await? {
            tracing::warn!(task_id = %id, "lease lost before an upstream call; not calling");
            return Ok(None);
        }
        Ok(Some(self.keep_leased(id, token, lease_ms, call).await))
    }

    /// `while_leased` for a claim that was just taken with at least `lease_ms` to run: the
    /// lease is only pushed ahead while the call runs.
    pub async fn keep_leased<T>(
        &self,
        id: &str,
        token: &str,
        lease_ms: i64,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(call);
        let every = std::time::Duration::from_millis((lease_ms / 3).max(100) as u64);
        loop {
            tokio::select! {
                out = &mut call => return out,
                _ = tokio::time::sleep(every) => {
                    match self.extend_lease(id, token, now_ms() + lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(task_id = %id, "lease lost during an upstream call"),
                        Err(e) => tracing::warn!(task_id = %id, error = ?e, "could not extend a lease"),
                    }
                }
            }
        }
    }

    /// Holds the task for claim `token` until `until`; false if the claim was lost.
    pub async fn extend_lease(&self, id: &str, token: &str, until: i64) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query("UPDATE tasks SET lease_until = $3 WHERE id = $1 AND lease_owner = $2")
                .bind(id)
                .bind(token)
                .bind(until)
                .execute(&self.writes)
                .await?,
        ))
    }

    /// Counts a resubmit of an unconfirmed submit; false (and nothing counted) when the task
    /// was already resubmitted once or the claim was lost.
    pub async fn count_resubmit(&self, id: &str, token: &str) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET resubmits = resubmits + 1 \
                 WHERE id = $1 AND lease_owner = $2 AND resubmits < 1",
            )
            .bind(id)
            .bind(token)
            .execute(&self.writes)
            .await?,
        ))
    }

    pub async fn record_attempt(&self, task_id: &str, a: &Attempt) -> anyhow::Result<()> {
        let mut tx = self.writes.begin().await?;
        insert_attempt(&mut tx, task_id, a).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The provider accepted the task: record its id (with the attempt that got it, in the
    /// same transaction), slim the stored request, schedule the first poll and release the
    /// hold. Only the claim `token` may write; false if the task was no longer submitting or
    /// another claim had taken it over.
    pub async fn mark_accepted(
        &self,
        id: &str,
        token: &str,
        a: &Acceptance<'_>,
    ) -> anyhow::Result<bool> {
        self.injected_fault()?;
        self.hot_writes.accept(AcceptRow::of(id, token, a)).await
    }

    /// Leases up to `limit` due tasks of one kind to `owner` until `lease_until`.
    pub async fn claim_due(
        &self,
        kind: ClaimKind,
        owner: &str,
        lease_until: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<TaskRecord>> {
        let now = now_ms();
        let rows = sqlx::query(&self.claim_due_sql(kind))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.writes)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    pub(super) fn claim_due_sql(&self, kind: ClaimKind) -> String {
        // Each filter repeats its partial index's WHERE (migration 0005).
        let (filter, index) = match kind {
            ClaimKind::Poll => (
                "state IN ('queued', 'in_progress') AND next_poll_at <= $3",
                "tasks_due_poll",
            ),
            ClaimKind::Reconcile => (
                "state IN ('submitting', 'submit_unknown') AND next_poll_at <= $3",
                "tasks_due_reconcile",
            ),
        };
        format!(
            "UPDATE tasks SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT id FROM tasks {indexed} WHERE {filter} AND lease_until <= $3 \
               ORDER BY next_poll_at LIMIT $4 {skip}) \
             RETURNING {TASK_COLUMNS}",
            indexed = self.sqlite_index(index),
            skip = self.skip_locked()
        )
    }

    /// A poll failed: count it and back off. Releases the lease.
    pub async fn poll_failed(
        &self,
        task: &TaskRecord,
        owner: &str,
        next_poll_at: i64,
    ) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET poll_failures = poll_failures + 1, next_poll_at = $3, \
                 lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(&task.id)
            .bind(owner)
            .bind(next_poll_at)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// A status answer could not be interpreted: count it, keep the answer and poll again at
    /// `next_poll_at`. Releases the lease.
    pub async fn poll_unreadable(
        &self,
        task: &TaskRecord,
        owner: &str,
        raw_answer: Option<&str>,
        next_poll_at: i64,
    ) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET unreadable_answers = unreadable_answers + 1, \
                 last_unreadable_answer = $3, next_poll_at = $4, lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(&task.id)
            .bind(owner)
            .bind(raw_answer)
            .bind(next_poll_at)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// Makes an unfinished, accepted task due for a poll now (an upstream callback said it
    /// moved on). Idempotent: many callbacks before the poll make one poll. A task being
    /// polled right now gets another poll after this one (`apply_poll` keeps a
    /// `next_poll_at` moved during the poll), since that poll may have read the provider
    /// before the change. False when the task is not being polled (finished, or not yet
    /// accepted) or already due.
    pub async fn hasten_poll(&self, id: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        Ok(affected(
            sqlx::query(
                "UPDATE tasks SET next_poll_at = $2 \
                 WHERE id = $1 AND state IN ('queued', 'in_progress') \
                 AND (next_poll_at > $2 OR (lease_until > $2 AND next_poll_at <> $2))",
            )
            .bind(id)
            .bind(now)
            .execute(&self.writes)
            .await?,
        ))
    }
}
