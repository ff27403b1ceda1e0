//! `[queue]`: how tasks wait when no provider has room (see docs/capacity.md).

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

pub use crate::domain::MAX_WAIT_SECS;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a task may wait for room when its create does not say (`max_wait_secs`);
    /// 0 turns queueing off: a create that finds no room is answered 503 as before.
    pub default_max_wait_secs: u64,
    /// Waiting tasks one key may have when its own `max_queued` is not set; past it a
    /// create that would wait is answered 429 `queue_full`.
    pub default_max_queued: u64,
    /// How long a provider that refused for capacity counts as full (its effective cap held
    /// at what it ran then), before its cap rises again by one per finished task.
    pub refusal_cooldown_secs: u64,
    /// The dispatcher's pace when nothing wakes it (a task ending in this process does).
    pub tick_ms: u64,
    /// Waiting tasks one dispatcher step starts at most (and expires at most).
    pub dispatch_batch: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            default_max_wait_secs: 3600,
            default_max_queued: 1000,
            refusal_cooldown_secs: 30,
            tick_ms: 200,
            dispatch_batch: 16,
        }
    }
}

impl QueueConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.default_max_wait_secs > MAX_WAIT_SECS {
            bail!("queue.default_max_wait_secs: at most {MAX_WAIT_SECS} (0 turns queueing off)");
        }
        if self.default_max_queued == 0 {
            bail!("queue.default_max_queued: must be at least 1");
        }
        if self.tick_ms == 0 || self.dispatch_batch == 0 {
            bail!("queue.tick_ms and queue.dispatch_batch: must be positive");
        }
        Ok(())
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    pub fn refusal_cooldown_ms(&self) -> i64 {
        (self.refusal_cooldown_secs as i64).saturating_mul(1000)
    }
}

/// `[routing]`: how the router chooses when the cheapest provider is full, and between
/// providers of about the same price.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub when_full: WhenFull,
    /// Providers priced within this fraction of the cheapest capable one count as the
    /// same price: among them the one with the better completed-task rate goes first.
    pub outcome_margin: f64,
    /// A provider's completed-task rate counts once this many of its accepted tasks ended
    /// in the health window.
    pub outcome_min_tasks: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            when_full: WhenFull::default(),
            outcome_margin: 0.05,
            outcome_min_tasks: 20,
        }
    }
}

impl RoutingConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let m = self.outcome_margin;
        if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
            anyhow::bail!(
                "routing.outcome_margin: must be a fraction between 0 and 1 (0.05 is 5%)"
            );
        }
        if self.outcome_min_tasks == 0 {
            anyhow::bail!("routing.outcome_min_tasks: must be at least 1");
        }
        Ok(())
    }
}

/// What a task that may wait does when the cheapest capable provider has no room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Start on the next-cheapest capable provider with room (within `max_cost_usd`).
    #[default]
    Spill,
    /// Wait for the cheapest.
    Wait,
}
