//! API keys: only a SHA-256 hash of each key is stored; the key itself is shown once.
//! Authenticated keys are remembered in memory for [`KEY_CACHE_TTL`], so a busy client
//! costs one key lookup a second, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{now_ms, Store};

/// How long an authenticated key is trusted without asking the database again. A key
/// revoked in the database (by any process) stops working within this time plus one
/// lookup, on every gateway process.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most keys remembered at once; past it, the stale ones are forgotten (and all of them
/// if that is not enough), so the cache cannot grow without bound.
const KEY_CACHE_MAX: usize = 10_000;

/// Keys that authenticated recently, by hash. Unknown keys are not remembered: a key
/// created a moment ago must work at once, and random guesses must not fill the memory.
#[derive(Default)]
pub(super) struct KeyCache {
    entries: Mutex<HashMap<String, (ApiKey, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<ApiKey> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone())
    }

    fn put(&self, hash: String, key: ApiKey, at: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KEY_CACHE_MAX {
            entries.retain(|_, (_, seen)| seen.elapsed() < KEY_CACHE_TTL);
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (key, at));
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
}

/// A freshly created key; `secret` exists only here and is never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub secret: String,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    pub async fn create_api_key(&self, name: &str) -> anyhow::Result<NewApiKey> {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let secret = format!("og_{random}");
        let id = format!("key_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(hash_key(&secret))
        .bind(&secret[..8])
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(NewApiKey {
            id,
            name: name.to_string(),
            secret,
        })
    }

    /// The active key whose secret is `secret`, if any: from memory when this process
    /// saw it active less than [`KEY_CACHE_TTL`] ago, else from the database.
    pub async fn authenticate(&self, secret: &str) -> anyhow::Result<Option<ApiKey>> {
        let hash = hash_key(secret);
        if let Some(key) = self.keys.get(&hash) {
            return Ok(Some(key));
        }
        // The time of the read, not of its answer: the entry must not outlive the TTL
        // counted from what the database said.
        let asked = Instant::now();
        let row =
            sqlx::query("SELECT id, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(&hash)
                .fetch_optional(&self.pool)
                .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let key = ApiKey {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
        };
        self.keys.put(hash, key.clone(), asked);
        Ok(Some(key))
    }
}

impl Store {
    pub async fn count_api_keys(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?)
    }
}
