//! What operators read about the store itself: the gauges behind `/metrics` (unfinished
//! tasks, the oldest of them, poll lag) and, for `/readyz`, whether every migration this
//! binary embeds has been applied.

use sqlx::Row;

use super::{Store, WaitingGroup};
use crate::telemetry::metrics::StoreGauges;

/// The unfinished states, as stored (`submitting` and `submit_unknown` are shown to
/// clients as `queued`, but operators want them apart).
pub const UNFINISHED_STATES: &[&str] = &[
    "waiting",
    "submitting",
    "submit_unknown",
    "queued",
    "in_progress",
];

impl Store {
    /// Unfinished tasks by provider and state, the oldest per provider, and how overdue
    /// the most overdue poll is at `now` (ms). Two queries over indexes of unfinished tasks
    /// only, so the cost follows the work in flight, not the table's history.
    /// The unfinished-task gauges. Waiting tasks are taken from `waiting` (the queue
    /// gauges' groups, read once through their index) rather than counted again here: with
    /// a long queue, a second count of it every interval is what a create would feel.
    pub async fn store_gauges(
        &self,
        now: i64,
        waiting: &[WaitingGroup],
    ) -> anyhow::Result<StoreGauges> {
        let rows = sqlx::query(
            "SELECT COALESCE(provider, '') AS provider, state, COUNT(*) AS n, MIN(created_at) AS oldest \
             FROM tasks WHERE state IN ('submitting', 'submit_unknown', 'queued', 'in_progress') \
             GROUP BY provider, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut g = StoreGauges::default();
        if let Some(oldest) = waiting.iter().map(|w| w.oldest_since).min() {
            // Waiting tasks are at no provider yet.
            g.tasks.push((
                "none".into(),
                "waiting",
                waiting.iter().map(|w| w.waiting).sum(),
            ));
            g.oldest
                .push(("none".into(), (now - oldest).max(0) as f64 / 1000.0));
        }
        for row in rows {
            let provider: String = row.try_get("provider")?;
            let provider = if provider.is_empty() {
                "none".to_string()
            } else {
                provider
            };
            let state: String = row.try_get("state")?;
            let Some(state) = UNFINISHED_STATES.iter().copied().find(|s| *s == state) else {
                continue;
            };
            let n: i64 = row.try_get("n")?;
            let oldest: i64 = row.try_get("oldest")?;
            let age = (now - oldest).max(0) as f64 / 1000.0;
            g.tasks.push((provider.clone(), state, n));
            match g.oldest.iter_mut().find(|(p, _)| *p == provider) {
                Some(o) => o.1 = o.1.max(age),
                None => g.oldest.push((provider, age)),
            }
        }
        // A task under a lease is being polled right now: it is not late.
        let due: Option<i64> = sqlx::query_scalar(&self.poll_lag_sql())
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        g.poll_lag_secs = due.map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
        Ok(g)
    }

    pub(super) fn poll_lag_sql(&self) -> String {
        format!(
            "SELECT MIN(next_poll_at) FROM tasks {} \
             WHERE state IN ('queued', 'in_progress') AND lease_until <= $1",
            self.sqlite_index("tasks_due_poll")
        )
    }

    /// Versions of the migrations embedded in this binary that the database has not
    /// applied successfully (empty: the schema is what this binary expects). Migrations
    /// the database has beyond ours (a newer replica's) do not count.
    pub async fn pending_migrations(&self) -> anyhow::Result<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await?;
        Ok(super::MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }
}
