//! API keys: only a SHA-256 hash of each key is stored; the key itself is shown once.
//! Authenticated keys are remembered in memory for [`KEY_CACHE_TTL`], so a busy client
//! costs one key lookup a second, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// Drops key `id` at once (revoked here: this process refuses it from now on; other
    /// processes within the TTL).
    pub(super) fn forget(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (key, _)| key.id != id);
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
    pub team: Option<String>,
    pub limits: KeyLimits,
}

/// A key's limits; None means unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyLimits {
    /// Creates per minute, and how many may come at once.
    pub rpm: Option<u32>,
    pub burst: Option<u32>,
    /// Reads (every other `/v1` call) per minute.
    pub read_rpm: Option<u32>,
    /// Tasks accepted and not yet finished.
    pub max_in_flight: Option<u32>,
    /// USD per budget period.
    pub budget_usd: Option<f64>,
    pub budget_period: BudgetPeriod,
}

/// A budget's calendar period, in UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BudgetPeriod {
    #[default]
    Month,
    Day,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Month => "month",
            BudgetPeriod::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<BudgetPeriod> {
        match s {
            "month" => Some(BudgetPeriod::Month),
            "day" => Some(BudgetPeriod::Day),
            _ => None,
        }
    }
}

/// The columns `key_from_row` reads.
pub(super) const KEY_COLUMNS: &str =
    "id, name, team, rpm, burst, read_rpm, max_in_flight, budget_micros, budget_period";

pub(super) fn key_from_row(r: &sqlx::any::AnyRow) -> anyhow::Result<ApiKey> {
    let limit = |col: &str| -> anyhow::Result<Option<u32>> {
        Ok(r.try_get::<Option<i64>, _>(col)?
            .map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX)))
    };
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        team: r.try_get("team")?,
        limits: KeyLimits {
            rpm: limit("rpm")?,
            burst: limit("burst")?,
            read_rpm: limit("read_rpm")?,
            max_in_flight: limit("max_in_flight")?,
            budget_usd: r
                .try_get::<Option<i64>, _>("budget_micros")?
                .map(|m| m as f64 / 1_000_000.0),
            budget_period: BudgetPeriod::parse(&r.try_get::<String, _>("budget_period")?)
                .unwrap_or_default(),
        },
    })
}

/// A freshly created key; `secret` exists only here and is never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub secret: String,
    /// The key's Standard Webhooks signing secret (`whsec_...`), shown once too.
    pub webhook_secret: String,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// A key without limits (the sandbox's first key, tests).
    pub async fn create_api_key(&self, name: &str) -> anyhow::Result<NewApiKey> {
        let issued = self.issue_key(name, &super::KeyChange::default()).await?;
        Ok(NewApiKey {
            id: issued.info.id,
            name: issued.info.name,
            secret: issued.key,
            webhook_secret: issued.webhook_secret,
        })
    }

    /// The active key whose secret is `secret` (or whose previous secret it is, within the
    /// grace period after a rotation), if any: from memory when this process saw it active
    /// less than [`KEY_CACHE_TTL`] ago, else from the database.
    pub async fn authenticate(&self, secret: &str) -> anyhow::Result<Option<ApiKey>> {
        let hash = hash_key(secret);
        if let Some(key) = self.keys.get(&hash) {
            return Ok(Some(key));
        }
        // The time of the read, not of its answer: the entry must not outlive the TTL
        // counted from what the database said.
        let asked = Instant::now();
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL AND \
             (key_hash = $1 OR (previous_key_hash = $1 AND previous_valid_until > $2))"
        );
        let row = sqlx::query(&sql)
            .bind(&hash)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        let Some(key) = row.as_ref().map(key_from_row).transpose()? else {
            return Ok(None);
        };
        self.keys.put(hash, key.clone(), asked);
        Ok(Some(key))
    }
}

impl Store {
    /// The active key with this id (a console session acts as its key).
    pub async fn active_key(&self, id: &str) -> anyhow::Result<Option<ApiKey>> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn count_api_keys(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?)
    }
}
