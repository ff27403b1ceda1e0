//! Prometheus metrics: every metric name and label is defined here, and call sites record
//! with one call. Labels come from closed sets (method, route template, status, provider,
//! operation, outcome, kind), never ids or secrets, so the series stay few.
//!
//! Counters and histograms are per process (Prometheus sums them over the replicas); the
//! task gauges are read from the shared database, so every replica reports the same,
//! complete value (aggregate them with `max`, not `sum`).

use std::collections::HashSet;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "omnigate_http_requests_total";
pub const HTTP_DURATION: &str = "omnigate_http_request_duration_seconds";
pub const UPSTREAM_REQUESTS: &str = "omnigate_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "omnigate_upstream_request_duration_seconds";
pub const TASKS: &str = "omnigate_tasks";
pub const OLDEST_UNFINISHED: &str = "omnigate_oldest_unfinished_task_age_seconds";
pub const POLL_LAG: &str = "omnigate_poll_lag_seconds";
pub const STORE_GAUGES_UPDATED: &str = "omnigate_store_gauges_updated_timestamp_seconds";
pub const WEBHOOK_DELIVERIES: &str = "omnigate_webhook_deliveries_total";
pub const WEBHOOK_DURATION: &str = "omnigate_webhook_delivery_duration_seconds";
pub const LIMIT_REFUSALS: &str = "omnigate_limit_refusals_total";
pub const RATE_LIMIT_BYPASS: &str = "omnigate_rate_limit_redis_bypass_total";
pub const RATE_LIMIT_SKIPPING: &str = "omnigate_rate_limit_redis_skipping";
pub const SPEND: &str = "omnigate_spend_microdollars_total";
pub const CAPACITY_REFUSALS: &str = "omnigate_capacity_refusals_total";
pub const PROVIDER_IN_FLIGHT: &str = "omnigate_provider_in_flight";
pub const PROVIDER_EFFECTIVE_CAP: &str = "omnigate_provider_effective_cap";
pub const QUEUE_WAIT: &str = "omnigate_queue_wait_seconds";
pub const QUEUE_WAITING: &str = "omnigate_queue_waiting_tasks";
pub const QUEUE_DISPATCH_LATENCY: &str = "omnigate_queue_dispatch_latency_seconds";
pub const OPEN_STREAMS: &str = "omnigate_open_streams";
pub const STREAMS_DROPPED: &str = "omnigate_streams_dropped_slow_readers_total";

/// Request latencies: from a cached read (ms) to a create that fell over through slow
/// providers (tens of seconds).
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Provider and webhook calls: tens of ms to the longest request timeouts.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Time in the admission queue: from a slot freeing at once to the longest allowed wait.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// From room appearing to a waiting task's submit: ms when the dispatcher is woken, up to
/// its tick when room appears in another process, more when the store is slow.
const DISPATCH_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The (key, model) series of `QUEUE_WAITING` this process has set, so that one whose
/// tasks all left the queue is set to 0 rather than frozen at its last count.
static WAITING_SERIES: LazyLock<RwLock<HashSet<(String, String)>>> =
    LazyLock::new(Default::default);

/// The recorder is process-global (the `metrics` facade has one); gateways started in the
/// same process (tests) share it. None when another recorder was installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match build() {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not install the Prometheus recorder; /metrics will be empty");
                None
            }
        })
        .as_ref()
}

fn build() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), UPSTREAM_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(WEBHOOK_DURATION.into()), UPSTREAM_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), QUEUE_WAIT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(QUEUE_DISPATCH_LATENCY.into()),
            DISPATCH_BUCKETS,
        )?
        .install_recorder()?;
    Ok(handle)
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by method and route template"
    );
    describe_counter!(UPSTREAM_REQUESTS, "Calls to providers, by provider, operation (submit, status, lookup) and outcome (ok or the error class)");
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Provider call latency, by provider and operation"
    );
    describe_gauge!(
        TASKS,
        "Unfinished tasks in the store, by provider and status (the same on every replica)"
    );
    describe_gauge!(
        OLDEST_UNFINISHED,
        Unit::Seconds,
        "Age of the oldest unfinished task, by provider (0 when none)"
    );
    describe_gauge!(
        POLL_LAG,
        Unit::Seconds,
        "How overdue the most overdue status poll is (0 when none is late)"
    );
    describe_gauge!(
        STORE_GAUGES_UPDATED,
        Unit::Seconds,
        "When this process last refreshed the store gauges (Unix time)"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Client webhook delivery attempts, by outcome (delivered, retry, failed, disabled)"
    );
    describe_histogram!(
        WEBHOOK_DURATION,
        Unit::Seconds,
        "Client webhook delivery attempt latency"
    );
    describe_counter!(LIMIT_REFUSALS, "Requests refused by a limit, by kind (rate, concurrency, budget, rate_limiter_unavailable, overloaded)");
    describe_counter!(
        CAPACITY_REFUSALS,
        "Submits a provider refused for capacity (429, Kling 1302/1303), by provider"
    );
    describe_gauge!(
        PROVIDER_IN_FLIGHT,
        "Tasks holding a slot of a capped provider (from the shared store), by provider"
    );
    describe_gauge!(
        PROVIDER_EFFECTIVE_CAP,
        "A capped provider's cap in force (lowered after a capacity refusal), by provider"
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time waiting tasks spent in the admission queue before a provider took them"
    );
    describe_gauge!(
        QUEUE_WAITING,
        "Tasks waiting in the admission queue, by key (its id) and model (from the shared store: the same on every replica)"
    );
    describe_histogram!(
        QUEUE_DISPATCH_LATENCY,
        Unit::Seconds,
        "From the moment a waiting task could start (a slot freed in this process woke the dispatcher, or the dispatcher step that found room; or the task's own enqueue, if later) to the start of its submit"
    );
    describe_counter!(
        RATE_LIMIT_BYPASS,
        "Rate limit checks answered by limits.on_redis_error without asking Redis, which had just failed"
    );
    describe_gauge!(
        RATE_LIMIT_SKIPPING,
        "1 while this process skips a failing Redis for its rate limits, else 0"
    );
    describe_gauge!(
        OPEN_STREAMS,
        "Status streams (server-sent events) open on this process"
    );
    describe_counter!(
        STREAMS_DROPPED,
        "Status streams closed because their reader let live.stream_buffer events pile up"
    );
    describe_counter!(
        SPEND,
        "Final cost of completed tasks in millionths of a USD, by provider"
    );
}

/// A status stream opened.
pub fn stream_opened() {
    gauge!(OPEN_STREAMS).increment(1.0);
}

/// A status stream closed, for whatever reason.
pub fn stream_closed() {
    gauge!(OPEN_STREAMS).decrement(1.0);
}

/// A status stream closed because its reader fell behind.
pub fn stream_dropped_slow_reader() {
    counter!(STREAMS_DROPPED).increment(1);
}

/// The exposition text, or None when metrics are off or the recorder is not ours.
pub fn render() -> Option<String> {
    HANDLE.get()?.as_ref().map(PrometheusHandle::render)
}

/// Drains histogram samples into their buckets; without it they pile up between scrapes.
pub fn upkeep() {
    if let Some(Some(h)) = HANDLE.get() {
        h.run_upkeep();
    }
}

/// One answered HTTP request. `route` is the matched route template (None: no route
/// matched, labelled `unmatched` so scanners cannot mint series with raw paths).
pub fn http_request(method: &Method, route: Option<&str>, status: StatusCode, took: Duration) {
    let method = method_label(method);
    let route = route.map_or("unmatched", intern_route);
    counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status_label(status))
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(took.as_secs_f64());
}

/// One call to a provider; `outcome` is `ok` or the error class (`ErrorKind::code`).
pub fn upstream_call(
    provider: &str,
    operation: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    let provider = provider.to_string();
    counter!(UPSTREAM_REQUESTS, "provider" => provider.clone(), "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(UPSTREAM_DURATION, "provider" => provider, "operation" => operation)
        .record(took.as_secs_f64());
}

/// One webhook delivery attempt (or the decision not to make one: `took` None).
pub fn webhook_delivery(outcome: &'static str, took: Option<Duration>) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        metrics::histogram!(WEBHOOK_DURATION).record(took.as_secs_f64());
    }
}

/// Counts an answer with error `code` if that code is a limit's refusal; other codes are
/// not refusals and are ignored.
pub fn limit_refusal(code: &str) {
    let kind = match code {
        "rate_limited" => "rate",
        "concurrency_limited" => "concurrency",
        "budget_exceeded" => "budget",
        "rate_limiter_unavailable" => "rate_limiter_unavailable",
        "overloaded" => "overloaded",
        _ => return,
    };
    counter!(LIMIT_REFUSALS, "kind" => kind).increment(1);
}

/// A rate limit check applied the failure policy without asking the failing Redis.
pub fn rate_limit_bypassed() {
    counter!(RATE_LIMIT_BYPASS).increment(1);
}

/// The rate limiter started (`true`) or stopped skipping a failing Redis.
pub fn rate_limit_backend_skipped(skipping: bool) {
    gauge!(RATE_LIMIT_SKIPPING).set(if skipping { 1.0 } else { 0.0 });
}

/// A task of `provider` completed at `usd`.
pub fn spend(provider: &str, usd: f64) {
    if usd.is_finite() && usd > 0.0 {
        let micros = (usd * 1_000_000.0).round() as u64;
        counter!(SPEND, "provider" => provider.to_string()).increment(micros);
    }
}

/// A provider refused a submit for capacity.
pub fn capacity_refusal(provider: &str) {
    counter!(CAPACITY_REFUSALS, "provider" => provider.to_string()).increment(1);
}

/// A provider's slots in use and, when it is capped, its cap in force.
pub fn provider_capacity(provider: &str, in_flight: i64, effective_cap: Option<i64>) {
    gauge!(PROVIDER_IN_FLIGHT, "provider" => provider.to_string()).set(in_flight as f64);
    if let Some(cap) = effective_cap {
        gauge!(PROVIDER_EFFECTIVE_CAP, "provider" => provider.to_string()).set(cap as f64);
    }
}

/// A waiting task left the queue for a provider after `waited`.
pub fn queue_wait(waited: Duration) {
    metrics::histogram!(QUEUE_WAIT).record(waited.as_secs_f64());
}

/// The dispatcher began a waiting task's submit `latency` after it could start.
pub fn dispatch_latency(latency: Duration) {
    metrics::histogram!(QUEUE_DISPATCH_LATENCY).record(latency.as_secs_f64());
}

/// Sets the waiting-task gauges from (key id, model, waiting) groups; a series set before
/// and absent now drops to 0.
pub fn set_waiting_gauges(groups: &[(String, String, i64)]) {
    let mut seen = WAITING_SERIES.write().unwrap_or_else(|e| e.into_inner());
    let now: HashSet<(String, String)> = groups
        .iter()
        .map(|(k, m, _)| (k.clone(), m.clone()))
        .collect();
    for (key, model) in seen.difference(&now) {
        gauge!(QUEUE_WAITING, "key" => key.clone(), "model" => model.clone()).set(0.0);
    }
    for (key, model, n) in groups {
        gauge!(QUEUE_WAITING, "key" => key.clone(), "model" => model.clone()).set(*n as f64);
    }
    seen.extend(now);
}

/// What one refresh read from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    /// (provider, status, count) of unfinished tasks.
    pub tasks: Vec<(String, &'static str, i64)>,
    /// (provider, age in seconds) of the oldest unfinished task.
    pub oldest: Vec<(String, f64)>,
    pub poll_lag_secs: f64,
}

/// Sets the store gauges. `providers` (the configured ones) get an explicit 0 where the
/// store has nothing, so a series drops to 0 rather than freezing at its last value.
pub fn set_store_gauges(g: &StoreGauges, providers: &[String], statuses: &[&'static str]) {
    for p in providers {
        for s in statuses {
            let n = g
                .tasks
                .iter()
                .find(|(tp, ts, _)| tp == p && ts == s)
                .map_or(0, |t| t.2);
            gauge!(TASKS, "provider" => p.clone(), "status" => *s).set(n as f64);
        }
        let age = g.oldest.iter().find(|(op, _)| op == p).map_or(0.0, |o| o.1);
        gauge!(OLDEST_UNFINISHED, "provider" => p.clone()).set(age);
    }
    // Tasks of providers no longer configured still show.
    for (p, s, n) in g.tasks.iter().filter(|t| !providers.contains(&t.0)) {
        gauge!(TASKS, "provider" => p.clone(), "status" => *s).set(*n as f64);
    }
    gauge!(POLL_LAG).set(g.poll_lag_secs);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(STORE_GAUGES_UPDATED).set(now);
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// "100101102...599": every status code's label is a slice of this one string, so a
/// label costs no allocation.
static STATUS_DIGITS: LazyLock<String> =
    LazyLock::new(|| (100..600).map(|c| c.to_string()).collect());

fn status_label(s: StatusCode) -> &'static str {
    let code = usize::from(s.as_u16());
    if (100..600).contains(&code) {
        let at = (code - 100) * 3;
        &STATUS_DIGITS[at..at + 3]
    } else {
        "other"
    }
}

/// Route templates as `&'static str`: they come from the router's own table (a closed
/// set), so each is leaked once and a request's label costs a read lock, not an allocation.
static ROUTES: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);

fn intern_route(route: &str) -> &'static str {
    if let Some(r) = ROUTES.read().unwrap_or_else(|p| p.into_inner()).get(route) {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = routes.get(route) {
        return r;
    }
    let leaked: &'static str = Box::leak(route.to_string().into_boxed_str());
    routes.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_static_slices_of_closed_sets() {
        assert_eq!(status_label(StatusCode::ACCEPTED), "202");
        assert_eq!(status_label(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(status_label(StatusCode::CONTINUE), "100");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        let a = intern_route("/v1/video/generations/{id}");
        let b = intern_route("/v1/video/generations/{id}");
        assert!(std::ptr::eq(a, b), "interned once");
    }
}
