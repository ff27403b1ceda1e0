//! The client webhook outbox: events (written with the status change that makes them, in
//! `tasks.rs`), their claims by delivery workers, every attempt, and the URLs a receiver
//! turned off with 410.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{affected, now_ms, Backend, Store};

/// One event to deliver to a task's `callback_url`.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookEvent {
    /// The Standard Webhooks message id (`webhook-id`), the same on every attempt.
    pub id: String,
    pub task_id: String,
    pub api_key_id: String,
    pub seq: i64,
    /// `video.generation.<status>`
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    /// The task's progress when the event happened.
    pub progress: i64,
    /// Milliseconds, like every time in the store.
    pub created_at: i64,
    /// pending | delivered | failed | disabled | filtered (left out by the task's `webhook_events`)
    pub state: String,
    /// Attempts in the current schedule (a redelivery starts a new one).
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
}

/// One delivery attempt, as kept.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    pub at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// Where an event goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventNext {
    Delivered,
    /// Another attempt at this time (ms).
    RetryAt(i64),
    /// No more attempts: the schedule is used up, or the URL can never be called.
    Failed,
    /// The receiver answered 410 Gone (now or before): this key sends nothing more there.
    Disabled,
}

/// What a redelivery request found.
#[derive(Debug, Clone)]
pub enum Redelivery {
    Queued(WebhookEvent),
    NotFound,
    /// An attempt is in flight right now; its outcome will be recorded first.
    InFlight,
}

const EVENT_COLUMNS: &str = "id, task_id, api_key_id, seq, type, url, progress, created_at, \
    state, attempts, next_attempt_at, delivered_at";

fn event_from_row(r: &AnyRow) -> anyhow::Result<WebhookEvent> {
    Ok(WebhookEvent {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        api_key_id: r.try_get("api_key_id")?,
        seq: r.try_get("seq")?,
        kind: r.try_get("type")?,
        url: r.try_get("url")?,
        progress: r.try_get("progress")?,
        created_at: r.try_get("created_at")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

impl Store {
    /// Leases up to `limit` due events to `owner` until `lease_until`. An event is due only
    /// once every earlier event of its task has left `pending`, so a task's events arrive
    /// in order; `SKIP LOCKED` (PostgreSQL) lets several processes claim side by side.
    pub async fn claim_webhook_events(
        &self,
        owner: &str,
        lease_until: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<WebhookEvent>> {
        let sql = format!(
            "UPDATE webhook_events SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT e.id FROM webhook_events e WHERE e.state = 'pending' \
               AND e.next_attempt_at <= $3 AND e.lease_until <= $3 \
               AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.task_id = e.task_id \
                 AND p.seq < e.seq AND p.state = 'pending') \
               ORDER BY e.next_attempt_at LIMIT $4 {skip}) \
             RETURNING {EVENT_COLUMNS}",
            skip = self.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now_ms())
            .bind(limit as i64)
            .fetch_all(&self.writes)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Gives a claimed event back untried (its claim would end before an attempt could).
    pub async fn release_webhook_event(&self, id: &str, owner: &str) -> anyhow::Result<bool> {
        Ok(affected(
            sqlx::query(
                "UPDATE webhook_events SET lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(id)
            .bind(owner)
            .execute(&self.writes)
            .await?,
        ))
    }

    /// Records an attempt (if one was made) and where the event goes next, releasing the
    /// claim; a 410 also turns the URL off for the key. Only the claim `owner` may write:
    /// false (nothing written) if it was lost.
    pub async fn finish_webhook_attempt(
        &self,
        event: &WebhookEvent,
        owner: &str,
        attempt: Option<&WebhookAttempt>,
        next: EventNext,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let (state, next_at, delivered_at) = match next {
            EventNext::Delivered => ("delivered", event.next_attempt_at, Some(now)),
            EventNext::RetryAt(at) => ("pending", at, None),
            EventNext::Failed => ("failed", event.next_attempt_at, None),
            EventNext::Disabled => ("disabled", event.next_attempt_at, None),
        };
        if let (Backend::Postgres, Some(a), false) =
            (self.backend, attempt, next == EventNext::Disabled)
        {
            return self
                .finish_in_one_statement(event, owner, a, (state, next_at, delivered_at))
                .await;
        }
        let mut tx = self.writes.begin().await?;
        let done = affected(
            sqlx::query(
                "UPDATE webhook_events SET state = $3, attempts = attempts + $4, \
                 next_attempt_at = $5, delivered_at = COALESCE($6, delivered_at), \
                 lease_owner = NULL, lease_until = 0 \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
            )
            .bind(&event.id)
            .bind(owner)
            .bind(state)
            .bind(i64::from(attempt.is_some()))
            .bind(next_at)
            .bind(delivered_at)
            .execute(&mut *tx)
            .await?,
        );
        if !done {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(a) = attempt {
            sqlx::query(
                "INSERT INTO webhook_attempts (event_id, at, status_code, latency_ms, error, response_excerpt) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&event.id)
            .bind(a.at)
            .bind(a.status_code)
            .bind(a.latency_ms)
            .bind(&a.error)
            .bind(&a.response_excerpt)
            .execute(&mut *tx)
            .await?;
        }
        if next == EventNext::Disabled {
            sqlx::query(
                "INSERT INTO webhook_disabled_urls (api_key_id, url, disabled_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (api_key_id, url) DO NOTHING",
            )
            .bind(&event.api_key_id)
            .bind(&event.url)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `finish_webhook_attempt` on PostgreSQL for an attempt that turns no URL off: the
    /// event's update and its attempt row in one statement (one round trip, not four).
    async fn finish_in_one_statement(
        &self,
        event: &WebhookEvent,
        owner: &str,
        a: &WebhookAttempt,
        (state, next_at, delivered_at): (&str, i64, Option<i64>),
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "WITH u AS (UPDATE webhook_events SET state = $3, attempts = attempts + 1, \
               next_attempt_at = $4, delivered_at = COALESCE($5, delivered_at), \
               lease_owner = NULL, lease_until = 0 \
               WHERE id = $1 AND lease_owner = $2 AND state = 'pending' RETURNING id) \
             INSERT INTO webhook_attempts (event_id, at, status_code, latency_ms, error, response_excerpt) \
             SELECT id, $6, $7, $8, $9, $10 FROM u",
        )
        .bind(&event.id)
        .bind(owner)
        .bind(state)
        .bind(next_at)
        .bind(delivered_at)
        .bind(a.at)
        .bind(a.status_code)
        .bind(a.latency_ms)
        .bind(&a.error)
        .bind(&a.response_excerpt)
        .execute(&self.writes)
        .await?;
        Ok(affected(done))
    }

    /// Whether a receiver answered 410 to this key at this URL.
    pub async fn webhook_url_disabled(&self, api_key_id: &str, url: &str) -> anyhow::Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM webhook_disabled_urls WHERE api_key_id = $1 AND url = $2",
        )
        .bind(api_key_id)
        .bind(url)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// The secrets that sign a key's events: its webhook secret and, within the grace
    /// period after a rotation, the previous one too. Empty for an unknown key or one
    /// without a secret.
    pub async fn webhook_secrets(&self, api_key_id: &str) -> anyhow::Result<Vec<String>> {
        let Some(row) = sqlx::query(
            "SELECT webhook_secret, previous_webhook_secret, previous_valid_until \
             FROM api_keys WHERE id = $1",
        )
        .bind(api_key_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Vec::new());
        };
        let mut secrets = Vec::new();
        if let Some(s) = row.try_get::<Option<String>, _>("webhook_secret")? {
            secrets.push(s);
        }
        let until: Option<i64> = row.try_get("previous_valid_until")?;
        if until.is_some_and(|u| u > now_ms()) {
            if let Some(s) = row.try_get::<Option<String>, _>("previous_webhook_secret")? {
                secrets.push(s);
            }
        }
        Ok(secrets)
    }

    /// A task's events in order, each with its attempts (oldest first).
    pub async fn task_webhook_events(
        &self,
        task_id: &str,
    ) -> anyhow::Result<Vec<(WebhookEvent, Vec<WebhookAttempt>)>> {
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM webhook_events WHERE task_id = $1 ORDER BY seq");
        let events = sqlx::query(&sql)
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT a.event_id, a.at, a.status_code, a.latency_ms, a.error, a.response_excerpt \
             FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_id \
             WHERE e.task_id = $1 ORDER BY a.at",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(WebhookEvent, Vec<WebhookAttempt>)> =
            events.into_iter().map(|e| (e, Vec::new())).collect();
        for r in &rows {
            let event_id: String = r.try_get("event_id")?;
            if let Some((_, attempts)) = out.iter_mut().find(|(e, _)| e.id == event_id) {
                attempts.push(WebhookAttempt {
                    at: r.try_get("at")?,
                    status_code: r.try_get("status_code")?,
                    latency_ms: r.try_get("latency_ms")?,
                    error: r.try_get("error")?,
                    response_excerpt: r.try_get("response_excerpt")?,
                });
            }
        }
        Ok(out)
    }

    /// Queues an event of `task_id` again, due now, with a fresh retry schedule. Asking
    /// for it again is the client saying its receiver is back: a URL it had turned off
    /// with 410 is turned on again for the key.
    pub async fn redeliver_webhook_event(
        &self,
        task_id: &str,
        event_id: &str,
    ) -> anyhow::Result<Redelivery> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let sql = format!(
            "UPDATE webhook_events SET state = 'pending', attempts = 0, next_attempt_at = $3, \
             lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND task_id = $2 AND lease_until <= $3 RETURNING {EVENT_COLUMNS}"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(event_id)
            .bind(task_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            let exists =
                sqlx::query("SELECT 1 AS one FROM webhook_events WHERE id = $1 AND task_id = $2")
                    .bind(event_id)
                    .bind(task_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .is_some();
            return Ok(if exists {
                Redelivery::InFlight
            } else {
                Redelivery::NotFound
            });
        };
        let event = event_from_row(&row)?;
        sqlx::query("DELETE FROM webhook_disabled_urls WHERE api_key_id = $1 AND url = $2")
            .bind(&event.api_key_id)
            .bind(&event.url)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Redelivery::Queued(event))
    }

    pub(super) fn prune_webhook_events_sql(&self) -> String {
        // The no-op write takes SQLite's write lock at once and, on PostgreSQL, locks the
        // rows so that a redelivery racing the prune waits and then finds no event; the
        // outer `state` test is rechecked on a row a redelivery changed first.
        format!(
            "UPDATE webhook_events SET lease_until = 0 WHERE state <> 'pending' AND id IN (\
               SELECT id FROM webhook_events {} WHERE state <> 'pending' AND next_attempt_at < $1 \
               ORDER BY next_attempt_at LIMIT $2) RETURNING id",
            self.sqlite_index("webhook_events_final")
        )
    }

    /// Deletes up to `limit` events whose delivery is final (delivered, failed, disabled)
    /// and was last due before `before`, with their attempts; pending events stay whatever
    /// their age. Returns how many events it deleted.
    pub async fn prune_webhook_events(&self, before: i64, limit: u32) -> anyhow::Result<u64> {
        let mut tx = self.writes.begin().await?;
        let ids: Vec<String> = sqlx::query(&self.prune_webhook_events_sql())
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        // Attempts first: they reference their event.
        super::delete_where_in(&mut tx, "webhook_attempts", "event_id", &ids).await?;
        super::delete_where_in(&mut tx, "webhook_events", "id", &ids).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}
