//! `[idempotency]`, `[submit]` and `[retention]`: how creates are taken and sent round
//! the providers, and how long their details are kept.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

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

impl IdempotencyConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.ttl_secs == 0 {
            bail!("idempotency.ttl_secs: must be at least 1");
        }
        Ok(())
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
