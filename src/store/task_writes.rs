//! The writes every create makes, batched (see `batch.rs`): the new task before the
//! provider is called, the submit mark just before the call (dialects without a lookup by
//! our id), and the provider's acceptance after. A batch of one is the same
//! statement as a single write; a batch that fails is written again row by row, so one
//! bad row fails only its own caller.

use futures::future::BoxFuture;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::batch::{value_rows, Coalescer};
use super::keys::BudgetPeriod;
use super::limits::period_start;
use super::task_events::{
    attempt_entry, event_type, event_wanted, history_entry, insert_attempt, insert_attempt_row,
    insert_status_change, mute_bit, new_event_id, webhook_mute_mask,
};
use super::task_record::{Acceptance, Attempt, Inserted, NewTask, TaskState};
use super::{affected, now_ms, Backend};

/// Most rows in one batched statement.
const MAX_BATCH: usize = 64;

pub(super) const INSERT_TASK_INTO: &str =
    "INSERT INTO tasks (id, api_key_id, model, request, state, provider, sandbox, cost_estimated_micros, \
     routing_reason, metadata, created_at, updated_at, next_poll_at, lease_owner, lease_until, \
     holds_slot, budget_period_start, reserved_micros, billed_seconds, callback_url, callback_in_progress, \
     upstream_callback_token, history_json, attempts_json, webhook_muted) VALUES ";

/// One new task's values, parameters $1..$21 (see `NewTaskRow::bind`).
pub(super) const NEW_TASK_ROW: &str =
    "($1, $2, $3, $4, 'submitting', $5, $6, $7, $8, $9, $10, $10, $11, $12, $11, $13, $14, $15, $16, $17, $18, $19, $20, '', $21)";
const NEW_TASK_PARAMS: usize = 21;

/// A provider's acceptance of a task held by claim $6 (the unbatched form, on SQLite),
/// with its status change ($9) and attempt ($10) appended to the task's read copy.
const ACCEPT_TASK: &str =
    "UPDATE tasks SET state = $2, provider_task_id = $3, next_poll_at = $4, updated_at = $5, \
     poll_failures = 0, lease_owner = NULL, lease_until = 0, request = COALESCE($7, request), \
     upstream_callback_token = CASE WHEN $8 = 1 THEN upstream_callback_token ELSE NULL END, \
     history_json = history_json || $9, attempts_json = attempts_json || $10, \
     accepted_at = $5, timing_key = $11, eta_at = $12 \
     WHERE id = $1 AND state IN ('submitting', 'submit_unknown') AND lease_owner = $6";

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// A new task as its row is bound: owned, so that it can wait in a batch queue, with the
/// request serialized once.
pub(super) struct NewTaskRow {
    id: String,
    api_key_id: String,
    model: &'static str,
    request: String,
    provider: String,
    sandbox: bool,
    cost_estimated_micros: Option<i64>,
    routing_reason: String,
    metadata: Option<String>,
    lease_until: i64,
    lease_owner: String,
    billed_seconds: Option<i64>,
    callback_url: Option<String>,
    callback_in_progress: bool,
    /// The event types not to deliver (`super::task_events::webhook_mute_mask`).
    webhook_muted: i64,
    upstream_callback_token: Option<String>,
    /// The kind of period the task's spend is counted in (its key's budget period).
    spend_period: BudgetPeriod,
}

impl NewTaskRow {
    pub fn of(t: &NewTask) -> anyhow::Result<NewTaskRow> {
        Ok(NewTaskRow {
            id: t.id.clone(),
            api_key_id: t.api_key_id.clone(),
            model: t.request.model.as_str(),
            request: serde_json::to_string(&t.request)?,
            provider: t.provider.clone(),
            sandbox: t.sandbox,
            cost_estimated_micros: t.cost_estimated_usd.map(super::to_micros),
            routing_reason: t.routing_reason.clone(),
            metadata: t.request.metadata.as_ref().map(|m| m.to_string()),
            lease_until: t.lease_until,
            lease_owner: t.lease_owner.clone(),
            billed_seconds: t.billed_seconds.map(i64::from),
            callback_url: t.request.callback_url.clone(),
            callback_in_progress: t.request.wants_in_progress_events(),
            webhook_muted: webhook_mute_mask(&t.request),
            upstream_callback_token: t.upstream_callback_token.clone(),
            spend_period: t.holds.spend_period,
        })
    }

    /// Binds `NEW_TASK_ROW`'s parameters, with the key's holds as taken and the start of
    /// the task's history in its read copy. Every task names the period its spend counts
    /// in (computed here, no round trip), whether or not its key has a budget: the
    /// transaction that ends it settles the spend there (`limits::release`).
    pub fn bind<'q>(
        &'q self,
        q: AnyQuery<'q>,
        now: i64,
        history: &'q str,
        holds_slot: bool,
        reserved: Option<i64>,
    ) -> AnyQuery<'q> {
        q.bind(&self.id)
            .bind(&self.api_key_id)
            .bind(self.model)
            .bind(&self.request)
            .bind(&self.provider)
            .bind(self.sandbox as i64)
            .bind(self.cost_estimated_micros)
            .bind(&self.routing_reason)
            .bind(&self.metadata)
            .bind(now)
            .bind(self.lease_until)
            .bind(&self.lease_owner)
            .bind(i64::from(holds_slot))
            .bind(period_start(self.spend_period, now))
            .bind(reserved)
            .bind(self.billed_seconds)
            .bind(&self.callback_url)
            .bind(i64::from(self.callback_in_progress))
            .bind(&self.upstream_callback_token)
            .bind(history)
            .bind(self.webhook_muted)
    }
}

/// An acceptance, owned (see `Acceptance`), for the task `id` held by claim `token`.
pub(super) struct AcceptRow {
    id: String,
    token: String,
    upstream_id: String,
    state: TaskState,
    first_poll_at: i64,
    attempt: Option<Attempt>,
    slim_request: Option<String>,
    callback_given: bool,
    timing_key: Option<String>,
    eta_at: Option<i64>,
}

impl AcceptRow {
    /// The attempt's entry in the task's read copy, empty without an attempt.
    fn attempt_entry(&self) -> anyhow::Result<String> {
        self.attempt
            .as_ref()
            .map_or(Ok(String::new()), attempt_entry)
    }

    pub fn of(id: &str, token: &str, a: &Acceptance<'_>) -> AcceptRow {
        AcceptRow {
            id: id.to_string(),
            token: token.to_string(),
            upstream_id: a.upstream_id.to_string(),
            state: a.state,
            first_poll_at: a.first_poll_at,
            attempt: a.attempt.cloned(),
            slim_request: a.slim_request.map(str::to_string),
            callback_given: a.callback_given,
            timing_key: a.timing_key.map(str::to_string),
            eta_at: a.eta_at,
        }
    }
}

/// The batch queues of one store.
pub(super) struct HotWrites {
    creates: Coalescer<NewTaskRow, Inserted>,
    accepts: Coalescer<AcceptRow, bool>,
    marks: Coalescer<MarkRow, bool>,
}

/// A submit about to start: task `id`, held by claim `token` (see `mark_submit_started`).
pub(super) struct MarkRow {
    id: String,
    token: String,
}

impl HotWrites {
    /// Writers for `pool`. On SQLite one each (there is one writer connection); on
    /// PostgreSQL up to a quarter of the pool each, so that creates never hold every
    /// connection.
    pub fn start(pool: &AnyPool, backend: Backend, max_connections: u32) -> HotWrites {
        let lanes = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => (max_connections as usize / 4).clamp(1, 8),
        };
        let (p1, p2, p3) = (pool.clone(), pool.clone(), pool.clone());
        HotWrites {
            creates: Coalescer::start(lanes, MAX_BATCH, move |rows: Vec<NewTaskRow>| {
                let pool = p1.clone();
                async move { row_by_row_if_failed(&pool, backend, rows, new_tasks).await }
            }),
            accepts: Coalescer::start(lanes, MAX_BATCH, move |rows: Vec<AcceptRow>| {
                let pool = p2.clone();
                async move { row_by_row_if_failed(&pool, backend, rows, acceptances).await }
            }),
            marks: Coalescer::start(lanes, MAX_BATCH, move |rows: Vec<MarkRow>| {
                let pool = p3.clone();
                async move { row_by_row_if_failed(&pool, backend, rows, submit_marks).await }
            }),
        }
    }

    pub async fn create(&self, row: NewTaskRow) -> anyhow::Result<Inserted> {
        self.creates.write(row).await
    }

    pub async fn accept(&self, row: AcceptRow) -> anyhow::Result<bool> {
        self.accepts.write(row).await
    }

    pub async fn mark(&self, id: &str, token: &str) -> anyhow::Result<bool> {
        let row = MarkRow {
            id: id.to_string(),
            token: token.to_string(),
        };
        self.marks.write(row).await
    }
}

/// A batch write over the store's write pool.
type BatchWrite<T, R> =
    for<'a> fn(&'a AnyPool, Backend, &'a [T]) -> BoxFuture<'a, anyhow::Result<Vec<R>>>;

/// Writes `rows` in one go; if that fails and there were several, each on its own.
async fn row_by_row_if_failed<T, R>(
    pool: &AnyPool,
    backend: Backend,
    rows: Vec<T>,
    write: BatchWrite<T, R>,
) -> Vec<anyhow::Result<R>> {
    match write(pool, backend, &rows).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) if rows.len() == 1 => vec![Err(e)],
        Err(_) => {
            let mut results = Vec::with_capacity(rows.len());
            for row in rows.chunks(1) {
                results.push(write(pool, backend, row).await.map(|mut r| r.remove(0)));
            }
            results
        }
    }
}

fn new_tasks<'a>(
    pool: &'a AnyPool,
    backend: Backend,
    rows: &'a [NewTaskRow],
) -> BoxFuture<'a, anyhow::Result<Vec<Inserted>>> {
    Box::pin(write_new_tasks(pool, backend, rows))
}

fn submit_marks<'a>(
    pool: &'a AnyPool,
    _: Backend,
    rows: &'a [MarkRow],
) -> BoxFuture<'a, anyhow::Result<Vec<bool>>> {
    Box::pin(write_submit_marks(pool, rows))
}

/// Submit marks, each true if its claim still held the task: one statement on both
/// databases (each row's branch is a primary-key lookup).
async fn write_submit_marks(pool: &AnyPool, rows: &[MarkRow]) -> anyhow::Result<Vec<bool>> {
    let held = (0..rows.len())
        .map(|i| format!("(id = ${} AND lease_owner = ${})", 2 + 2 * i, 3 + 2 * i))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "UPDATE tasks SET submit_started_at = $1 \
         WHERE state IN ('submitting', 'submit_unknown') AND ({held}) RETURNING id"
    );
    let mut q = sqlx::query(&sql).bind(now_ms());
    for row in rows {
        q = q.bind(&row.id).bind(&row.token);
    }
    let marked: std::collections::HashSet<String> = q
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    Ok(rows.iter().map(|r| marked.contains(&r.id)).collect())
}

fn acceptances<'a>(
    pool: &'a AnyPool,
    backend: Backend,
    rows: &'a [AcceptRow],
) -> BoxFuture<'a, anyhow::Result<Vec<bool>>> {
    Box::pin(write_acceptances(pool, backend, rows))
}

/// New tasks, each with its first status change. On PostgreSQL one statement; on SQLite
/// one transaction of two statements.
async fn write_new_tasks(
    pool: &AnyPool,
    backend: Backend,
    rows: &[NewTaskRow],
) -> anyhow::Result<Vec<Inserted>> {
    let now = now_ms();
    let history = history_entry(TaskState::Submitting, now);
    let values = value_rows(NEW_TASK_ROW, 1, NEW_TASK_PARAMS, rows.len());
    match backend {
        Backend::Postgres => {
            let sql = format!(
                "WITH t AS ({INSERT_TASK_INTO}{values} RETURNING id) \
                 INSERT INTO task_status_changes (task_id, status, at) SELECT id, 'submitting', $10 FROM t"
            );
            bind_new_rows(sqlx::query(&sql), rows, now, &history)
                .execute(pool)
                .await?;
        }
        Backend::Sqlite => {
            let mut tx = pool.begin().await?;
            let sql = format!("{INSERT_TASK_INTO}{values}");
            bind_new_rows(sqlx::query(&sql), rows, now, &history)
                .execute(&mut *tx)
                .await?;
            let sql = format!(
                "INSERT INTO task_status_changes (task_id, status, at) VALUES {}",
                value_rows("($1, 'submitting', $2)", 1, 2, rows.len())
            );
            let mut q = sqlx::query(&sql);
            for row in rows {
                q = q.bind(&row.id).bind(now);
            }
            q.execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(rows
        .iter()
        .map(|_| Inserted::New { created_at: now })
        .collect())
}

fn bind_new_rows<'q>(
    mut q: AnyQuery<'q>,
    rows: &'q [NewTaskRow],
    now: i64,
    history: &'q str,
) -> AnyQuery<'q> {
    for row in rows {
        q = row.bind(q, now, history, false, None);
    }
    q
}

/// Acceptances, each true if its claim still held the task. On PostgreSQL one statement
/// of data-modifying CTEs (updates, status changes, events, attempts); on SQLite one
/// transaction.
async fn write_acceptances(
    pool: &AnyPool,
    backend: Backend,
    rows: &[AcceptRow],
) -> anyhow::Result<Vec<bool>> {
    let now = now_ms();
    match backend {
        Backend::Postgres => accept_in_one_statement(pool, rows, now).await,
        Backend::Sqlite => {
            let mut tx = pool.begin().await?;
            let mut done = Vec::with_capacity(rows.len());
            for row in rows {
                done.push(accept_in_transaction(&mut tx, row, now).await?);
            }
            tx.commit().await?;
            Ok(done)
        }
    }
}

async fn accept_in_transaction(
    tx: &mut Transaction<'_, Any>,
    row: &AcceptRow,
    now: i64,
) -> anyhow::Result<bool> {
    let done = affected(
        sqlx::query(ACCEPT_TASK)
            .bind(&row.id)
            .bind(row.state.as_str())
            .bind(&row.upstream_id)
            .bind(row.first_poll_at)
            .bind(now)
            .bind(&row.token)
            .bind(&row.slim_request)
            .bind(i64::from(row.callback_given))
            .bind(history_entry(row.state, now))
            .bind(row.attempt_entry()?)
            .bind(&row.timing_key)
            .bind(row.eta_at)
            .execute(&mut **tx)
            .await?,
    );
    if done {
        insert_status_change(tx, &row.id, row.state, now).await?;
    }
    match (&row.attempt, done) {
        (Some(attempt), true) => insert_attempt_row(tx, &row.id, attempt).await?,
        // The update did not take, so did not append the attempt either.
        (Some(attempt), false) => insert_attempt(tx, &row.id, attempt).await?,
        (None, _) => {}
    }
    Ok(done)
}

/// One acceptance's values in the `v` list of `accept_in_one_statement` (typed, since
/// VALUES has no column types of its own).
const ACCEPT_ROW: &str =
    "($1::text, $2::text, $3::text, $4::bigint, $5::text, $6::text, $7::bigint, $8::text, $9::text, $10::text, $11::text, \
     $12::text, $13::bigint)";
const ACCEPT_PARAMS: usize = 13;
const ATTEMPT_ROW: &str =
    "($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::bigint)";
const ATTEMPT_PARAMS: usize = 8;

/// The attempt is written whether or not the update took, as in the transaction.
async fn accept_in_one_statement(
    pool: &AnyPool,
    rows: &[AcceptRow],
    now: i64,
) -> anyhow::Result<Vec<bool>> {
    let attempts: Vec<(&str, &Attempt)> = rows
        .iter()
        .filter_map(|r| r.attempt.as_ref().map(|a| (r.id.as_str(), a)))
        .collect();
    let mut sql = format!(
        "WITH v (id, state, upstream_id, first_poll_at, token, slim_request, callback_given, event_id, event_type, \
             history_entry, attempt_entry, timing_key, eta_at) \
           AS (VALUES {}), \
         u AS (UPDATE tasks SET state = v.state, provider_task_id = v.upstream_id, next_poll_at = v.first_poll_at, \
             updated_at = $1, poll_failures = 0, lease_owner = NULL, lease_until = 0, \
             request = COALESCE(v.slim_request, tasks.request), \
             upstream_callback_token = CASE WHEN v.callback_given = 1 THEN tasks.upstream_callback_token ELSE NULL END, \
             history_json = tasks.history_json || v.history_entry, attempts_json = tasks.attempts_json || v.attempt_entry, \
             accepted_at = $1, timing_key = v.timing_key, eta_at = v.eta_at \
           FROM v WHERE tasks.id = v.id AND tasks.state IN ('submitting', 'submit_unknown') AND tasks.lease_owner = v.token \
           RETURNING tasks.id, tasks.api_key_id, tasks.callback_url, tasks.callback_in_progress, tasks.progress, \
             tasks.webhook_muted, v.state AS new_state, v.event_id, v.event_type), \
         s AS (INSERT INTO task_status_changes (task_id, status, at) SELECT id, new_state, $1 FROM u), \
         e AS (INSERT INTO webhook_events (id, task_id, api_key_id, seq, type, url, progress, created_at, state, next_attempt_at) \
           SELECT u.event_id, u.id, u.api_key_id, \
             (SELECT COUNT(*) FROM webhook_events w WHERE w.task_id = u.id), \
             u.event_type, u.callback_url, u.progress, $1, {}, $1 \
           FROM u WHERE u.callback_url IS NOT NULL AND {}), \
         x AS (UPDATE tasks SET attempts_json = tasks.attempts_json || v.attempt_entry FROM v \
           WHERE tasks.id = v.id AND v.attempt_entry <> '' AND v.id NOT IN (SELECT id FROM u))",
        value_rows(ACCEPT_ROW, 2, ACCEPT_PARAMS, rows.len()),
        event_delivery_state_by_state("u.new_state", "u"),
        event_wanted_by_state("u.new_state", "u"),
    );
    if !attempts.is_empty() {
        sql.push_str(&format!(
            ", a AS (INSERT INTO task_attempts (task_id, provider, outcome, provider_task_id, error_code, message, latency_ms, at) \
             VALUES {})",
            value_rows(ATTEMPT_ROW, 2 + ACCEPT_PARAMS * rows.len(), ATTEMPT_PARAMS, attempts.len())
        ));
    }
    sql.push_str(" SELECT id FROM u");
    let mut q = sqlx::query(&sql).bind(now);
    for row in rows {
        q = q
            .bind(&row.id)
            .bind(row.state.as_str())
            .bind(&row.upstream_id)
            .bind(row.first_poll_at)
            .bind(&row.token)
            .bind(&row.slim_request)
            .bind(i64::from(row.callback_given))
            .bind(new_event_id())
            .bind(event_type(row.state))
            .bind(history_entry(row.state, now))
            .bind(row.attempt_entry()?)
            .bind(&row.timing_key)
            .bind(row.eta_at);
    }
    for (task_id, at) in &attempts {
        q = q
            .bind(*task_id)
            .bind(&at.provider)
            .bind(&at.outcome)
            .bind(&at.provider_task_id)
            .bind(&at.error_code)
            .bind(&at.message)
            .bind(at.latency_ms)
            .bind(at.at);
    }
    let accepted: Vec<String> = q
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    Ok(rows.iter().map(|r| accepted.contains(&r.id)).collect())
}

/// The state a new event of row `t` starts in, for a task state held in column
/// `state_col`: `pending` (to deliver) or `filtered` (`webhook_events` left it out).
fn event_delivery_state_by_state(state_col: &str, t: &str) -> String {
    let arms: String = TaskState::ALL
        .iter()
        .map(|s| format!(" WHEN '{}' THEN {}", s.as_str(), mute_bit(*s)))
        .collect();
    format!(
        "(CASE WHEN ({t}.webhook_muted & (CASE {state_col}{arms} ELSE 0 END)) <> 0 \
         THEN 'filtered' ELSE 'pending' END)"
    )
}

/// `event_wanted` for a state held in column `state_col` of row `t`: true where a change
/// to that state is an event its client asked for.
fn event_wanted_by_state(state_col: &str, t: &str) -> String {
    let arms: String = TaskState::ALL
        .iter()
        .filter_map(|s| event_wanted(*s, t).map(|w| format!(" WHEN '{}' THEN {w}", s.as_str())))
        .collect();
    format!("(CASE {state_col}{arms} ELSE 1 = 0 END)")
}

impl super::Store {
    /// Marks a submitting task, held by claim `token`, as about to be sent to a provider:
    /// written just before the call, so that a task found later without it is known never
    /// to have reached one. False if the claim no longer holds the task.
    /// Concurrent marks share one statement and commit (group commit, as creates do).
    pub async fn mark_submit_started(&self, id: &str, token: &str) -> anyhow::Result<bool> {
        self.hot_writes.mark(id, token).await
    }

    /// Whether a submit of task `id` was ever started (see `mark_submit_started`).
    pub async fn submit_started(&self, id: &str) -> anyhow::Result<bool> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT submit_started_at FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.writes)
                .await?;
        Ok(row.and_then(|(at,)| at).is_some())
    }
}
