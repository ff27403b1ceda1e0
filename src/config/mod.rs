//! Typed configuration: built-in defaults, then a TOML file, then `OMNIGATE_*` environment
//! variables (`OMNIGATE_DATABASE__URL` sets `database.url`). Unknown keys, bad values and
//! missing credentials stop start-up with a message naming the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::{Feature, Mode, Model, OnOff};

/// A credential: prints as `*****` in logs, debug output and errors.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub poller: PollerConfig,
    pub sandbox: SandboxConfig,
    pub idempotency: IdempotencyConfig,
    pub submit: SubmitConfig,
    pub retention: RetentionConfig,
    pub health: HealthConfig,
    pub admin: AdminConfig,
    /// The operator console at `/console`.
    pub console: ConsoleConfig,
    pub workers: WorkersConfig,
    pub limits: LimitsConfig,
    pub webhooks: WebhooksConfig,
    /// Waiting for provider capacity: the admission queue (`queue/`).
    pub queue: crate::queue::QueueConfig,
    /// `when_full`: spill to a dearer provider with room, or wait for the cheapest.
    pub routing: crate::queue::RoutingConfig,
    /// Log format and filter.
    pub log: crate::telemetry::LogConfig,
    /// Prometheus metrics at `/metrics`.
    pub metrics: crate::telemetry::MetricsConfig,
    /// OpenTelemetry span export (off by default).
    pub otel: crate::telemetry::OtelConfig,
    /// Copies of finished videos in omnigate's own object storage (`results/`).
    pub results: crate::results::ResultsConfig,
    /// Status streams, `Prefer: wait` and the finished-task cache (`live/`).
    pub live: crate::live::LiveConfig,
    /// Upstream providers by name. Empty means: run the built-in sandbox upstream.
    pub providers: BTreeMap<String, ProviderConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes. A provider takes images of up to 10 MB
    /// (anyfast), about 13.4 MB once base64-encoded, and a request up to seven of them
    /// (~94 MB), hence 100 MiB. A larger declared `Content-Length` is refused with 413
    /// before any of the body is read; a chunked body as soon as it passes the limit.
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, over all requests, in bytes. A request takes
    /// its `Content-Length` from this budget before its body is read (a chunked body takes
    /// each chunk as it arrives); when it is spent, requests are shed with 503.
    pub body_memory_budget_bytes: usize,
    /// Seconds a client has to send a request's headers (slowloris); also how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout_secs: f64,
    /// Seconds a request body may go without sending a byte before the request is answered
    /// 408 and the connection closed.
    pub body_timeout_secs: f64,
    /// Requests handled at once; more are shed at once with 503 and `Retry-After`.
    pub max_in_flight_requests: usize,
    /// Creates (`POST /v1/video/generations`) handled at once, a smaller share of the
    /// above: each holds a provider submit and possibly a large body.
    pub max_in_flight_creates: usize,
    /// On shutdown, seconds to wait for in-flight submits and requests before stopping
    /// anyway. At least the longest a submit can take (the sum of the providers'
    /// `request_timeout_secs`, as a submit may fall over through all of them).
    pub drain_timeout_secs: f64,
    /// Whether the client address that failed sign-ins and failed admin calls are counted
    /// against is the last `X-Forwarded-For` entry (the one the proxy in front of omnigate
    /// appended) instead of the TCP peer. Only when every request comes through such a
    /// proxy: otherwise a client picks its own address and escapes the throttle.
    pub trust_forwarded_for: bool,
    /// Failed sign-ins and failed admin calls one client address may make at once...
    pub failed_auth_burst: u32,
    /// ...and then per minute: past both, `429` with `Retry-After`.
    pub failed_auth_per_minute: u32,
    /// Env var holding the key that seals the secrets omnigate must read back (the secret
    /// keys of Kling credentials, `secrets.rs`): 32 bytes as base64 or 64 hex digits.
    /// Unset: no Kling credentials can be issued, and JWTs are refused (the omnigate key
    /// still works on the Kling facade).
    pub secrets_key_env: String,
    /// Read from `secrets_key_env` at load (or set in code by tests).
    #[serde(skip)]
    pub secrets_key: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 100 * 1024 * 1024,
            body_memory_budget_bytes: 512 * 1024 * 1024,
            header_read_timeout_secs: 10.0,
            body_timeout_secs: 30.0,
            max_in_flight_requests: 1024,
            max_in_flight_creates: 128,
            drain_timeout_secs: 300.0,
            trust_forwarded_for: false,
            failed_auth_burst: 10,
            failed_auth_per_minute: 10,
            secrets_key_env: "OMNIGATE_SECRETS_KEY".into(),
            secrets_key: None,
        }
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_read_timeout_secs)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout_secs)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...` for production, `sqlite://path` for the embedded single-machine store.
    pub url: String,
    pub max_connections: u32,
    /// Seconds a request waits for a pooled connection (or a new one) before it is answered
    /// 503 `store_unavailable`: a database outage fails requests fast instead of piling them up.
    pub acquire_timeout_secs: f64,
    /// Longest one statement may run, in seconds: PostgreSQL's `statement_timeout`; on
    /// SQLite the `busy_timeout`, how long a write waits for the database lock.
    pub statement_timeout_secs: f64,
    /// SQLite only: MiB of the database file each connection maps into memory
    /// (`PRAGMA mmap_size`; 0 turns mapping off). Pages past the mapping are read through
    /// the kernel, which slows writes once the file outgrows it. Mapped pages count in the
    /// process's RSS once per connection that touched them, though the OS holds one copy.
    pub sqlite_mmap_mib: u64,
}

/// Past this a mapping is a typo, not a choice (SQLite caps it at its compile-time
/// maximum anyway, silently).
const MAX_SQLITE_MMAP_MIB: u64 = 1 << 20;

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://omnigate.db".into(),
            max_connections: 10,
            acquire_timeout_secs: 5.0,
            statement_timeout_secs: 15.0,
            sqlite_mmap_mib: 256,
        }
    }
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.acquire_timeout_secs)
    }
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.statement_timeout_secs)
    }
}

/// The background workers' supervision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// A worker that has not completed a step for this many seconds (beyond its own tick)
    /// is reported stuck by `/healthz` (503). Longer than any provider's request timeout,
    /// since one step may wait on upstream calls.
    pub stall_secs: f64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig { stall_secs: 300.0 }
    }
}

impl WorkersConfig {
    pub fn stall(&self) -> Duration {
        Duration::from_secs_f64(self.stall_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollerConfig {
    /// How often each worker looks for due tasks, in milliseconds.
    pub tick_ms: u64,
    /// Most tasks one worker claims per tick (the reconciler; the poller claims
    /// `poll_batch_size`).
    pub batch_size: u32,
    /// Most tasks the poller claims at once. Its status polls run `poll_concurrency` at a
    /// time, and the tasks still running are rescheduled in one statement per batch.
    pub poll_batch_size: u32,
    /// Status polls of one gateway process in flight at once.
    pub poll_concurrency: usize,
    /// Up to this fraction of the poll interval is added at random to each next poll time,
    /// so that tasks polled together (after a restart, a burst of creates) drift apart.
    /// Only ever added: no task is polled sooner than its interval.
    pub poll_jitter: f64,
    /// How long a claim on a task lasts before another process may take it over.
    pub lease_secs: u64,
    /// Ceiling of the exponential backoff after failed polls.
    pub max_backoff_secs: f64,
    /// A task still unfinished this long after creation is failed with `upstream_timeout`.
    pub max_task_age_secs: u64,
    /// Consecutive failed polls after which a task is failed.
    pub max_poll_failures: u32,
    /// Consecutive status answers that cannot be interpreted (an unknown state word, a
    /// finished task without a video URL) after which a task fails with `upstream_unreadable`.
    pub max_unreadable_answers: u32,
    /// Time polls by each provider's completion times (`timing/`): the first near the
    /// p10, denser around the p50, back to the provider's interval past the p90. Off, or
    /// without history, every poll waits the provider's `poll_interval_secs`.
    pub adaptive_polls: bool,
    /// The shortest wait between two timed polls of one task, in seconds.
    pub min_poll_gap_secs: f64,
    /// Finished tasks per provider and group that the percentiles are taken from.
    pub timing_samples: u32,
    /// A group with fewer finished tasks than this has no history yet.
    pub timing_min_samples: u32,
    /// Most finished tasks one refresh reads (newest first): the refresh's bound.
    pub timing_read_limit: u32,
    /// How far back a refresh looks for finished tasks, in seconds.
    pub timing_window_secs: u64,
    /// How often the completion times and outcomes are recomputed (by one process).
    pub timing_refresh_secs: u64,
    /// An unfinished task this many times its group's p90 past acceptance counts as stuck.
    pub stuck_factor: f64,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            tick_ms: 500,
            batch_size: 32,
            poll_batch_size: 512,
            poll_concurrency: 64,
            poll_jitter: 0.1,
            lease_secs: 60,
            max_backoff_secs: 300.0,
            max_task_age_secs: 6 * 3600,
            max_poll_failures: 30,
            max_unreadable_answers: 5,
            adaptive_polls: true,
            min_poll_gap_secs: 1.0,
            timing_samples: 100,
            timing_min_samples: 10,
            timing_read_limit: 5_000,
            timing_window_secs: 24 * 3600,
            timing_refresh_secs: 30,
            stuck_factor: 3.0,
        }
    }
}

/// Largest `poller.poll_batch_size`: a claim's rows are written back in statements of a
/// few hundred bound rows, and a bigger claim only holds tasks longer before their poll.
pub const MAX_POLL_BATCH: u32 = 10_000;

impl PollerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn min_poll_gap(&self) -> Duration {
        Duration::from_secs_f64(self.min_poll_gap_secs)
    }

    /// The timed-poll keys: each names itself when out of range.
    fn validate_timing(&self) -> anyhow::Result<()> {
        let gap = self.min_poll_gap_secs;
        if !(gap.is_finite() && (0.1..=3600.0).contains(&gap)) {
            bail!("poller.min_poll_gap_secs: must be between 0.1 and 3600 seconds");
        }
        if self.timing_samples < 3 || self.timing_samples > 10_000 {
            bail!("poller.timing_samples: must be between 3 and 10000");
        }
        if self.timing_min_samples == 0 || self.timing_min_samples > self.timing_samples {
            bail!(
                "poller.timing_min_samples: must be at least 1 and at most poller.timing_samples"
            );
        }
        if self.timing_read_limit == 0 || self.timing_read_limit > 1_000_000 {
            bail!("poller.timing_read_limit: must be between 1 and 1000000");
        }
        if self.timing_window_secs == 0 || self.timing_refresh_secs == 0 {
            bail!("poller.timing_window_secs and poller.timing_refresh_secs: must be positive");
        }
        if !(self.stuck_factor.is_finite() && self.stuck_factor >= 1.0) {
            bail!("poller.stuck_factor: must be a number of at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long an `Idempotency-Key` is remembered, in seconds.
    pub ttl_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            ttl_secs: 24 * 3600,
        }
    }
}

/// How a create goes round its candidate providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitConfig {
    /// Rounds over the candidates, in all, when every one refused with a transient code
    /// (rate or concurrency limits, 5xx): 1 tries each candidate once.
    pub rounds: u32,
    /// Pause before another round, in milliseconds; each pause is jittered by up to 50%.
    pub round_backoff_ms: u64,
}

impl Default for SubmitConfig {
    fn default() -> Self {
        SubmitConfig {
            rounds: 2,
            round_backoff_ms: 500,
        }
    }
}

impl SubmitConfig {
    /// The pause before round `round` (1-based past the first), with jitter.
    pub fn round_backoff(&self) -> Duration {
        let jitter = 1.0 + rand::random::<f64>() * 0.5;
        Duration::from_millis(self.round_backoff_ms).mul_f64(jitter)
    }
}

/// How long the details of finished tasks and the record of webhook deliveries are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days after which a finished task's stored request body, status history and submit
    /// attempts are deleted (the task itself, its status and result stay). 0 keeps them.
    pub finished_task_details_days: u64,
    /// Days after which a webhook event whose delivery is final (delivered, failed or
    /// disabled) is deleted with its attempts, counted from its last due time; pending
    /// events are never deleted. 0 keeps them.
    pub webhook_events_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            finished_task_details_days: 30,
            webhook_events_days: 30,
        }
    }
}

/// The per-provider circuit breaker, fed by submit and poll outcomes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// Failure rate over the window that opens the circuit (0-1)...
    pub failure_rate: f64,
    /// ...once the window holds at least this many outcomes.
    pub min_samples: u32,
    /// The window for success rates and latency percentiles, in seconds.
    pub window_secs: u64,
    /// How long an open circuit stays open before one probe request is let through.
    pub cooldown_secs: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_samples: 20,
            window_secs: 300,
            cooldown_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Env var holding the bearer token for `/admin/*`; unset disables the admin API.
    pub token_env: Option<String>,
    #[serde(skip)]
    pub token: Option<Secret>,
    /// After `keys rotate`, how long the previous secret keeps working, in seconds.
    pub key_rotation_grace_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token_env: None,
            token: None,
            key_rotation_grace_secs: 24 * 3600,
        }
    }
}

/// The shortest admin token accepted: a guessable one would open every key and the
/// operator's console.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// When the session cookie is `Secure` (and named with the `__Host-` prefix): `auto`
    /// when the request says it came over https (`X-Forwarded-Proto: https`, set by the TLS
    /// proxy), `always`, or `never` (plain-http test setups only).
    pub secure_cookies: SecureCookies,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookies {
    #[default]
    Auto,
    Always,
    Never,
}

/// Per-key request rates. A key's own `rpm` / `burst` / `read_rpm` win; these defaults
/// serve keys that have none (unset: such keys are not rate limited).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Creates (`POST /v1/video/generations`) per minute for keys without their own `rpm`.
    pub default_rpm: Option<u32>,
    /// Creates that may come at once for keys without their own `burst` (unset: the rpm).
    pub default_burst: Option<u32>,
    /// Every other `/v1` call, per minute, for keys without their own `read_rpm`.
    pub default_read_rpm: Option<u32>,
    /// `redis://host:port/db`: one rate limit shared by every gateway process using this
    /// Redis. Unset: each process limits on its own (right for a single instance only).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the limiter writes.
    pub redis_prefix: String,
    /// Longest wait for Redis (connect or answer) on a request's path, in milliseconds.
    pub redis_timeout_ms: u64,
    /// What a `/v1` call gets while Redis cannot answer.
    pub on_redis_error: RedisErrorPolicy,
    /// After Redis failed, how long (ms) checks skip it and apply `on_redis_error` at
    /// once, without waiting `redis_timeout_ms`; then one call probes Redis. 0 probes on
    /// every call (one at a time).
    pub redis_skip_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_rpm: None,
            default_burst: None,
            default_read_rpm: None,
            redis_url: None,
            redis_prefix: "omnigate:rl:".into(),
            redis_timeout_ms: 200,
            on_redis_error: RedisErrorPolicy::FailOpen,
            redis_skip_ms: 1000,
        }
    }
}

impl LimitsConfig {
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn redis_skip(&self) -> Duration {
        Duration::from_millis(self.redis_skip_ms)
    }

    /// The Redis URL with any password replaced by `*****`, for logs.
    pub fn redis_url_redacted(&self) -> Option<String> {
        let raw = self.redis_url.as_deref()?;
        let Ok(mut url) = url::Url::parse(raw) else {
            return Some("(unparsable URL)".into());
        };
        if url.password().is_some() {
            let _ = url.set_password(Some("*****"));
        }
        Some(url.to_string())
    }
}

/// The URL may carry a password, so it prints redacted.
impl fmt::Debug for LimitsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitsConfig")
            .field("default_rpm", &self.default_rpm)
            .field("default_burst", &self.default_burst)
            .field("default_read_rpm", &self.default_read_rpm)
            .field("redis_url", &self.redis_url_redacted())
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("on_redis_error", &self.on_redis_error)
            .field("redis_skip_ms", &self.redis_skip_ms)
            .finish()
    }
}

/// Events to clients' `callback_url`s: the delivery worker, its retry schedule and the
/// rules on where it may connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Seconds to wait before each delivery attempt of an event, the first counted from the
    /// event (it must be 0: an event is due when it is written), each next one from the
    /// attempt before it. One attempt per entry; after the last fails, the event is failed.
    /// A receiver's `Retry-After` can lengthen a wait, never shorten it.
    pub retry_schedule_secs: Vec<f64>,
    /// Seconds one attempt may take, connecting and reading the answer included.
    pub request_timeout_secs: f64,
    /// Deliveries in flight at once in one gateway process.
    pub concurrency: usize,
    /// Most events one worker claims per step.
    pub batch_size: u32,
    /// How long a claim on an event lasts; longer than `request_timeout_secs`, so no other
    /// process can send the same attempt while it is in flight.
    pub lease_secs: u64,
    /// How often the worker looks for due events, in milliseconds.
    pub tick_ms: u64,
    /// Lets `callback_url`s use plain http and reach loopback, private, link-local and
    /// other internal addresses. Off in production (SSRF); meant for tests and private
    /// networks.
    pub allow_private_targets: bool,
    /// The address providers can reach this gateway at, e.g. `https://omnigate.example.com`
    /// (scheme, host and an optional path prefix). When set, every new task gets an
    /// unguessable callback token and providers whose dialect takes a `callback_url` are
    /// given `{public_base_url}/upstream/callbacks/{token}`. Unset: no upstream callback is
    /// requested and tasks are only polled.
    pub public_base_url: Option<String>,
    /// Seconds between the (backstop) polls of a task that was given a callback, instead of
    /// its provider's `poll_interval_secs`.
    pub callback_poll_interval_secs: f64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_schedule_secs: vec![0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
            request_timeout_secs: 15.0,
            concurrency: 32,
            batch_size: 128,
            lease_secs: 60,
            tick_ms: 500,
            allow_private_targets: false,
            public_base_url: None,
            callback_poll_interval_secs: 60.0,
        }
    }
}

impl WebhooksConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }

    /// The wait before attempt `n + 1` once `n` attempts were made; None when the schedule
    /// is used up.
    pub fn delay_before_attempt(&self, made: u32) -> Option<Duration> {
        self.retry_schedule_secs
            .get(made as usize)
            .map(|s| Duration::from_secs_f64(*s))
    }

    pub fn callback_poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.callback_poll_interval_secs)
    }

    /// The URL a provider calls back on for the task holding `token`, when callbacks are on.
    pub fn upstream_callback_url(&self, token: &str) -> Option<String> {
        let base = self.public_base_url.as_deref()?;
        Some(format!(
            "{}/upstream/callbacks/{token}",
            base.trim_end_matches('/')
        ))
    }
    fn validate(&self) -> anyhow::Result<()> {
        validate_webhooks(self)?;
        let s = &self.retry_schedule_secs;
        if s.is_empty()
            || s.iter()
                .any(|v| !(v.is_finite() && *v >= 0.0 && *v <= MAX_SECS))
        {
            bail!("webhooks.retry_schedule_secs: list at least one delay, each a non-negative number of seconds (at most {MAX_SECS})");
        }
        if s[0] != 0.0 {
            bail!("webhooks.retry_schedule_secs: the first entry must be 0 (an event's first attempt is due when it is written)");
        }
        let t = self.request_timeout_secs;
        if !(t.is_finite() && t > 0.0 && t <= MAX_SECS) {
            bail!("webhooks.request_timeout_secs: must be a positive number of seconds");
        }
        if self.concurrency == 0 || self.batch_size == 0 || self.tick_ms == 0 {
            bail!("webhooks: concurrency, batch_size and tick_ms must be positive");
        }
        if self.lease_secs as f64 <= t + 1.0 || self.lease_secs as f64 > MAX_SECS {
            bail!("webhooks.lease_secs: must be longer than webhooks.request_timeout_secs + 1 ({}), so a claim outlives its attempt", t + 1.0);
        }
        Ok(())
    }
}

fn validate_webhooks(w: &WebhooksConfig) -> anyhow::Result<()> {
    if let Some(raw) = &w.public_base_url {
        let url = url::Url::parse(raw).map_err(|_| {
            anyhow::anyhow!(
                "webhooks.public_base_url: not a URL (expected https://host[/prefix]): {raw:?}"
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            bail!("webhooks.public_base_url: must be http(s)://host[:port][/prefix]");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("webhooks.public_base_url: must not carry a query or fragment");
        }
    }
    Ok(())
}

/// While Redis cannot answer: let `/v1` calls through unlimited (`fail_open`), or refuse
/// them with 503 `rate_limiter_unavailable` (`fail_closed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisErrorPolicy {
    #[default]
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// `auto` (the default) runs the sandbox only with the embedded SQLite store and no
    /// provider configured; `always` runs it on any store, but only with no provider (the
    /// sandbox is never mixed with real providers); `never` never.
    pub enabled: SandboxMode,
    /// Seconds a sandbox task spends queued, then processing, before it completes.
    pub task_seconds: f64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            enabled: SandboxMode::Auto,
            task_seconds: 6.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Modellix,
    /// Kling's own body; anyfast, kkiai and Kling's own host.
    Kling,
    Apimodels,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSubmit {
    #[default]
    Fail,
    Resubmit,
}

/// How omnigate authenticates to a provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Credential {
    #[default]
    Missing,
    /// `Authorization: Bearer <key>` (every reseller).
    Bearer(Secret),
    /// Kling's own host: an HS256 JWT signed with the secret key, issued by the access key.
    KlingJwt {
        access_key: Secret,
        secret_key: Secret,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub dialect: Dialect,
    /// Scheme and host, e.g. `https://www.anyfast.ai`.
    pub base_url: String,
    /// Env var holding a bearer API key (resellers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Env vars holding Kling's access key and secret key (Kling's own host only).
    #[serde(default)]
    pub access_key_env: Option<String>,
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Models this provider sells, in omnigate's spelling.
    pub models: Vec<Model>,
    /// USD per second of output video, per model (keyed by model name).
    #[serde(default)]
    pub prices: BTreeMap<String, PriceTable>,
    /// Whole-request timeout for one upstream call.
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout_secs: f64,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout_secs: f64,
    /// Interval between status polls of one task.
    #[serde(default = "defaults::poll_interval")]
    pub poll_interval_secs: f64,
    /// Lower wins among providers with the same price.
    #[serde(default)]
    pub priority: i32,
    /// Kling dialect: path prefix before `/v1/videos/...` (`/kling` for resellers, empty
    /// for Kling's own host).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Kling dialect: query path template, `{task_id}` replaced (anyfast answers queries
    /// at `/kling/v1/videos/text2video/{task_id}`).
    #[serde(default)]
    pub query_path: Option<String>,
    /// Request features this provider cannot carry although its dialect can; requests
    /// using them go elsewhere.
    #[serde(default)]
    pub unsupported_features: Vec<Feature>,
    /// Kling dialect: send `element_id` as a JSON string instead of a number (kkiai's
    /// parameter table types it as a string). Unset: on for kkiai (see `is_kkiai`).
    #[serde(default)]
    pub element_id_as_string: Option<bool>,
    /// Kling dialect: send `duration` even for a base-video edit, where the output lasts
    /// as long as the input and the value is ignored (kkiai's parameter table marks
    /// `duration` Required without exception; Kling and anyfast want it left out there).
    /// Unset: on for kkiai (see `is_kkiai`).
    #[serde(default)]
    pub always_send_duration: Option<bool>,
    /// What to do with a task whose submit may or may not have reached this provider when
    /// the provider cannot look tasks up by our id: `fail` it (never a double charge) or
    /// `resubmit` it (never a lost task, at the risk of a duplicate).
    #[serde(default)]
    pub unknown_submit: UnknownSubmit,
    /// Tasks submitted here and not yet finished, at most, across every gateway process
    /// sharing the database (held in the store). Unset: no cap, and no bookkeeping.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Submits here per minute (a fixed one-minute window), at most, across every process.
    #[serde(default)]
    pub max_submits_per_minute: Option<u32>,
    #[serde(skip)]
    pub credential: Credential,
    /// Set for the built-in sandbox upstream; shown on every task it serves.
    #[serde(skip)]
    pub sandbox: bool,
}

/// Ten years: longer than any sensible setting, far from where `Duration` overflows.
const MAX_SECS: f64 = 10.0 * 365.0 * 86400.0;

mod defaults {
    pub fn request_timeout() -> f64 {
        30.0
    }
    pub fn connect_timeout() -> f64 {
        5.0
    }
    pub fn poll_interval() -> f64 {
        10.0
    }
}

impl ProviderConfig {
    /// A provider named kkiai or on a kkiai host. Its dialect quirks (string element ids,
    /// a duration on every create) are then on unless the config says otherwise, so an
    /// operator who copies only the basics still sends what kkiai's table requires.
    pub fn is_kkiai(&self, name: &str) -> bool {
        let host = url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        name.to_ascii_lowercase().contains("kkiai")
            || host.is_some_and(|h| h == "kkiai.com" || h.ends_with(".kkiai.com"))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_secs)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_secs)
    }

    pub fn serves(&self, model: Model) -> bool {
        self.models.contains(&model)
    }

    pub fn price_table(&self, model: Model) -> Option<&PriceTable> {
        self.prices.get(model.as_str())
    }
}

/// USD per second of output for each mode and audio option. A missing entry means the
/// provider does not sell that combination; `*_keep_sound` falls back to the plain price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub std: Option<f64>,
    pub std_sound: Option<f64>,
    pub std_keep_sound: Option<f64>,
    pub pro: Option<f64>,
    pub pro_sound: Option<f64>,
    pub pro_keep_sound: Option<f64>,
}

impl PriceTable {
    pub fn per_second(&self, mode: Mode, sound: OnOff, keep_original_sound: bool) -> Option<f64> {
        let (plain, with_sound, keep) = match mode {
            Mode::Std => (self.std, self.std_sound, self.std_keep_sound),
            Mode::Pro => (self.pro, self.pro_sound, self.pro_keep_sound),
        };
        match (sound, keep_original_sound) {
            (OnOff::On, _) => with_sound,
            (OnOff::Off, true) => keep.or(plain),
            (OnOff::Off, false) => plain,
        }
    }

    /// Each (mode and audio option, price) in a fixed order.
    pub fn entries(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("std", self.std),
            ("std_sound", self.std_sound),
            ("std_keep_sound", self.std_keep_sound),
            ("pro", self.pro),
            ("pro_sound", self.pro_sound),
            ("pro_keep_sound", self.pro_keep_sound),
        ]
    }
}

/// Environment overrides: `OMNIGATE_<SECTION>__<KEY>`.
const ENV_PREFIX: &str = "OMNIGATE_";
const ENV_SEPARATOR: &str = "__";

/// Every problem figment found, each naming the key as the user wrote it: `server.listn`
/// from a file (figment's own text says `default.server.listn`, its profile's name
/// first), `OMNIGATE_SERVER__LISTN` from the environment.
fn invalid_configuration(errors: figment::Error) -> anyhow::Error {
    let msgs: Vec<String> = errors.into_iter().map(|e| describe(&e)).collect();
    anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
}

fn describe(e: &figment::Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|md| md.name.contains(ENV_PREFIX));
    let key = if from_env {
        let upper: Vec<String> = e.path.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!("{ENV_PREFIX}{}", upper.join(ENV_SEPARATOR))
    } else {
        e.path.join(".")
    };
    let what = match &e.kind {
        figment::error::Kind::UnknownField(found, expected) => format!(
            "unknown key {found:?}; expected one of {}",
            expected.join(", ")
        ),
        kind => kind.to_string(),
    };
    let place = match e.metadata.as_ref() {
        Some(md) => match &md.source {
            Some(source) => format!(" (in {source} {})", md.name),
            None => format!(" (in {})", md.name),
        },
        None => String::new(),
    };
    match key.is_empty() {
        true => format!("{what}{place}"),
        false => format!("{key}: {what}{place}"),
    }
}

impl Config {
    /// Loads defaults, then `path` (if given), then `OMNIGATE_*` env vars; resolves
    /// credentials from the environment and validates across fields.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        // Every setting lives in a section, so only `OMNIGATE_<SECTION>__<KEY>` is config;
        // other OMNIGATE_* variables (OMNIGATE_CONFIG, a token named by admin.token_env)
        // are not.
        let env = Env::prefixed(ENV_PREFIX)
            .split(ENV_SEPARATOR)
            .filter(|k| k.as_str().contains('.'));
        fig = fig.merge(env);
        let mut cfg: Config = fig.extract().map_err(invalid_configuration)?;
        cfg.resolve_credentials(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency.ttl_secs)
    }

    /// Parses a TOML string without touching the environment for overrides (tests).
    pub fn from_toml_str(
        toml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let mut cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(invalid_configuration)?;
        cfg.resolve_credentials(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn sandbox_wanted(&self) -> bool {
        match self.sandbox.enabled {
            SandboxMode::Always => true,
            SandboxMode::Never => false,
            SandboxMode::Auto => self.providers.is_empty() && self.database_is_sqlite(),
        }
    }

    fn database_is_sqlite(&self) -> bool {
        self.database.url.starts_with("sqlite:")
    }

    fn resolve_credentials(&mut self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        // Read if set, required only where it is used (`require_admin_token`): `keys list`
        // or `healthcheck` on a host without the admin token still run.
        if let Some(var) = &self.admin.token_env {
            self.admin.token = env(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim()));
        }
        self.server.secrets_key = env(&self.server.secrets_key_env)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim()));
        for (name, p) in &mut self.providers {
            let read = |field: &str, var: &Option<String>| -> anyhow::Result<Option<Secret>> {
                let Some(var) = var else { return Ok(None) };
                match env(var).filter(|v| !v.trim().is_empty()) {
                    Some(v) => Ok(Some(Secret::new(v.trim()))),
                    None => bail!(
                        "providers.{name}.{field}: environment variable {var} is not set (it holds this provider's credential)"
                    ),
                }
            };
            let api_key = read("api_key_env", &p.api_key_env)?;
            let access = read("access_key_env", &p.access_key_env)?;
            let secret = read("secret_key_env", &p.secret_key_env)?;
            p.credential = match (api_key, access, secret) {
                (Some(k), None, None) => Credential::Bearer(k),
                (None, Some(access_key), Some(secret_key)) if p.dialect == Dialect::Kling => {
                    Credential::KlingJwt { access_key, secret_key }
                }
                (None, None, None) => bail!(
                    "providers.{name}.api_key_env: no credential configured (set api_key_env, or access_key_env and secret_key_env for Kling's own host)"
                ),
                _ => bail!(
                    "providers.{name}: set either api_key_env, or both access_key_env and secret_key_env (kling dialect only)"
                ),
            };
        }
        Ok(())
    }

    /// For the commands that use the admin token (`serve`, which answers `/admin/*`): with
    /// `admin.token_env` set, its variable must hold the token. Other commands do not ask.
    pub fn require_admin_token(&self) -> anyhow::Result<()> {
        match (&self.admin.token_env, &self.admin.token) {
            (Some(var), None) => bail!("admin.token_env: environment variable {var} is not set"),
            _ => Ok(()),
        }
    }

    /// Checks values and their relations; `app::start` runs it too, so a config built in
    /// code is held to the same rules as one loaded from a file.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_durations()?;
        self.poller.validate_timing()?;
        self.routing.validate()?;
        crate::telemetry::config::validate(
            &self.log,
            &self.metrics,
            &self.otel,
            self.admin.token_env.is_some() || self.admin.token.is_some(),
        )?;
        self.results.validate(self.workers.stall_secs)?;
        self.live.validate()?;
        if let Some(token) = &self.admin.token {
            let n = token.expose().chars().count();
            if n < MIN_ADMIN_TOKEN_CHARS {
                bail!("admin.token_env: the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters (this one has {n}); make one with `openssl rand -hex 32`");
            }
        }
        if let Err(e) = crate::secrets::SecretBox::from_config(self) {
            bail!("server.secrets_key_env: {e:#}");
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections: must be at least 1");
        }
        if self.server.failed_auth_burst == 0 {
            bail!("server.failed_auth_burst: must be at least 1");
        }
        if self.server.failed_auth_per_minute == 0 {
            bail!("server.failed_auth_per_minute: must be at least 1");
        }
        if self.database.sqlite_mmap_mib > MAX_SQLITE_MMAP_MIB {
            bail!("database.sqlite_mmap_mib: must be at most {MAX_SQLITE_MMAP_MIB} (1 TiB)");
        }
        if !(self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
            || self.database.url.starts_with("sqlite:"))
        {
            bail!("database.url: must start with postgres://, postgresql:// or sqlite:");
        }
        if self.poller.batch_size == 0 || self.poller.tick_ms == 0 || self.poller.lease_secs == 0 {
            bail!("poller: batch_size, tick_ms and lease_secs must be positive");
        }
        if !(1..=MAX_POLL_BATCH).contains(&self.poller.poll_batch_size) {
            bail!("poller.poll_batch_size: must be from 1 to {MAX_POLL_BATCH}");
        }
        if self.poller.poll_concurrency == 0 {
            bail!("poller.poll_concurrency: must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.poller.poll_jitter) {
            bail!("poller.poll_jitter: must be from 0 to 1 (a fraction of the poll interval)");
        }
        for (key, v) in [
            (
                "poller.max_poll_failures",
                u64::from(self.poller.max_poll_failures),
            ),
            ("poller.max_task_age_secs", self.poller.max_task_age_secs),
            ("idempotency.ttl_secs", self.idempotency.ttl_secs),
        ] {
            if v == 0 {
                bail!("{key}: must be at least 1");
            }
        }
        let h = &self.health;
        if h.consecutive_failures == 0 || !(h.failure_rate > 0.0 && h.failure_rate <= 1.0) {
            bail!("health: consecutive_failures must be positive and failure_rate in (0, 1]");
        }
        if !(h.cooldown_secs.is_finite() && h.cooldown_secs > 0.0) || h.window_secs == 0 {
            bail!("health: cooldown_secs and window_secs must be positive");
        }
        for (name, p) in &self.providers {
            validate_provider(name, p)?;
            // A poll must finish inside its lease, or another process could poll the same
            // task at the same moment.
            if p.request_timeout_secs >= self.poller.lease_secs as f64 {
                bail!(
                    "poller.lease_secs: must be longer than providers.{name}.request_timeout_secs ({})",
                    p.request_timeout_secs
                );
            }
        }
        validate_limits(&self.limits)?;
        self.webhooks.validate()?;
        self.queue.validate()?;
        if self.providers.is_empty() && self.sandbox.enabled == SandboxMode::Never {
            bail!("providers: none configured and sandbox.enabled = \"never\"; nothing could serve a task");
        }
        self.validate_sandbox()?;
        // A submit may fall over through every provider, each taking up to its timeout, in
        // each round; a drain shorter than that could cut one in half.
        let rounds = f64::from(self.submit.rounds.max(1));
        let submit_budget: f64 = self
            .providers
            .values()
            .map(|p| p.request_timeout_secs)
            .sum::<f64>()
            * rounds
            + (rounds - 1.0) * 1.5 * self.submit.round_backoff_ms as f64 / 1000.0;
        if self.server.drain_timeout_secs < submit_budget {
            bail!(
                "server.drain_timeout_secs: must be at least {submit_budget} (submit.rounds x the sum of the providers' request_timeout_secs, plus the pauses between rounds: the longest a submit can take)"
            );
        }
        if let Some((name, p)) = self
            .providers
            .iter()
            .find(|(_, p)| p.request_timeout_secs >= self.workers.stall_secs)
        {
            bail!(
                "workers.stall_secs: must be longer than providers.{name}.request_timeout_secs ({})",
                p.request_timeout_secs
            );
        }
        let s = &self.server;
        if s.max_body_bytes == 0 || s.max_in_flight_requests == 0 || s.max_in_flight_creates == 0 {
            bail!("server: max_body_bytes, max_in_flight_requests and max_in_flight_creates must be positive");
        }
        if s.max_body_bytes > u32::MAX as usize {
            bail!("server.max_body_bytes: at most {} (4 GiB)", u32::MAX);
        }
        if s.body_memory_budget_bytes < s.max_body_bytes {
            bail!("server.body_memory_budget_bytes: must be at least server.max_body_bytes ({}), or the largest allowed body could never be read", s.max_body_bytes);
        }
        Ok(())
    }

    /// Every duration in seconds must be a finite positive number, small enough to be a
    /// `Duration` (a negative or NaN one would panic where it is used).
    fn validate_durations(&self) -> anyhow::Result<()> {
        let mut keys = vec![
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.drain_timeout_secs", self.server.drain_timeout_secs),
            (
                "database.acquire_timeout_secs",
                self.database.acquire_timeout_secs,
            ),
            (
                "database.statement_timeout_secs",
                self.database.statement_timeout_secs,
            ),
            ("poller.max_backoff_secs", self.poller.max_backoff_secs),
            ("health.cooldown_secs", self.health.cooldown_secs),
            ("sandbox.task_seconds", self.sandbox.task_seconds),
            ("workers.stall_secs", self.workers.stall_secs),
            (
                "webhooks.callback_poll_interval_secs",
                self.webhooks.callback_poll_interval_secs,
            ),
        ];
        let provider_keys: Vec<(String, f64)> = self
            .providers
            .iter()
            .flat_map(|(name, p)| {
                [
                    (
                        format!("providers.{name}.request_timeout_secs"),
                        p.request_timeout_secs,
                    ),
                    (
                        format!("providers.{name}.connect_timeout_secs"),
                        p.connect_timeout_secs,
                    ),
                    (
                        format!("providers.{name}.poll_interval_secs"),
                        p.poll_interval_secs,
                    ),
                ]
            })
            .collect();
        keys.extend(provider_keys.iter().map(|(k, v)| (k.as_str(), *v)));
        for (key, v) in keys {
            if !(v.is_finite() && v > 0.0 && v <= MAX_SECS) {
                bail!("{key}: must be a positive number of seconds (at most {MAX_SECS}), not {v}");
            }
        }
        for (key, v) in [
            ("poller.lease_secs", self.poller.lease_secs),
            ("poller.max_task_age_secs", self.poller.max_task_age_secs),
            ("idempotency.ttl_secs", self.idempotency.ttl_secs),
            ("health.window_secs", self.health.window_secs),
        ] {
            if v as f64 > MAX_SECS {
                bail!("{key}: at most {MAX_SECS} seconds");
            }
        }
        Ok(())
    }

    fn validate_sandbox(&self) -> anyhow::Result<()> {
        match self.sandbox.enabled {
            SandboxMode::Always if !self.providers.is_empty() => bail!(
                "sandbox.enabled: \"always\" with real providers configured; the sandbox is never mixed into routing with real providers (remove [providers] or set it to \"auto\" or \"never\")"
            ),
            SandboxMode::Auto if self.providers.is_empty() && !self.database_is_sqlite() => bail!(
                "sandbox.enabled: \"auto\" runs the sandbox only on the embedded SQLite store and this database is PostgreSQL; configure [providers], or set sandbox.enabled = \"always\" to run the sandbox on it deliberately"
            ),
            _ => Ok(()),
        }
    }
}

fn validate_limits(l: &LimitsConfig) -> anyhow::Result<()> {
    for (field, v) in [
        ("default_rpm", l.default_rpm),
        ("default_burst", l.default_burst),
        ("default_read_rpm", l.default_read_rpm),
    ] {
        if v == Some(0) {
            bail!("limits.{field}: must be at least 1 (leave it unset for no limit)");
        }
    }
    if l.default_burst.is_some() && l.default_rpm.is_none() {
        bail!("limits.default_burst: set default_rpm too (a burst alone limits nothing)");
    }
    if let Some(raw) = &l.redis_url {
        let url = url::Url::parse(raw).map_err(|_| {
            anyhow::anyhow!(
                "limits.redis_url: not a URL (expected redis://host:port/db): {:?}",
                l.redis_url_redacted().unwrap_or_default()
            )
        })?;
        if url.scheme() != "redis" || url.host_str().is_none_or(str::is_empty) {
            bail!("limits.redis_url: must be redis://host[:port][/db]");
        }
    }
    if l.redis_prefix.is_empty() {
        bail!("limits.redis_prefix: must not be empty");
    }
    if l.redis_timeout_ms == 0 {
        bail!("limits.redis_timeout_ms: must be at least 1");
    }
    // Longer would leave limits off (fail_open) for minutes after Redis is back.
    if l.redis_skip_ms > 60_000 {
        bail!("limits.redis_skip_ms: must be at most 60000 (one minute)");
    }
    Ok(())
}

fn validate_provider(name: &str, p: &ProviderConfig) -> anyhow::Result<()> {
    let url = url::Url::parse(&p.base_url)
        .with_context(|| format!("providers.{name}.base_url: not a URL: {:?}", p.base_url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("providers.{name}.base_url: must be http or https");
    }
    if p.models.is_empty() {
        bail!("providers.{name}.models: list at least one model");
    }
    for (field, v) in [
        ("max_in_flight", p.max_in_flight),
        ("max_submits_per_minute", p.max_submits_per_minute),
    ] {
        if v == Some(0) {
            bail!("providers.{name}.{field}: must be at least 1 (leave it unset for no cap)");
        }
    }
    for (field, v) in [
        ("request_timeout_secs", p.request_timeout_secs),
        ("connect_timeout_secs", p.connect_timeout_secs),
        ("poll_interval_secs", p.poll_interval_secs),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("providers.{name}.{field}: must be a positive number of seconds");
        }
    }
    if p.dialect != Dialect::Kling
        && (p.path_prefix.is_some()
            || p.query_path.is_some()
            || p.element_id_as_string.is_some()
            || p.always_send_duration.is_some())
    {
        bail!("providers.{name}: path_prefix, query_path, element_id_as_string and always_send_duration are for the kling dialect only");
    }
    for (model, table) in &p.prices {
        let Some(m) = Model::parse(model) else {
            bail!("providers.{name}.prices.{model}: unknown model");
        };
        if !p.serves(m) {
            bail!("providers.{name}.prices.{model}: priced but not listed in models");
        }
        for (key, v) in table.entries() {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                bail!("providers.{name}.prices.{model}.{key}: must be a non-negative number");
            }
        }
    }
    for m in &p.models {
        if p.price_table(*m).is_none() {
            bail!(
                "providers.{name}.prices.{}: missing (every served model needs a price table)",
                m.as_str()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config with every provider of the providers example appended, as an
    /// operator who has all four accounts would write it.
    const EXAMPLE: &str = concat!(
        include_str!("../../config/omnigate.example.toml"),
        "\n",
        include_str!("../../config/providers.example.toml")
    );

    #[test]
    fn a_copy_of_the_example_config_runs_the_sandbox_and_needs_no_credential() {
        let toml = include_str!("../../config/omnigate.example.toml");
        let cfg = Config::from_toml_str(toml, |_| None).expect("loads with no env at all");
        assert!(cfg.providers.is_empty());
        assert!(cfg.sandbox_wanted());
    }

    /// Every provider credential variable set; the secrets key (a 32-byte key, checked
    /// as one) is not.
    fn env_with_all_keys(var: &str) -> Option<String> {
        (var.ends_with("_KEY") && var != "OMNIGATE_SECRETS_KEY").then(|| format!("value-of-{var}"))
    }

    #[test]
    fn the_secrets_key_is_read_from_its_variable_and_a_bad_one_is_named() {
        let key = "ab".repeat(32);
        let with = |value: &'static str| {
            move |var: &str| (var == "OMNIGATE_SECRETS_KEY").then(|| value.to_string())
        };
        let cfg = Config::from_toml_str("", |var: &str| {
            (var == "OMNIGATE_SECRETS_KEY").then(|| key.clone())
        })
        .unwrap();
        assert_eq!(
            cfg.server.secrets_key.as_ref().map(Secret::expose),
            Some(key.as_str())
        );
        assert!(!format!("{cfg:?}").contains(&key), "the key never prints");
        let err = Config::from_toml_str("", with("too-short"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.secrets_key_env") && !err.contains("too-short"),
            "{err}"
        );
        assert!(Config::from_toml_str("", |_| None)
            .unwrap()
            .server
            .secrets_key
            .is_none());
    }

    #[test]
    fn the_example_config_is_valid_and_secrets_do_not_print() {
        let toml = EXAMPLE;
        let cfg = Config::from_toml_str(toml, env_with_all_keys).expect("example config loads");
        assert_eq!(cfg.providers.len(), 4);
        let anyfast = &cfg.providers["anyfast"];
        assert_eq!(anyfast.models, vec![Model::KlingV3Omni]);
        assert!(
            matches!(&anyfast.credential, Credential::Bearer(s) if s.expose() == "value-of-ANYFAST_API_KEY")
        );
        assert!(!format!("{cfg:?}").contains("value-of-"));
        let p = cfg.providers["apimodels"]
            .price_table(Model::KlingV3Omni)
            .unwrap();
        assert_eq!(p.per_second(Mode::Pro, OnOff::Off, true), Some(0.1059));
        assert_eq!(p.per_second(Mode::Std, OnOff::On, false), Some(0.0956));
    }

    #[test]
    fn provider_caps_and_the_queue_are_read_and_checked_naming_the_key() {
        let capped = EXAMPLE.replace("# max_in_flight = 20", "max_in_flight = 20");
        let cfg = Config::from_toml_str(&capped, env_with_all_keys).unwrap();
        assert_eq!(cfg.providers["anyfast"].max_in_flight, Some(20));
        assert_eq!(cfg.queue.default_max_wait_secs, 3600);
        for (bad, key) in [
            (
                EXAMPLE.replace("# max_in_flight = 20", "max_in_flight = 0"),
                "providers.anyfast.max_in_flight",
            ),
            (
                EXAMPLE.replace(
                    "default_max_wait_secs = 3600",
                    "default_max_wait_secs = 90000",
                ),
                "queue.default_max_wait_secs",
            ),
        ] {
            let err = Config::from_toml_str(&bad, env_with_all_keys).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
    }

    #[test]
    fn the_sqlite_mapping_is_read_and_bounded() {
        let base = EXAMPLE;
        let cfg = Config::from_toml_str(base, env_with_all_keys).unwrap();
        assert_eq!(cfg.database.sqlite_mmap_mib, 256);
        let huge = base.replace("sqlite_mmap_mib = 256", "sqlite_mmap_mib = 2000000");
        let err = Config::from_toml_str(&huge, env_with_all_keys).unwrap_err();
        assert!(
            format!("{err:#}").contains("database.sqlite_mmap_mib"),
            "{err:#}"
        );
    }

    #[test]
    fn webhooks_public_base_url_is_checked_and_makes_the_intake_url() {
        let base = EXAMPLE;
        let on =
            |line: &str| base.replace("# public_base_url = \"https://omnigate.example.com\"", line);
        let cfg = Config::from_toml_str(
            &on("public_base_url = \"https://gw.example/omni/\""),
            env_with_all_keys,
        )
        .unwrap();
        assert_eq!(
            cfg.webhooks.upstream_callback_url("tok").as_deref(),
            Some("https://gw.example/omni/upstream/callbacks/tok")
        );
        let cfg = Config::from_toml_str(base, env_with_all_keys).unwrap();
        assert_eq!(cfg.webhooks.upstream_callback_url("tok"), None);
        for bad in ["ftp://gw.example", "gw.example", "https://gw.example/?x=1"] {
            let err = Config::from_toml_str(
                &on(&format!("public_base_url = {bad:?}")),
                env_with_all_keys,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("webhooks.public_base_url"), "{bad}: {err}");
        }
        let bad = base.replace(
            "callback_poll_interval_secs = 60.0",
            "callback_poll_interval_secs = 0.0",
        );
        let err = Config::from_toml_str(&bad, env_with_all_keys)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("webhooks.callback_poll_interval_secs"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_missing_credentials_name_the_key() {
        let base = EXAMPLE;
        let err = Config::from_toml_str(
            &format!("{base}\n[poller.extra]\nx = 1\n"),
            env_with_all_keys,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("extra"), "{err}");
        let err = Config::from_toml_str(base, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("providers.anyfast.api_key_env") && err.contains("ANYFAST_API_KEY"),
            "{err}"
        );
        let bad = base.replace("poll_interval_secs = 5.0", "poll_interval_secs = -1.0");
        let err = Config::from_toml_str(&bad, env_with_all_keys)
            .unwrap_err()
            .to_string();
        assert!(err.contains("poll_interval_secs"), "{err}");
        let bad = base.replace("dialect = \"modellix\"", "dialect = \"sora\"");
        let err = Config::from_toml_str(&bad, env_with_all_keys)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialect") || err.contains("sora"), "{err}");
    }

    #[test]
    fn env_overrides_sections_and_ignores_other_omnigate_variables() {
        std::env::set_var("OMNIGATE_POLLER__TICK_MS", "123");
        std::env::set_var("OMNIGATE_ADMIN_TOKEN", "not-a-setting");
        let cfg = Config::load(None).expect("stray OMNIGATE_* variables are not settings");
        assert_eq!(cfg.poller.tick_ms, 123);
        std::env::set_var("OMNIGATE_POLLER__TICK_MSS", "1");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("tick_mss"), "{err}");
        std::env::remove_var("OMNIGATE_POLLER__TICK_MSS");
        std::env::remove_var("OMNIGATE_POLLER__TICK_MS");
        std::env::remove_var("OMNIGATE_ADMIN_TOKEN");
    }

    #[test]
    fn limits_are_checked_and_a_redis_password_does_not_print() {
        let cfg = Config::from_toml_str(
            "[limits]\nredis_url = \"redis://:hunter2@127.0.0.1:6379/2\"\n\
             on_redis_error = \"fail_closed\"\ndefault_rpm = 10",
            |_| None,
        )
        .unwrap();
        assert_eq!(cfg.limits.on_redis_error, RedisErrorPolicy::FailClosed);
        assert_eq!(cfg.limits.default_rpm, Some(10));
        assert!(!format!("{cfg:?}").contains("hunter2"));
        for (bad, key) in [
            ("redis_url = \"http://127.0.0.1:6379\"", "limits.redis_url"),
            ("redis_url = \"not a url\"", "limits.redis_url"),
            ("default_rpm = 0", "limits.default_rpm"),
            ("default_burst = 5", "limits.default_burst"),
            ("redis_timeout_ms = 0", "limits.redis_timeout_ms"),
            ("redis_skip_ms = 60001", "limits.redis_skip_ms"),
            ("on_redis_error = \"maybe\"", "on_redis_error"),
        ] {
            let err = Config::from_toml_str(&format!("[limits]\n{bad}"), |_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn webhooks_settings_are_checked_by_name() {
        let cfg = Config::from_toml_str(
            "[webhooks]\nretry_schedule_secs = [0, 1, 1]\nallow_private_targets = true",
            |_| None,
        )
        .unwrap();
        assert_eq!(cfg.webhooks.retry_schedule_secs, vec![0.0, 1.0, 1.0]);
        assert_eq!(
            cfg.webhooks.delay_before_attempt(1),
            Some(Duration::from_secs(1))
        );
        assert_eq!(cfg.webhooks.delay_before_attempt(3), None);
        for (bad, key) in [
            ("retry_schedule_secs = []", "webhooks.retry_schedule_secs"),
            (
                "retry_schedule_secs = [5, 10]",
                "webhooks.retry_schedule_secs",
            ),
            (
                "retry_schedule_secs = [0, -1]",
                "webhooks.retry_schedule_secs",
            ),
            ("request_timeout_secs = 0", "webhooks.request_timeout_secs"),
            ("lease_secs = 10", "webhooks.lease_secs"),
            ("concurrency = 0", "webhooks"),
            ("allow_private = true", "allow_private"),
        ] {
            let err = Config::from_toml_str(&format!("[webhooks]\n{bad}"), |_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn no_providers_means_sandbox() {
        let cfg = Config::from_toml_str("", |_| None).unwrap();
        assert!(cfg.sandbox_wanted());
        assert_eq!(cfg.database.url, "sqlite://omnigate.db");
    }
}
