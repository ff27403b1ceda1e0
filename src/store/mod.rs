//! The task store: tasks, their status history and submit attempts, and API keys.
//! One set of portable SQL runs on PostgreSQL (production, many gateway processes) and
//! on SQLite (the embedded single-machine default), chosen by the database URL.

mod batch;
mod console;
mod key_admin;
mod keys;
mod limits;
mod observe;
mod polls;
mod results;
mod task_writes;
mod tasks;
mod usage;
mod webhooks;

pub use console::{ConsoleSession, OutcomeSlot, TaskFilter, UsageCell};
pub use key_admin::{check_label, new_webhook_secret, IssuedKey, KeyChange, KeyInfo};
pub use keys::{ApiKey, BudgetPeriod, KeyLimits, NewApiKey, KEY_CACHE_TTL};
pub use limits::{period_start, Budget, Holds, LimitRefusal};
pub use observe::UNFINISHED_STATES;
pub use polls::StillRunning;
pub use results::{object_key, CopyJob, Deleted, VideoOrder};
pub use tasks::{
    lease_token, Acceptance, Attempt, ClaimKind, IdempotencyClaim, Inserted, NewTask, PollUpdate,
    StatusChange, TaskDetail, TaskError, TaskPage, TaskRecord, TaskState,
};
pub use usage::{GroupBy, UsageRow};
pub use webhooks::{EventNext, Redelivery, WebhookAttempt, WebhookEvent};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects and brings the schema up to date, with the default timeouts.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        let defaults = crate::config::DatabaseConfig::default();
        Store::connect_with(
            url,
            max_connections,
            defaults.acquire_timeout(),
            defaults.statement_timeout(),
        )
        .await
    }

    /// Connects with explicit bounds: waiting for a connection (`acquire_timeout`, which
    /// also bounds opening one) and running one statement (`statement_timeout`; on SQLite,
    /// waiting for the write lock). A database outage then fails a request within
    /// `acquire_timeout` instead of holding it.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
        statement_timeout: Duration,
    ) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let statement_ms = statement_timeout.as_millis().max(1);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let pool = pool_options(backend, max_connections, acquire_timeout, statement_ms)
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
            Backend::Sqlite => pool_options(backend, 1, acquire_timeout, statement_ms)
                .connect(&url)
                .await
                .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?,
        };
        Ok(Store {
            hot_writes: std::sync::Arc::new(task_writes::HotWrites::start(
                &writes,
                backend,
                max_connections,
            )),
            pool,
            writes,
            backend,
            injected_faults: Default::default(),
            keys: Default::default(),
            copy_results: false,
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

/// SQLite's page cache is 2 MB per connection by default: once the task table's indexes
/// outgrow it, inserts read pages back through the kernel and the sustained create rate
/// decays as the store grows. The first 256 MB of the file are mapped (shared by every
/// connection through the OS page cache), and each connection may cache 16 MB.
const SQLITE_CACHE: &str = "PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16384;";

/// The pool settings both stores share, and each connection's session settings.
fn pool_options(
    backend: Backend,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_ms: u128,
) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings every connection before handing it out by default: a round trip per
        // statement. A connection that broke while idle fails its statement instead (an
        // error the caller already handles, as for an outage) and is then dropped.
        .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        // WAL lets readers run beside the single writer; the busy timeout makes
                        // concurrent writers wait (a bounded time) instead of failing. synchronous = NORMAL
                        // syncs the WAL at checkpoints, not at every commit: a commit survives
                        // a crash of the process; only an OS crash or power loss can take back
                        // the last commits.
                        Backend::Sqlite => {
                            conn.execute(&*format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {statement_ms}; PRAGMA foreign_keys = ON; {SQLITE_CACHE}"))
                                .await?;
                        }
                        Backend::Postgres => {
                            conn.execute(&*format!("SET statement_timeout = {statement_ms}"))
                                .await?;
                        }
                    }
                    Ok(())
                })
            })
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
