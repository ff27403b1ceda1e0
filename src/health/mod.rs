//! Provider health: a circuit breaker per upstream provider, fed by submit and poll
//! outcomes. The circuit lives in the database, so every gateway process sees the same one;
//! the outcome statistics are counted in memory per one-second bucket and exchanged through
//! the database about once a second, so the request path does no statistics I/O.
//!
//! A closed circuit opens when one phase (submit or poll) reaches `consecutive_failures`
//! in a row, or when that phase's failure rate since the circuit last closed reaches
//! `failure_rate` over at least `min_samples` outcomes of the window. It stays open for
//! `cooldown_secs`; then it is half-open and exactly one caller may claim the probe. A
//! successful submit closes it; a failure while half-open opens it for another cool-down.
//!
//! What is shared how:
//! - Failures that count against a provider, and the first success after them, update the
//!   breaker row in a transaction (a failing provider is rare and its circuit opens after a
//!   few, so this stays off the busy path); a success with no failure run to reset costs no
//!   I/O. A failure run that another process started is seen (and reset) after the next
//!   refresh.
//! - Each process keeps its own outcomes per (provider, phase, second) and [`Health::sync`]
//!   (run every [`SYNC_INTERVAL`] by [`Health::spawn_sync`], and at shutdown) writes their
//!   totals, one row per bucket and process, then reads the other processes' buckets and
//!   every breaker row. Window statistics, and so the failure-rate trip, therefore include
//!   other processes' outcomes up to about a second late; a crash loses at most the last
//!   second of this process's statistics, never a circuit decision.
//! - The window counts whole buckets that started inside it, and the failure rate counts
//!   buckets that started after the circuit last closed.

mod circuit;
mod report;
mod shared;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::providers::ErrorKind;
use crate::store::{now_ms, Store};

pub use circuit::{Circuit, Phase};
pub use report::{LastError, LatencyPercentiles, ProviderReport};

use circuit::counts_against;
use shared::Stored;
use stats::{bucket_start, latency_bin, View};

/// How often each process writes its statistics and reads everyone else's.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// A view older than this is refreshed by the caller itself (no sync task is running, as
/// with a `Health` made outside the app, or it is stalled).
const STALE_AFTER_MS: i64 = 3000;
/// Provider messages are the provider's words and may be long; the admin view needs a gist.
const MAX_MESSAGE_CHARS: usize = 500;

/// What routing needs of one provider. Providers with no history are absent from a
/// snapshot: treat them as closed with no success rate.
#[derive(Debug, Clone)]
pub struct ProviderHealth {
    pub circuit: Circuit,
    /// Share of the window's outcomes (both phases) that were successes; None without samples.
    pub success_rate: Option<f64>,
}

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cfg: HealthConfig,
    /// Names this process's bucket rows.
    instance: String,
    view: Mutex<View>,
    /// One flush or refresh at a time, so writes of the same bucket cannot overtake each other.
    sync: tokio::sync::Mutex<()>,
}

impl Health {
    pub fn new(store: Store, cfg: HealthConfig) -> Health {
        Health {
            inner: Arc::new(Inner {
                store,
                cfg,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                view: Mutex::new(View::default()),
                sync: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // The view holds counters only: one a panicking thread left half-updated is still
        // worth more than stopping every request.
        self.inner.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// One outcome of a submit or poll. Failures that say something about the provider
    /// (ErrorKind::Retryable, Timeout, Malformed, RateLimited, ConcurrencyLimited, Billing,
    /// Auth) count against it; BadRequest, ContentPolicy and NotFound are the request's
    /// fault and count as the provider answering (success).
    ///
    /// The outcome is counted in memory. Only a failure that counts, or a success that ends
    /// a failure run or closes the circuit, touches the database (the breaker row). It does
    /// not fail: a breaker write that fails is logged, and the next refresh shows the row
    /// as it is. (The `Result` stays so that callers need not change.)
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
        let against = matches!(outcome, Err(kind) if counts_against(kind));
        let resets = {
            let mut view = self.view();
            let key = (provider.to_string(), phase, bucket_start(now));
            let bucket = view.own.entry(key.clone()).or_default();
            if against {
                bucket.counts.failed += 1;
            } else {
                bucket.counts.ok += 1;
            }
            bucket.latency_sum_ms = bucket.latency_sum_ms.saturating_add(latency_ms);
            if phase == Phase::Submit {
                *bucket.latencies.entry(latency_bin(latency_ms)).or_default() += 1;
            }
            view.dirty.insert(key);
            view.breakers
                .get(provider)
                .is_some_and(|s| s.breaker.reset_by_success(phase))
        };
        let written = match outcome {
            Err(kind) if against => {
                let error = LastError {
                    code: kind.code().to_string(),
                    message: message.map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect()),
                    at: now,
                };
                self.record_failure(provider, phase, &error).await
            }
            _ if resets => self.record_success(provider, phase, now).await,
            _ => Ok(()),
        };
        if let Err(e) = written {
            tracing::warn!(provider, error = ?e, "recording a provider outcome in its circuit failed");
        }
        Ok(())
    }

    /// Writes this process's changed buckets, then reads every other process's buckets of
    /// the window and every breaker row. The sync task runs it every [`SYNC_INTERVAL`];
    /// tests call it to see another process's outcomes at once.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.inner.sync.lock().await;
        self.flush_locked().await?;
        self.delete_old().await?;
        self.refresh_locked().await
    }

    /// Writes this process's changed buckets.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.inner.sync.lock().await;
        self.flush_locked().await
    }

    /// Runs [`Health::sync`] every [`SYNC_INTERVAL`] until `cancel`, then flushes once more.
    /// The app also flushes after its last request has drained.
    pub fn spawn_sync(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            tracing::info!(worker = "health-sync", "started");
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                }
                if let Err(e) = health.sync().await {
                    tracing::error!(worker = "health-sync", error = ?e, "step failed");
                }
            }
            if let Err(e) = health.flush().await {
                tracing::error!(worker = "health-sync", error = ?e, "final flush failed");
            }
            tracing::info!(worker = "health-sync", "stopped");
        })
    }

    /// Reads the store when this process's view is missing or stale (no sync task).
    async fn ensure_fresh(&self) -> anyhow::Result<()> {
        let refreshed_at = self.view().refreshed_at;
        match refreshed_at {
            Some(at) if now_ms() - at <= STALE_AFTER_MS => Ok(()),
            Some(_) => {
                // While a sync is under way (a slow or unreachable database), requests go on
                // with the view they have instead of queueing behind it.
                let Ok(_one_at_a_time) = self.inner.sync.try_lock() else {
                    return Ok(());
                };
                let refreshed = async {
                    self.flush_locked().await?;
                    self.refresh_locked().await
                };
                if let Err(e) = refreshed.await {
                    tracing::warn!(error = ?e, "refreshing provider health failed; using the last view");
                }
                Ok(())
            }
            None => self.sync().await,
        }
    }

    /// Deletes statistics older than the window (after writing this process's own);
    /// returns how many stored bucket rows it deleted. Every sync prunes too.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        let _one_at_a_time = self.inner.sync.lock().await;
        self.flush_locked().await?;
        self.delete_old().await
    }

    /// Every provider's circuit and window success rate, from memory (read from the store
    /// only when no sync task keeps it fresh).
    pub async fn snapshot(&self) -> anyhow::Result<HashMap<String, ProviderHealth>> {
        self.ensure_fresh().await?;
        let now = now_ms();
        let view = self.view();
        let mut out: HashMap<String, ProviderHealth> = view
            .breakers
            .iter()
            .map(|(name, s)| {
                let health = ProviderHealth {
                    circuit: s.breaker.circuit(now),
                    success_rate: None,
                };
                (name.clone(), health)
            })
            .collect();
        for (name, counts) in view.windows(self.window_start(now)) {
            out.entry(name)
                .or_insert(ProviderHealth {
                    circuit: Circuit::Closed,
                    success_rate: None,
                })
                .success_rate = counts.success_rate();
        }
        Ok(out)
    }

    fn remember(&self, provider: &str, stored: Stored) {
        self.view().breakers.insert(provider.to_string(), stored);
    }

    /// Whether the phase's failure rate since the circuit last closed (within the window)
    /// reaches the threshold over enough outcomes, by the counters in memory. Counting from
    /// the close keeps the failures that opened the circuit from reopening it right after
    /// a good probe.
    fn rate_trips(&self, provider: &str, phase: Phase, closed_at: i64, now: i64) -> bool {
        let since = self.window_start(now).max(closed_at);
        let c = self.view().counts(provider, Some(phase), since);
        let cfg = &self.inner.cfg;
        c.total() >= i64::from(cfg.min_samples.max(1))
            && c.failed as f64 >= cfg.failure_rate * c.total() as f64
    }

    fn cooldown_ms(&self) -> i64 {
        (self.inner.cfg.cooldown_secs * 1000.0).round() as i64
    }

    fn window_start(&self, now: i64) -> i64 {
        let window_ms =
            i64::try_from(self.inner.cfg.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        now.saturating_sub(window_ms)
    }
}
