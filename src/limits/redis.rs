//! The shared backend: GCRA in a Lua script on Redis, so every gateway process using the
//! same Redis counts against one limit. The script reads Redis's own clock, so the
//! processes need not agree on the time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{Bucket, Decision, Quota, RateLimiter};

/// One call against a bucket's theoretical arrival time (TAT), kept in KEYS[1] and
/// expiring once the bucket is full again.
/// ARGV[1]: the interval in microseconds (60 s / rpm); ARGV[2]: the burst.
/// Answers {allowed (0/1), remaining, retry_after_us, until_full_us}.
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * (burst - 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + tolerance + interval - new_tat) / interval), 0, new_tat - now}
"#;

/// How long after a failed connect the next request may try again.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

pub struct RedisLimiter {
    client: redis::Client,
    /// Set by the first connect that succeeds; from then on the manager reconnects by
    /// itself after Redis drops it.
    conn: OnceCell<ConnectionManager>,
    /// No connect attempt before this instant (a down Redis is not dialled on every call).
    next_connect: Mutex<Instant>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl RedisLimiter {
    /// Parses the URL and tries to connect once; a Redis that is down now is dialled
    /// again by later calls, so start-up does not depend on it.
    pub async fn connect(url: &str, prefix: String, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("limits.redis_url")?;
        let limiter = RedisLimiter {
            client,
            conn: OnceCell::new(),
            next_connect: Mutex::new(Instant::now()),
            script: redis::Script::new(GCRA),
            prefix,
            timeout,
        };
        if let Err(e) = tokio::time::timeout(timeout.max(Duration::from_secs(1)), limiter.conn())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "rate limiter: Redis is not reachable at start; will retry"
            );
        }
        Ok(limiter)
    }

    async fn conn(&self) -> anyhow::Result<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        {
            let mut next = self.next_connect.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            anyhow::ensure!(
                now >= *next,
                "not connected to Redis (next attempt shortly)"
            );
            *next = now + CONNECT_BACKOFF;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            // Reconnects after a drop: a few quick tries, then the next command tries again.
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(500);
        let conn = self
            .conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .context("connecting to Redis")?;
        Ok(conn.clone())
    }

    fn key(&self, key_id: &str, bucket: Bucket) -> String {
        format!("{}{}:{}", self.prefix, key_id, bucket.as_str())
    }

    async fn gcra(&self, key: &str, quota: Quota) -> anyhow::Result<(i64, i64, i64, i64)> {
        let mut conn = self.conn().await?;
        let interval_us = u64::try_from(quota.interval().as_micros()).unwrap_or(u64::MAX);
        self.script
            .key(key)
            .arg(interval_us)
            .arg(quota.burst.get())
            .invoke_async(&mut conn)
            .await
            .context("running the rate limit script on Redis")
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key_id: &str, bucket: Bucket, quota: Quota) -> anyhow::Result<Decision> {
        let key = self.key(key_id, bucket);
        let (allowed, remaining, retry_us, until_full_us) =
            tokio::time::timeout(self.timeout, self.gcra(&key, quota))
                .await
                .with_context(|| format!("Redis gave no answer within {:?}", self.timeout))??;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision::from_gcra(
            quota,
            allowed == 1,
            u32::try_from(remaining).unwrap_or(0),
            micros(until_full_us),
            micros(retry_us),
        ))
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let ping = async {
            let mut conn = self.conn().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .context("PING")
        };
        tokio::time::timeout(self.timeout, ping)
            .await
            .with_context(|| format!("Redis gave no answer within {:?}", self.timeout))?
            .map(drop)
    }
}
