//! What providers' finished tasks say about them: completion times per provider and group
//! (`model|mode|seconds`) and outcomes after acceptance. Both are computed from bounded
//! reads of recent tasks (`timing/` does the arithmetic) and kept in two small tables that
//! every gateway process reads; one process per period takes the turn to refresh them.

use sqlx::Row;

use super::{affected, Store};

/// A provider's completion times in one group, accepted to completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionTime {
    pub provider: String,
    pub timing_key: String,
    pub p10_ms: i64,
    pub p50_ms: i64,
    pub p90_ms: i64,
    /// Finished tasks the percentiles were taken from.
    pub samples: i64,
}

/// A provider's outcomes after acceptance over the health window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TaskOutcomes {
    /// Accepted tasks that completed.
    pub completed: i64,
    /// Accepted tasks that then failed (at the provider, or never finished in time).
    pub failed_after_accept: i64,
    /// Tasks the provider refused for their content (at submit or after).
    pub moderated: i64,
    /// Unfinished tasks running far past their group's p90 (`poller.stuck_factor` times).
    pub stuck: i64,
}

impl TaskOutcomes {
    /// Completed among the accepted tasks that ended, and the stuck ones; None below
    /// `min_tasks` of them.
    pub fn completed_rate(&self, min_tasks: u32) -> Option<f64> {
        let ended = self.completed + self.failed_after_accept + self.stuck;
        (ended > 0 && ended >= i64::from(min_tasks)).then(|| self.completed as f64 / ended as f64)
    }
}

/// One finished task, as the refresh reads it.
#[derive(Debug, Clone)]
pub struct FinishedTask {
    pub provider: String,
    pub timing_key: Option<String>,
    pub completed: bool,
    pub error_code: Option<String>,
    pub accepted_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
}

/// One unfinished accepted task, as the refresh reads it.
#[derive(Debug, Clone)]
pub struct RunningTask {
    pub provider: String,
    pub timing_key: Option<String>,
    pub accepted_at: i64,
}

impl Store {
    /// Takes the refresh turn if nobody took it in the last `every_ms`: true for exactly
    /// one caller per period, across every process sharing the database.
    pub async fn take_timing_turn(&self, now: i64, every_ms: i64) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE completion_times_refresh SET refreshed_at = $1 WHERE id = 1 AND refreshed_at <= $2",
            )
            .bind(now)
            .bind(now - every_ms)
            .execute(&self.writes)
            .await?,
        ))
    }

    pub(super) fn finished_tasks_sql(&self) -> String {
        format!(
            "SELECT provider, timing_key, state, error_code, accepted_at, completed_at, updated_at \
             FROM tasks {} WHERE state IN ('completed', 'failed') AND details_pruned_at IS NULL \
             AND updated_at >= $1 AND provider IS NOT NULL ORDER BY updated_at DESC LIMIT $2",
            self.sqlite_index("tasks_finished")
        )
    }

    /// The last `limit` tasks that finished since `since` (newest first), through the
    /// finished-tasks index: the refresh's cost is bounded by `limit`, not by the store.
    pub async fn finished_tasks(
        &self,
        since: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<FinishedTask>> {
        let rows = sqlx::query(&self.finished_tasks_sql())
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FinishedTask {
                    provider: r.try_get("provider")?,
                    timing_key: r.try_get("timing_key")?,
                    completed: r.try_get::<String, _>("state")? == "completed",
                    error_code: r.try_get("error_code")?,
                    accepted_at: r.try_get("accepted_at")?,
                    completed_at: r.try_get("completed_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    pub(super) fn long_running_sql(&self) -> String {
        format!(
            "SELECT provider, timing_key, accepted_at FROM tasks {} \
             WHERE state IN ('queued', 'in_progress') AND created_at < $1 AND accepted_at IS NOT NULL \
             ORDER BY created_at LIMIT $2",
            self.sqlite_index("tasks_by_state_created")
        )
    }

    /// Up to `limit` accepted, unfinished tasks created before `before`, oldest first.
    pub async fn long_running_tasks(
        &self,
        before: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<RunningTask>> {
        let rows = sqlx::query(&self.long_running_sql())
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RunningTask {
                    provider: r
                        .try_get::<Option<String>, _>("provider")?
                        .unwrap_or_default(),
                    timing_key: r.try_get("timing_key")?,
                    accepted_at: r.try_get("accepted_at")?,
                })
            })
            .collect()
    }

    /// Replaces both tables in one transaction: readers see the old figures or the new.
    pub async fn replace_timing(
        &self,
        times: &[CompletionTime],
        outcomes: &[(String, TaskOutcomes)],
        now: i64,
    ) -> anyhow::Result<()> {
        let mut tx = self.writes.begin().await?;
        sqlx::query("DELETE FROM completion_times")
            .execute(&mut *tx)
            .await?;
        for t in times {
            sqlx::query(
                "INSERT INTO completion_times (provider, timing_key, p10_ms, p50_ms, p90_ms, samples, refreshed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.provider)
            .bind(&t.timing_key)
            .bind(t.p10_ms)
            .bind(t.p50_ms)
            .bind(t.p90_ms)
            .bind(t.samples)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM provider_task_outcomes")
            .execute(&mut *tx)
            .await?;
        for (provider, o) in outcomes {
            sqlx::query(
                "INSERT INTO provider_task_outcomes (provider, completed, failed_after_accept, moderated, stuck, refreshed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(provider)
            .bind(o.completed)
            .bind(o.failed_after_accept)
            .bind(o.moderated)
            .bind(o.stuck)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every provider's completion times, as last refreshed.
    pub async fn completion_times(&self) -> anyhow::Result<Vec<CompletionTime>> {
        let rows = sqlx::query(
            "SELECT provider, timing_key, p10_ms, p50_ms, p90_ms, samples FROM completion_times",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CompletionTime {
                    provider: r.try_get("provider")?,
                    timing_key: r.try_get("timing_key")?,
                    p10_ms: r.try_get("p10_ms")?,
                    p50_ms: r.try_get("p50_ms")?,
                    p90_ms: r.try_get("p90_ms")?,
                    samples: r.try_get("samples")?,
                })
            })
            .collect()
    }

    /// Every provider's outcomes after acceptance, as last refreshed.
    pub async fn task_outcomes(&self) -> anyhow::Result<Vec<(String, TaskOutcomes)>> {
        let rows = sqlx::query(
            "SELECT provider, completed, failed_after_accept, moderated, stuck FROM provider_task_outcomes",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("provider")?,
                    TaskOutcomes {
                        completed: r.try_get("completed")?,
                        failed_after_accept: r.try_get("failed_after_accept")?,
                        moderated: r.try_get("moderated")?,
                        stuck: r.try_get("stuck")?,
                    },
                ))
            })
            .collect()
    }
}
