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

    /// The active key whose secret is `secret`, if any.
    pub async fn authenticate(&self, secret: &str) -> anyhow::Result<Option<ApiKey>> {
        let row =
            sqlx::query("SELECT id, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(hash_key(secret))
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => Some(ApiKey {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
            }),
            None => None,
        })
    }
}

impl Store {
    pub async fn count_api_keys(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?)
    }
}
