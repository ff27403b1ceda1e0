//! Per-key request rates: which quota a call counts against, one `RateLimiter` interface
//! with an in-process backend (governor) and a Redis backend shared by every replica, and
//! the policy for when Redis cannot answer. `layer.rs` puts it in front of `/v1`.
//!
//! Concurrency and budgets are counted in the store, inside the task's own transactions;
//! only the request rate needs a store of its own, because it is checked on every call.

mod breaker;
mod memory;
mod redis;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use self::breaker::{Admit, Breaker};
use crate::config::{LimitsConfig, RedisErrorPolicy};
use crate::store::{ApiKey, KeyLimits};

pub use self::memory::MemoryLimiter;
pub use self::redis::RedisLimiter;

/// Which of a key's two rates a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `POST /v1/video/generations`: the calls that cost money.
    Create,
    /// Every other `/v1` call.
    Read,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Create => "create",
            Bucket::Read => "read",
        }
    }
}

/// A steady rate with a burst: `burst` calls at once, then one every `60 / per_minute` s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Quota {
    /// A quota from stored numbers; 0 is taken as 1 (a key is switched off by revoking it).
    pub fn new(per_minute: u32, burst: u32) -> Quota {
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Quota {
            per_minute: at_least_one(per_minute),
            burst: at_least_one(burst),
        }
    }

    /// The time one call's worth of quota takes to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.get()
    }
}

/// The outcome of one check, in the terms of the RateLimit header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub quota: Quota,
    /// Calls that may still be made at once after this one.
    pub remaining: u32,
    /// Whole seconds until the full burst is available again.
    pub reset_secs: u64,
    /// Whole seconds until a refused call would be allowed (0 when allowed).
    pub retry_after_secs: u64,
}

impl Decision {
    /// Builds a decision from a GCRA outcome: `until_full` is how long until the whole
    /// burst is back, `retry_after` how long until the next call would pass.
    pub(crate) fn from_gcra(
        quota: Quota,
        allowed: bool,
        remaining: u32,
        until_full: Duration,
        retry_after: Duration,
    ) -> Decision {
        let whole_secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        Decision {
            allowed,
            quota,
            remaining: if allowed { remaining } else { 0 },
            reset_secs: whole_secs(until_full),
            // A refused call is never told to come back "now": the rate has a finite step.
            retry_after_secs: if allowed {
                0
            } else {
                whole_secs(retry_after).max(1)
            },
        }
    }

    /// The number `RateLimit-Limit` shows: the calls that can be made at once.
    pub fn limit(&self) -> u32 {
        self.quota.burst.get()
    }
}

/// Where the rate state lives.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one call of `key_id` against `quota` in `bucket` if it fits.
    async fn check(&self, key_id: &str, bucket: Bucket, quota: Quota) -> anyhow::Result<Decision>;

    /// Names the backend in logs.
    fn name(&self) -> &'static str;

    /// Whether the backend answers now (`/readyz`); one in this process always does.
    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What the API does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key has no limit in this bucket.
    Unlimited,
    /// Counted: allowed or refused, with the numbers for the headers.
    Decided(Decision),
    /// The backend could not answer and the policy is `fail_open`: let it through uncounted.
    FailedOpen,
    /// The backend could not answer and the policy is `fail_closed`: refuse it.
    FailedClosed,
}

/// The rate limits of this process: the defaults, the backend, and what happens when the
/// backend fails.
pub struct Limits {
    backend: Box<dyn RateLimiter>,
    config: LimitsConfig,
    /// Checks the backend could not answer, since start (for metrics).
    backend_failures: AtomicU64,
    /// Checks answered by the failure policy without asking the failing backend.
    bypassed: AtomicU64,
    /// Skips the backend for `limits.redis_skip_ms` after it failed, so that an outage
    /// costs one timeout per window, not one per call, and is logged once.
    breaker: Breaker,
}

impl Limits {
    /// The Redis backend when `redis_url` is set, else the in-process one. An unreachable
    /// Redis does not stop start-up: the policy applies until it answers.
    pub async fn build(config: &LimitsConfig) -> anyhow::Result<Limits> {
        let backend: Box<dyn RateLimiter> = match &config.redis_url {
            Some(url) => {
                let shown = config.redis_url_redacted().unwrap_or_default();
                let limiter =
                    RedisLimiter::connect(url, config.redis_prefix.clone(), config.redis_timeout())
                        .await?;
                tracing::info!(redis = %shown, prefix = %config.redis_prefix,
                    "rate limits are shared through Redis");
                Box::new(limiter)
            }
            None => {
                tracing::info!(
                    "rate limits are kept in this process (no limits.redis_url): \
                     with several gateway processes, each allows the full rate"
                );
                Box::new(MemoryLimiter::new())
            }
        };
        Ok(Limits::with_backend(backend, config.clone()))
    }

    pub fn with_backend(backend: Box<dyn RateLimiter>, config: LimitsConfig) -> Limits {
        // A probe is over once the backend's own timeout has passed (a caller that hung
        // up mid-probe never reports).
        let breaker = Breaker::new(config.redis_skip(), config.redis_timeout() * 2);
        Limits {
            backend,
            config,
            backend_failures: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
            breaker,
        }
    }

    /// The quota `key` has in `bucket`: its own numbers, else the configured defaults;
    /// None when neither sets a rate.
    pub fn quota(&self, limits: &KeyLimits, bucket: Bucket) -> Option<Quota> {
        match bucket {
            Bucket::Create => match limits.rpm {
                Some(rpm) => Some(Quota::new(rpm, limits.burst.unwrap_or(rpm))),
                None => {
                    let rpm = self.config.default_rpm?;
                    let burst = limits.burst.or(self.config.default_burst).unwrap_or(rpm);
                    Some(Quota::new(rpm, burst))
                }
            },
            Bucket::Read => {
                let rpm = limits.read_rpm.or(self.config.default_read_rpm)?;
                Some(Quota::new(rpm, rpm))
            }
        }
    }

    /// Counts one call of `key` in `bucket`.
    pub async fn check(&self, key: &ApiKey, bucket: Bucket) -> Verdict {
        let Some(quota) = self.quota(&key.limits, bucket) else {
            return Verdict::Unlimited;
        };
        if self.breaker.admit() == Admit::Skip {
            self.bypassed.fetch_add(1, Ordering::Relaxed);
            crate::telemetry::metrics::rate_limit_bypassed();
            return self.failure_verdict();
        }
        match self.backend.check(&key.id, bucket, quota).await {
            Ok(decision) => {
                if self.breaker.succeeded() {
                    crate::telemetry::metrics::rate_limit_backend_skipped(false);
                    tracing::info!(
                        backend = self.backend.name(),
                        failed_checks = self.backend_failures(),
                        bypassed_checks = self.bypassed(),
                        "rate limiter: the backend answers again; rate limits are enforced again"
                    );
                }
                Verdict::Decided(decision)
            }
            Err(e) => {
                self.backend_failures.fetch_add(1, Ordering::Relaxed);
                if self.breaker.failed() {
                    crate::telemetry::metrics::rate_limit_backend_skipped(true);
                    let consequence = match self.config.on_redis_error {
                        RedisErrorPolicy::FailOpen => {
                            "failing open (limits.on_redis_error = fail_open): /v1 calls pass \
                             WITHOUT rate limiting until it answers again"
                        }
                        RedisErrorPolicy::FailClosed => {
                            "failing closed (limits.on_redis_error = fail_closed): /v1 calls \
                             are refused with 503 rate_limiter_unavailable until it answers again"
                        }
                    };
                    tracing::warn!(
                        backend = self.backend.name(),
                        error = format!("{e:#}"),
                        skip_ms = self.config.redis_skip_ms,
                        "rate limiter: the backend cannot answer and is skipped, one call \
                         probing it per limits.redis_skip_ms; {consequence}"
                    );
                }
                self.failure_verdict()
            }
        }
    }

    /// What a call gets while the backend cannot answer: `limits.on_redis_error`.
    fn failure_verdict(&self) -> Verdict {
        match self.config.on_redis_error {
            RedisErrorPolicy::FailOpen => Verdict::FailedOpen,
            RedisErrorPolicy::FailClosed => Verdict::FailedClosed,
        }
    }

    /// Whether the backend answers now, for `/readyz`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.backend.ping().await
    }

    /// Whether the limits are shared through an outside backend (Redis).
    pub fn is_shared(&self) -> bool {
        self.config.redis_url.is_some()
    }

    /// Checks the backend could not answer since this process started.
    pub fn backend_failures(&self) -> u64 {
        self.backend_failures.load(Ordering::Relaxed)
    }

    /// Checks answered by the failure policy without asking the backend, since start.
    pub fn bypassed(&self) -> u64 {
        self.bypassed.load(Ordering::Relaxed)
    }

    /// Is the backend failing right now (as of the last check)?
    pub fn backend_down(&self) -> bool {
        self.breaker.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(config: LimitsConfig) -> Limits {
        Limits::with_backend(Box::new(MemoryLimiter::new()), config)
    }

    #[test]
    fn a_keys_own_numbers_win_and_defaults_fill_the_gaps() {
        let none = limits(LimitsConfig::default());
        assert_eq!(none.quota(&KeyLimits::default(), Bucket::Create), None);
        assert_eq!(none.quota(&KeyLimits::default(), Bucket::Read), None);
        let own = KeyLimits {
            rpm: Some(30),
            read_rpm: Some(100),
            ..KeyLimits::default()
        };
        assert_eq!(
            none.quota(&own, Bucket::Create),
            Some(Quota::new(30, 30)),
            "the burst defaults to the rpm"
        );
        assert_eq!(none.quota(&own, Bucket::Read), Some(Quota::new(100, 100)));

        let defaults = limits(LimitsConfig {
            default_rpm: Some(60),
            default_burst: Some(5),
            default_read_rpm: Some(600),
            ..LimitsConfig::default()
        });
        assert_eq!(
            defaults.quota(&KeyLimits::default(), Bucket::Create),
            Some(Quota::new(60, 5))
        );
        assert_eq!(
            defaults.quota(&own, Bucket::Create),
            Some(Quota::new(30, 30)),
            "a key's own rpm brings its own burst, not the default one"
        );
        assert_eq!(
            defaults.quota(&KeyLimits::default(), Bucket::Read),
            Some(Quota::new(600, 600))
        );
        assert_eq!(Quota::new(0, 0), Quota::new(1, 1));
    }

    #[test]
    fn decisions_round_up_to_whole_seconds_and_refusals_wait_at_least_one() {
        let q = Quota::new(60, 2);
        let d = Decision::from_gcra(q, true, 1, Duration::from_millis(1001), Duration::ZERO);
        assert_eq!((d.remaining, d.reset_secs, d.retry_after_secs), (1, 2, 0));
        let d = Decision::from_gcra(q, false, 3, Duration::from_millis(1500), Duration::ZERO);
        assert_eq!((d.remaining, d.reset_secs, d.retry_after_secs), (0, 2, 1));
        assert_eq!(d.limit(), 2);
    }

    struct Broken;

    #[async_trait]
    impl RateLimiter for Broken {
        async fn check(&self, _: &str, _: Bucket, _: Quota) -> anyhow::Result<Decision> {
            anyhow::bail!("no backend")
        }
        fn name(&self) -> &'static str {
            "broken"
        }
    }

    #[tokio::test]
    async fn a_failing_backend_follows_the_policy_and_is_counted() {
        let key = ApiKey {
            id: "key_1".into(),
            name: "k".into(),
            team: None,
            limits: KeyLimits {
                rpm: Some(1),
                ..KeyLimits::default()
            },
        };
        for (policy, verdict) in [
            (RedisErrorPolicy::FailOpen, Verdict::FailedOpen),
            (RedisErrorPolicy::FailClosed, Verdict::FailedClosed),
        ] {
            let l = Limits::with_backend(
                Box::new(Broken),
                LimitsConfig {
                    on_redis_error: policy,
                    ..LimitsConfig::default()
                },
            );
            assert_eq!(l.check(&key, Bucket::Create).await, verdict);
            assert_eq!(l.check(&key, Bucket::Create).await, verdict);
            assert_eq!(
                l.check(&key, Bucket::Read).await,
                Verdict::Unlimited,
                "no quota, no backend call"
            );
            assert_eq!(
                l.backend_failures(),
                1,
                "the second check skipped the backend"
            );
            assert_eq!(l.bypassed(), 1);
            assert!(l.backend_down());
        }
    }
}
