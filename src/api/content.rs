//! `GET /v1/video/generations/{id}/content` (and the facade's `/v1/videos/{id}/content`):
//! the finished video itself. omnigate's stored copy is streamed, with range requests;
//! without one (copying off, not done yet, or given up) the client is redirected (302) to
//! the provider's URL, which costs this gateway no bandwidth and is what the task object
//! already shows.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use crate::domain::TaskStatus;
use crate::gateway::Gateway;

#[utoipa::path(
    get,
    path = "/v1/video/generations/{id}/content",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "The task id (`vgt_...`)."),
        ("video" = Option<usize>, Query, description = "Which of the task's videos (its position in `result.videos`); 0, the first, by default."),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=a-b`, `bytes=a-` or `bytes=-n`."),
    ),
    responses(
        (status = 200, description = "The whole video, streamed (`Accept-Ranges: bytes`).", content_type = "video/mp4", body = Vec<u8>,
         headers(("Accept-Ranges" = String), ("Content-Length" = u64))),
        (status = 206, description = "The requested byte range (`Range: bytes=a-b`).", content_type = "video/mp4", body = Vec<u8>,
         headers(("Content-Range" = String, description = "`bytes a-b/size`"), ("Accept-Ranges" = String))),
        (status = 302, description = "No copy is stored (copying off, not done yet, or given up): the provider's URL.",
         headers(("Location" = String))),
        (status = 409, description = "`not_completed`: the task has no video yet.", body = super::error::ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts past the end (`Content-Range: bytes */size`).", body = super::error::ErrorBody),
    ),
)]
pub async fn generation_content(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
    which: Result<Query<WhichVideo>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(which) = which?;
    content_of(&gw, &key.id, &id, which.index(), &headers).await
}

/// `?video=i`: which of a task's videos a content read is for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhichVideo {
    pub video: Option<usize>,
}

impl WhichVideo {
    pub fn index(&self) -> usize {
        self.video.unwrap_or_default()
    }
}

/// The content of video `index` of `owner`'s task `id`; another key's task is a 404, as
/// everywhere.
pub async fn content_of(
    gw: &Gateway,
    owner: &str,
    id: &str,
    index: usize,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let task = gw
        .store
        .task_for_owner(owner, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    let status = task.state.public();
    if status != TaskStatus::Completed {
        return Err(ApiError::NotFound(format!(
            "task {id} has no video: it is {}",
            status.as_str()
        )));
    }
    if let Some(results) = &gw.results {
        if let Some((key, content_type)) = gw.store.stored_copy(id, index).await? {
            let served =
                crate::results::serve(results, &key, content_type.as_deref(), headers).await?;
            if let Some(resp) = served {
                return Ok(resp);
            }
        }
    }
    let url = task
        .videos
        .get(index)
        .and_then(|v| HeaderValue::from_str(&v.url).ok())
        .ok_or_else(|| ApiError::NotFound(format!("task {id} has no video {index}")))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}
