//! The live task API's machinery below the HTTP layer: who is watching which task and
//! the check that tells them of changes (`watch`), the cache of finished tasks' reads
//! (`finished`), and the per-key count of open status streams (`streams`).
//!
//! Changes are found by checking the store, not by messages between processes: one query
//! per process every `live.check_ms` reads the marks of the tasks its clients watch (and
//! none while nobody watches), and one every `live.cache_check_ms` reads the short log of
//! changes to finished tasks. So a change made by any gateway sharing the database, or by
//! this one, reaches a stream, a held `Prefer: wait` or the cache the same way.

pub mod config;
pub mod finished;
pub mod streams;
pub mod watch;

pub use config::{LiveConfig, MAX_WAIT_SECS};

pub use finished::{CachedRead, FinishedCache};
pub use streams::{StreamCounts, StreamSlot};
pub use watch::Watchers;

use crate::gateway::Gateway;
use crate::store::now_ms;

/// The live API's state in one gateway process.
pub struct Live {
    pub watchers: Watchers,
    pub finished: FinishedCache,
    pub streams: StreamCounts,
}

impl Live {
    pub fn new(config: &LiveConfig) -> Live {
        Live {
            watchers: Watchers::default(),
            finished: FinishedCache::new(config.finished_cache_entries),
            streams: StreamCounts::new(config.max_streams),
        }
    }
}

/// How far back each check of the finished-change log reads: a change whose transaction
/// commits after a later check began is still seen by the checks of this window, and an
/// entry cached from a read that raced the change is dropped again.
const CHANGE_LOOKBACK_MS: i64 = 1_500;
/// Log entries older than this are deleted (well past every reader's look-back).
const CHANGE_KEEP_MS: i64 = 60_000;

/// One check of the watched tasks (the `live` worker's step). Returns 0: the worker
/// always waits its tick.
pub async fn check_watched(gw: &Gateway) -> anyhow::Result<usize> {
    let ids = gw.live.watchers.ids();
    if ids.is_empty() {
        return Ok(0);
    }
    for chunk in ids.chunks(crate::store::MAX_MARKS_PER_QUERY) {
        let marks = gw.store.task_marks(chunk).await?;
        gw.live.watchers.saw(marks);
    }
    Ok(0)
}

/// One check of the finished-change log (the `finished_cache` worker's step): drops the
/// cached reads of tasks changed lately, and now and then prunes the log.
pub async fn check_finished(gw: &Gateway) -> anyhow::Result<usize> {
    let now = now_ms();
    if !gw.live.finished.is_empty() {
        for id in gw
            .store
            .finished_changes_since(now - CHANGE_LOOKBACK_MS)
            .await?
        {
            gw.live.finished.forget(&id);
        }
    }
    if gw.live.finished.prune_due(now) {
        gw.store
            .prune_finished_changes(now - CHANGE_KEEP_MS)
            .await?;
    }
    Ok(0)
}
