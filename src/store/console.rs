//! What the console reads and writes that the API does not: sign-in sessions, the task
//! list filtered over every key, and the aggregates behind its charts.

use sqlx::Row;

use super::keys::hash_key;
use super::task_record::{page_of, TaskPage, TASK_COLUMNS};
use super::{now_ms, Backend, Store};

/// A signed-in console session: the operator's (`api_key_id` None) or one key's.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub api_key_id: Option<String>,
    pub key_name: Option<String>,
    pub csrf_token: String,
    /// The operator's: the fingerprint of the admin token signed in with, for the console
    /// to compare with the configured one (the store cannot: it never sees the token).
    pub admin_fingerprint: Option<String>,
}

/// What a console session signed in with: it lives only as long as that stays valid.
#[derive(Debug, Clone, Copy)]
pub enum SignedInWith<'a> {
    /// The admin token, as its fingerprint (`console::session`).
    AdminToken { fingerprint: &'a str },
    /// One of a key's secrets: the session ends with that secret (revocation, or the end of
    /// the grace period after a rotation), not with the key.
    KeySecret { key_id: &'a str, secret: &'a str },
}

/// The task list's filters; `owner` is set for a key's own view and is not optional there.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub owner: Option<String>,
    /// Internal states (a public `queued` is three of them).
    pub states: Vec<&'static str>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Created at or after, Unix ms.
    pub from: Option<i64>,
    /// Created before, Unix ms.
    pub to: Option<i64>,
}

/// Tasks created in one time slot by one provider, by how they ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeSlot {
    pub provider: String,
    /// Unix ms at which the slot starts.
    pub slot_start: i64,
    pub completed: i64,
    pub failed: i64,
    pub unfinished: i64,
}

/// One (day, provider, team, public status) group of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageCell {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub provider: String,
    pub team: String,
    /// The task state as stored (`TaskState::as_str`).
    pub state: String,
    pub tasks: i64,
    pub seconds: i64,
    /// Settled money of completed tasks, in micro-dollars.
    pub settled_micros: i64,
    /// Estimates of unfinished tasks, in micro-dollars (money that may still be spent).
    pub pending_micros: i64,
}

/// Values bound to a query built at run time, in placeholder order.
enum Bind {
    Text(String),
    Int(i64),
}

impl Store {
    pub async fn create_console_session(
        &self,
        token_hash: &str,
        with: SignedInWith<'_>,
        csrf_token: &str,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        let (api_key_id, secret_hash, fingerprint) = match with {
            SignedInWith::AdminToken { fingerprint } => (None, None, Some(fingerprint)),
            SignedInWith::KeySecret { key_id, secret } => {
                (Some(key_id), Some(hash_key(secret)), None)
            }
        };
        let now = now_ms();
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(self.writer())
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, api_key_id, csrf_token, created_at, expires_at, \
             secret_hash, admin_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash)
        .bind(api_key_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .bind(secret_hash)
        .bind(fingerprint)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The live session with this token hash: not expired and, for a key's, its key not
    /// revoked and the secret it signed in with still valid (the key's current one, or
    /// the previous one within its grace period after a rotation), as `authenticate`
    /// judges a secret. The operator's fingerprint is the console's to check.
    pub async fn console_session(
        &self,
        token_hash: &str,
    ) -> anyhow::Result<Option<ConsoleSession>> {
        let row = sqlx::query(
            "SELECT s.api_key_id, k.name AS key_name, s.csrf_token, s.admin_fingerprint \
             FROM console_sessions s LEFT JOIN api_keys k ON k.id = s.api_key_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 \
             AND (s.api_key_id IS NULL OR (k.revoked_at IS NULL \
                  AND (s.secret_hash = k.key_hash \
                       OR (s.secret_hash = k.previous_key_hash AND k.previous_valid_until > $2))))",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ConsoleSession {
                api_key_id: r.try_get("api_key_id")?,
                key_name: r.try_get("key_name")?,
                csrf_token: r.try_get("csrf_token")?,
                admin_fingerprint: r.try_get("admin_fingerprint")?,
            })
        })
        .transpose()
    }

    pub async fn delete_console_session(&self, token_hash: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Deletes up to `limit` sessions that expired before `now` (signing in also clears
    /// them, but a gateway nobody signs in to would keep them forever). Returns how many.
    pub async fn prune_console_sessions(&self, now: i64, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM console_sessions WHERE token_hash IN (SELECT token_hash \
             FROM console_sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// A page of tasks matching `filter`, newest first, after the (created_at, id) cursor.
    pub async fn filtered_tasks(
        &self,
        filter: &TaskFilter,
        cursor: Option<(i64, &str)>,
        limit: u32,
    ) -> anyhow::Result<TaskPage> {
        let mut binds = Vec::new();
        let mut param = |b: Bind| {
            binds.push(b);
            format!("${}", binds.len())
        };
        let mut clauses = vec!["deleted_at IS NULL".to_string()];
        if let Some(owner) = &filter.owner {
            clauses.push(format!("api_key_id = {}", param(Bind::Text(owner.clone()))));
        }
        if let Some(model) = &filter.model {
            clauses.push(format!("model = {}", param(Bind::Text(model.clone()))));
        }
        if let Some(provider) = &filter.provider {
            clauses.push(format!(
                "provider = {}",
                param(Bind::Text(provider.clone()))
            ));
        }
        if let Some(from) = filter.from {
            clauses.push(format!("created_at >= {}", param(Bind::Int(from))));
        }
        if let Some(to) = filter.to {
            clauses.push(format!("created_at < {}", param(Bind::Int(to))));
        }
        if !filter.states.is_empty() {
            // Fixed names from `TaskState::as_str`, never client text.
            let list: Vec<String> = filter.states.iter().map(|s| format!("'{s}'")).collect();
            clauses.push(format!("state IN ({})", list.join(", ")));
        }
        if let Some((at, id)) = cursor {
            let (at, id) = (param(Bind::Int(at)), param(Bind::Text(id.to_string())));
            clauses.push(format!(
                "(created_at < {at} OR (created_at = {at} AND id < {id}))"
            ));
        }
        let limit_param = param(Bind::Int(i64::from(limit) + 1));
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE {} ORDER BY created_at DESC, id DESC LIMIT {limit_param}",
            clauses.join(" AND ")
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        page_of(&rows, limit)
    }

    /// Tasks created since `since` per provider and `slot_ms` slot, by how they ended.
    pub async fn outcome_slots(
        &self,
        since: i64,
        slot_ms: i64,
    ) -> anyhow::Result<Vec<OutcomeSlot>> {
        let rows = sqlx::query(
            "SELECT provider, CAST(created_at / $2 AS BIGINT) AS slot, \
             SUM(CASE WHEN state = 'completed' THEN 1 ELSE 0 END) AS completed, \
             SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed, \
             COUNT(*) AS total \
             FROM tasks WHERE created_at >= $1 AND provider IS NOT NULL \
             GROUP BY provider, slot ORDER BY provider, slot",
        )
        .bind(since)
        .bind(slot_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let completed: i64 = r.try_get("completed")?;
                let failed: i64 = r.try_get("failed")?;
                let total: i64 = r.try_get("total")?;
                Ok(OutcomeSlot {
                    provider: r.try_get("provider")?,
                    slot_start: r.try_get::<i64, _>("slot")? * slot_ms,
                    completed,
                    failed,
                    unfinished: total - completed - failed,
                })
            })
            .collect()
    }

    /// Creates per key since `since` (the rate each key is using now).
    pub async fn creates_per_key_since(&self, since: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT api_key_id, COUNT(*) AS n FROM tasks WHERE created_at >= $1 GROUP BY api_key_id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("api_key_id")?, r.try_get("n")?)))
            .collect()
    }

    /// Tasks created in [from, to) grouped by day, provider, team and state: every usage
    /// chart of the console is a sum over these cells.
    pub async fn usage_cells(
        &self,
        owner: Option<&str>,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<UsageCell>> {
        let owner_filter = if owner.is_some() {
            "AND t.api_key_id = $3"
        } else {
            ""
        };
        let sql = format!(
            "SELECT CAST(t.created_at / 86400000 AS BIGINT) AS day, COALESCE(t.provider, '') AS provider, \
             COALESCE(k.team, '') AS team, t.state AS state, COUNT(*) AS tasks, \
             CAST(COALESCE(SUM(t.billed_seconds), 0) AS BIGINT) AS seconds, \
             CAST(COALESCE(SUM(CASE WHEN t.state = 'completed' THEN t.cost_final_micros END), 0) AS BIGINT) AS settled, \
             CAST(COALESCE(SUM(CASE WHEN t.state NOT IN ('completed', 'failed', 'cancelled') THEN t.cost_estimated_micros END), 0) AS BIGINT) AS pending \
             FROM tasks t JOIN api_keys k ON k.id = t.api_key_id \
             WHERE t.created_at >= $1 AND t.created_at < $2 {owner_filter} \
             GROUP BY day, COALESCE(t.provider, ''), COALESCE(k.team, ''), t.state"
        );
        let mut q = sqlx::query(&sql).bind(from).bind(to);
        if let Some(owner) = owner {
            q = q.bind(owner);
        }
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // PostgreSQL cannot estimate the number of groups of `created_at / day` and,
            // with the default 4 MB, sorts every row on disk (3x slower at 100k tasks)
            // instead of hashing the few dozen groups there are.
            sqlx::query("SET LOCAL work_mem = '32MB'")
                .execute(&mut *tx)
                .await?;
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(UsageCell {
                    day: r.try_get("day")?,
                    provider: r.try_get("provider")?,
                    team: r.try_get("team")?,
                    state: r.try_get("state")?,
                    tasks: r.try_get("tasks")?,
                    seconds: r.try_get("seconds")?,
                    settled_micros: r.try_get("settled")?,
                    pending_micros: r.try_get("pending")?,
                })
            })
            .collect()
    }
}
