//! The HTTP client for client webhooks. A `callback_url` is a URL anyone with a key can
//! choose, so requests go through `outbound`'s SSRF-checked client (plain http and
//! internal addresses only with `webhooks.allow_private_targets`). Redirects are not
//! followed, and at most `MAX_READ` bytes of an answer are read.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use url::Url;

use crate::config::WebhooksConfig;
use crate::outbound;

/// Bytes of an answer read at most; the rest is never downloaded.
const MAX_READ: usize = 64 * 1024;
/// Bytes of an answer kept with the attempt.
const EXCERPT: usize = 1024;

/// What a receiver answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The start of the body (lossy UTF-8, at most 1 KiB).
    pub excerpt: String,
    /// The receiver's `Retry-After`, in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The URL may not be called at all (scheme, internal address): retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// Resolution, connection, timeout or a broken answer: worth another attempt.
    #[error("{0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl WebhookClient {
    pub fn new(config: &WebhooksConfig) -> anyhow::Result<WebhookClient> {
        let http = outbound::client_builder(config.allow_private_targets)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout())
            .user_agent(concat!("omnigate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookClient {
            http,
            allow_private: config.allow_private_targets,
            timeout: config.request_timeout(),
        })
    }

    /// POSTs `body` with `headers` to `url`, within the attempt's timeout.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, SendError> {
        let url = self.check_url(url)?;
        let send = async {
            let resp = self
                .http
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(describe)?;
            let status = resp.status().as_u16();
            let retry_after = retry_after(resp.headers());
            let mut resp = resp;
            let mut read = Vec::new();
            // A body cut short still leaves the status, which decides the outcome.
            while let Ok(Some(chunk)) = resp.chunk().await {
                read.extend_from_slice(&chunk[..chunk.len().min(MAX_READ - read.len())]);
                if read.len() >= MAX_READ {
                    break;
                }
            }
            Ok(Answer {
                status,
                excerpt: excerpt(&read),
                retry_after,
            })
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Failed(format!(
                "no answer within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    fn check_url(&self, raw: &str) -> Result<Url, SendError> {
        let url = Url::parse(raw).map_err(|_| SendError::Refused("not a URL".into()))?;
        outbound::check_url(&url, self.allow_private, "callback URLs")
            .map_err(SendError::Refused)?;
        Ok(url)
    }
}

/// A request error in a few words, with no URL (it may carry a client's token) and no
/// header: an internal target is a refusal, anything else a failure worth retrying.
fn describe(e: reqwest::Error) -> SendError {
    if let Some(internal) = outbound::internal_target(&e) {
        return SendError::Refused(internal);
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let detail: String = detail.chars().take(200).collect();
    SendError::Failed(if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    })
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    // A multi-byte character cut at the limit shows as one replacement character.
    text.into_owned()
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 section 10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
