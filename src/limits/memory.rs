//! The in-process backend: governor's keyed GCRA. Its state lives in this process, so
//! with several gateway processes each one allows the full rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::DefaultKeyedRateLimiter;

use super::{Bucket, Decision, Quota, RateLimiter};

type Keyed = DefaultKeyedRateLimiter<(String, Bucket), StateInformationMiddleware>;

/// One governor limiter per distinct quota (a governor limiter has one quota for all of
/// its keys), each keyed by API key and bucket. A key whose numbers change moves to the
/// limiter of its new quota and starts with a full burst there.
#[derive(Default)]
pub struct MemoryLimiter {
    by_quota: Mutex<HashMap<Quota, Arc<Keyed>>>,
}

impl MemoryLimiter {
    pub fn new() -> MemoryLimiter {
        MemoryLimiter::default()
    }

    fn limiter(&self, quota: Quota) -> Arc<Keyed> {
        let mut map = self.by_quota.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(quota)
            .or_insert_with(|| {
                let q = governor::Quota::per_minute(quota.per_minute).allow_burst(quota.burst);
                Arc::new(
                    governor::RateLimiter::dashmap(q)
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key_id: &str, bucket: Bucket, quota: Quota) -> anyhow::Result<Decision> {
        let limiter = self.limiter(quota);
        let interval = quota.interval();
        Ok(match limiter.check_key(&(key_id.to_string(), bucket)) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // The burst is back once every call in it has been replenished.
                let until_full = interval * (quota.burst.get() - remaining);
                Decision::from_gcra(quota, true, remaining, until_full, Default::default())
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(limiter.clock().now());
                let until_full = retry_after + interval * (quota.burst.get() - 1);
                Decision::from_gcra(quota, false, 0, until_full, retry_after)
            }
        })
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_allowed_then_refused_with_a_retry_after() {
        let l = MemoryLimiter::new();
        let q = Quota::new(60, 3);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let d = l.check("k", Bucket::Create, q).await.unwrap();
            assert!(d.allowed);
            remaining.push(d.remaining);
            assert!((1..=3).contains(&d.reset_secs), "{d:?}");
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = l.check("k", Bucket::Create, q).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.reset_secs, 3);
        assert!(
            l.check("k", Bucket::Read, q).await.unwrap().allowed,
            "another bucket"
        );
        assert!(
            l.check("other", Bucket::Create, q).await.unwrap().allowed,
            "another key"
        );
    }
}
