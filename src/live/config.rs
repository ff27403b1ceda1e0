//! `[live]`: status streams, held reads and the finished-task cache (a leaf the config
//! root can import without reaching the rest of `live/`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest a `Prefer: wait=N` holds an answer (RFC 7240 leaves it to the server).
pub const MAX_WAIT_SECS: u64 = 60;

/// `[live]`: status streams, held reads and the finished-task cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Status streams one key may hold open at once on one gateway process; past it, 429.
    pub max_streams: usize,
    /// Events a stream holds for a reader that has not taken them; a reader that lets
    /// this many pile up is dropped (the stream closes) rather than buffered without bound.
    pub stream_buffer: usize,
    /// Seconds between comment heartbeats on an idle stream.
    pub heartbeat_secs: u64,
    /// Milliseconds between checks of the watched tasks (streams and held reads).
    pub check_ms: u64,
    /// Milliseconds between checks of the log of changes to finished tasks (stored copies,
    /// deletions) that cached reads are dropped for.
    pub cache_check_ms: u64,
    /// Finished tasks whose reads are kept in memory; 0 turns the cache off.
    pub finished_cache_entries: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            max_streams: 20,
            stream_buffer: 16,
            heartbeat_secs: 15,
            check_ms: 50,
            cache_check_ms: 250,
            finished_cache_entries: 10_000,
        }
    }
}

impl LiveConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_streams == 0 {
            anyhow::bail!("live.max_streams: must be at least 1");
        }
        if self.stream_buffer == 0 {
            anyhow::bail!("live.stream_buffer: must be at least 1");
        }
        if self.heartbeat_secs == 0 {
            anyhow::bail!("live.heartbeat_secs: must be at least 1");
        }
        if !(10..=1000).contains(&self.check_ms) {
            anyhow::bail!("live.check_ms: must be between 10 and 1000 (changes must reach clients within a second)");
        }
        if !(10..=500).contains(&self.cache_check_ms) {
            anyhow::bail!("live.cache_check_ms: must be between 10 and 500 (a cached read must be dropped within a second)");
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }
}
