//! `[poller]` and `[workers]`: the status poller, the reconciler, timed polls and the
//! supervision of the background workers.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

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
    pub(super) fn validate_timing(&self) -> anyhow::Result<()> {
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

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.batch_size == 0 || self.tick_ms == 0 || self.lease_secs == 0 {
            bail!("poller: batch_size, tick_ms and lease_secs must be positive");
        }
        if !(1..=MAX_POLL_BATCH).contains(&self.poll_batch_size) {
            bail!("poller.poll_batch_size: must be from 1 to {MAX_POLL_BATCH}");
        }
        if self.poll_concurrency == 0 {
            bail!("poller.poll_concurrency: must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.poll_jitter) {
            bail!("poller.poll_jitter: must be from 0 to 1 (a fraction of the poll interval)");
        }
        if self.max_poll_failures == 0 {
            bail!("poller.max_poll_failures: must be at least 1");
        }
        if self.max_task_age_secs == 0 {
            bail!("poller.max_task_age_secs: must be at least 1");
        }
        Ok(())
    }
}
