//! The rate limit on `/v1` as axum middleware: counts each authenticated call in its
//! bucket, refuses one over the limit with `429 rate_limited`, and writes the RateLimit
//! header fields (draft-ietf-httpapi-ratelimit-headers) on every counted answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::gateway::Gateway;
use crate::limits::{Bucket, Decision, Verdict};
use crate::store::ApiKey;

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// How long a client refused for want of Redis is asked to wait.
const UNAVAILABLE_RETRY_SECS: u32 = 5;

/// The bucket of a call: creates are the calls that cost money, so they have their own.
pub fn bucket_of(method: &Method, path: &str) -> Bucket {
    if method == Method::POST
        && (path == "/v1/video/generations"
            || path == "/v1/videos"
            || super::is_kling_create_path(path))
    {
        Bucket::Create
    } else {
        Bucket::Read
    }
}

/// Runs inside authentication, which leaves the caller's `ApiKey` in the extensions; a
/// call without one is not counted (it is answered 401 before it gets here).
pub async fn rate_limit(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let Some(key) = req.extensions().get::<ApiKey>() else {
        return next.run(req).await;
    };
    let bucket = bucket_of(req.method(), req.uri().path());
    let verdict = gw.limits.check(key, bucket).await;
    let mut resp = match refusal(&verdict, bucket) {
        Some(refused) => refused.into_response(),
        None => next.run(req).await,
    };
    if let Verdict::Decided(d) = &verdict {
        write_headers(resp.headers_mut(), d);
    }
    resp
}

/// Counts one create of `key` outside the middleware (the console's playground).
pub async fn count_create(gw: &Gateway, key: &ApiKey) -> Result<(), ApiError> {
    match refusal(&gw.limits.check(key, Bucket::Create).await, Bucket::Create) {
        Some(refused) => Err(refused),
        None => Ok(()),
    }
}

/// The error a verdict refuses a call with, if it does.
fn refusal(verdict: &Verdict, bucket: Bucket) -> Option<ApiError> {
    match verdict {
        Verdict::Unlimited | Verdict::FailedOpen => None,
        Verdict::Decided(d) if d.allowed => None,
        Verdict::Decided(d) => {
            let what = match bucket {
                Bucket::Create => "creates",
                Bucket::Read => "reads",
            };
            Some(ApiError::Limited {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message: format!(
                    "rate limit of this key for {what} reached ({} per minute, {} at once); \
                     retry in {} s",
                    d.quota.per_minute, d.quota.burst, d.retry_after_secs
                ),
            })
        }
        Verdict::FailedClosed => Some(ApiError::Unavailable {
            code: "rate_limiter_unavailable",
            message: "the rate limiter cannot be reached, and this gateway refuses calls it \
                      cannot count; retry shortly"
                .into(),
            retry_after_secs: UNAVAILABLE_RETRY_SECS,
        }),
    }
}

/// `RateLimit-Limit`: calls that can be made at once (the burst); `RateLimit-Remaining`:
/// how many of them are left; `RateLimit-Reset`: seconds until all are back;
/// `RateLimit-Policy`: the steady rate per 60 s window, with the burst; on a refusal,
/// `Retry-After`: seconds until the next call would pass.
fn write_headers(headers: &mut HeaderMap, d: &Decision) {
    if !d.allowed {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(d.retry_after_secs));
    }
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit()));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(d.reset_secs));
    if let Ok(policy) = HeaderValue::try_from(format!(
        "{};w=60;burst={}",
        d.quota.per_minute, d.quota.burst
    )) {
        headers.insert(RATELIMIT_POLICY, policy);
    }
}
