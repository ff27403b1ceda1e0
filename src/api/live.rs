//! The task read's live parts: the answer with its `ETag` (and 304 to a matching
//! `If-None-Match`), the cache of finished tasks' reads, and `Prefer: wait=N` (RFC 7240),
//! which holds an answer until the task is final.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::load::HeldSlots;
use crate::gateway::Gateway;
use crate::live::{CachedRead, MAX_WAIT_SECS};
use crate::store::TaskMark;

/// A task's read as answered.
pub struct Read {
    pub body: Bytes,
    pub etag: String,
    /// None for a read from the cache (always of a final task).
    pub mark: Option<TaskMark>,
}

/// The task as its owner reads it: from the cache when it is finished and cached, else
/// from the store (and then cached if it is finished).
pub async fn current_read(gw: &Gateway, owner: &str, id: &str) -> Result<Read, ApiError> {
    if let Some(hit) = gw.live.finished.get(id, owner) {
        return Ok(Read {
            body: hit.body.clone(),
            etag: hit.etag.clone(),
            mark: None,
        });
    }
    let (obj, mark) = super::tasks::detailed_with_mark(gw, owner, id).await?;
    let body = Bytes::from(serde_json::to_vec(&obj).map_err(anyhow::Error::from)?);
    let etag = etag_of(&body);
    if mark.is_final() {
        gw.live.finished.put(
            id,
            CachedRead {
                owner: owner.to_string(),
                body: body.clone(),
                etag: etag.clone(),
            },
        );
    }
    Ok(Read {
        body,
        etag,
        mark: Some(mark),
    })
}

/// A strong validator: the same body, the same tag, on every gateway process.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The read as a response: 304 when `If-None-Match` names its tag, else 200 with it;
/// with `Preference-Applied` when a `Prefer: wait` was honoured.
pub fn answer(headers: &HeaderMap, read: Read, waited: Option<u64>) -> Response {
    let etag = HeaderValue::from_str(&read.etag).expect("an ETag is hex in quotes");
    let mut resp = if none_match(headers, &read.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Body::from(read.body).into_response();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    resp.headers_mut().insert(ETAG, etag);
    if let Some(secs) = waited {
        resp.headers_mut()
            .insert("preference-applied", preference_applied(secs));
    }
    resp
}

pub fn preference_applied(secs: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("wait={secs}")).expect("digits")
}

/// Whether `If-None-Match` lists `etag` (or is `*`); weak tags compare weakly (RFC 9110
/// section 13.1.2).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// The seconds of a `Prefer: wait=N`, capped at `MAX_WAIT_SECS`; None without one.
pub fn wait_secs(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    for value in headers.get_all("prefer") {
        let text = value.to_str().map_err(|_| bad_prefer())?;
        for preference in text.split(',') {
            let head = preference.split(';').next().unwrap_or_default();
            let Some((name, v)) = head.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("wait") {
                continue;
            }
            let secs: u64 = v
                .trim()
                .trim_matches('"')
                .parse()
                .map_err(|_| bad_prefer())?;
            return Ok(Some(secs.min(MAX_WAIT_SECS)));
        }
    }
    Ok(None)
}

fn bad_prefer() -> ApiError {
    ApiError::invalid(
        "Prefer",
        "Prefer: wait=N takes N as whole seconds, such as wait=30 (at most 60 are used)",
    )
}

/// Holds until task `id` (last read with `mark`) is final, or `secs` have passed, giving
/// back the request's load-shedding slots first: a held request is idle, and 60 s of
/// them must not keep creates from their slots.
pub async fn hold_until_final(
    gw: &Gateway,
    owner: &str,
    id: &str,
    mark: TaskMark,
    secs: u64,
    slots: Option<&HeldSlots>,
) -> Result<(), ApiError> {
    if mark.is_final() || secs == 0 {
        return Ok(());
    }
    if let Some(slots) = slots {
        slots.release();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut changed = gw.live.watchers.watch(id, mark);
    loop {
        tokio::select! {
            r = changed.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
        }
        let Some(task) = gw.store.task_for_owner(owner, id).await? else {
            return Ok(());
        };
        if task.state.public().is_terminal() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("prefer", v.parse().unwrap());
        h
    }

    #[test]
    fn prefer_wait_is_read_among_other_preferences_and_capped() {
        assert_eq!(wait_secs(&HeaderMap::new()).unwrap(), None);
        assert_eq!(wait_secs(&prefer("wait=5")).unwrap(), Some(5));
        assert_eq!(
            wait_secs(&prefer("respond-async, Wait = 7")).unwrap(),
            Some(7)
        );
        assert_eq!(wait_secs(&prefer("wait=600")).unwrap(), Some(60));
        assert_eq!(wait_secs(&prefer("return=minimal")).unwrap(), None);
        assert!(wait_secs(&prefer("wait=soon")).is_err());
        assert!(wait_secs(&prefer("wait=-1")).is_err());
    }

    #[test]
    fn if_none_match_matches_the_tag_in_a_list_weakly_or_any() {
        let tag = "\"abc\"";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(IF_NONE_MATCH, v.parse().unwrap());
            h
        };
        assert!(none_match(&with("\"abc\""), tag));
        assert!(none_match(&with("\"x\", W/\"abc\""), tag));
        assert!(none_match(&with("*"), tag));
        assert!(!none_match(&with("\"abd\""), tag));
        assert!(!none_match(&HeaderMap::new(), tag));
    }
}
