//! Capacity: provider caps and the admission queue. A capped provider is called only
//! with a slot taken in the store (`store/capacity.rs`); a create that finds no capable
//! provider with room waits in state `waiting` (`store/queue.rs`), and the dispatcher
//! (`dispatcher.rs`, on every gateway process) starts waiting tasks in fair-share order as
//! room frees. This module holds the process's view of which providers are full.

pub(crate) mod admission;
pub mod config;
pub mod dispatcher;

pub use config::{QueueConfig, RoutingConfig, WhenFull, MAX_WAIT_SECS};

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::domain::{Priority, VideoRequest};
use crate::providers::ErrorKind;
use crate::store::{now_ms, ConfiguredCap, ProviderCapacity, Store};

/// Whether a provider may be called for a task now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call it; `slot` when the task took one of its slots (give it back if it refuses).
    Go { slot: bool },
    /// It is at its cap (or cooling down after a capacity refusal).
    Full,
}

/// The process's side of capacity: which providers are capped (fixed by the config) and,
/// for the uncapped ones, until when a capacity refusal makes them count as full.
pub struct Queue {
    capped: HashSet<String>,
    /// Uncapped providers' cool-downs (Unix ms), from this process's own refusals and the
    /// store's rows (refreshed each dispatcher step, so other processes' refusals count
    /// within a tick).
    cooling: RwLock<HashMap<String, i64>>,
    /// The capacity rows as last read (for the dispatcher's room and for `/admin`).
    last_seen: RwLock<Vec<ProviderCapacity>>,
    /// `queue.refusal_cooldown_secs`, in ms.
    cooldown_ms: i64,
}

impl Queue {
    pub fn new(caps: &[ConfiguredCap], config: &QueueConfig) -> Queue {
        Queue {
            capped: caps
                .iter()
                .filter(|c| c.is_capped())
                .map(|c| c.provider.clone())
                .collect(),
            cooling: Default::default(),
            last_seen: Default::default(),
            cooldown_ms: config.refusal_cooldown_ms(),
        }
    }

    pub fn is_capped(&self, provider: &str) -> bool {
        self.capped.contains(provider)
    }

    /// Takes a slot of a capped provider, or checks an uncapped one's cool-down (no
    /// statement: an uncapped provider costs a create nothing here).
    pub async fn admit(
        &self,
        store: &Store,
        id: &str,
        token: &str,
        provider: &str,
    ) -> anyhow::Result<Admit> {
        if self.is_capped(provider) {
            return Ok(if store.take_slot(id, token, provider).await? {
                Admit::Go { slot: true }
            } else {
                Admit::Full
            });
        }
        let until = self.read_cooling().get(provider).copied().unwrap_or(0);
        Ok(if until > now_ms() {
            Admit::Full
        } else {
            Admit::Go { slot: false }
        })
    }

    /// A provider refused a task for capacity: it is full for the cool-down, everywhere.
    pub async fn refused(&self, store: &Store, provider: &str, held_slot: bool) {
        let cooldown = self.cooldown_ms;
        crate::telemetry::metrics::capacity_refusal(provider);
        if !self.is_capped(provider) {
            self.write_cooling()
                .insert(provider.to_string(), now_ms() + cooldown);
        }
        if let Err(e) = store.capacity_refused(provider, held_slot, cooldown).await {
            tracing::warn!(provider, error = ?e, "could not record a capacity refusal");
        }
    }

    /// Reads every provider's capacity row, and takes the uncapped ones' cool-downs from it.
    pub async fn refresh(&self, store: &Store) -> anyhow::Result<Vec<ProviderCapacity>> {
        let rows = store.capacity().await?;
        {
            let mut cooling = self.write_cooling();
            for r in rows.iter().filter(|r| !self.is_capped(&r.provider)) {
                cooling.insert(r.provider.clone(), r.cooldown_until);
            }
        }
        for r in &rows {
            crate::telemetry::metrics::provider_capacity(
                &r.provider,
                r.in_flight,
                r.configured_cap
                    .map(|c| r.effective_cap.map_or(c, |e| e.min(c))),
            );
        }
        *self.last_seen.write().unwrap_or_else(|e| e.into_inner()) = rows.clone();
        Ok(rows)
    }

    /// Capacity rows as the dispatcher last read them.
    pub fn last_seen(&self) -> Vec<ProviderCapacity> {
        self.last_seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn read_cooling(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, i64>> {
        self.cooling.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cooling(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, i64>> {
        self.cooling.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Refusals that say the provider has no room now, not that anything is wrong with it.
pub fn is_capacity_refusal(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::RateLimited | ErrorKind::ConcurrencyLimited)
}

/// How long a task of `req` may wait, in ms; None when it may not (today's 503).
pub fn max_wait_ms(config: &QueueConfig, req: &VideoRequest) -> Option<i64> {
    let secs = req.max_wait_secs.unwrap_or(config.default_max_wait_secs);
    (secs > 0).then(|| i64::try_from(secs).unwrap_or(i64::MAX / 1000) * 1000)
}

/// The stored order of a priority: lower starts first.
pub fn priority_rank(req: &VideoRequest) -> i64 {
    match req.priority.unwrap_or_default() {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}
