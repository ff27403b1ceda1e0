//! What the processes share through the store (`store/health.rs` holds the SQL): the
//! breaker rows (read, claimed, and written in a transaction that holds the row) and the
//! statistics buckets each process writes and reads.

use std::collections::HashMap;

use super::circuit::{Breaker, Circuit, Phase};
use super::report::LastError;
use super::stats::{encode_hist, Bucket, BucketKey, Counts};
use super::Health;
use crate::store::{now_ms, BucketWrite, CircuitError, CircuitRow};

/// How long a claimed probe holds the half-open slot: longer than any submit, short enough
/// that a prober that crashed does not keep the provider shut for long.
const PROBE_CLAIM_MS: i64 = 60_000;

/// A breaker row with the last error it recorded.
#[derive(Debug, Clone, Default)]
pub(super) struct Stored {
    pub(super) breaker: Breaker,
    pub(super) last_error: Option<LastError>,
}

impl From<&CircuitRow> for Breaker {
    fn from(row: &CircuitRow) -> Breaker {
        Breaker {
            open: row.open,
            submit_failures: row.submit_failures,
            poll_failures: row.poll_failures,
            opened_until: row.opened_until,
            probe_until: row.probe_until,
            closed_at: row.closed_at,
        }
    }
}

impl From<CircuitRow> for Stored {
    fn from(row: CircuitRow) -> Stored {
        Stored {
            breaker: Breaker::from(&row),
            last_error: row.last_error.map(|e| LastError {
                code: e.code,
                message: e.message,
                at: e.at,
            }),
        }
    }
}

impl Breaker {
    /// Copies the counters and state into the row to be written.
    fn write_to(&self, row: &mut CircuitRow) {
        row.open = self.open;
        row.submit_failures = self.submit_failures;
        row.poll_failures = self.poll_failures;
        row.opened_until = self.opened_until;
        row.probe_until = self.probe_until;
        row.closed_at = self.closed_at;
    }
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
        let deleted = self.store().delete_health_buckets_before(since).await?;
        let mut view = self.view();
        view.own.retain(|(_, _, start), _| *start >= since);
        view.others.retain(|(_, _, start), _| *start >= since);
        Ok(deleted)
    }

    async fn write_buckets(&self, batch: &[(BucketKey, Bucket)]) -> anyhow::Result<()> {
        let rows: Vec<BucketWrite<'_>> = batch
            .iter()
            .map(|((provider, phase, start), b)| BucketWrite {
                provider,
                phase: phase.as_str(),
                start: *start,
                ok: b.counts.ok,
                failed: b.counts.failed,
                latency_sum_ms: b.latency_sum_ms,
                latency_hist: encode_hist(&b.latencies),
            })
            .collect();
        self.store()
            .write_health_buckets(&self.inner.instance, &rows)
            .await
    }

    pub(super) async fn refresh_locked(&self) -> anyhow::Result<()> {
        let now = now_ms();
        let breakers = self.stored().await?;
        let totals = self
            .store()
            .other_health_buckets(&self.inner.instance, self.window_start(now))
            .await?;
        let mut others = HashMap::with_capacity(totals.len());
        for t in totals {
            let Some(phase) = Phase::parse(&t.phase) else {
                continue;
            };
            let counts = Counts {
                ok: t.ok,
                failed: t.failed,
            };
            others.insert((t.provider, phase, t.start), counts);
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
        let store = self.store();
        if let Some(row) = store
            .claim_circuit_probe(provider, now, now + PROBE_CLAIM_MS)
            .await?
        {
            self.remember(provider, row.into());
            return Ok(true);
        }
        Ok(match store.circuit(provider).await? {
            None => true,
            Some(row) => {
                let stored = Stored::from(row);
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
        match phase {
            Phase::Submit => {
                self.store()
                    .close_circuit_after_submit(provider, now)
                    .await?
            }
            Phase::Poll => {
                self.store()
                    .reset_circuit_poll_failures(provider, now)
                    .await?
            }
        }
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
        let stored_error = CircuitError {
            code: error.code.clone(),
            message: error.message.clone(),
            at: now,
        };
        let decide = |row: &mut CircuitRow| {
            let mut breaker = Breaker::from(&*row);
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
            breaker.write_to(row);
        };
        let row = self
            .store()
            .record_circuit_failure(provider, &stored_error, decide)
            .await?;
        self.remember(provider, row.into());
        Ok(())
    }

    pub(super) async fn stored(&self) -> anyhow::Result<HashMap<String, Stored>> {
        let rows = self.store().circuits().await?;
        Ok(rows.into_iter().map(|(p, row)| (p, row.into())).collect())
    }
}
