//! The transport: one provider's client, base URL and credential, and sending a request
//! with a bounded read, its failures classified by whether the request may have landed.

use reqwest::RequestBuilder;
use serde::Serialize;

use super::auth::Auth;
use super::reply::{cut_message, Reply, MAX_BODY_BYTES};
use crate::config::ProviderConfig;
use crate::providers::{ErrorKind, ProviderError};

/// One provider's endpoint: client, base URL and credential.
pub(in crate::providers) struct Upstream {
    client: reqwest::Client,
    base_url: String,
    auth: Auth,
}

impl Upstream {
    pub fn new(cfg: &ProviderConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout())
            .timeout(cfg.request_timeout())
            // A redirect is not part of any dialect; following one would send the
            // credential (and a POST body) wherever the answer points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Upstream {
            client,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            auth: Auth::new(cfg.credential.clone()),
        })
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base_url))
    }

    pub fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base_url))
            .json(body)
    }

    /// The configured base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Authenticates and sends `req`, then lets the dialect read the reply. Every error
    /// leaving here has had the credential scrubbed from its message, then the message
    /// cut to [`MAX_MESSAGE_CHARS`].
    pub async fn call<T>(
        &self,
        req: RequestBuilder,
        read: impl FnOnce(&Reply) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        // The client request's id (and trace), so the provider's logs and support
        // tickets can be matched with ours.
        let req = crate::telemetry::outgoing(req);
        let result = match self.auth.apply(req) {
            Ok(req) => send(req).await.and_then(|reply| read(&reply)),
            Err(e) => Err(e),
        };
        result.map_err(|e| cut_message(self.auth.redact(e)))
    }
}

/// Sends a request and reads the body up to [`MAX_BODY_BYTES`], classifying transport
/// failures by whether the provider may have received (and acted on) the request.
pub(in crate::providers) async fn send(req: RequestBuilder) -> Result<Reply, ProviderError> {
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            let mut err = transport_error(e);
            // The status line arrived, so the request did too: never "nothing was sent".
            err.kind = ErrorKind::Timeout;
            err.ambiguous = true;
            err.http_status = Some(status);
            err
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            // Stop reading: the rest is dropped with the connection.
            let room = MAX_BODY_BYTES - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok(Reply {
                status,
                body,
                oversized: true,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        body,
        oversized: false,
    })
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    // Checked first: a connect timeout is also `is_timeout()`, yet nothing was sent.
    let (kind, ambiguous, what) = if e.is_connect() {
        (ErrorKind::Retryable, false, "could not connect to provider")
    } else if e.is_builder() {
        (ErrorKind::Retryable, false, "could not build the request")
    } else if e.is_timeout() {
        (ErrorKind::Timeout, true, "no answer from provider in time")
    } else {
        (
            ErrorKind::Timeout,
            true,
            "connection to provider failed mid-request",
        )
    };
    // `without_url` keeps paths and query strings out of the message.
    let mut err = ProviderError::new(kind, format!("{what}: {}", e.without_url()));
    err.ambiguous = ambiguous;
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credential, Dialect, Secret};
    use serde_json::json;

    fn config(base_url: &str, timeout: f64) -> ProviderConfig {
        let mut cfg: ProviderConfig = serde_json::from_value(json!({
            "dialect": "kling",
            "base_url": base_url,
            "models": ["kling-v3-omni"],
            "request_timeout_secs": timeout,
            "connect_timeout_secs": timeout,
        }))
        .unwrap();
        cfg.credential = Credential::Bearer(Secret::new("sk-secret"));
        assert_eq!(cfg.dialect, Dialect::Kling);
        cfg
    }

    #[tokio::test]
    async fn refused_connection_is_retryable_and_not_ambiguous() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = Upstream::new(&config(&format!("http://{addr}"), 2.0)).unwrap();
        let err = upstream
            .call(upstream.get("/x"), |_| Ok(()))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert!(!err.ambiguous);
        assert!(!err.message.contains("sk-secret"));
    }

    #[tokio::test]
    async fn silent_upstream_times_out_ambiguously() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let upstream = Upstream::new(&config(&format!("http://{addr}"), 0.3)).unwrap();
        let err = upstream
            .call(upstream.post("/x", &json!({})), |_| Ok(()))
            .await
            .unwrap_err();
        hold.abort();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(err.ambiguous);
    }
}
