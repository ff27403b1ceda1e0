//! `[limits]`: default per-key request rates and the Redis shared by every process.

use std::fmt;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

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

/// While Redis cannot answer: let `/v1` calls through unlimited (`fail_open`), or refuse
/// them with 503 `rate_limiter_unavailable` (`fail_closed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisErrorPolicy {
    #[default]
    FailOpen,
    FailClosed,
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let l = self;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
}
