//! Serving a stored copy: streamed from the object store, never held in memory whole, with
//! single byte ranges (`Range: bytes=a-b`, `a-`, `-n`) answered 206 and unsatisfiable ones
//! 416, as RFC 9110 section 14 describes.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange};
use serde_json::json;

use super::Results;

/// What a `Range` header asks of an object of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: the whole object (200). A malformed header, a unit other than
    /// bytes or several ranges fall here too: RFC 9110 lets a server ignore them.
    Full,
    /// Bytes `start..=end` (206).
    Part { start: u64, end: u64 },
    /// Starts at or past the end of the object (416).
    Unsatisfiable,
}

impl ByteRange {
    pub fn parse(header: Option<&HeaderValue>, size: u64) -> ByteRange {
        let Some(spec) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.trim().strip_prefix("bytes="))
        else {
            return ByteRange::Full;
        };
        if spec.contains(',') {
            return ByteRange::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return ByteRange::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let parse = |s: &str| s.parse::<u64>().ok();
        match (first.is_empty(), last.is_empty()) {
            // `-n`: the last n bytes.
            (true, false) => match parse(last) {
                Some(0) => ByteRange::Unsatisfiable,
                Some(_) if size == 0 => ByteRange::Unsatisfiable,
                Some(n) => ByteRange::Part {
                    start: size.saturating_sub(n),
                    end: size - 1,
                },
                None => ByteRange::Full,
            },
            // `a-`: from a to the end.
            (false, true) => match parse(first) {
                Some(a) if a >= size => ByteRange::Unsatisfiable,
                Some(a) => ByteRange::Part {
                    start: a,
                    end: size - 1,
                },
                None => ByteRange::Full,
            },
            (false, false) => match (parse(first), parse(last)) {
                (Some(a), Some(b)) if a > b => ByteRange::Full,
                (Some(a), Some(_)) if a >= size => ByteRange::Unsatisfiable,
                (Some(a), Some(b)) => ByteRange::Part {
                    start: a,
                    end: b.min(size - 1),
                },
                _ => ByteRange::Full,
            },
            (true, true) => ByteRange::Full,
        }
    }
}

/// The media types a copy is served as. A provider's `Content-Type` is not trusted: the
/// content endpoints live under the console's origin too (`/console/tasks/{id}/video`),
/// where an HTML or SVG answer would run its script with the operator's session.
const VIDEO_TYPES: &[&str] = &["video/mp4", "video/webm", "video/quicktime"];

/// Served (with `Content-Disposition: attachment`) for anything not in [`VIDEO_TYPES`].
pub const DOWNLOAD_TYPE: &str = "application/octet-stream";

/// The type a declared `Content-Type` is stored and served as: one of [`VIDEO_TYPES`]
/// (parameters dropped, case folded), else [`DOWNLOAD_TYPE`]. None (nothing declared)
/// stays None and is served as `video/mp4`, what every provider's copy is.
pub fn video_type(declared: Option<&str>) -> Option<&'static str> {
    let declared = declared?;
    let essence = declared.split(';').next().unwrap_or_default().trim();
    Some(
        VIDEO_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(essence))
            .copied()
            .unwrap_or(DOWNLOAD_TYPE),
    )
}

/// The headers every answer with a copy's bytes carries, whatever was stored (rows
/// written before types were checked are checked again here).
fn content_headers(out: &mut HeaderMap, stored_type: Option<&str>) {
    let served = video_type(stored_type).unwrap_or("video/mp4");
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(served));
    if served == DOWNLOAD_TYPE {
        out.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    // Here and not only in a layer: this answer must never be sniffed into HTML.
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Answers a read of the copy at `key` (under the configured prefix), honouring `Range`.
/// None when the object is gone from the store (removed by hand, a bucket lifecycle rule):
/// the caller falls back to the provider. A store that cannot answer is a 503.
pub async fn serve(
    results: &Results,
    key: &str,
    content_type: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<Response>, StorageUnavailable> {
    let path = results.path(key);
    let meta = match results.store.head(&path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => {
            tracing::warn!(key, "a stored copy is missing from the object store");
            return Ok(None);
        }
        Err(e) => return Err(storage_unavailable(key, e)),
    };
    let size = meta.size;
    let range = ByteRange::parse(headers.get(header::RANGE), size);
    let (status, start, end) = match range {
        ByteRange::Unsatisfiable => return Ok(Some(unsatisfiable(size))),
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
    };
    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    content_headers(&mut out, content_type);
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Some(tag) = meta.e_tag.as_deref().and_then(|t| {
        let quoted = if t.starts_with('"') || t.starts_with("W/") {
            t.to_string()
        } else {
            format!("\"{t}\"")
        };
        HeaderValue::from_str(&quoted).ok()
    }) {
        out.insert(header::ETAG, tag);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{size}", end - 1);
        out.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("digits and ASCII"),
        );
    }
    if size == 0 {
        return Ok(Some((status, out, Body::empty()).into_response()));
    }
    let got = results
        .store
        .get_opts(
            &path,
            GetOptions {
                range: Some(GetRange::Bounded(start..end)),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| storage_unavailable(key, e))?;
    let stream = got.into_stream().map_err(std::io::Error::other);
    Ok(Some(
        (status, out, Body::from_stream(stream)).into_response(),
    ))
}

/// The object store could not answer a read (a 503 `storage_unavailable` for the client).
#[derive(Debug, thiserror::Error)]
#[error("the gateway's video storage is unavailable; retry shortly")]
pub struct StorageUnavailable;

/// The object store did not answer: logged with its details, which the client is not told.
fn storage_unavailable(key: &str, e: object_store::Error) -> StorageUnavailable {
    tracing::warn!(key, error = %e, "the object store cannot serve a stored copy");
    StorageUnavailable
}

/// 416 with `Content-Range: bytes */size` and the usual error envelope.
fn unsatisfiable(size: u64) -> Response {
    let body = json!({"error": {
        "type": "invalid_request_error",
        "code": "range_not_satisfiable",
        "message": format!("the range starts past the end of the video ({size} bytes)"),
        "param": "Range",
    }});
    let mut resp = (StatusCode::RANGE_NOT_SATISFIABLE, Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}")).expect("digits and ASCII"),
    );
    resp.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

#[cfg(test)]
mod tests {
    use super::ByteRange;
    use axum::http::HeaderValue;

    fn parse(h: &str, size: u64) -> ByteRange {
        ByteRange::parse(Some(&HeaderValue::from_str(h).unwrap()), size)
    }

    #[test]
    fn only_listed_video_types_are_served_as_themselves() {
        use super::video_type;
        assert_eq!(video_type(Some("video/webm")), Some("video/webm"));
        assert_eq!(
            video_type(Some("Video/MP4; codecs=avc1")),
            Some("video/mp4")
        );
        assert_eq!(video_type(Some("video/quicktime")), Some("video/quicktime"));
        for bad in [
            "text/html",
            "image/svg+xml",
            "video/mp4x",
            "",
            "application/json",
        ] {
            assert_eq!(
                video_type(Some(bad)),
                Some("application/octet-stream"),
                "{bad}"
            );
        }
        assert_eq!(video_type(None), None);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(
            parse("bytes=0-9", 100),
            ByteRange::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse("bytes=90-200", 100),
            ByteRange::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse("bytes=95-", 100),
            ByteRange::Part { start: 95, end: 99 }
        );
        assert_eq!(
            parse("bytes=-10", 100),
            ByteRange::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse("bytes=-500", 100),
            ByteRange::Part { start: 0, end: 99 }
        );
        assert_eq!(parse("bytes=100-", 100), ByteRange::Unsatisfiable);
        assert_eq!(parse("bytes=100-120", 100), ByteRange::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), ByteRange::Unsatisfiable);
        // Ignored, so the whole video: several ranges, other units, nonsense, reversed.
        assert_eq!(parse("bytes=0-1,5-6", 100), ByteRange::Full);
        assert_eq!(parse("items=0-1", 100), ByteRange::Full);
        assert_eq!(parse("bytes=x-y", 100), ByteRange::Full);
        assert_eq!(parse("bytes=9-3", 100), ByteRange::Full);
        assert_eq!(ByteRange::parse(None, 100), ByteRange::Full);
    }
}
