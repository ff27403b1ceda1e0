//! The provider health rows every gateway process shares: one circuit row per provider
//! (`provider_circuits`) and the outcome buckets each process writes for each provider,
//! phase and second (`provider_health_buckets`). What the rows mean, and when a circuit
//! opens, is `health/`'s business; this module only reads and writes them.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::Store;

/// One provider's circuit row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitRow {
    pub open: bool,
    pub submit_failures: i64,
    pub poll_failures: i64,
    pub opened_until: i64,
    pub probe_until: i64,
    pub closed_at: i64,
    pub last_error: Option<CircuitError>,
}

/// The last failure a circuit row recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitError {
    pub code: String,
    pub message: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// One process's totals of one provider, phase and second, as it writes them.
pub struct BucketWrite<'a> {
    pub provider: &'a str,
    pub phase: &'static str,
    pub start: i64,
    pub ok: i64,
    pub failed: i64,
    pub latency_sum_ms: i64,
    /// The latency histogram, encoded by `health/`.
    pub latency_hist: String,
}

/// Every other process's totals of one provider, phase and second.
pub struct BucketTotals {
    pub provider: String,
    pub phase: String,
    pub start: i64,
    pub ok: i64,
    pub failed: i64,
}

const CIRCUIT_COLUMNS: &str = "provider, state, submit_failures, poll_failures, opened_until, \
    probe_until, closed_at, last_error_code, last_error_message, last_error_at";

fn circuit_from_row(row: &AnyRow) -> anyhow::Result<CircuitRow> {
    let last_error = match row.try_get::<Option<String>, _>("last_error_code")? {
        Some(code) => Some(CircuitError {
            code,
            message: row.try_get("last_error_message")?,
            at: row
                .try_get::<Option<i64>, _>("last_error_at")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(CircuitRow {
        open: row.try_get::<String, _>("state")? == "open",
        submit_failures: row.try_get("submit_failures")?,
        poll_failures: row.try_get("poll_failures")?,
        opened_until: row.try_get("opened_until")?,
        probe_until: row.try_get("probe_until")?,
        closed_at: row.try_get("closed_at")?,
        last_error,
    })
}

impl Store {
    /// Every provider's circuit row.
    pub async fn circuits(&self) -> anyhow::Result<HashMap<String, CircuitRow>> {
        let rows = sqlx::query(&format!("SELECT {CIRCUIT_COLUMNS} FROM provider_circuits"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, circuit_from_row(row)?)))
            .collect()
    }

    /// One provider's circuit row, if it has one.
    pub async fn circuit(&self, provider: &str) -> anyhow::Result<Option<CircuitRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CIRCUIT_COLUMNS} FROM provider_circuits WHERE provider = $1"
        ))
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(circuit_from_row).transpose()
    }

    /// Claims the half-open probe slot of an open circuit whose cool-down has passed at
    /// `now`, holding it until `until`: a conditional UPDATE, so only one process wins.
    /// The claimed row, or None when there was nothing to claim.
    pub async fn claim_circuit_probe(
        &self,
        provider: &str,
        now: i64,
        until: i64,
    ) -> anyhow::Result<Option<CircuitRow>> {
        let row = sqlx::query(&format!(
            "UPDATE provider_circuits SET probe_until = $2 \
             WHERE provider = $1 AND state = 'open' AND opened_until <= $3 AND probe_until <= $3 \
             RETURNING {CIRCUIT_COLUMNS}"
        ))
        .bind(provider)
        .bind(until)
        .bind(now)
        .fetch_optional(self.writer())
        .await?;
        row.as_ref().map(circuit_from_row).transpose()
    }

    /// A successful submit: ends the submit failure run and closes an open circuit (which
    /// also ends the poll failure run and marks when it closed).
    pub async fn close_circuit_after_submit(&self, provider: &str, now: i64) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE provider_circuits SET state = 'closed', submit_failures = 0, \
             poll_failures = CASE WHEN state = 'open' THEN 0 ELSE poll_failures END, \
             closed_at = CASE WHEN state = 'open' THEN $2 ELSE closed_at END, \
             opened_until = 0, probe_until = 0, updated_at = $2 \
             WHERE provider = $1 AND (state = 'open' OR submit_failures > 0)",
        )
        .bind(provider)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// A successful poll: ends the poll failure run.
    pub async fn reset_circuit_poll_failures(
        &self,
        provider: &str,
        now: i64,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE provider_circuits SET poll_failures = 0, updated_at = $2 \
             WHERE provider = $1 AND poll_failures > 0",
        )
        .bind(provider)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Records a failure in the provider's circuit row: creates the row if needed, takes its
    /// row lock (PostgreSQL) or the write lock (SQLite) before reading it, lets `decide`
    /// change the counters and the state, and writes them with `error` in the same
    /// transaction, so concurrent failures from several processes are each counted once.
    /// Returns the row as written.
    pub async fn record_circuit_failure(
        &self,
        provider: &str,
        error: &CircuitError,
        decide: impl FnOnce(&mut CircuitRow),
    ) -> anyhow::Result<CircuitRow> {
        let now = error.at;
        let mut tx = self.writer().begin().await?;
        let locked = sqlx::query(&format!(
            "INSERT INTO provider_circuits (provider, state, updated_at) VALUES ($1, 'closed', $2) \
             ON CONFLICT (provider) DO UPDATE SET updated_at = excluded.updated_at \
             RETURNING {CIRCUIT_COLUMNS}"
        ))
        .bind(provider)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut row = circuit_from_row(&locked)?;
        decide(&mut row);
        sqlx::query(
            "UPDATE provider_circuits SET state = $2, submit_failures = $3, poll_failures = $4, \
             opened_until = $5, probe_until = $6, \
             last_error_code = $7, last_error_message = $8, last_error_at = $9, updated_at = $9 \
             WHERE provider = $1",
        )
        .bind(provider)
        .bind(if row.open { "open" } else { "closed" })
        .bind(row.submit_failures)
        .bind(row.poll_failures)
        .bind(row.opened_until)
        .bind(row.probe_until)
        .bind(&error.code)
        .bind(error.message.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        row.last_error = Some(error.clone());
        Ok(row)
    }

    /// Writes one process's (`instance`) bucket totals, replacing what it wrote before.
    pub async fn write_health_buckets(
        &self,
        instance: &str,
        buckets: &[BucketWrite<'_>],
    ) -> anyhow::Result<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer().begin().await?;
        for b in buckets {
            sqlx::query(
                "INSERT INTO provider_health_buckets (provider, phase, bucket_start, instance, ok, \
                 failed, latency_sum_ms, latency_hist) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (provider, phase, bucket_start, instance) DO UPDATE SET ok = excluded.ok, \
                 failed = excluded.failed, latency_sum_ms = excluded.latency_sum_ms, \
                 latency_hist = excluded.latency_hist",
            )
            .bind(b.provider)
            .bind(b.phase)
            .bind(b.start)
            .bind(instance)
            .bind(b.ok)
            .bind(b.failed)
            .bind(b.latency_sum_ms)
            .bind(&b.latency_hist)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes every process's buckets that started before `since`; returns how many.
    pub async fn delete_health_buckets_before(&self, since: i64) -> anyhow::Result<u64> {
        let r = sqlx::query("DELETE FROM provider_health_buckets WHERE bucket_start < $1")
            .bind(since)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected())
    }

    /// The other processes' (not `instance`) totals of the buckets that started at or
    /// after `since`, summed per provider, phase and second.
    pub async fn other_health_buckets(
        &self,
        instance: &str,
        since: i64,
    ) -> anyhow::Result<Vec<BucketTotals>> {
        let rows = sqlx::query(
            "SELECT provider, phase, bucket_start, CAST(SUM(ok) AS BIGINT) AS ok, \
             CAST(SUM(failed) AS BIGINT) AS failed FROM provider_health_buckets \
             WHERE bucket_start >= $1 AND instance <> $2 GROUP BY provider, phase, bucket_start",
        )
        .bind(since)
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BucketTotals {
                    provider: row.try_get("provider")?,
                    phase: row.try_get("phase")?,
                    start: row.try_get("bucket_start")?,
                    ok: row.try_get("ok")?,
                    failed: row.try_get("failed")?,
                })
            })
            .collect()
    }

    /// The other processes' (not `instance`) encoded submit latency histograms of
    /// `provider`, of the buckets that started at or after `since`.
    pub async fn other_submit_latency_hists(
        &self,
        provider: &str,
        instance: &str,
        since: i64,
    ) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT latency_hist FROM provider_health_buckets \
             WHERE provider = $1 AND phase = 'submit' AND bucket_start >= $2 AND instance <> $3",
        )
        .bind(provider)
        .bind(since)
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("latency_hist")?))
            .collect()
    }

    /// Unfinished tasks per provider: every state but the terminal ones, so a state added
    /// to the task life cycle later is counted without touching this query.
    pub async fn unfinished_tasks_by_provider(&self) -> anyhow::Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT provider, COUNT(*) AS n FROM tasks \
             WHERE provider IS NOT NULL AND state NOT IN ('completed', 'failed', 'cancelled') \
             GROUP BY provider",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, row.try_get("n")?)))
            .collect()
    }
}
