//! `[server]`: the HTTP listener, body limits, load shedding, draining and the
//! failed-auth throttle.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes. A provider takes images of up to 10 MB
    /// (anyfast), about 13.4 MB once base64-encoded, and a request up to seven of them
    /// (~94 MB), hence 100 MiB. A larger declared `Content-Length` is refused with 413
    /// before any of the body is read; a chunked body as soon as it passes the limit.
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, over all requests, in bytes. A request takes
    /// its `Content-Length` from this budget before its body is read (a chunked body takes
    /// each chunk as it arrives); when it is spent, requests are shed with 503.
    pub body_memory_budget_bytes: usize,
    /// Seconds a client has to send a request's headers (slowloris); also how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout_secs: f64,
    /// Seconds a request body may go without sending a byte before the request is answered
    /// 408 and the connection closed.
    pub body_timeout_secs: f64,
    /// Requests handled at once; more are shed at once with 503 and `Retry-After`.
    pub max_in_flight_requests: usize,
    /// Creates (`POST /v1/video/generations`) handled at once, a smaller share of the
    /// above: each holds a provider submit and possibly a large body.
    pub max_in_flight_creates: usize,
    /// On shutdown, seconds to wait for in-flight submits and requests before stopping
    /// anyway. At least the longest a submit can take (the sum of the providers'
    /// `request_timeout_secs`, as a submit may fall over through all of them).
    pub drain_timeout_secs: f64,
    /// Whether the client address that failed sign-ins and failed admin calls are counted
    /// against is the last `X-Forwarded-For` entry (the one the proxy in front of omnigate
    /// appended) instead of the TCP peer. Only when every request comes through such a
    /// proxy: otherwise a client picks its own address and escapes the throttle.
    pub trust_forwarded_for: bool,
    /// Failed sign-ins and failed admin calls one client address may make at once...
    pub failed_auth_burst: u32,
    /// ...and then per minute: past both, `429` with `Retry-After`.
    pub failed_auth_per_minute: u32,
    /// Env var holding the key that seals the secrets omnigate must read back (the secret
    /// keys of Kling credentials, `secrets.rs`): 32 bytes as base64 or 64 hex digits.
    /// Unset: no Kling credentials can be issued, and JWTs are refused (the omnigate key
    /// still works on the Kling facade).
    pub secrets_key_env: String,
    /// Read from `secrets_key_env` at load (or set in code by tests).
    #[serde(skip)]
    pub secrets_key: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 100 * 1024 * 1024,
            body_memory_budget_bytes: 512 * 1024 * 1024,
            header_read_timeout_secs: 10.0,
            body_timeout_secs: 30.0,
            max_in_flight_requests: 1024,
            max_in_flight_creates: 128,
            drain_timeout_secs: 300.0,
            trust_forwarded_for: false,
            failed_auth_burst: 10,
            failed_auth_per_minute: 10,
            secrets_key_env: "OMNIGATE_SECRETS_KEY".into(),
            secrets_key: None,
        }
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_read_timeout_secs)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout_secs)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_secs)
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.failed_auth_burst == 0 {
            bail!("server.failed_auth_burst: must be at least 1");
        }
        if self.failed_auth_per_minute == 0 {
            bail!("server.failed_auth_per_minute: must be at least 1");
        }
        if self.max_body_bytes == 0
            || self.max_in_flight_requests == 0
            || self.max_in_flight_creates == 0
        {
            bail!("server: max_body_bytes, max_in_flight_requests and max_in_flight_creates must be positive");
        }
        if self.max_body_bytes > u32::MAX as usize {
            bail!("server.max_body_bytes: at most {} (4 GiB)", u32::MAX);
        }
        if self.body_memory_budget_bytes < self.max_body_bytes {
            bail!("server.body_memory_budget_bytes: must be at least server.max_body_bytes ({}), or the largest allowed body could never be read", self.max_body_bytes);
        }
        Ok(())
    }
}
