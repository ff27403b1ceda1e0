//! The Kling-shaped facade: Kling's Omni-Video API (`POST /v1/videos/omni-video`, the query
//! by task id or `external_task_id`, the numbered list) under Kling's own paths and the
//! resellers' `/kling` prefix, over the same tasks as `/v1/video/generations`. The body is
//! mapped onto the same `VideoRequest`, so every validation, routing, limit, budget,
//! idempotency and queueing rule applies unchanged; answers and refusals are Kling's
//! envelope and codes (docs/kling-facade.md has the mapping table). Who may call is
//! `kling_auth`: the omnigate key, or an HS256 JWT signed with the key's Kling secret.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::ApiError;
use super::json::ValidJson;
use super::tasks::{idempotency_key, refuse_while_draining, replay_marked};
use super::{kling_auth, load};
use crate::domain::{
    AspectRatio, CallbackEvent, ElementRef, ImageRef, Mode, Model, OnOff, ReferType, Shot,
    ShotType, VideoRef, VideoRequest,
};
use crate::gateway::Gateway;
use crate::store::{Reserved, TaskRecord};
use crate::submit::{self, SubmitError};
use crate::task_view::kling_task_data;
use crate::telemetry::request_id::X_REQUEST_ID;

/// Kling's own host serves the API at the root; the resellers under `/kling`.
pub const PREFIXES: [&str; 2] = ["", "/kling"];
const OMNI_VIDEO: &str = "/v1/videos/omni-video";
/// The longest `external_task_id` kept.
const EXTERNAL_ID_MAX: usize = 256;
const PAGE_NUM_MAX: u32 = 1000;
const PAGE_SIZE_MAX: u32 = 500;
/// Kling's default page size.
const PAGE_SIZE_DEFAULT: u32 = 30;
/// An error answer is small; a larger one is not rewritten.
const ERROR_BODY_MAX: usize = 64 * 1024;

/// The facade's routes, each behind `kling_auth` and the per-key rate limit, with every
/// refusal on them (theirs, the handlers', the layers') in Kling's envelope. `creates` is
/// the in-flight create limit the other create routes share.
pub fn routes(gw: Arc<Gateway>, creates: load::Slots) -> Router<Arc<Gateway>> {
    let create = create.layer(from_fn_with_state(creates, load::shed_beyond));
    Router::new()
        .route("/v1/videos/omni-video", get(list).post(create.clone()))
        .route("/v1/videos/omni-video/{id}", get(get_one))
        .route("/kling/v1/videos/omni-video", get(list).post(create))
        .route("/kling/v1/videos/omni-video/{id}", get(get_one))
        .route_layer(from_fn_with_state(
            gw.clone(),
            super::rate_limit::rate_limit,
        ))
        .route_layer(from_fn_with_state(gw, kling_auth::authenticate))
        .layer(from_fn(in_kling_envelope))
}

/// Whether `path` is the facade's create path (the rate limit counts it as a create).
pub fn is_create_path(path: &str) -> bool {
    PREFIXES
        .iter()
        .any(|p| path.strip_prefix(p) == Some(OMNI_VIDEO))
}

/// Kling's `watermark_info`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkInfo {
    enabled: bool,
}

/// The body of `POST /v1/videos/omni-video`, as Kling documents it. Empty strings (Kling's
/// example sends `"callback_url": ""`) are absent values.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KlingCreate {
    /// `kling-video-o1` or `kling-v3-omni` (the resellers' spellings are accepted too).
    #[schema(value_type = crate::domain::Model)]
    model_name: String,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    negative_prompt: Option<String>,
    #[serde(default)]
    image_list: Option<Vec<ImageRef>>,
    #[serde(default)]
    element_list: Option<Vec<ElementRef>>,
    #[serde(default)]
    video_list: Option<Vec<VideoRef>>,
    /// When not true, `shot_type` and `multi_prompt` are ignored, as on Kling.
    #[serde(default)]
    multi_shot: Option<bool>,
    #[serde(default)]
    shot_type: Option<ShotType>,
    #[serde(default)]
    multi_prompt: Option<Vec<Shot>>,
    #[serde(default)]
    mode: Option<Mode>,
    /// Seconds as a string (`"5"`), as Kling sends it; a number is accepted too. Ignored
    /// with a base video (`refer_type: base`): the output lasts as long as the input.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[0-9]+$")]
    duration: Option<Value>,
    #[serde(default)]
    aspect_ratio: Option<AspectRatio>,
    #[serde(default)]
    sound: Option<OnOff>,
    #[serde(default)]
    watermark_info: Option<WatermarkInfo>,
    /// Called with the task object (Kling's callback body) on each status change.
    #[serde(default)]
    callback_url: Option<String>,
    /// The caller's own id for the task, unique per key; the query takes it in place of
    /// `task_id`.
    #[serde(default)]
    #[schema(max_length = 256)]
    external_task_id: Option<String>,
}

/// Our request from Kling's body, and the caller's `external_task_id` if it gave one.
pub fn to_request(body: KlingCreate) -> Result<(VideoRequest, Option<String>), ApiError> {
    let model = Model::parse(body.model_name.trim()).ok_or_else(|| {
        ApiError::invalid(
            "model_name",
            format!(
                "unknown model_name {:?}; use kling-video-o1 or kling-v3-omni",
                body.model_name
            ),
        )
    })?;
    let external_task_id = non_empty(body.external_task_id);
    if let Some(id) = &external_task_id {
        if id.len() > EXTERNAL_ID_MAX || id.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "external_task_id",
                format!("external_task_id must be at most {EXTERNAL_ID_MAX} bytes without control characters"),
            ));
        }
    }
    let video_list = body.video_list.unwrap_or_default();
    let base_edit = video_list.iter().any(|v| v.refer_type() == ReferType::Base);
    let duration = match body.duration.filter(|d| !is_blank(d)) {
        // Kling: with a base video "this parameter is invalid"; the input's length decides.
        _ if base_edit => None,
        None => None,
        Some(v) => Some(seconds(&v).ok_or_else(|| {
            ApiError::invalid(
                "duration",
                format!("duration must be a whole number of seconds such as \"5\", got {v}"),
            )
        })?),
    };
    let multi_shot = body.multi_shot.unwrap_or(false);
    let callback_url = non_empty(body.callback_url);
    Ok((
        VideoRequest {
            model,
            prompt: non_empty(body.prompt),
            negative_prompt: body.negative_prompt,
            mode: body.mode,
            duration,
            aspect_ratio: body.aspect_ratio,
            sound: body.sound,
            multi_shot: body.multi_shot,
            // Kling: "when multi_shot is false, shot_type and multi_prompt are invalid".
            shot_type: body.shot_type.filter(|_| multi_shot),
            multi_prompt: body.multi_prompt.filter(|_| multi_shot),
            image_list: body.image_list.unwrap_or_default(),
            video_list,
            element_list: body.element_list.unwrap_or_default(),
            watermark: body.watermark_info.map(|w| w.enabled),
            // Kling calls back on every status change, so in_progress is asked for too.
            callback_events: callback_url
                .is_some()
                .then(|| vec![CallbackEvent::InProgress]),
            callback_url,
            metadata: None,
            routing: None,
            max_wait_secs: None,
            priority: None,
            webhook_events: None,
        },
        external_task_id,
    ))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn is_blank(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())
}

fn seconds(v: &Value) -> Option<u32> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

/// `POST /v1/videos/omni-video` (and `/kling/...`).
#[utoipa::path(
    post,
    path = "/v1/videos/omni-video",
    tag = "kling",
    request_body = KlingCreate,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            description = "As on `POST /v1/video/generations`; an `external_task_id` already used answers 1201 first.")),
    responses(
        (status = 200, description = "`code: 0` and the task (`task_status: submitted`, or further along).", body = super::schema::KlingTaskAnswer,
         headers(("Idempotent-Replayed" = String, description = "`true` when an Idempotency-Key replayed an earlier create."))),
        (status = 400, description = "1200/1201: the body (1201 names the field, e.g. `external_task_id` already used); 1301: content policy.", body = super::schema::KlingError),
        (status = 504, description = "5002: the last provider tried did not answer in time.", body = super::schema::KlingError),
    ),
)]
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    headers: HeaderMap,
    ValidJson(body): ValidJson<KlingCreate>,
) -> Result<Response, ApiError> {
    refuse_while_draining(&gw)?;
    let idempotency_key = idempotency_key(&headers)?;
    let (req, external_task_id) = to_request(body).map_err(in_kling_terms)?;
    let id = submit::new_task_id();
    let reserved = gw
        .store
        .reserve_kling_task(&id, &key.id, external_task_id.as_deref())
        .await?;
    if reserved == Reserved::Duplicate {
        return Err(ApiError::invalid(
            "external_task_id",
            format!(
                "external_task_id {:?} already exists for this key",
                external_task_id.unwrap_or_default()
            ),
        ));
    }
    let created = submit::create_task_as(&gw, &key, req, idempotency_key, id.clone()).await;
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            // The client was told no task exists: its external_task_id is free again.
            if !matches!(e, SubmitError::StoreAfterWrite { .. }) {
                release(&gw, &id).await;
            }
            return Err(in_kling_terms(e.into()));
        }
    };
    let data = if created.task.id == id {
        kling_task_data(&created.task, external_task_id.as_deref())
    } else {
        // An Idempotency-Key replayed another task: this reservation made nothing.
        release(&gw, &id).await;
        data_of(&gw, &created.task).await?
    };
    Ok(replay_marked(
        Json(envelope(&headers, data)).into_response(),
        created.replayed,
    ))
}

/// Frees a reservation (see `Store::release_kling_task`). A failure leaves the id held
/// until the orphan takeover; the client's answer is about its create, not this.
async fn release(gw: &Gateway, task_id: &str) {
    if let Err(e) = gw.store.release_kling_task(task_id).await {
        tracing::warn!(task_id, error = ?e, "could not free the external_task_id of a failed create");
    }
}

/// `GET /v1/videos/omni-video/{id}`: by omnigate's task id or the caller's
/// `external_task_id`; another key's task does not exist.
#[utoipa::path(
    get,
    path = "/v1/videos/omni-video/{id}",
    tag = "kling",
    params(("id" = String, Path, description = "The `task_id`, or the `external_task_id` given at create.")),
    responses(
        (status = 200, description = "`code: 0` and the task.", body = super::schema::KlingTaskAnswer),
        (status = 404, description = "1203: no such task for this key.", body = super::schema::KlingError),
    ),
)]
pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut task = gw.store.task_for_owner(&key.id, &id).await?;
    if task.is_none() {
        if let Some(task_id) = gw.store.task_id_by_external_id(&key.id, &id).await? {
            task = gw.store.task_for_owner(&key.id, &task_id).await?;
        }
    }
    let task = task.ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    Ok(Json(envelope(&headers, data_of(&gw, &task).await?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-1000 (default 1).
    #[serde(rename = "pageNum")]
    #[param(rename = "pageNum", value_type = Option<u32>, minimum = 1, maximum = 1000)]
    page_num: Option<String>,
    /// 1-500 (default 30).
    #[serde(rename = "pageSize")]
    #[param(rename = "pageSize", value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
}

/// `GET /v1/videos/omni-video?pageNum=&pageSize=`: the key's tasks, newest first.
#[utoipa::path(
    get,
    path = "/v1/videos/omni-video",
    tag = "kling",
    params(ListParams),
    responses(
        (status = 200, description = "`code: 0` and `data`, the page's tasks.", body = super::schema::KlingListAnswer),
        (status = 400, description = "1201 naming `pageNum` or `pageSize` out of bounds.", body = super::schema::KlingError),
    ),
)]
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    let page = bounded("pageNum", params.page_num, 1, PAGE_NUM_MAX)?;
    let size = bounded(
        "pageSize",
        params.page_size,
        PAGE_SIZE_DEFAULT,
        PAGE_SIZE_MAX,
    )?;
    let tasks = gw
        .store
        .task_page_numbered(&key.id, page, size)
        .await?
        .tasks;
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let external = gw.store.external_task_ids(&ids).await?;
    let data: Vec<Value> = tasks
        .iter()
        .map(|t| kling_task_data(t, external.get(&t.id).map(String::as_str)))
        .collect();
    Ok(Json(envelope(&headers, Value::Array(data))))
}

/// A query parameter that must be a whole number in `1..=max` (`default` when absent).
fn bounded(name: &str, value: Option<String>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(text) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(default);
    };
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("{name} must be a whole number from 1 to {max}"),
            )
        })
}

/// The task's `data`, with its `external_task_id` read from the store.
async fn data_of(gw: &Gateway, task: &TaskRecord) -> Result<Value, ApiError> {
    let mut external = gw.store.external_task_ids(&[task.id.as_str()]).await?;
    Ok(kling_task_data(task, external.remove(&task.id).as_deref()))
}

/// Kling's success envelope around `data`, with the request's id.
fn envelope(headers: &HeaderMap, data: Value) -> Value {
    json!({
        "code": 0,
        "message": "SUCCEED",
        "request_id": request_id(headers),
        "data": data,
    })
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A refusal naming one of our fields names Kling's instead.
fn in_kling_terms(e: ApiError) -> ApiError {
    let rename = |p: &str| match p {
        "model" => Some("model_name"),
        "watermark" => Some("watermark_info.enabled"),
        _ => None,
    };
    match e {
        ApiError::InvalidRequest {
            param: Some(p),
            message,
        } if rename(&p).is_some() => {
            let to = rename(&p).unwrap_or_default();
            ApiError::InvalidRequest {
                message: message.replace(&p, to),
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
                message: message.replace(&p, to),
                param: Some(to.to_string()),
                provider_message,
            }
        }
        other => other,
    }
}

/// Kling's code and HTTP status for an omnigate refusal (`code` and `status` from the
/// error envelope, `named` whether it names a field). The table in docs/kling-facade.md.
pub fn kling_code(code: &str, status: StatusCode, named: bool) -> (u32, StatusCode) {
    let s = |n: u16| StatusCode::from_u16(n).unwrap_or(StatusCode::BAD_REQUEST);
    match code {
        "invalid_api_key" => (1002, s(401)),
        "invalid_request" if named => (1201, s(400)),
        "invalid_request" | "body_too_large" | "body_timeout" => (1200, s(400)),
        "idempotency_conflict" | "no_capable_provider" | "upstream_bad_request" => (1201, s(400)),
        "content_policy" => (1301, s(400)),
        "not_found" => (1203, s(404)),
        // Kling answers 1202 with 404; 405 tells a client (and HTTP) the method is wrong.
        "method_not_allowed" => (1202, s(405)),
        "budget_exceeded" => (1102, s(429)),
        "rate_limited" | "too_many_failed_attempts" => (1302, s(429)),
        "concurrency_limited" | "queue_full" => (1303, s(429)),
        "internal_error" => (5000, s(500)),
        _ if status == StatusCode::GATEWAY_TIMEOUT => (5002, s(504)),
        _ if status.is_server_error() => (5001, s(503)),
        _ if status == StatusCode::UNAUTHORIZED => (1000, s(401)),
        _ if status == StatusCode::TOO_MANY_REQUESTS => (1302, s(429)),
        _ => (1200, s(400)),
    }
}

/// Marks an answer already in Kling's form (the auth refusals), left alone by
/// `in_kling_envelope`.
#[derive(Clone, Copy)]
pub(super) struct KlingShaped;

/// A refusal in Kling's envelope.
pub(super) fn refusal(code: u32, status: StatusCode, message: &str, request_id: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "request_id": request_id,
        "data": Value::Null,
    });
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp.extensions_mut().insert(KlingShaped);
    resp
}

/// Every error answer on the facade's routes, whoever made it (a handler, the rate limit,
/// the create limit, a body limit), rewritten from omnigate's envelope into Kling's:
/// `{code, message, request_id, data: null}` with Kling's HTTP status. A named field is
/// kept in the message (`external_task_id: ...`). Headers such as `Retry-After` stay.
async fn in_kling_envelope(req: Request, next: Next) -> Response {
    let request_id = request_id(req.headers());
    let resp = next.run(req).await;
    if resp.status().is_success() || resp.extensions().get::<KlingShaped>().is_some() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_MAX).await else {
        return refusal(
            5000,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            &request_id,
        );
    };
    let error: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let error = &error["error"];
    let code = error["code"].as_str().unwrap_or_default();
    let param = error["param"].as_str();
    let message = error["message"].as_str().unwrap_or("request refused");
    let (kling, status) = kling_code(code, parts.status, param.is_some());
    let message = match param {
        Some(p) if !message.contains(p) => format!("{p}: {message}"),
        _ => message.to_string(),
    };
    let body = json!({
        "code": kling,
        "message": message,
        "request_id": request_id,
        "data": Value::Null,
    });
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> KlingCreate {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn kling_s_documented_example_maps_onto_our_request() {
        let (req, external) = to_request(body(json!({
            "model_name": "kling-video-o1",
            "prompt": "Generate an image of dancing by the seaside.",
            "negative_prompt": "",
            "mode": "std",
            "element_list": [{"element_id": 835266081714884677u64}],
            "aspect_ratio": "16:9",
            "duration": "5",
            "callback_url": "",
            "external_task_id": ""
        })))
        .unwrap();
        assert_eq!(req.model, Model::KlingVideoO1);
        assert_eq!(req.duration, Some(5));
        assert_eq!(req.mode, Some(Mode::Std));
        assert_eq!(req.element_list[0].element_id, 835266081714884677);
        assert_eq!(req.negative_prompt(), None);
        assert_eq!((req.callback_url, external), (None, None));
    }

    #[test]
    fn a_base_edit_ignores_duration_and_single_shot_ignores_shots() {
        let (req, _) = to_request(body(json!({
            "model_name": "kling-v3-omni",
            "prompt": "make it night",
            "duration": "7",
            "multi_shot": false,
            "shot_type": "customize",
            "video_list": [{"video_url": "https://v.example/a.mp4", "refer_type": "base"}],
            "watermark_info": {"enabled": true},
            "callback_url": "https://hook.example/k",
            "external_task_id": " mine-1 "
        })))
        .unwrap();
        assert_eq!(req.duration, None);
        assert_eq!(req.shot_type, None);
        assert_eq!(req.watermark, Some(true));
        assert!(
            req.wants_in_progress_events(),
            "Kling calls back on every change"
        );
    }

    #[test]
    fn refusals_name_kling_s_fields() {
        let err = to_request(body(json!({"model_name": "sora-2", "prompt": "x"}))).unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidRequest { param: Some(ref p), .. } if p == "model_name")
        );
        let err = to_request(body(
            json!({"model_name": "kling-v3-omni", "duration": "five"}),
        ))
        .unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidRequest { param: Some(ref p), .. } if p == "duration")
        );
        let renamed = in_kling_terms(ApiError::invalid("watermark", "watermark is not carried"));
        assert!(
            matches!(renamed, ApiError::InvalidRequest { param: Some(ref p), ref message }
            if p == "watermark_info.enabled" && message.starts_with("watermark_info.enabled"))
        );
    }

    #[test]
    fn omnigate_codes_map_to_kling_s_codes_and_statuses() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        let cases = [
            ("invalid_api_key", 401, false, 1002, 401),
            ("invalid_request", 400, true, 1201, 400),
            ("invalid_request", 400, false, 1200, 400),
            ("content_policy", 422, false, 1301, 400),
            ("budget_exceeded", 402, false, 1102, 429),
            ("rate_limited", 429, false, 1302, 429),
            ("concurrency_limited", 429, false, 1303, 429),
            ("not_found", 404, false, 1203, 404),
            ("no_provider_available", 503, false, 5001, 503),
            ("upstream_timeout", 504, false, 5002, 504),
            ("internal_error", 500, false, 5000, 500),
        ];
        for (code, status, named, kling, http) in cases {
            assert_eq!(
                kling_code(code, s(status), named),
                (kling, s(http)),
                "{code}"
            );
        }
    }

    #[test]
    fn only_the_create_paths_count_as_creates() {
        assert!(is_create_path("/v1/videos/omni-video"));
        assert!(is_create_path("/kling/v1/videos/omni-video"));
        assert!(!is_create_path("/kling/v1/videos/omni-video/vgt_1"));
    }
}
