//! Provider health: a circuit breaker per upstream provider, fed by submit and poll
//! outcomes and kept in the database, so that every gateway process sees the same circuit.
//!
//! A closed circuit opens when one phase (submit or poll) reaches `consecutive_failures`
//! in a row, or when that phase's failure rate since the circuit last closed reaches
//! `failure_rate` over at least `min_samples` outcomes of the window. It stays open for
//! `cooldown_secs`; then it is half-open and exactly one caller may claim the probe. A
//! successful submit closes it; a failure while half-open opens it for another cool-down.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::config::HealthConfig;
use crate::providers::ErrorKind;
use crate::store::{now_ms, Store};

/// How long a claimed probe holds the half-open slot: longer than any submit, short enough
/// that a prober that crashed does not keep the provider shut for long.
const PROBE_CLAIM_MS: i64 = 60_000;
/// The newest submit latencies of the window that the percentiles are computed from.
const LATENCY_SAMPLES: i64 = 1000;
/// `record` prunes outcomes older than the window about once in this many calls.
const PRUNE_ONE_IN: u32 = 64;
/// Provider messages are the provider's words and may be long; the admin view needs a gist.
const MAX_MESSAGE_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Submit,
    Poll,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Submit => "submit",
            Phase::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// What routing needs of one provider. Providers with no history are absent from a
/// snapshot: treat them as closed with no success rate.
#[derive(Debug, Clone)]
pub struct ProviderHealth {
    pub circuit: Circuit,
    /// Share of the window's outcomes (both phases) that were successes; None without samples.
    pub success_rate: Option<f64>,
}

/// One provider in the admin view.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderReport {
    pub provider: String,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Unix milliseconds at which an open circuit's cool-down ends.
    pub opened_until: Option<i64>,
    /// The longer of the submit and poll failure runs.
    pub consecutive_failures: i64,
    pub success_rate: Option<f64>,
    /// Outcomes in the window.
    pub samples: i64,
    pub submit_latency_ms: LatencyPercentiles,
    /// Unfinished tasks of this provider (being submitted, queued or in progress).
    pub in_flight_tasks: i64,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencyPercentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
}

/// The last failure that counted against the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub code: String,
    pub message: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

#[derive(Clone)]
pub struct Health {
    store: Store,
    cfg: HealthConfig,
}

/// One provider's breaker row. "Half-open" is not stored: it is an open circuit whose
/// cool-down has passed, so no process has to flip it at the right moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Breaker {
    open: bool,
    submit_failures: i64,
    poll_failures: i64,
    opened_until: i64,
    probe_until: i64,
    closed_at: i64,
}

impl Breaker {
    fn circuit(&self, now: i64) -> Circuit {
        match (self.open, now < self.opened_until) {
            (false, _) => Circuit::Closed,
            (true, true) => Circuit::Open,
            (true, false) => Circuit::HalfOpen,
        }
    }

    fn failures(&self, phase: Phase) -> i64 {
        match phase {
            Phase::Submit => self.submit_failures,
            Phase::Poll => self.poll_failures,
        }
    }

    fn count_failure(&mut self, phase: Phase) {
        match phase {
            Phase::Submit => self.submit_failures += 1,
            Phase::Poll => self.poll_failures += 1,
        }
    }
}

/// A breaker row with the last error it recorded.
struct Stored {
    breaker: Breaker,
    last_error: Option<LastError>,
}

/// Outcomes of one provider in the window.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    total: i64,
    succeeded: i64,
}

impl Window {
    fn success_rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.succeeded as f64 / self.total as f64)
    }
}

const CIRCUIT_COLUMNS: &str = "provider, state, submit_failures, poll_failures, opened_until, \
    probe_until, closed_at, last_error_code, last_error_message, last_error_at";

fn stored_from_row(row: &AnyRow) -> anyhow::Result<Stored> {
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

/// Whether a failure of this kind says something about the provider. The request's own
/// faults mean the provider answered, which is a success as far as its health goes.
fn counts_against(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::Retryable
        | ErrorKind::Timeout
        | ErrorKind::Malformed
        | ErrorKind::Unreadable
        | ErrorKind::RateLimited
        | ErrorKind::ConcurrencyLimited
        | ErrorKind::Billing
        | ErrorKind::Auth => true,
        ErrorKind::BadRequest | ErrorKind::ContentPolicy | ErrorKind::NotFound => false,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn percentiles(mut latencies: Vec<i64>) -> LatencyPercentiles {
    latencies.sort_unstable();
    LatencyPercentiles {
        p50: percentile(&latencies, 0.50),
        p95: percentile(&latencies, 0.95),
    }
}

impl Health {
    pub fn new(store: Store, cfg: HealthConfig) -> Health {
        Health { store, cfg }
    }

    /// One outcome of a submit or poll. Failures that say something about the provider
    /// (ErrorKind::Retryable, Timeout, Malformed, RateLimited, ConcurrencyLimited, Billing,
    /// Auth) count against it; BadRequest, ContentPolicy and NotFound are the request's
    /// fault and count as the provider answering (success).
    pub async fn record(
        &self,
        provider: &str,
        phase: Phase,
        outcome: Result<(), ErrorKind>,
        message: Option<&str>,
        latency: Duration,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let latency_ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        match outcome {
            Err(kind) if counts_against(kind) => {
                let error = LastError {
                    code: kind.code().to_string(),
                    message: message.map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect()),
                    at: now,
                };
                self.record_failure(provider, phase, &error, latency_ms)
                    .await?
            }
            answered => {
                let code = answered.err().map(ErrorKind::code);
                self.record_success(provider, phase, code, latency_ms, now)
                    .await?
            }
        }
        // Pruning now and then from here needs no worker and no process-local schedule; the
        // outcome is already recorded, so a failed prune is only worth a warning.
        let prune = rand::random::<u32>() % PRUNE_ONE_IN == 0;
        if prune {
            if let Err(e) = self.prune().await {
                tracing::warn!(error = ?e, "pruning provider outcomes failed");
            }
        }
        Ok(())
    }

    /// Deletes outcomes older than the window (`record` calls it now and then); returns how
    /// many it deleted.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        let r = sqlx::query("DELETE FROM provider_outcomes WHERE at < $1")
            .bind(self.window_start(now_ms()))
            .execute(self.store.pool())
            .await?;
        Ok(r.rows_affected())
    }

    /// Every provider's circuit and window success rate, in two queries.
    pub async fn snapshot(&self) -> anyhow::Result<HashMap<String, ProviderHealth>> {
        let now = now_ms();
        let mut out: HashMap<String, ProviderHealth> = self
            .stored()
            .await?
            .into_iter()
            .map(|(name, s)| {
                let health = ProviderHealth {
                    circuit: s.breaker.circuit(now),
                    success_rate: None,
                };
                (name, health)
            })
            .collect();
        for (name, window) in self.windows(now).await? {
            out.entry(name)
                .or_insert(ProviderHealth {
                    circuit: Circuit::Closed,
                    success_rate: None,
                })
                .success_rate = window.success_rate();
        }
        Ok(out)
    }

    /// For a provider whose cool-down has passed (HalfOpen): atomically claims the single
    /// probe slot (a conditional UPDATE, so only one replica wins); true if this caller may
    /// send the probe. True for Closed.
    pub async fn try_claim_probe(&self, provider: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let claimed = sqlx::query(
            "UPDATE provider_circuits SET probe_until = $2 \
             WHERE provider = $1 AND state = 'open' AND opened_until <= $3 AND probe_until <= $3",
        )
        .bind(provider)
        .bind(now + PROBE_CLAIM_MS)
        .bind(now)
        .execute(self.store.pool())
        .await?;
        if claimed.rows_affected() > 0 {
            return Ok(true);
        }
        let row = sqlx::query("SELECT state FROM provider_circuits WHERE provider = $1")
            .bind(provider)
            .fetch_optional(self.store.pool())
            .await?;
        Ok(match row {
            None => true,
            Some(row) => row.try_get::<String, _>("state")? == "closed",
        })
    }

    /// The admin view, one entry per name given (providers with no history show a closed
    /// circuit and nulls).
    pub async fn report(&self, providers: &[String]) -> anyhow::Result<Vec<ProviderReport>> {
        let now = now_ms();
        let mut stored = self.stored().await?;
        let windows = self.windows(now).await?;
        let in_flight = self.in_flight().await?;
        let mut out = Vec::with_capacity(providers.len());
        for name in providers {
            let Stored {
                breaker,
                last_error,
            } = stored.remove(name).unwrap_or(Stored {
                breaker: Breaker::default(),
                last_error: None,
            });
            let window = windows.get(name).copied().unwrap_or_default();
            out.push(ProviderReport {
                provider: name.clone(),
                circuit: breaker.circuit(now).as_str(),
                opened_until: breaker.open.then_some(breaker.opened_until),
                consecutive_failures: breaker.submit_failures.max(breaker.poll_failures),
                success_rate: window.success_rate(),
                samples: window.total,
                submit_latency_ms: percentiles(self.submit_latencies(name, now).await?),
                in_flight_tasks: in_flight.get(name).copied().unwrap_or(0),
                last_error,
            });
        }
        Ok(out)
    }

    /// A success resets its phase's failure run. Only a submit closes an open circuit: polls
    /// of older tasks succeeding say nothing about whether new work is accepted.
    async fn record_success(
        &self,
        provider: &str,
        phase: Phase,
        code: Option<&str>,
        latency_ms: i64,
        now: i64,
    ) -> anyhow::Result<()> {
        let outcome = Outcome {
            phase,
            ok: true,
            error_code: code,
            latency_ms,
            at: now,
        };
        insert_outcome(self.store.pool(), provider, outcome).await?;
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
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Reads, decides and writes the breaker in one transaction that holds its row, so
    /// concurrent failures from several processes are each counted once.
    async fn record_failure(
        &self,
        provider: &str,
        phase: Phase,
        error: &LastError,
        latency_ms: i64,
    ) -> anyhow::Result<()> {
        let now = error.at;
        let mut tx = self.store.pool().begin().await?;
        let mut breaker = lock_breaker(&mut tx, provider, now).await?;
        let outcome = Outcome {
            phase,
            ok: false,
            error_code: Some(&error.code),
            latency_ms,
            at: now,
        };
        insert_outcome(&mut *tx, provider, outcome).await?;
        breaker.count_failure(phase);
        let open = match breaker.circuit(now) {
            // A late answer to a call sent before the circuit opened: the cool-down stands.
            Circuit::Open => false,
            Circuit::HalfOpen => true,
            Circuit::Closed => {
                breaker.failures(phase) >= i64::from(self.cfg.consecutive_failures)
                    || self
                        .rate_trips(&mut tx, provider, phase, breaker.closed_at, now)
                        .await?
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
        Ok(())
    }

    /// Whether the phase's failure rate since the circuit last closed (within the window)
    /// reaches the threshold over enough outcomes. Counting from the close keeps the
    /// failures that opened the circuit from reopening it right after a good probe.
    async fn rate_trips(
        &self,
        tx: &mut Transaction<'_, Any>,
        provider: &str,
        phase: Phase,
        closed_at: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, COUNT(CASE WHEN ok = 0 THEN 1 END) AS failed \
             FROM provider_outcomes WHERE provider = $1 AND phase = $2 AND at >= $3",
        )
        .bind(provider)
        .bind(phase.as_str())
        .bind(self.window_start(now).max(closed_at))
        .fetch_one(&mut **tx)
        .await?;
        let total: i64 = row.try_get("total")?;
        let failed: i64 = row.try_get("failed")?;
        Ok(total >= i64::from(self.cfg.min_samples.max(1))
            && failed as f64 >= self.cfg.failure_rate * total as f64)
    }

    async fn stored(&self) -> anyhow::Result<HashMap<String, Stored>> {
        let rows = sqlx::query(&format!("SELECT {CIRCUIT_COLUMNS} FROM provider_circuits"))
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, stored_from_row(row)?)))
            .collect()
    }

    async fn windows(&self, now: i64) -> anyhow::Result<HashMap<String, Window>> {
        let rows = sqlx::query(
            "SELECT provider, COUNT(*) AS total, COUNT(CASE WHEN ok = 1 THEN 1 END) AS succeeded \
             FROM provider_outcomes WHERE at >= $1 GROUP BY provider",
        )
        .bind(self.window_start(now))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let window = Window {
                    total: row.try_get("total")?,
                    succeeded: row.try_get("succeeded")?,
                };
                Ok((row.try_get("provider")?, window))
            })
            .collect()
    }

    /// Unfinished tasks per provider: every state but the terminal ones, so a state added
    /// to the task life cycle later is counted without touching this query.
    async fn in_flight(&self) -> anyhow::Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT provider, COUNT(*) AS n FROM tasks \
             WHERE provider IS NOT NULL AND state NOT IN ('completed', 'failed') \
             GROUP BY provider",
        )
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, row.try_get("n")?)))
            .collect()
    }

    async fn submit_latencies(&self, provider: &str, now: i64) -> anyhow::Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT latency_ms FROM provider_outcomes \
             WHERE provider = $1 AND phase = 'submit' AND at >= $2 ORDER BY at DESC LIMIT $3",
        )
        .bind(provider)
        .bind(self.window_start(now))
        .bind(LATENCY_SAMPLES)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("latency_ms")?))
            .collect()
    }

    fn cooldown_ms(&self) -> i64 {
        (self.cfg.cooldown_secs * 1000.0).round() as i64
    }

    fn window_start(&self, now: i64) -> i64 {
        let window_ms =
            i64::try_from(self.cfg.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        now.saturating_sub(window_ms)
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

/// One row of `provider_outcomes`.
struct Outcome<'a> {
    phase: Phase,
    /// The provider answered (a refusal that was the request's fault included).
    ok: bool,
    /// Kept for those refusals too, so the window shows what the answers were.
    error_code: Option<&'a str>,
    latency_ms: i64,
    at: i64,
}

async fn insert_outcome<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    provider: &str,
    o: Outcome<'_>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO provider_outcomes (provider, phase, ok, error_code, latency_ms, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(provider)
    .bind(o.phase.as_str())
    .bind(i64::from(o.ok))
    .bind(o.error_code)
    .bind(o.latency_ms)
    .bind(o.at)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_latencies() {
        let latencies: Vec<i64> = (1..=20).rev().map(|i| i * 10).collect();
        let p = percentiles(latencies);
        assert_eq!((p.p50, p.p95), (Some(100), Some(190)));
        assert_eq!(
            percentiles(vec![7]),
            LatencyPercentiles {
                p50: Some(7),
                p95: Some(7)
            }
        );
        assert_eq!(percentiles(Vec::new()), LatencyPercentiles::default());
    }

    #[test]
    fn an_open_circuit_is_half_open_once_its_cool_down_has_passed() {
        let open = Breaker {
            open: true,
            opened_until: 1_000,
            ..Breaker::default()
        };
        assert_eq!(open.circuit(999), Circuit::Open);
        assert_eq!(open.circuit(1_000), Circuit::HalfOpen);
        assert_eq!(Breaker::default().circuit(0), Circuit::Closed);
    }

    #[test]
    fn only_failures_that_say_something_about_the_provider_count_against_it() {
        assert!(counts_against(ErrorKind::RateLimited));
        assert!(counts_against(ErrorKind::Auth));
        assert!(!counts_against(ErrorKind::ContentPolicy));
        assert!(!counts_against(ErrorKind::NotFound));
    }
}
