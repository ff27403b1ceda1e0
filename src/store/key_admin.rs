//! Managing API keys: create with limits, list, show, change limits, revoke, rotate.
//! Shared by the `omnigate keys` CLI and `/admin/keys`.

use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};
use serde::Serialize;
use sqlx::Row;

use super::keys::{hash_key, key_from_row, BudgetPeriod, KEY_COLUMNS};
use super::limits::period_start;
use super::{now_ms, to_micros, Store};

/// A key as an operator sees it: never its secret, only the first characters of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    pub key_prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub rpm: Option<u32>,
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub burst: Option<u32>,
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub read_rpm: Option<u32>,
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub max_in_flight: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_period: &'static str,
    /// Tasks holding one of the key's slots now (counted only while it has a limit).
    pub in_flight: i64,
    /// Money in the key's current budget period (`budget_period`, month unless set), budget
    /// or not: settled (the same sum as `/v1/usage` over the period), and reserved by
    /// unfinished tasks.
    pub spent_usd: f64,
    pub reserved_usd: f64,
    /// Its share of the admission queue against other keys' (default 1).
    pub weight: i64,
    /// Its own bound on waiting tasks (None: `queue.default_max_queued`).
    pub max_queued: Option<i64>,
    /// Its tasks waiting in the queue now.
    pub queued: i64,
}

/// A key just issued or rotated: the secrets exist only here and are shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    pub key: String,
    pub webhook_secret: String,
    /// After a rotation, the previous secret works until this time (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<i64>,
}

/// A change to a key's limits: `Some(None)` removes a limit, `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub team: Option<Option<String>>,
    pub rpm: Option<Option<u32>>,
    pub burst: Option<Option<u32>>,
    pub read_rpm: Option<Option<u32>>,
    pub max_in_flight: Option<Option<u32>>,
    pub budget_usd: Option<Option<f64>>,
    pub budget_period: Option<BudgetPeriod>,
    /// The key's queue weight; `Some(None)` puts it back to 1.
    pub weight: Option<Option<u32>>,
    pub max_queued: Option<Option<u32>>,
}

/// The largest queue weight: a key of this weight still advances the fair-share clock
/// (`store/queue.rs` spaces its tasks `1_000_000 / weight` apart).
pub const MAX_WEIGHT: u32 = 1000;

fn new_api_secret() -> String {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("og_{random}")
}

/// A Standard Webhooks signing secret: `whsec_` and base64 of 32 random bytes.
pub fn new_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

const INFO_COLUMNS: &str =
    "key_prefix, created_at, revoked_at, in_flight, queue_weight, max_queued, queued";

impl Store {
    /// Issues a key with `change` applied as its limits.
    pub async fn issue_key(&self, name: &str, change: &KeyChange) -> anyhow::Result<IssuedKey> {
        let secret = new_api_secret();
        let webhook_secret = new_webhook_secret();
        let id = format!("key_{}", uuid::Uuid::new_v4().simple());
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
        .execute(&self.writes)
        .await?;
        let info = self
            .change_key(&id, change)
            .await?
            .ok_or_else(|| anyhow::anyhow!("key {id} vanished after insert"))?;
        Ok(IssuedKey {
            info,
            key: secret,
            webhook_secret,
            previous_valid_until: None,
        })
    }

    pub async fn list_keys(&self) -> anyhow::Result<Vec<KeyInfo>> {
        let sql =
            format!("SELECT {KEY_COLUMNS}, {INFO_COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.key_info(row).await?);
        }
        Ok(out)
    }

    pub async fn key_info_by_id(&self, id: &str) -> anyhow::Result<Option<KeyInfo>> {
        let sql = format!("SELECT {KEY_COLUMNS}, {INFO_COLUMNS} FROM api_keys WHERE id = $1");
        match sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => Ok(Some(self.key_info(&row).await?)),
            None => Ok(None),
        }
    }

    async fn key_info(&self, row: &sqlx::any::AnyRow) -> anyhow::Result<KeyInfo> {
        let key = key_from_row(row)?;
        let l = &key.limits;
        let (spent, reserved) = self.period_spend(&key.id, l.budget_period).await?;
        Ok(KeyInfo {
            key_prefix: row.try_get("key_prefix")?,
            created_at: row.try_get::<i64, _>("created_at")? / 1000,
            revoked_at: row
                .try_get::<Option<i64>, _>("revoked_at")?
                .map(|t| t / 1000),
            in_flight: row.try_get("in_flight")?,
            rpm: l.rpm,
            burst: l.burst,
            read_rpm: l.read_rpm,
            max_in_flight: l.max_in_flight,
            budget_usd: l.budget_usd,
            budget_period: l.budget_period.as_str(),
            spent_usd: spent,
            reserved_usd: reserved,
            weight: row.try_get("queue_weight")?,
            max_queued: row.try_get("max_queued")?,
            queued: row.try_get("queued")?,
            id: key.id,
            name: key.name,
            team: key.team,
        })
    }

    /// (spent, reserved) in USD in the key's current budget period.
    async fn period_spend(&self, id: &str, period: BudgetPeriod) -> anyhow::Result<(f64, f64)> {
        let row = sqlx::query(
            "SELECT spent_micros, reserved_micros FROM key_spend WHERE api_key_id = $1 AND period_start = $2",
        )
        .bind(id)
        .bind(period_start(period, now_ms()))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => (
                r.try_get::<i64, _>("spent_micros")? as f64 / 1e6,
                r.try_get::<i64, _>("reserved_micros")? as f64 / 1e6,
            ),
            None => (0.0, 0.0),
        })
    }

    /// Applies `change` to key `id`; None if there is no such key. Setting a limit on
    /// tasks in flight counts the key's unfinished tasks as holding slots from now on.
    pub async fn change_key(
        &self,
        id: &str,
        change: &KeyChange,
    ) -> anyhow::Result<Option<KeyInfo>> {
        let mut tx = self.writes.begin().await?;
        // A write first: SQLite takes its write lock now instead of failing to upgrade a
        // read transaction when another connection commits in between.
        let exists = sqlx::query("UPDATE api_keys SET id = id WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !exists {
            return Ok(None);
        }
        let limit = |v: Option<u32>| v.map(i64::from);
        let mut sets: Vec<(&str, Option<i64>)> = Vec::new();
        for (column, value) in [
            ("rpm", change.rpm),
            ("burst", change.burst),
            ("read_rpm", change.read_rpm),
            ("max_in_flight", change.max_in_flight),
            ("max_queued", change.max_queued),
        ] {
            if let Some(v) = value {
                sets.push((column, limit(v)));
            }
        }
        if let Some(w) = change.weight {
            sets.push(("queue_weight", Some(i64::from(w.unwrap_or(1)))));
        }
        if let Some(v) = change.budget_usd {
            sets.push(("budget_micros", v.map(to_micros)));
        }
        for (column, value) in sets {
            sqlx::query(&format!("UPDATE api_keys SET {column} = $2 WHERE id = $1"))
                .bind(id)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(team) = &change.team {
            sqlx::query("UPDATE api_keys SET team = $2 WHERE id = $1")
                .bind(id)
                .bind(team)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(period) = change.budget_period {
            sqlx::query("UPDATE api_keys SET budget_period = $2 WHERE id = $1")
                .bind(id)
                .bind(period.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if change.budget_usd.is_some() || change.budget_period.is_some() {
            resync_spend(&mut tx, id).await?;
        }
        if let Some(Some(_)) = change.max_in_flight {
            // Tasks written while the key had no such limit hold no slot: count them now so
            // the limit covers everything in flight and each is released exactly once.
            sqlx::query(
                "UPDATE tasks SET holds_slot = 1 WHERE api_key_id = $1 AND holds_slot = 0 \
                 AND state NOT IN ('completed', 'failed', 'cancelled', 'waiting')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE api_keys SET in_flight = (SELECT COUNT(*) FROM tasks WHERE api_key_id = $1 \
                 AND holds_slot = 1 AND state NOT IN ('completed', 'failed', 'cancelled')) WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if change.max_in_flight.is_some() {
            // Parked tasks waited for the old limit: the dispatcher checks each anew.
            sqlx::query(
                "UPDATE tasks SET queue_parked = 0 WHERE api_key_id = $1 AND state = 'waiting' \
                 AND queue_parked = 1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if change.max_in_flight.is_some() {
            self.wake_dispatcher();
        }
        // New limits apply to this process's next request, not after the cache's TTL.
        self.keys.forget(id);
        self.key_info_by_id(id).await
    }

    /// Revokes key `id` at once; false if there is no such active key.
    pub async fn revoke_key(&self, id: &str) -> anyhow::Result<bool> {
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&self.writes)
                .await?
                .rows_affected()
                > 0;
        self.keys.forget(id);
        Ok(revoked)
    }

    /// Gives key `id` a new secret and a new webhook signing secret; the old key keeps
    /// working for `grace_ms`, and for as long events are signed with both webhook
    /// secrets (two `v1,` signatures), so receivers can switch without losing any. None if
    /// there is no such active key.
    pub async fn rotate_key(&self, id: &str, grace_ms: i64) -> anyhow::Result<Option<IssuedKey>> {
        let secret = new_api_secret();
        let webhook_secret = new_webhook_secret();
        let until = now_ms() + grace_ms;
        let rotated = sqlx::query(
            "UPDATE api_keys SET previous_key_hash = key_hash, previous_valid_until = $3, \
             key_hash = $2, key_prefix = $4, previous_webhook_secret = webhook_secret, \
             webhook_secret = $5 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(hash_key(&secret))
        .bind(until)
        .bind(&secret[..8])
        .bind(&webhook_secret)
        .execute(&self.writes)
        .await?
        .rows_affected()
            > 0;
        if !rotated {
            return Ok(None);
        }
        let Some(info) = self.key_info_by_id(id).await? else {
            return Ok(None);
        };
        Ok(Some(IssuedKey {
            info,
            key: secret,
            webhook_secret,
            previous_valid_until: Some(until / 1000),
        }))
    }
}

/// A budget set or a period changed: the key's spend row for its (new) current period is
/// rebuilt from its tasks, so a budget set mid-period counts what was already spent.
async fn resync_spend(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str) -> anyhow::Result<()> {
    let period: String = sqlx::query("SELECT budget_period FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?
        .try_get("budget_period")?;
    let period = BudgetPeriod::parse(&period).unwrap_or_default();
    super::limits::resync(tx, id, period, now_ms()).await
}

impl KeyChange {
    /// Refuses limits that could never let a call through, naming the field; the message
    /// says a limit is removed with `none`, as on the command line.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_removing_with("none")
    }

    /// `validate`, with the message naming `remove` as the value that removes a limit
    /// (`null` in JSON over HTTP).
    pub fn validate_removing_with(&self, remove: &str) -> Result<(), (&'static str, String)> {
        for (field, value) in [
            ("rpm", self.rpm),
            ("burst", self.burst),
            ("read_rpm", self.read_rpm),
            ("max_in_flight", self.max_in_flight),
            ("max_queued", self.max_queued),
        ] {
            if let Some(Some(0)) = value {
                return Err((
                    field,
                    format!("{field} must be at least 1, or {remove} to remove it"),
                ));
            }
        }
        if let Some(Some(usd)) = self.budget_usd {
            if !(usd.is_finite() && usd > 0.0 && usd <= MAX_BUDGET_USD) {
                return Err((
                    "budget_usd",
                    format!("budget_usd must be a positive number of US dollars up to {MAX_BUDGET_USD}, or {remove} to remove it"),
                ));
            }
        }
        if let Some(Some(w)) = self.weight {
            if !(1..=MAX_WEIGHT).contains(&w) {
                return Err((
                    "weight",
                    format!("weight must be from 1 to {MAX_WEIGHT}, or none for 1"),
                ));
            }
        }
        if let Some(Some(team)) = &self.team {
            check_label("team", team)?;
        }
        Ok(())
    }
}

/// The largest budget a key may have: its micro-dollars must fit the store's integers with
/// room for sums.
pub const MAX_BUDGET_USD: f64 = 1e12;

/// A key's name or team: printable text (the database refuses NUL, and a control character
/// in a name is a mistake), 1 to 200 characters.
pub fn check_label(field: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    if value.trim().is_empty() {
        return Err((field, format!("{field} must not be empty")));
    }
    if value.chars().count() > 200 {
        return Err((field, format!("{field} must be at most 200 characters")));
    }
    if value.chars().any(char::is_control) {
        return Err((
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}
