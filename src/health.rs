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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::providers::ErrorKind;
use crate::store::{now_ms, Store};

/// How often each process writes its statistics and reads everyone else's.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Length of a statistics bucket.
const BUCKET_MS: i64 = 1000;
/// A view older than this is refreshed by the caller itself (no sync task is running, as
/// with a `Health` made outside the app, or it is stalled).
const STALE_AFTER_MS: i64 = 3000;
/// How long a claimed probe holds the half-open slot: longer than any submit, short enough
/// that a prober that crashed does not keep the provider shut for long.
const PROBE_CLAIM_MS: i64 = 60_000;
/// Provider messages are the provider's words and may be long; the admin view needs a gist.
const MAX_MESSAGE_CHARS: usize = 500;
/// Latencies below this are kept exactly; above, to 7 significant bits (at most 1/64 low).
const EXACT_LATENCY_MS: i64 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    fn parse(s: &str) -> Option<Phase> {
        match s {
            "submit" => Some(Phase::Submit),
            "poll" => Some(Phase::Poll),
            _ => None,
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

/// (provider, phase, bucket start in Unix ms)
type BucketKey = (String, Phase, i64);

/// This process's picture of every provider's health.
#[derive(Default)]
struct View {
    /// This process's own outcomes: the truth for them, written out by each flush.
    own: HashMap<BucketKey, Bucket>,
    /// Own buckets changed since they were last written.
    dirty: HashSet<BucketKey>,
    /// Every other process's buckets, as last read.
    others: HashMap<BucketKey, Counts>,
    /// Breaker rows as last read, or as this process last wrote them.
    breakers: HashMap<String, Stored>,
    /// When `others` and `breakers` were last read (Unix ms); None before the first read.
    refreshed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    ok: i64,
    failed: i64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.ok += other.ok;
        self.failed += other.failed;
    }

    fn total(&self) -> i64 {
        self.ok + self.failed
    }

    fn success_rate(&self) -> Option<f64> {
        (self.total() > 0).then(|| self.ok as f64 / self.total() as f64)
    }
}

/// One process's outcomes of one provider and phase in one second.
#[derive(Debug, Clone, Default)]
struct Bucket {
    counts: Counts,
    latency_sum_ms: i64,
    /// Latency (binned, see [`latency_bin`]) to how many outcomes took it.
    latencies: BTreeMap<i64, i64>,
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

    /// Whether a success of `phase` changes this row: it ends a failure run, and a submit
    /// closes an open circuit.
    fn reset_by_success(&self, phase: Phase) -> bool {
        match phase {
            Phase::Submit => self.open || self.submit_failures > 0,
            Phase::Poll => self.poll_failures > 0,
        }
    }

    /// What the reset UPDATE in `record_success` does to the row.
    fn apply_success(&mut self, phase: Phase, now: i64) {
        match phase {
            Phase::Submit => {
                if self.open {
                    self.poll_failures = 0;
                    self.closed_at = now;
                }
                *self = Breaker {
                    open: false,
                    submit_failures: 0,
                    opened_until: 0,
                    probe_until: 0,
                    ..*self
                };
            }
            Phase::Poll => self.poll_failures = 0,
        }
    }
}

/// A breaker row with the last error it recorded.
#[derive(Debug, Clone, Default)]
struct Stored {
    breaker: Breaker,
    last_error: Option<LastError>,
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
        | ErrorKind::Billing
        | ErrorKind::Auth => true,
        // A capacity refusal says the provider is busy, not broken: it marks the provider
        // full (`queue/`) instead of opening its circuit.
        ErrorKind::RateLimited | ErrorKind::ConcurrencyLimited => false,
        ErrorKind::BadRequest | ErrorKind::ContentPolicy | ErrorKind::NotFound => false,
    }
}

/// The histogram bin of a latency: exact below [`EXACT_LATENCY_MS`], else its 7 most
/// significant bits, so a histogram stays small however many outcomes it holds.
fn latency_bin(ms: i64) -> i64 {
    if ms < EXACT_LATENCY_MS {
        return ms.max(0);
    }
    let drop = 64 - ms.leading_zeros() as i64 - 7;
    (ms >> drop) << drop
}

fn bucket_start(at: i64) -> i64 {
    at - at.rem_euclid(BUCKET_MS)
}

/// Nearest-rank percentile of a histogram.
fn percentile(hist: &BTreeMap<i64, i64>, p: f64) -> Option<i64> {
    let n: i64 = hist.values().sum();
    if n == 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
    let mut seen = 0;
    hist.iter().find_map(|(&v, &c)| {
        seen += c;
        (seen >= rank).then_some(v)
    })
}

fn percentiles(hist: &BTreeMap<i64, i64>) -> LatencyPercentiles {
    LatencyPercentiles {
        p50: percentile(hist, 0.50),
        p95: percentile(hist, 0.95),
    }
}

/// A histogram as stored: `ms:count` pairs joined by commas.
fn encode_hist(hist: &BTreeMap<i64, i64>) -> String {
    let pairs: Vec<String> = hist.iter().map(|(v, c)| format!("{v}:{c}")).collect();
    pairs.join(",")
}

fn decode_hist_into(text: &str, hist: &mut BTreeMap<i64, i64>) {
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        if let Some((v, c)) = pair.split_once(':') {
            if let (Ok(v), Ok(c)) = (v.parse::<i64>(), c.parse::<i64>()) {
                *hist.entry(v).or_default() += c;
            }
        }
    }
}

impl View {
    /// Every process's outcomes of the buckets that started at or after `since`, for the
    /// given provider (all when None) and phase (both when None).
    fn counts(&self, provider: &str, phase: Option<Phase>, since: i64) -> Counts {
        let wanted = |(p, ph, start): &BucketKey| {
            p == provider && phase.is_none_or(|want| want == *ph) && *start >= since
        };
        let mut total = Counts::default();
        for (key, bucket) in &self.own {
            if wanted(key) {
                total.add(bucket.counts);
            }
        }
        for (key, counts) in &self.others {
            if wanted(key) {
                total.add(*counts);
            }
        }
        total
    }

    /// Window counts of every provider with outcomes in the window.
    fn windows(&self, since: i64) -> HashMap<String, Counts> {
        let mut out: HashMap<String, Counts> = HashMap::new();
        let own = self.own.iter().map(|(k, b)| (k, b.counts));
        let others = self.others.iter().map(|(k, c)| (k, *c));
        for ((provider, _, start), counts) in own.chain(others) {
            if *start >= since {
                match out.get_mut(provider) {
                    Some(c) => c.add(counts),
                    None => {
                        out.insert(provider.clone(), counts);
                    }
                }
            }
        }
        out
    }
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

    async fn flush_locked(&self) -> anyhow::Result<()> {
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
    async fn delete_old(&self) -> anyhow::Result<u64> {
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

    async fn write_buckets(&self, batch: &[(BucketKey, Bucket)]) -> anyhow::Result<()> {
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

    async fn refresh_locked(&self) -> anyhow::Result<()> {
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

    /// The admin view, one entry per name given (providers with no history show a closed
    /// circuit and nulls). It syncs first, so it shows every process's outcomes.
    pub async fn report(&self, providers: &[String]) -> anyhow::Result<Vec<ProviderReport>> {
        self.sync().await?;
        let now = now_ms();
        let since = self.window_start(now);
        let in_flight = self.in_flight().await?;
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

    fn remember(&self, provider: &str, stored: Stored) {
        self.view().breakers.insert(provider.to_string(), stored);
    }

    /// A success resets its phase's failure run. Only a submit closes an open circuit: polls
    /// of older tasks succeeding say nothing about whether new work is accepted. Called only
    /// when this process's view shows something to reset.
    async fn record_success(&self, provider: &str, phase: Phase, now: i64) -> anyhow::Result<()> {
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
    async fn record_failure(
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

    async fn stored(&self) -> anyhow::Result<HashMap<String, Stored>> {
        let rows = sqlx::query(&format!("SELECT {CIRCUIT_COLUMNS} FROM provider_circuits"))
            .fetch_all(self.store().pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, stored_from_row(row)?)))
            .collect()
    }

    /// Unfinished tasks per provider: every state but the terminal ones, so a state added
    /// to the task life cycle later is counted without touching this query.
    async fn in_flight(&self) -> anyhow::Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT provider, COUNT(*) AS n FROM tasks \
             WHERE provider IS NOT NULL AND state NOT IN ('completed', 'failed', 'cancelled') \
             GROUP BY provider",
        )
        .fetch_all(self.store().pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("provider")?, row.try_get("n")?)))
            .collect()
    }

    /// Submit latencies of the window: other processes' from the store, this one's from memory.
    async fn submit_latencies(
        &self,
        provider: &str,
        since: i64,
    ) -> anyhow::Result<BTreeMap<i64, i64>> {
        let rows = sqlx::query(
            "SELECT latency_hist FROM provider_health_buckets \
             WHERE provider = $1 AND phase = 'submit' AND bucket_start >= $2 AND instance <> $3",
        )
        .bind(provider)
        .bind(since)
        .bind(&self.inner.instance)
        .fetch_all(self.store().pool())
        .await?;
        let mut hist = BTreeMap::new();
        for row in &rows {
            decode_hist_into(&row.try_get::<String, _>("latency_hist")?, &mut hist);
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

    fn cooldown_ms(&self) -> i64 {
        (self.inner.cfg.cooldown_secs * 1000.0).round() as i64
    }

    fn window_start(&self, now: i64) -> i64 {
        let window_ms =
            i64::try_from(self.inner.cfg.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: impl IntoIterator<Item = i64>) -> BTreeMap<i64, i64> {
        let mut h = BTreeMap::new();
        for v in values {
            *h.entry(latency_bin(v)).or_default() += 1;
        }
        h
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_latencies() {
        let p = percentiles(&hist((1..=20).rev().map(|i| i * 10)));
        assert_eq!((p.p50, p.p95), (Some(100), Some(190)));
        assert_eq!(
            percentiles(&hist([7])),
            LatencyPercentiles {
                p50: Some(7),
                p95: Some(7)
            }
        );
        assert_eq!(percentiles(&BTreeMap::new()), LatencyPercentiles::default());
    }

    #[test]
    fn latency_bins_are_exact_when_small_and_at_most_a_64th_low_above() {
        assert_eq!(latency_bin(0), 0);
        assert_eq!(latency_bin(127), 127);
        assert_eq!(latency_bin(129), 128);
        for ms in [200, 1_234, 30_001, 299_999] {
            let bin = latency_bin(ms);
            assert!(
                bin <= ms && (ms - bin) as f64 / ms as f64 <= 1.0 / 64.0,
                "{ms} -> {bin}"
            );
        }
    }

    #[test]
    fn a_histogram_reads_back_what_was_written() {
        let h = hist([5, 5, 300, 1_000]);
        let mut back = BTreeMap::new();
        decode_hist_into(&encode_hist(&h), &mut back);
        decode_hist_into("", &mut back);
        assert_eq!(back, h);
    }

    #[test]
    fn buckets_start_on_whole_seconds() {
        assert_eq!(bucket_start(1_700_000_000_999), 1_700_000_000_000);
        assert_eq!(bucket_start(1_700_000_001_000), 1_700_000_001_000);
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
    fn a_successful_submit_closes_an_open_circuit_but_a_poll_does_not() {
        let open = Breaker {
            open: true,
            submit_failures: 3,
            poll_failures: 2,
            opened_until: 1_000,
            ..Breaker::default()
        };
        let mut polled = open;
        polled.apply_success(Phase::Poll, 2_000);
        assert_eq!(polled.circuit(500), Circuit::Open);
        assert_eq!(polled.poll_failures, 0);
        let mut submitted = open;
        assert!(submitted.reset_by_success(Phase::Submit));
        submitted.apply_success(Phase::Submit, 2_000);
        assert_eq!(submitted.circuit(500), Circuit::Closed);
        assert_eq!(submitted.closed_at, 2_000);
        assert!(!submitted.reset_by_success(Phase::Submit));
    }

    #[test]
    fn only_failures_that_say_something_about_the_provider_count_against_it() {
        assert!(!counts_against(ErrorKind::RateLimited));
        assert!(!counts_against(ErrorKind::ConcurrencyLimited));
        assert!(counts_against(ErrorKind::Auth));
        assert!(!counts_against(ErrorKind::ContentPolicy));
        assert!(!counts_against(ErrorKind::NotFound));
    }
}
