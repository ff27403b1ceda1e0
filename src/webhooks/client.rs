//! The HTTP client for client webhooks. A `callback_url` is a URL anyone with a key can
//! choose, so the client refuses to reach the gateway's own network (SSRF): the host is
//! resolved once, every address it resolves to is checked, and the connection goes to a
//! checked address (no second lookup that DNS rebinding could answer differently). Plain
//! http and internal addresses are allowed only with `webhooks.allow_private_targets`.
//! Redirects are not followed, proxies from the environment are not used, and at most
//! `MAX_READ` bytes of an answer are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use url::{Host, Url};

use crate::config::WebhooksConfig;

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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                allow_private: config.allow_private_targets,
            }))
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

    /// The scheme, and an IP literal's address (a name's addresses are checked when the
    /// resolver looks them up).
    fn check_url(&self, raw: &str) -> Result<Url, SendError> {
        let url = Url::parse(raw).map_err(|_| SendError::Refused("not a URL".into()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            other => {
                return Err(SendError::Refused(format!(
                    "{other}: callback URLs must be https"
                )))
            }
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) => return Ok(url),
            None => return Err(SendError::Refused("the URL has no host".into())),
        };
        if !self.allow_private && is_internal(ip) {
            return Err(SendError::Refused(format!("{ip} is an internal address")));
        }
        Ok(url)
    }
}

/// Resolves a name once and hands the connector only checked addresses. Also used by the
/// results worker, which fetches URLs a provider's answer named.
pub(crate) struct CheckedResolver {
    pub(crate) allow_private: bool,
}

/// Why a name was refused; found again by type in the request error's sources.
#[derive(Debug, thiserror::Error)]
#[error("{name} resolves to an internal address ({ip})")]
pub(crate) struct InternalTarget {
    name: String,
    ip: IpAddr,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                // One internal address among public ones refuses them all: such a name is
                // built to reach inside.
                if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
                    return Err(Box::new(InternalTarget {
                        name: host,
                        ip: bad.ip(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A request error in a few words, with no URL (it may carry a client's token) and no
/// header: an internal target is a refusal, anything else a failure worth retrying.
fn describe(e: reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(internal) = s.downcast_ref::<InternalTarget>() {
            return SendError::Refused(internal.to_string());
        }
        source = s.source();
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

/// Loopback, private, link-local, shared (CGNAT), multicast, broadcast, unspecified,
/// documentation and cloud metadata addresses: none is a client's public receiver.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (fd00:ec2::254 is in it)
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 embeds IPv4
                || (s[0] == 0x2002) // 6to4 embeds IPv4
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the metadata address 169.254.169.254 included
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10 (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} is internal");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} is public");
        }
    }

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
