//! The OpenAI-compatible facade, `/v1/videos`: OpenAI's Video API (create, retrieve, list,
//! delete, download content) mapped onto the same tasks as `/v1/video/generations`, with
//! the same keys, limits and isolation, so that the official OpenAI SDKs work with
//! `base_url` pointed at omnigate. Mapping (docs/openai-facade.md):
//! - `model`: one of our model ids (default `kling-v3-omni`); OpenAI's `sora-*` are
//!   refused (400, `param: model`) rather than silently swapped for another model;
//! - `seconds` is `duration`; `size` is the aspect ratio and the mode, by our convention:
//!   720-line sizes ask for `std`, 1080-line sizes for `pro` (the provider documents no
//!   exact resolution per mode, so a size names the ratio and tier, not pixels);
//! - statuses are the same four; `error` is `{code, message}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::error::ApiError;
use super::json::{parse, read_body};
use super::tasks::{idempotency_key, refuse_while_draining, replay_marked};
use crate::domain::{AspectRatio, Mode, Model, TaskStatus, VideoRequest};
use crate::gateway::Gateway;
use crate::store::{Deleted, TaskRecord, TaskState, VideoOrder};
use crate::submit;

/// The sizes `size` accepts: (size, aspect ratio, mode). The first of each ratio and mode
/// is how a task is reported.
const SIZES: [(&str, AspectRatio, Mode); 6] = [
    ("1280x720", AspectRatio::Wide, Mode::Std),
    ("1920x1080", AspectRatio::Wide, Mode::Pro),
    ("720x1280", AspectRatio::Tall, Mode::Std),
    ("1080x1920", AspectRatio::Tall, Mode::Pro),
    ("720x720", AspectRatio::Square, Mode::Std),
    ("1080x1080", AspectRatio::Square, Mode::Pro),
];

/// The body of `POST /v1/videos`, as JSON or as the form fields the SDK sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVideo {
    #[schema(min_length = 1)]
    prompt: String,
    /// One of omnigate's models or their aliases (default `kling-v3-omni`); `sora-*` is
    /// refused.
    #[serde(default)]
    #[schema(value_type = Option<crate::domain::Model>)]
    model: Option<String>,
    /// A string in OpenAI's API (`"8"`); a number is accepted too.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[0-9]+$")]
    seconds: Option<Value>,
    #[serde(default)]
    #[schema(pattern = "^(1280x720|1920x1080|720x1280|1080x1920|720x720|1080x1080)$")]
    size: Option<String>,
    /// OpenAI's image reference; not carried (use `image_list` on `/v1/video/generations`):
    /// a 400 naming it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    input_reference: Option<Value>,
}

/// A create body: `multipart/form-data` (what the OpenAI SDK sends) or JSON, both read
/// within the body limits and turned into one JSON object, so that either form gets the
/// same errors naming the same fields.
pub struct CreateBody(CreateVideo);

impl<S: Send + Sync> FromRequest<S> for CreateBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = read_body(req, state).await?;
        parse_create_body(&content_type, bytes)
            .await
            .map(CreateBody)
    }
}

/// A create body read whole, by its `Content-Type`: the form fields of a multipart body,
/// else JSON. Public for the fuzz targets and property tests.
pub async fn parse_create_body(content_type: &str, bytes: Bytes) -> Result<CreateVideo, ApiError> {
    if content_type.starts_with("multipart/form-data") {
        let fields = form_fields(content_type, bytes).await?;
        parse(&serde_json::to_vec(&fields).map_err(anyhow::Error::from)?)
    } else {
        parse(&bytes)
    }
}

/// The text fields of a multipart body as a JSON object; a file part is refused by name.
async fn form_fields(content_type: &str, bytes: Bytes) -> Result<Map<String, Value>, ApiError> {
    let bad = |message: String| ApiError::InvalidRequest {
        param: None,
        message,
    };
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| bad(format!("multipart body without a usable boundary: {e}")))?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("malformed multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if field.file_name().is_some() {
            return Err(ApiError::invalid(
                name.clone(),
                format!("{name}: file uploads are not supported; pass image URLs to POST /v1/video/generations (image_list)"),
            ));
        }
        let text = field
            .text()
            .await
            .map_err(|e| bad(format!("malformed multipart field {name}: {e}")))?;
        fields.insert(name, Value::String(text));
    }
    Ok(fields)
}

/// `POST /v1/videos`
#[utoipa::path(
    post,
    path = "/v1/videos",
    tag = "openai",
    request_body(content(
        (CreateVideo = "application/json"),
        (CreateVideo = "multipart/form-data"),
    )),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            description = "As on `POST /v1/video/generations`.")),
    responses(
        (status = 200, description = "The video object (status `queued`).", body = super::schema::Video,
         headers(("Idempotent-Replayed" = String, description = "`true` when an Idempotency-Key replayed an earlier create."))),
        (status = 400, description = "`invalid_request`: `param` names the field (OpenAI's name for it: `seconds`, `size`, `model`, ...).", body = super::error::ErrorBody),
        (status = 402, description = "`budget_exceeded`.", body = super::error::ErrorBody),
        (status = 409, description = "`idempotency_conflict`.", body = super::error::ErrorBody),
        (status = 422, description = "No provider could take it.", body = super::error::ErrorBody),
        (status = 504, description = "`no_provider_available`.", body = super::error::ErrorBody),
    ),
)]
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    headers: HeaderMap,
    CreateBody(body): CreateBody,
) -> Result<Response, ApiError> {
    refuse_while_draining(&gw)?;
    let idempotency_key = idempotency_key(&headers)?;
    let req = to_request(body)?;
    let created = submit::create_task(&gw, &key, req.clone(), idempotency_key)
        .await
        .map_err(|e| in_openai_terms(e.into()))?;
    let resp = Json(video_object(&created.task, Some(&req))).into_response();
    Ok(replay_marked(resp, created.replayed))
}

/// Our request from OpenAI's fields.
pub fn to_request(body: CreateVideo) -> Result<VideoRequest, ApiError> {
    if body.input_reference.is_some() {
        return Err(ApiError::invalid(
            "input_reference",
            "input_reference is not supported here; pass image URLs to POST /v1/video/generations (image_list)",
        ));
    }
    let model = match body.model.as_deref().map(str::trim) {
        None | Some("") => Model::KlingV3Omni,
        Some(m) => Model::parse(m).ok_or_else(|| {
            let why = if m.starts_with("sora") {
                format!("{m} is OpenAI's model, which omnigate does not serve")
            } else {
                format!("unknown model {m:?}")
            };
            ApiError::invalid(
                "model",
                format!("{why}; use kling-v3-omni (the default) or kling-video-o1"),
            )
        })?,
    };
    let seconds = match &body.seconds {
        None => None,
        Some(v) => Some(
            match v {
                Value::String(s) => s.trim().parse::<u32>().ok(),
                Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                _ => None,
            }
            .ok_or_else(|| {
                ApiError::invalid(
                    "seconds",
                    format!("seconds must be a whole number of seconds such as \"5\", got {v}"),
                )
            })?,
        ),
    };
    let (aspect_ratio, mode) = match body.size.as_deref().map(str::trim) {
        None | Some("") => (AspectRatio::Wide, None),
        Some(s) => SIZES
            .iter()
            .find(|(name, _, _)| *name == s)
            .map(|(_, ratio, mode)| (*ratio, Some(*mode)))
            .ok_or_else(|| {
                let names: Vec<&str> = SIZES.iter().map(|(n, _, _)| *n).collect();
                ApiError::invalid(
                    "size",
                    format!(
                        "size {s:?} is not one omnigate renders; use one of {}",
                        names.join(", ")
                    ),
                )
            })?,
    };
    Ok(VideoRequest {
        model,
        prompt: Some(body.prompt),
        negative_prompt: None,
        mode,
        duration: seconds,
        aspect_ratio: Some(aspect_ratio),
        sound: None,
        multi_shot: None,
        shot_type: None,
        multi_prompt: None,
        image_list: Vec::new(),
        video_list: Vec::new(),
        element_list: Vec::new(),
        watermark: None,
        callback_url: None,
        callback_events: None,
        webhook_events: None,
        metadata: None,
        routing: None,
        max_wait_secs: None,
        priority: None,
    })
}

/// `message`, naming our field `from` by OpenAI's `to`. Our `duration` is a length and
/// OpenAI's `seconds` a count, so "accepts a duration of 3 to 15 seconds" reads "accepts
/// 3 to 15 seconds", not "accepts a seconds of".
fn reword(message: &str, from: &str, to: &str) -> String {
    let message = match (from, to) {
        ("duration", "seconds") => message.replace("a duration of ", ""),
        _ => message.to_string(),
    };
    message.replace(from, to)
}

/// A refusal naming one of our fields names OpenAI's instead.
fn in_openai_terms(e: ApiError) -> ApiError {
    let rename = |p: &str| match p {
        "duration" => Some("seconds"),
        "aspect_ratio" | "mode" => Some("size"),
        _ => None,
    };
    match e {
        ApiError::InvalidRequest {
            param: Some(p),
            message,
        } if rename(&p).is_some() => {
            let to = rename(&p).unwrap_or_default();
            ApiError::InvalidRequest {
                message: reword(&message, &p, to),
                param: Some(to.to_string()),
            }
        }
        ApiError::Unprocessable {
            code,
            param: Some(p),
            message,
            provider_message,
        } if rename(&p).is_some() => {
            let to = rename(&p).unwrap_or_default();
            ApiError::Unprocessable {
                code,
                message: reword(&message, &p, to),
                param: Some(to.to_string()),
                provider_message,
            }
        }
        other => other,
    }
}

/// `GET /v1/videos/{id}`
#[utoipa::path(
    get,
    path = "/v1/videos/{id}",
    tag = "openai",
    params(("id" = String, Path, description = "The video id (the task id).")),
    responses((status = 200, description = "The video object.", body = super::schema::Video)),
)]
pub async fn retrieve(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = gw
        .store
        .task_for_owner(&key.id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no video {id}")))?;
    let requests = gw.store.video_requests(&[task.id.as_str()]).await?;
    Ok(Json(video_object(&task, requests.get(&task.id))))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    after: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(pattern = "^(asc|desc)$")]
    order: Option<String>,
}

/// `GET /v1/videos?after=&limit=&order=`: OpenAI's cursor list.
#[utoipa::path(
    get,
    path = "/v1/videos",
    tag = "openai",
    params(ListParams),
    responses((status = 200, description = "A page of the key's videos.", body = super::schema::VideoList)),
)]
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    let order = match params.order.as_deref() {
        None | Some("desc") => VideoOrder::Desc,
        Some("asc") => VideoOrder::Asc,
        Some(_) => return Err(ApiError::invalid("order", "order must be asc or desc")),
    };
    let after = match params.after {
        Some(id) => Some(
            gw.store
                .task_for_owner(&key.id, &id)
                .await?
                .ok_or_else(|| ApiError::invalid("after", "after is not one of your video ids"))?,
        ),
        None => None,
    };
    let page = gw
        .store
        .list_videos(&key.id, after.as_ref(), order, limit)
        .await?;
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    let requests = gw.store.video_requests(&ids).await?;
    let data: Vec<Value> = page
        .tasks
        .iter()
        .map(|t| video_object(t, requests.get(&t.id)))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": page.tasks.first().map(|t| &t.id),
        "last_id": page.tasks.last().map(|t| &t.id),
        "has_more": page.has_more,
    })))
}

/// `DELETE /v1/videos/{id}`: a finished video disappears for its key (reads, lists,
/// content on both APIs) and omnigate's stored copy is removed; the task stays in the
/// database for usage and billing. A video still waiting in omnigate's queue is cancelled
/// (nothing charged) and deleted. Any other unfinished one cannot be deleted (400): the
/// provider is still working on it and will bill it either way.
#[utoipa::path(
    delete,
    path = "/v1/videos/{id}",
    tag = "openai",
    params(("id" = String, Path, description = "The video id.")),
    responses(
        (status = 200, description = "Deleted: gone from reads, lists and content for its key; the stored copy is removed.", body = super::schema::VideoDeleted),
        (status = 400, description = "`invalid_request` naming `video_id`: only a completed, failed or still waiting video can be deleted.", body = super::error::ErrorBody),
    ),
)]
pub async fn delete(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    gw.store
        .end_waiting(&id, Some(&key.id), TaskState::Cancelled, None)
        .await?;
    match gw.store.delete_video(&key.id, &id).await? {
        Deleted::Yes => {
            // Read-your-writes on this process; the others drop it within a second.
            gw.live.finished.forget(&id);
            Ok(Json(
                json!({"id": id, "object": "video.deleted", "deleted": true}),
            ))
        }
        Deleted::Unfinished => Err(ApiError::invalid(
            "video_id",
            format!("video {id} is not finished; only a completed or failed video can be deleted"),
        )),
        Deleted::NotFound => Err(ApiError::NotFound(format!("no video {id}"))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContentParams {
    /// Only `video`.
    #[param(pattern = "^video$")]
    variant: Option<String>,
}

/// `GET /v1/videos/{id}/content`: the video (no thumbnails or spritesheets).
#[utoipa::path(
    get,
    path = "/v1/videos/{id}/content",
    tag = "openai",
    params(
        ("id" = String, Path, description = "The video id."),
        ContentParams,
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
pub async fn content(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
    params: Result<Query<ContentParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    if let Some(v) = params.variant.as_deref().filter(|v| *v != "video") {
        return Err(ApiError::invalid(
            "variant",
            format!("variant {v:?} is not available; only \"video\" is"),
        ));
    }
    super::content::content_of(&gw, &key.id, &id, 0, &headers).await
}

/// The progress the provider reported, or, when higher, the share of the expected
/// completion time (`eta`) already elapsed; below 100 until the task is final, since an
/// estimate cannot know the task done.
fn estimated_progress(t: &TaskRecord, now: i64) -> i64 {
    if t.state.public().is_terminal() {
        return t.progress;
    }
    let estimate = match (t.accepted_at, t.eta_at) {
        (Some(start), Some(eta)) if eta > start => {
            (100 * (now - start).max(0) / (eta - start)).min(ESTIMATE_CAP)
        }
        _ => 0,
    };
    t.progress.max(estimate).min(99)
}

/// The most an estimate from elapsed time claims: a task past its expected time is late,
/// not nearly done.
const ESTIMATE_CAP: i64 = 95;

/// OpenAI's Video object for a task, with what only its stored request knows (prompt,
/// seconds, size); a request retention removed leaves those to the result or the defaults.
fn video_object(t: &TaskRecord, req: Option<&VideoRequest>) -> Value {
    // OpenAI's videos have no `cancelled`: a task cancelled while it waited is a failed
    // video whose error says so.
    let status = match t.state.public() {
        TaskStatus::Cancelled => TaskStatus::Failed,
        s => s,
    };
    let seconds = req
        .and_then(VideoRequest::output_seconds)
        .map(|s| s.to_string())
        .or_else(|| {
            t.videos
                .first()
                .and_then(|v| v.duration)
                .map(|d| (d.round() as u64).to_string())
        })
        .unwrap_or_else(|| crate::domain::DEFAULT_DURATION.to_string());
    let ratio = req
        .and_then(|r| r.aspect_ratio)
        .unwrap_or(AspectRatio::Wide);
    let mode = req.map(VideoRequest::mode).unwrap_or_default();
    let size = SIZES
        .iter()
        .find(|(_, r, m)| *r == ratio && *m == mode)
        .map_or("1920x1080", |(name, _, _)| name);
    let error = match (&t.error, status) {
        (Some(e), TaskStatus::Failed) => json!({"code": e.code, "message": e.message}),
        (None, TaskStatus::Failed) if t.state == TaskState::Cancelled => {
            json!({"code": "cancelled", "message": "cancelled while it waited for a provider"})
        }
        _ => Value::Null,
    };
    json!({
        "id": t.id,
        "object": "video",
        "created_at": t.created_at.div_euclid(1000),
        "status": status.as_str(),
        "model": t.model.as_str(),
        "progress": estimated_progress(t, crate::store::now_ms()),
        "seconds": seconds,
        "size": size,
        "prompt": req.and_then(|r| r.prompt.clone()),
        "completed_at": t.completed_at.map(|c| c.div_euclid(1000)),
        // omnigate's copy is kept until the video is deleted; the provider's URL expires
        // on a schedule omnigate is not told.
        "expires_at": Value::Null,
        "error": error,
        "remixed_from_video_id": Value::Null,
    })
}
