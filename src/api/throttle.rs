//! The throttle on wrong credentials: failed console sign-ins and failed `/admin` calls,
//! counted per client address, so that nobody can try admin tokens or API keys at full
//! speed.
//!
//! A GCRA per address (the algorithm `governor` uses), written out here because the
//! throttle must look before it counts: a client whose bucket is empty is refused before
//! its credentials are checked (else a 429 on failure and a 200 on success would still
//! tell it which guess was right), and a success costs nothing. `governor` only offers a
//! check that spends a cell.
//!
//! In process, per gateway: a replica's bucket is its own. That is enough to turn 200
//! guesses a second into a handful a minute.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};

use super::error::ApiError;

/// Addresses tracked before the ones whose bucket has refilled are dropped.
const PRUNE_AT: usize = 10_000;

/// The failed-credentials buckets of one gateway, shared by the console and `/admin`.
pub struct FailedAuth {
    /// Each address's theoretical arrival time: when its bucket is full again.
    full_at: Mutex<HashMap<IpAddr, Instant>>,
    trust_forwarded_for: bool,
    /// Failures an address may make at once before it must wait...
    burst: u32,
    /// ...and then one more per this long.
    period: Duration,
}

impl FailedAuth {
    /// `burst` failures at once, then `per_minute` (both at least 1).
    pub fn new(trust_forwarded_for: bool, burst: u32, per_minute: u32) -> FailedAuth {
        FailedAuth {
            full_at: Mutex::new(HashMap::new()),
            trust_forwarded_for,
            burst: burst.max(1),
            period: Duration::from_secs(60) / per_minute.max(1),
        }
    }

    /// Refuses (429) a client whose bucket is empty, before its credentials are looked at.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        let full_at = self
            .full_at
            .lock()
            .expect("throttle lock")
            .get(&client)
            .copied();
        match wait(full_at, Instant::now(), self.burst, self.period) {
            Some(retry) => Err(ApiError::TooManyFailures {
                retry_after_secs: retry.as_secs_f64().ceil() as u64,
            }),
            None => Ok(()),
        }
    }

    /// Counts one failure of `client`.
    pub fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        let mut map = self.full_at.lock().expect("throttle lock");
        if map.len() >= PRUNE_AT {
            map.retain(|_, full_at| *full_at > now);
        }
        let full_at = map.entry(client).or_insert(now);
        *full_at = (*full_at).max(now) + self.period;
    }

    /// The address failures are counted against: the TCP peer, or, behind a trusted proxy
    /// (`server.trust_forwarded_for`), the last `X-Forwarded-For` entry: the address the
    /// proxy saw, appended after whatever the client itself sent.
    fn client_of(&self, headers: &HeaderMap, extensions: &Extensions) -> IpAddr {
        let forwarded = || {
            let value = headers.get_all("x-forwarded-for").iter().next_back()?;
            value.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
        };
        if self.trust_forwarded_for {
            if let Some(ip) = forwarded() {
                return ip;
            }
        }
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
    }
}

/// The throttle and the address of the client at hand, for code that checks credentials.
pub struct Throttle {
    failures: Arc<FailedAuth>,
    client: IpAddr,
}

impl Throttle {
    /// Refuses (429) this client if its bucket is empty, before its credentials are looked at.
    pub fn check(&self) -> Result<(), ApiError> {
        self.failures.check(self.client)
    }

    /// Counts one failure of this client.
    pub fn failed(&self) {
        self.failures.failed(self.client)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Throttle {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let failures = parts
            .extensions
            .get::<Arc<FailedAuth>>()
            .cloned()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the throttle layer is missing")))?;
        let client = failures.client_of(&parts.headers, &parts.extensions);
        Ok(Throttle { failures, client })
    }
}

/// How long until one more failure would be allowed, if none is now. The bucket holds
/// `burst` failures: one is allowed while its bucket is full again within
/// `(burst - 1) * period`.
fn wait(full_at: Option<Instant>, now: Instant, burst: u32, period: Duration) -> Option<Duration> {
    let ahead = full_at?.checked_duration_since(now)?;
    let tolerance = period * (burst - 1);
    ahead.checked_sub(tolerance).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: u32 = 10;
    const PERIOD: Duration = Duration::from_secs(6);

    #[test]
    fn ten_failures_pass_then_the_address_waits_and_others_do_not() {
        let t = FailedAuth::new(false, BURST, 10);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..BURST {
            assert!(t.check(a).is_ok());
            t.failed(a);
        }
        match t.check(a) {
            Err(ApiError::TooManyFailures { retry_after_secs }) => {
                assert!((1..=6).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("expected a 429, got {other:?}"),
        }
        assert!(t.check(b).is_ok(), "another address has its own bucket");
    }

    #[test]
    fn a_bucket_refills_one_failure_per_period() {
        let now = Instant::now();
        let wait = |full_at| wait(full_at, now, BURST, PERIOD);
        assert_eq!(wait(None), None);
        assert_eq!(wait(Some(now + PERIOD * BURST)), Some(PERIOD));
        assert_eq!(wait(Some(now + PERIOD * (BURST - 1))), None);
    }
}
