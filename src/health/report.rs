//! The admin view of every provider's health: circuit, failure run, window statistics,
//! submit latency percentiles, unfinished tasks and the last error.

use std::collections::BTreeMap;

use serde::Serialize;

use super::circuit::Phase;
use super::shared::Stored;
use super::stats::{decode_hist_into, percentiles};
use super::Health;
use crate::store::now_ms;

/// One provider in the admin view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LatencyPercentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
}

/// The last failure that counted against the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastError {
    pub code: String,
    pub message: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

impl Health {
    /// The admin view, one entry per name given (providers with no history show a closed
    /// circuit and nulls). It syncs first, so it shows every process's outcomes.
    pub async fn report(&self, providers: &[String]) -> anyhow::Result<Vec<ProviderReport>> {
        self.sync().await?;
        let now = now_ms();
        let since = self.window_start(now);
        let in_flight = self.store().unfinished_tasks_by_provider().await?;
        let mut out = Vec::with_capacity(providers.len());
        for name in providers {
            let latencies = self.submit_latencies(name, since).await?;
            let view = self.view();
            let Stored {
                breaker,
                last_error,
            } = view.breakers.get(name).cloned().unwrap_or_default();
            let window = view.counts(name, None, since);
            out.push(ProviderReport {
                provider: name.clone(),
                circuit: breaker.circuit(now).as_str(),
                opened_until: breaker.open.then_some(breaker.opened_until),
                consecutive_failures: breaker.submit_failures.max(breaker.poll_failures),
                success_rate: window.success_rate(),
                samples: window.total(),
                submit_latency_ms: percentiles(&latencies),
                in_flight_tasks: in_flight.get(name).copied().unwrap_or(0),
                last_error,
            });
        }
        Ok(out)
    }

    /// Submit latencies of the window: other processes' from the store, this one's from memory.
    async fn submit_latencies(
        &self,
        provider: &str,
        since: i64,
    ) -> anyhow::Result<BTreeMap<i64, i64>> {
        let stored = self
            .store()
            .other_submit_latency_hists(provider, &self.inner.instance, since)
            .await?;
        let mut hist = BTreeMap::new();
        for text in &stored {
            decode_hist_into(text, &mut hist);
        }
        let view = self.view();
        for ((p, phase, start), b) in &view.own {
            if p == provider && *phase == Phase::Submit && *start >= since {
                for (v, c) in &b.latencies {
                    *hist.entry(*v).or_default() += c;
                }
            }
        }
        Ok(hist)
    }
}
