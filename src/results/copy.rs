//! One copy: download a provider's result URL (SSRF-checked, bounded in size and time)
//! straight into the object store, then check the stored size against what was read.

use futures::StreamExt;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::{Results, ResultsConfig};
use crate::outbound;

/// Redirects followed at most (signed CDN URLs often redirect once or twice).
const MAX_REDIRECTS: usize = 5;
/// Bytes buffered before an upload switches to multipart; also the part size.
const UPLOAD_BUFFER: usize = 8 * 1024 * 1024;

/// Why a copy did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    /// Another attempt may succeed (timeouts, 5xx, a broken download, the store down).
    #[error("{0}")]
    Retry(String),
    /// No attempt will (an internal address, an expired URL, a video over the limit).
    #[error("{0}")]
    Permanent(String),
}

/// A verified copy.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: u64,
    pub content_type: Option<String>,
}

/// The client result URLs are fetched with: names resolved once and checked (like the
/// webhook client), IP literals checked on every hop including redirects, no proxies from
/// the environment.
pub(super) fn fetch_client(config: &ResultsConfig) -> anyhow::Result<reqwest::Client> {
    let allow_private = config.allow_private_sources;
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        match check_url(attempt.url(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(why),
        }
    });
    Ok(outbound::client_builder(allow_private)
        .redirect(redirects)
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("omnigate-results/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

fn check_url(url: &Url, allow_private: bool) -> Result<(), String> {
    outbound::check_url(url, allow_private, "result URLs")
}

/// Copies `source` to `key` (under the configured prefix), within
/// `results.download_timeout_secs`.
pub async fn copy_video(results: &Results, source: &str, key: &str) -> Result<Stored, CopyError> {
    let timeout = results.config.download_timeout();
    match tokio::time::timeout(timeout, copy_inner(results, source, key)).await {
        Ok(done) => done,
        Err(_) => Err(CopyError::Retry(format!(
            "the copy took longer than {} s",
            timeout.as_secs_f64()
        ))),
    }
}

async fn copy_inner(results: &Results, source: &str, key: &str) -> Result<Stored, CopyError> {
    let cfg = &results.config;
    let url = Url::parse(source)
        .map_err(|_| CopyError::Permanent("the result URL is not a URL".into()))?;
    check_url(&url, cfg.allow_private_sources).map_err(CopyError::Permanent)?;
    let resp = results
        .fetch
        .get(url)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = resp.status();
    if !status.is_success() {
        let why = format!("the result URL answered {status}");
        // An expired or refused URL stays so; a busy or failing one may recover.
        return Err(
            if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                CopyError::Permanent(why)
            } else {
                CopyError::Retry(why)
            },
        );
    }
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > cfg.max_bytes) {
        return Err(too_large(cfg.max_bytes));
    }
    // Normalised before it is stored: a provider's type is served back (see `video_type`).
    let declared_type = resp.headers().get(reqwest::header::CONTENT_TYPE);
    let content_type = super::video_type(declared_type.map(|v| v.to_str().unwrap_or_default()))
        .map(str::to_string);
    let path = results.path(key);
    let mut upload = BufWriter::with_capacity(results.store.clone(), path.clone(), UPLOAD_BUFFER);
    let mut read: u64 = 0;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(CopyError::Retry(format!("the download broke off: {e}")));
            }
        };
        read += chunk.len() as u64;
        if read > cfg.max_bytes {
            let _ = upload.abort().await;
            return Err(too_large(cfg.max_bytes));
        }
        if let Err(e) = upload.write_all(&chunk).await {
            let _ = upload.abort().await;
            return Err(CopyError::Retry(format!("writing the copy failed: {e}")));
        }
    }
    if let Some(n) = declared.filter(|n| *n != read) {
        let _ = upload.abort().await;
        return Err(CopyError::Retry(format!(
            "the download ended after {read} of {n} declared bytes"
        )));
    }
    upload
        .shutdown()
        .await
        .map_err(|e| CopyError::Retry(format!("finishing the copy failed: {e}")))?;
    // What the store holds, not what was sent to it, is what gets served.
    let meta = results
        .store
        .head(&path)
        .await
        .map_err(|e| CopyError::Retry(format!("checking the copy failed: {e}")))?;
    if meta.size != read {
        return Err(CopyError::Retry(format!(
            "the store holds {} bytes of the {read} written",
            meta.size
        )));
    }
    Ok(Stored {
        bytes: read,
        content_type,
    })
}

fn too_large(max: u64) -> CopyError {
    CopyError::Permanent(format!(
        "the video is larger than results.max_bytes ({max})"
    ))
}

/// A request error in a few words (no URL: a signed URL is a credential).
fn classify(e: &reqwest::Error) -> CopyError {
    if let Some(internal) = outbound::internal_target(e) {
        return CopyError::Permanent(internal);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = String::new();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    // The redirect policy refused a hop (scheme, internal address, too many): permanent.
    if e.is_redirect() {
        return CopyError::Permanent(format!("a redirect was refused: {last}"));
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let detail: String = last.chars().take(200).collect();
    CopyError::Retry(format!("{what}: {detail}"))
}
