//! `[webhooks]`: delivery of events to clients' `callback_url`s and the address
//! providers call back on.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::MAX_SECS;

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
    pub(super) fn validate(&self) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{env_with_all_keys, EXAMPLE};
    use crate::config::Config;

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
}
