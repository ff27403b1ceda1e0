//! The task store: tasks, their status history and submit attempts, and API keys.
//! One set of portable SQL runs on PostgreSQL (production, many gateway processes) and
//! on SQLite (the embedded single-machine default), chosen by the database URL.

mod keys;
mod tasks;

pub use keys::{ApiKey, NewApiKey, KEY_CACHE_TTL};
pub use tasks::{
    Attempt, ClaimKind, IdempotencyClaim, Inserted, NewTask, PollUpdate, StatusChange, TaskError,
    TaskPage, TaskRecord, TaskState,
};

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
    pool: AnyPool,
    backend: Backend,
    /// Recently authenticated API keys (see `keys.rs`).
    keys: std::sync::Arc<keys::KeyCache>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
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
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; the busy timeout makes
                        // concurrent writers wait instead of failing. synchronous = NORMAL
                        // syncs the WAL at checkpoints, not at every commit: a commit survives
                        // a crash of the process, and only an OS crash or power loss can take
                        // back the last commits.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?;
        MIGRATOR
            .run(&pool)
            .await
            .context("running database migrations")?;
        Ok(Store {
            pool,
            backend,
            keys: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
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
