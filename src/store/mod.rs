//! The task store: tasks, their status history and submit attempts, and API keys.
//! One set of portable SQL runs on PostgreSQL (production, many gateway processes) and
//! on SQLite (the embedded single-machine default), chosen by the database URL.

mod batch;
mod capacity;
mod console;
mod facade;
mod health;
mod key_admin;
mod keys;
mod limits;
mod live;
mod observe;
mod polls;
mod queue;
mod queue_view;
mod results;
mod task_claims;
mod task_create;
mod task_events;
mod task_finish;
mod task_reads;
mod task_record;
mod task_writes;
mod timing;
mod usage;
mod webhooks;

pub use capacity::{ConfiguredCap, ProviderCapacity};
pub use console::{ConsoleSession, OutcomeSlot, SignedInWith, TaskFilter, UsageCell};
pub use facade::{CallbackShape, Reserved};
pub use health::{BucketTotals, BucketWrite, CircuitError, CircuitRow};
pub use key_admin::{check_label, new_webhook_secret, IssuedKey, KeyChange, KeyInfo};
pub use keys::{ApiKey, BudgetPeriod, KeyLimits, NewApiKey, KEY_CACHE_TTL};
pub use limits::{period_start, Budget, Holds, LimitRefusal};
pub use live::{TaskMark, MAX_MARKS_PER_QUERY};
pub use observe::UNFINISHED_STATES;
pub use polls::StillRunning;
pub use queue::{Claimed, Enqueue, Enqueued};
pub use queue_view::WaitingGroup;
pub use results::{object_key, CopyJob, Deleted, VideoOrder};
pub use task_record::{
    lease_token, Acceptance, Attempt, ClaimKind, IdempotencyClaim, Inserted, NewTask, PollUpdate,
    QueueSpot, StatusChange, StoredVideo, TaskDetail, TaskError, TaskPage, TaskRecord, TaskState,
};
pub use timing::{CompletionTime, FinishedTask, RunningTask, TaskOutcomes};
pub use usage::{GroupBy, UsageRow};
pub use webhooks::{EventNext, Redelivery, WebhookAttempt, WebhookEvent};

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
pub struct Store {
    /// Reads, and writes on PostgreSQL.
    pool: AnyPool,
    /// Writes: on SQLite one connection of its own, on PostgreSQL the same pool.
    writes: AnyPool,
    backend: Backend,
    /// Acceptance writes still to fail on purpose (see `fail_next_acceptance_writes`).
    injected_faults: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// The create path's two writes, batched across concurrent requests (group commit).
    hot_writes: std::sync::Arc<task_writes::HotWrites>,
    /// Recently authenticated API keys (see `keys.rs`).
    keys: std::sync::Arc<keys::KeyCache>,
    /// `results.enabled`: a task's completion also queues the copy of its video.
    pub copy_results: bool,
    /// Woken when a task ending in this process gave back a provider's slot: the
    /// dispatcher (`queue/`) starts a waiting task at once instead of at its next tick.
    pub slot_freed: std::sync::Arc<tokio::sync::Notify>,
    /// When (Unix ms) the earliest wake of `slot_freed` not yet served happened; 0 when
    /// none waits. The dispatcher's latency is measured from it (`queue/dispatcher.rs`).
    pub slot_freed_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects and brings the schema up to date, with the default timeouts.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        Store::connect_with(&crate::config::database::DatabaseConfig {
            url: url.to_string(),
            max_connections,
            ..crate::config::database::DatabaseConfig::default()
        })
        .await
    }

    /// Connects with `db`'s settings, among them its bounds: waiting for a connection
    /// (`acquire_timeout_secs`, which also bounds opening one) and running one statement
    /// (`statement_timeout_secs`; on SQLite, waiting for the write lock). A database outage
    /// then fails a request within the acquire timeout instead of holding it.
    pub async fn connect_with(
        db: &crate::config::database::DatabaseConfig,
    ) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if db.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite if !db.url.contains("mode=") => {
                let sep = if db.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}mode=rwc", db.url)
            }
            _ => db.url.clone(),
        };
        let pool = pool_options(backend, db, db.max_connections)
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?;
        MIGRATOR
            .run(&pool)
            .await
            .context("running database migrations")?;
        // SQLite has one writer at a time: writers queueing in the pool for one connection
        // take turns in order, where several connections would each spin on the file lock.
        let writes = match backend {
            Backend::Postgres => pool.clone(),
            Backend::Sqlite => pool_options(backend, db, 1)
                .connect(&url)
                .await
                .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?,
        };
        Ok(Store {
            hot_writes: std::sync::Arc::new(task_writes::HotWrites::start(
                &writes,
                backend,
                db.max_connections,
            )),
            pool,
            writes,
            backend,
            injected_faults: Default::default(),
            keys: Default::default(),
            copy_results: false,
            slot_freed: Default::default(),
            slot_freed_at: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool to write through (see `writes`).
    pub fn writer(&self) -> &AnyPool {
        &self.writes
    }

    /// `FOR UPDATE SKIP LOCKED` where the database has it: replicas claiming due rows at
    /// the same moment each get different rows. SQLite serializes writers, so the
    /// claiming UPDATE alone is enough there.
    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// `INDEXED BY index` on SQLite, for a query of `tasks` that must use one of its
    /// partial indexes: without statistics SQLite's planner prefers `tasks_by_state_created`
    /// for any `state IN (...)`, and then scans every task in those states on each claim,
    /// a cost that grows with the tasks in flight. PostgreSQL's planner has statistics.
    fn sqlite_index(&self, index: &'static str) -> String {
        match self.backend {
            Backend::Postgres => String::new(),
            Backend::Sqlite => format!("INDEXED BY {index}"),
        }
    }

    /// Fault drill: the next `n` writes that record a provider's acceptance fail as a
    /// database error would, to show that an accepted task is neither lost nor paid twice.
    pub fn fail_next_acceptance_writes(&self, n: u32) {
        self.injected_faults
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Takes one injected fault, if any is left.
    fn injected_fault(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self
            .injected_faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match left {
            Ok(_) => anyhow::bail!("injected store fault (drill)"),
            Err(_) => Ok(()),
        }
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Dollars as the store keeps them: whole micros.
pub(super) fn to_micros(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}

fn from_micros(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// SQLite's page cache is 2 MB per connection by default: once the task table's indexes
/// outgrow it, inserts read pages back through the kernel and the sustained create rate
/// decays as the store grows. Each connection may cache 16 MB, and maps the first
/// `database.sqlite_mmap_mib` of the file (shared through the OS page cache).
const SQLITE_CACHE_KIB: u64 = 16 * 1024;

/// The pool settings both stores share, and each connection's session settings.
fn pool_options(
    backend: Backend,
    db: &crate::config::database::DatabaseConfig,
    max_connections: u32,
) -> AnyPoolOptions {
    let session = std::sync::Arc::new(session_settings(backend, db));
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(db.acquire_timeout())
        // sqlx pings every connection before handing it out by default: a round trip per
        // statement. A connection that broke while idle fails its statement instead (an
        // error the caller already handles, as for an outage) and is then dropped.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            let session = session.clone();
            Box::pin(async move {
                conn.execute(session.as_str()).await?;
                Ok(())
            })
        })
}

/// What each new connection runs first.
fn session_settings(backend: Backend, db: &crate::config::database::DatabaseConfig) -> String {
    let statement_ms = db.statement_timeout().as_millis().max(1);
    match backend {
        // WAL lets readers run beside the single writer; the busy timeout makes concurrent
        // writers wait (a bounded time) instead of failing. synchronous = NORMAL syncs the
        // WAL at checkpoints, not at every commit: a commit survives a crash of the
        // process; only an OS crash or power loss can take back the last commits.
        Backend::Sqlite => format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = {statement_ms}; PRAGMA foreign_keys = ON; \
             PRAGMA mmap_size = {}; PRAGMA cache_size = -{SQLITE_CACHE_KIB};",
            db.sqlite_mmap_mib.saturating_mul(1 << 20)
        ),
        Backend::Postgres => format!("SET statement_timeout = {statement_ms}"),
    }
}

fn affected(r: AnyQueryResult) -> bool {
    r.rows_affected() > 0
}

/// Hides a password in a connection URL before it reaches a log or an error.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("*****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Deletes the rows of `table` whose `column` is one of `ids` (the retention workers'
/// batches: a few hundred ids at most, bound one by one).
async fn delete_where_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    column: &str,
    ids: &[String],
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = (1..=ids.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("DELETE FROM {table} WHERE {column} IN ({list})");
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// The index each statement that runs on every worker tick must use on SQLite, where
    /// the planner has no statistics to find it.
    #[tokio::test]
    async fn sqlite_ticks_use_their_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plans.db").display());
        let store = Store::connect(&url, 1).await.unwrap();
        let statements = [
            (
                store.claim_due_sql(ClaimKind::Poll),
                "tasks",
                "tasks_due_poll",
            ),
            (
                store.claim_due_sql(ClaimKind::Reconcile),
                "tasks",
                "tasks_due_reconcile",
            ),
            (store.prune_finished_sql(), "tasks", "tasks_finished"),
            (
                store.prune_webhook_events_sql(),
                "webhook_events",
                "webhook_events_final",
            ),
            (store.poll_lag_sql(), "tasks", "tasks_due_poll"),
            (store.claim_head_sql(), "tasks", "tasks_waiting_ready"),
            (store.parked_best_sql(), "tasks", "tasks_waiting_parked"),
            (
                store.waiting_groups_sql(false),
                "tasks",
                "tasks_waiting_by_key_model",
            ),
            (
                store.waiting_groups_sql(true),
                "tasks",
                "tasks_waiting_by_key_model",
            ),
            (store.queue_position_sql(), "tasks", "tasks_waiting_tag"),
            (store.key_best_sql(), "tasks", "tasks_waiting_key"),
            (store.past_deadline_sql(), "tasks", "tasks_waiting_deadline"),
            (store.finished_tasks_sql(), "tasks", "tasks_finished"),
            (store.long_running_sql(), "tasks", "tasks_by_state_created"),
        ];
        for (sql, table, index) in statements {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get::<String, _>("detail").unwrap())
                .collect();
            // A count reads the index alone (`USING COVERING INDEX`).
            let scan = plan.iter().find(|step| {
                (step.contains(&format!("{table} USING INDEX"))
                    || step.contains(&format!("{table} USING COVERING INDEX")))
                    && !step.contains("(id=?)")
            });
            assert!(
                scan.is_some_and(|step| step.contains(index)),
                "{index}: {plan:?}"
            );
        }
    }
}
