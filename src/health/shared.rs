//! What the processes share through the store: the breaker rows (read, locked, claimed
//! and written in transactions) and the statistics buckets each process writes and reads.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::circuit::{Breaker, Circuit, Phase};
use super::report::LastError;
use super::stats::{encode_hist, Bucket, BucketKey, Counts};
use super::Health;
use crate::store::now_ms;

/// How long a claimed probe holds the half-open slot: longer than any submit, short enough
/// that a prober that crashed does not keep the provider shut for long.
const PROBE_CLAIM_MS: i64 = 60_000;

/// A breaker row with the last error it recorded.
#[derive(Debug, Clone, Default)]
pub(super) struct Stored {
    pub(super) breaker: Breaker,
    pub(super) last_error: Option<LastError>,
}

pub(super) const CIRCUIT_COLUMNS: &str =
    "provider, state, submit_failures, poll_failures, opened_until, \
    probe_until, closed_at, last_error_code, last_error_message, last_error_at";

pub(super) fn stored_from_row(row: &AnyRow) -> anyhow::Result<Stored> {
    let last_error = match row.try_get::<Option<String>, _>("last_error_code")? {
        Some(code) => Some(LastError {
            code,
            message: row.try_get("last_error_message")?,
            at: row
                .try_get::<Option<i64>, _>("last_error_at")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Stored {
        breaker: Breaker {
            open: row.try_get::<String, _>("state")? == "open",
            submit_failures: row.try_get("submit_failures")?,
            poll_failures: row.try_get("poll_failures")?,
            opened_until: row.try_get("opened_until")?,
            probe_until: row.try_get("probe_until")?,
            closed_at: row.try_get("closed_at")?,
        },
        last_error,
    })
}

impl Health {
    pub(super) async fn flush_locked(&self) -> anyhow::Result<()> {
        let now = now_ms();
        let since = self.window_start(now);
        let batch: Vec<(BucketKey, Bucket)> = {
            let mut view = self.view();
            view.own.retain(|(_, _, start), _| *start >= since);
            let keys: Vec<BucketKey> = view.dirty.drain().collect();
            keys.into_iter()
                .filter_map(|k| view.own.get(&k).cloned().map(|b| (k, b)))
                .collect()
        };
        if let Err(e) = self.write_buckets(&batch).await {
            // Written totals are absolute: the next flush writes them again.
            self.view().dirty.extend(batch.into_iter().map(|(k, _)| k));
            return Err(e);
        }
        Ok(())
    }

    /// Deletes every process's buckets that left the window; returns how many.
    pub(super) async fn delete_old(&self) -> anyhow::Result<u64> {
        let since = self.window_start(now_ms());
        let r = sqlx::query("DELETE FROM provider_health_buckets WHERE bucket_start < $1")
            .bind(since)
            .execute(self.store().writer())
            .await?;
        let mut view = self.view();
        view.own.retain(|(_, _, start), _| *start >= since);
        view.others.retain(|(_, _, start), _| *start >= since);
        Ok(r.rows_affected())
    }

    pub(super) async fn write_buckets(&self, batch: &[(BucketKey, Bucket)]) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.store().writer().begin().await?;
        for ((provider, phase, start), b) in batch {
            sqlx::query(
                "INSERT INTO provider_health_buckets (provider, phase, bucket_start, instance, ok, \
                 failed, latency_sum_ms, latency_hist) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (provider, phase, bucket_start, instance) DO UPDATE SET ok = excluded.ok, \
                 failed = excluded.failed, latency_sum_ms = excluded.latency_sum_ms, \
                 latency_hist = excluded.latency_hist",
            )
            .bind(provider)
            .bind(phase.as_str())
            .bind(*start)
            .bind(&self.inner.instance)
            .bind(b.counts.ok)
            .bind(b.counts.failed)
            .bind(b.latency_sum_ms)
            .bind(encode_hist(&b.latencies))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn refresh_locked(&self) -> anyhow::Result<()> {
        let now = now_ms();
        let breakers = self.stored().await?;
        let rows = sqlx::query(
            "SELECT provider, phase, bucket_start, CAST(SUM(ok) AS BIGINT) AS ok, \
             CAST(SUM(failed) AS BIGINT) AS failed FROM provider_health_buckets \
             WHERE bucket_start >= $1 AND instance <> $2 GROUP BY provider, phase, bucket_start",
        )
        .bind(self.window_start(now))
        .bind(&self.inner.instance)
        .fetch_all(self.store().pool())
        .await?;
        let mut others = HashMap::with_capacity(rows.len());
        for row in &rows {
            let Some(phase) = Phase::parse(&row.try_get::<String, _>("phase")?) else {
                continue;
            };
            let key = (
                row.try_get("provider")?,
                phase,
                row.try_get("bucket_start")?,
            );
            let counts = Counts {
                ok: row.try_get("ok")?,
                failed: row.try_get("failed")?,
            };
            others.insert(key, counts);
        }
        let mut view = self.view();
        view.others = others;
        view.breakers = breakers;
        view.refreshed_at = Some(now);
        Ok(())
    }

    /// For a provider whose cool-down has passed (HalfOpen): atomically claims the single
    /// probe slot (a conditional UPDATE, so only one replica wins); true if this caller may
    /// send the probe. True for Closed.
    pub async fn try_claim_probe(&self, provider: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let claimed = sqlx::query(&format!(
            "UPDATE provider_circuits SET probe_until = $2 \
             WHERE provider = $1 AND state = 'open' AND opened_until <= $3 AND probe_until <= $3 \
             RETURNING {CIRCUIT_COLUMNS}"
        ))
        .bind(provider)
        .bind(now + PROBE_CLAIM_MS)
        .bind(now)
        .fetch_optional(self.store().writer())
        .await?;
        if let Some(row) = claimed {
            self.remember(provider, stored_from_row(&row)?);
            return Ok(true);
        }
        let row = sqlx::query(&format!(
            "SELECT {CIRCUIT_COLUMNS} FROM provider_circuits WHERE provider = $1"
        ))
        .bind(provider)
        .fetch_optional(self.store().pool())
        .await?;
        Ok(match row {
            None => true,
            Some(row) => {
                let stored = stored_from_row(&row)?;
                let closed = !stored.breaker.open;
                self.remember(provider, stored);
                closed
            }
        })
    }

    /// A success resets its phase's failure run. Only a submit closes an open circuit: polls
    /// of older tasks succeeding say nothing about whether new work is accepted. Called only
    /// when this process's view shows something to reset.
    pub(super) async fn record_success(
        &self,
        provider: &str,
        phase: Phase,
        now: i64,
    ) -> anyhow::Result<()> {
        let reset = match phase {
            Phase::Submit => {
                "UPDATE provider_circuits SET state = 'closed', submit_failures = 0, \
                 poll_failures = CASE WHEN state = 'open' THEN 0 ELSE poll_failures END, \
                 closed_at = CASE WHEN state = 'open' THEN $2 ELSE closed_at END, \
                 opened_until = 0, probe_until = 0, updated_at = $2 \
                 WHERE provider = $1 AND (state = 'open' OR submit_failures > 0)"
            }
            Phase::Poll => {
                "UPDATE provider_circuits SET poll_failures = 0, updated_at = $2 \
                 WHERE provider = $1 AND poll_failures > 0"
            }
        };
        sqlx::query(reset)
            .bind(provider)
            .bind(now)
            .execute(self.store().writer())
            .await?;
        // Whether or not the row still needed it: it now holds no run of `phase` to reset.
        if let Some(s) = self.view().breakers.get_mut(provider) {
            s.breaker.apply_success(phase, now);
        }
        Ok(())
    }

    /// Reads, decides and writes the breaker in one transaction that holds its row, so
    /// concurrent failures from several processes are each counted once. The failure is
    /// already in this process's counters.
    pub(super) async fn record_failure(
        &self,
        provider: &str,
        phase: Phase,
        error: &LastError,
    ) -> anyhow::Result<()> {
        let now = error.at;
        let mut tx = self.store().writer().begin().await?;
        let mut breaker = lock_breaker(&mut tx, provider, now).await?;
        breaker.count_failure(phase);
        let open = match breaker.circuit(now) {
            // A late answer to a call sent before the circuit opened: the cool-down stands.
            Circuit::Open => false,
            Circuit::HalfOpen => true,
            Circuit::Closed => {
                breaker.failures(phase) >= i64::from(self.inner.cfg.consecutive_failures)
                    || self.rate_trips(provider, phase, breaker.closed_at, now)
            }
        };
        if open {
            breaker.open = true;
            breaker.opened_until = now + self.cooldown_ms();
            breaker.probe_until = 0;
        }
        sqlx::query(
            "UPDATE provider_circuits SET state = $2, submit_failures = $3, poll_failures = $4, \
             opened_until = $5, probe_until = $6, \
             last_error_code = $7, last_error_message = $8, last_error_at = $9, updated_at = $9 \
             WHERE provider = $1",
        )
        .bind(provider)
        .bind(if breaker.open { "open" } else { "closed" })
        .bind(breaker.submit_failures)
        .bind(breaker.poll_failures)
        .bind(breaker.opened_until)
        .bind(breaker.probe_until)
        .bind(&error.code)
        .bind(error.message.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let stored = Stored {
            breaker,
            last_error: Some(error.clone()),
        };
        self.remember(provider, stored);
        Ok(())
    }
    pub(super) async fn stored(&self) -> anyhow::Result<HashMap<String, Stored>> {
        let rows = sqlx::query(&format!("SELECT {CIRCUIT_COLUMNS} FROM provider_circuits"))
            .fetch_all(self.store().pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, stored_from_row(row)?)))
            .collect()
    }
}

/// Creates the provider's row if needed and takes its row lock (PostgreSQL) or the write
/// lock (SQLite) before reading it, so the read-decide-write that follows cannot interleave
/// with another process's.
async fn lock_breaker(
    tx: &mut Transaction<'_, Any>,
    provider: &str,
    now: i64,
) -> anyhow::Result<Breaker> {
    let row = sqlx::query(&format!(
        "INSERT INTO provider_circuits (provider, state, updated_at) VALUES ($1, 'closed', $2) \
         ON CONFLICT (provider) DO UPDATE SET updated_at = excluded.updated_at \
         RETURNING {CIRCUIT_COLUMNS}"
    ))
    .bind(provider)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(stored_from_row(&row)?.breaker)
}
