//! Reads of the admission queue for operators: waiting tasks grouped by key and model,
//! with the oldest wait of each, for the gauges worker's metrics and the console's queue
//! view. One grouped read of a partial index of waiting tasks (migration 0019): its cost
//! follows the queue's length, and nothing on a request's path runs it.

use sqlx::Row;

use super::Store;

/// Waiting tasks of one key for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingGroup {
    pub api_key_id: String,
    pub model: String,
    pub waiting: i64,
    /// When the oldest of them began to wait (Unix ms).
    pub oldest_since: i64,
}

impl Store {
    pub(super) fn waiting_groups_sql(&self, one_key: bool) -> String {
        let of_key = if one_key { "AND api_key_id = $1" } else { "" };
        format!(
            "SELECT api_key_id, model, COUNT(*) AS n, MIN(waiting_since) AS oldest FROM tasks {} \
             WHERE state = 'waiting' {of_key} GROUP BY api_key_id, model ORDER BY api_key_id, model",
            self.sqlite_index("tasks_waiting_by_key_model")
        )
    }

    /// Waiting tasks by key and model (only key `api_key_id`'s when given), ordered by key
    /// then model.
    pub async fn waiting_groups(
        &self,
        api_key_id: Option<&str>,
    ) -> anyhow::Result<Vec<WaitingGroup>> {
        let sql = self.waiting_groups_sql(api_key_id.is_some());
        let mut q = sqlx::query(&sql);
        if let Some(key) = api_key_id {
            q = q.bind(key);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(WaitingGroup {
                    api_key_id: r.try_get("api_key_id")?,
                    model: r.try_get("model")?,
                    waiting: r.try_get("n")?,
                    oldest_since: r.try_get::<Option<i64>, _>("oldest")?.unwrap_or_default(),
                })
            })
            .collect()
    }
}
