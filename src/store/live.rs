//! What the live task API (`crate::live`) reads: the marks of watched tasks (one query for
//! all of a process's watchers) and the log of changes to finished tasks that cached
//! reads must drop.

use sqlx::{Any, Row, Transaction};

use super::{now_ms, Store, TaskState};

/// Most task ids in one marks query (the rest wait for the next check).
pub const MAX_MARKS_PER_QUERY: usize = 500;

/// What changes whenever a task changes in a way its reader sees: every status change and
/// progress update writes `updated_at`, and the state and progress make two changes within
/// one millisecond differ too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMark {
    pub updated_at: i64,
    pub state: String,
    pub progress: i64,
    pub deleted: bool,
}

impl TaskMark {
    pub fn of(t: &super::TaskRecord) -> TaskMark {
        TaskMark {
            updated_at: t.updated_at,
            state: t.state.as_str().to_string(),
            progress: t.progress,
            deleted: false,
        }
    }

    pub fn is_final(&self) -> bool {
        TaskState::parse(&self.state).is_ok_and(|s| s.public().is_terminal())
    }
}

/// Notes, in the transaction that makes it, a change to a finished task (a stored copy, a
/// deletion) that every process caching the task must drop it for.
pub(super) async fn note_finished_change(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO finished_task_changes (task_id, at) VALUES ($1, $2)")
        .bind(task_id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `note_finished_change` for many tasks at once (retention's pruning of details).
pub(super) async fn note_finished_changes(
    tx: &mut Transaction<'_, Any>,
    task_ids: &[String],
) -> anyhow::Result<()> {
    let now = now_ms();
    for chunk in task_ids.chunks(MAX_MARKS_PER_QUERY) {
        let rows = (0..chunk.len())
            .map(|i| format!("(${}, $1)", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("INSERT INTO finished_task_changes (task_id, at) VALUES {rows}");
        let mut q = sqlx::query(&sql).bind(now);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// The marks of up to `MAX_MARKS_PER_QUERY` tasks by id (primary key lookups); a task
    /// not found is left out.
    pub async fn task_marks(&self, ids: &[String]) -> anyhow::Result<Vec<(String, TaskMark)>> {
        let ids = &ids[..ids.len().min(MAX_MARKS_PER_QUERY)];
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = (1..=ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT id, updated_at, state, progress, deleted_at FROM tasks WHERE id IN ({list})"
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let mark = TaskMark {
                    updated_at: r.try_get("updated_at")?,
                    state: r.try_get("state")?,
                    progress: r.try_get("progress")?,
                    deleted: r.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
                };
                Ok((r.try_get("id")?, mark))
            })
            .collect()
    }

    /// The finished tasks changed (copied or deleted) at or after `since` (ms).
    pub async fn finished_changes_since(&self, since: i64) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT task_id FROM finished_task_changes WHERE at >= $1")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("task_id")?)).collect()
    }

    /// Forgets the notes older than `before` (ms): no process looks back that far.
    pub async fn prune_finished_changes(&self, before: i64) -> anyhow::Result<u64> {
        Ok(
            sqlx::query("DELETE FROM finished_task_changes WHERE at < $1")
                .bind(before)
                .execute(&self.writes)
                .await?
                .rows_affected(),
        )
    }
}
