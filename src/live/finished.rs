//! Reads of finished tasks, kept in memory: a finished task changes only when its video is
//! copied or it is deleted, and each of those is noted in the store's finished-change log,
//! which every process checks (`super::check_finished`) and drops the task for. So a
//! client that keeps polling a finished task costs no database round trip.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;

/// How often the log of changes is pruned (ms).
const PRUNE_EVERY_MS: i64 = 30_000;

/// One finished task's read as answered: its owner, the JSON body and its ETag.
pub struct CachedRead {
    pub owner: String,
    pub body: Bytes,
    pub etag: String,
}

/// A bounded map of task id to its cached read; the oldest entry makes room.
pub struct FinishedCache {
    capacity: usize,
    inner: RwLock<Entries>,
    last_prune: AtomicI64,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Arc<CachedRead>>,
    order: VecDeque<String>,
}

impl FinishedCache {
    pub fn new(capacity: usize) -> FinishedCache {
        FinishedCache {
            capacity,
            inner: RwLock::default(),
            last_prune: AtomicI64::new(0),
        }
    }

    /// The cached read of task `id`, if its owner is `owner`.
    pub fn get(&self, id: &str, owner: &str) -> Option<Arc<CachedRead>> {
        let entries = self.inner.read().unwrap_or_else(|e| e.into_inner());
        entries.by_id.get(id).filter(|r| r.owner == owner).cloned()
    }

    pub fn put(&self, id: &str, read: CachedRead) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if entries
            .by_id
            .insert(id.to_string(), Arc::new(read))
            .is_none()
        {
            entries.order.push_back(id.to_string());
        }
        while entries.by_id.len() > self.capacity {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            entries.by_id.remove(&oldest);
        }
    }

    pub fn forget(&self, id: &str) {
        let mut entries = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if entries.by_id.remove(id).is_some() {
            entries.order.retain(|o| o != id);
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once every `PRUNE_EVERY_MS`, for the one check that prunes the log.
    pub(super) fn prune_due(&self, now: i64) -> bool {
        let last = self.last_prune.load(Ordering::Relaxed);
        now - last >= PRUNE_EVERY_MS
            && self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(owner: &str) -> CachedRead {
        CachedRead {
            owner: owner.into(),
            body: Bytes::from_static(b"{}"),
            etag: "\"x\"".into(),
        }
    }

    #[test]
    fn the_cache_answers_only_the_owner_and_keeps_at_most_its_capacity() {
        let c = FinishedCache::new(2);
        c.put("a", read("k1"));
        assert!(c.get("a", "k1").is_some());
        assert!(
            c.get("a", "k2").is_none(),
            "another key's task does not exist"
        );
        c.put("b", read("k1"));
        c.put("c", read("k1"));
        assert_eq!(c.len(), 2);
        assert!(c.get("a", "k1").is_none(), "the oldest made room");
        c.forget("b");
        assert!(c.get("b", "k1").is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_cache_of_no_entries_keeps_nothing() {
        let c = FinishedCache::new(0);
        c.put("a", read("k1"));
        assert!(c.get("a", "k1").is_none());
    }
}
