//! API keys: only a SHA-256 hash of each key is stored; the key itself is shown once.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{now_ms, Store};

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
    pub async fn create_api_key(&self, name: &str) -> anyhow::Result<NewApiKey> {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let secret = format!("og_{random}");
        let id = format!("key_{}", uuid::Uuid::new_v4().simple());
        let webhook_secret = super::new_webhook_secret();
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at, webhook_secret) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(hash_key(&secret))
        .bind(&secret[..8])
        .bind(now_ms())
        .bind(&webhook_secret)
        .execute(&self.pool)
        .await?;
        Ok(NewApiKey {
            id,
            name: name.to_string(),
            secret,
            webhook_secret,
        })
    }

    /// The active key whose secret is `secret` (or whose previous secret it is, within the
    /// grace period after a rotation), if any.
    pub async fn authenticate(&self, secret: &str) -> anyhow::Result<Option<ApiKey>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL AND \
             (key_hash = $1 OR (previous_key_hash = $1 AND previous_valid_until > $2))"
        );
        let row = sqlx::query(&sql)
            .bind(hash_key(secret))
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }
}

impl Store {
    pub async fn count_api_keys(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?)
    }
}
