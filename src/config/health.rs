//! `[health]`: the per-provider circuit breaker.

use anyhow::bail;
use serde::{Deserialize, Serialize};

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

impl HealthConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.consecutive_failures == 0 || !(self.failure_rate > 0.0 && self.failure_rate <= 1.0)
        {
            bail!("health: consecutive_failures must be positive and failure_rate in (0, 1]");
        }
        if !(self.cooldown_secs.is_finite() && self.cooldown_secs > 0.0) || self.window_secs == 0 {
            bail!("health: cooldown_secs and window_secs must be positive");
        }
        Ok(())
    }
}
