//! `/v1/video/generations`: create, read one, list. Reads are answered from the store;
//! a client read never waits on a provider.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::ApiError;
use super::json::ValidJson;
use super::live;
use super::load::HeldSlots;
use crate::domain::{TaskStatus, VideoRequest};
use crate::gateway::Gateway;
use crate::store::{TaskMark, TaskRecord};
use crate::task_view::{task_object, unix_secs};
use crate::{routing, submit};

/// Longest `Idempotency-Key` accepted (Stripe's limit).
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Validates the request, routes it to the cheapest capable provider, writes the task and
/// submits it.
#[utoipa::path(
    post,
    path = "/v1/video/generations",
    tag = "tasks",
    request_body = VideoRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
         description = "The same key with the same body answers the same task and never creates \
                        a second upstream task; with another body, 409. Keys expire after \
                        `idempotency.ttl_secs`."),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): hold the answer up to min(N, 60) seconds until the task is final; the answer is then the task as it is (`Preference-Applied: wait=N`)."),
    ),
    responses(
        (status = 202, description = "Accepted: the task object (status `queued`; with a `queue` object when no provider had room and it waits in omnigate's queue).",
         body = super::schema::TaskObject,
         headers(("Idempotent-Replayed" = String, description = "`true` when an Idempotency-Key replayed an earlier create."))),
        (status = 402, description = "`budget_exceeded`: the key's budget for the period cannot cover this task's estimate.", body = super::error::ErrorBody),
        (status = 409, description = "`idempotency_conflict`: the Idempotency-Key was used with another body.", body = super::error::ErrorBody),
        (status = 429, description = "`queue_full`: no provider has room and the key already has its `max_queued` tasks waiting.", body = super::error::ErrorBody),
        (status = 422, description = "`no_capable_provider` (the message lists each provider and why), `content_policy` or `upstream_bad_request` (`provider_message` has each provider's words).", body = super::error::ErrorBody),
        (status = 504, description = "`no_provider_available`: the last provider timed out before accepting.", body = super::error::ErrorBody),
    ),
)]
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    headers: HeaderMap,
    slots: Option<Extension<HeldSlots>>,
    ValidJson(req): ValidJson<VideoRequest>,
) -> Result<impl IntoResponse, ApiError> {
    refuse_while_draining(&gw)?;
    let idempotency_key = idempotency_key(&headers)?;
    let wait = live::wait_secs(&headers)?;
    let created = submit::create_task(&gw, &key, req, idempotency_key).await?;
    let mut task = created.task;
    if let Some(secs) = wait {
        let slots = slots.as_ref().map(|Extension(s)| s);
        live::hold_until_final(&gw, &key.id, &task.id, TaskMark::of(&task), secs, slots).await?;
        if let Some(now) = gw.store.task_for_owner(&key.id, &task.id).await? {
            task = now;
        }
    }
    let obj = with_queue_position(&gw, task_object(&task), &task).await?;
    let mut resp = (StatusCode::ACCEPTED, Json(obj)).into_response();
    if let Some(secs) = wait {
        resp.headers_mut()
            .insert("preference-applied", live::preference_applied(secs));
    }
    Ok(replay_marked(resp, created.replayed))
}

/// A create's answer, with `Idempotent-Replayed: true` when an Idempotency-Key replayed an
/// earlier create (the native API and the OpenAI facade alike).
pub(super) fn replay_marked(mut resp: Response, replayed: bool) -> Response {
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Once a graceful shutdown has begun, a new create would start a submit the drain might
/// have to cut; the client retries on another replica (or this one once restarted).
pub fn refuse_while_draining(gw: &Gateway) -> Result<(), ApiError> {
    if gw.draining.is_cancelled() {
        return Err(ApiError::Unavailable {
            code: "shutting_down",
            message: "this gateway is shutting down and takes no new tasks; retry shortly".into(),
            retry_after_secs: 2,
        });
    }
    Ok(())
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!("Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// `POST /v1/video/quotes`: what a create with this body would do, without doing it.
#[utoipa::path(
    post,
    path = "/v1/video/quotes",
    tag = "tasks",
    request_body = VideoRequest,
    responses(
        (status = 200, description = "The provider a create would use, its estimate, and why the others would not be used.", body = super::schema::Quote),
        (status = 422, description = "`no_capable_provider`: valid, but no configured provider can carry it.", body = super::error::ErrorBody),
    ),
)]
pub async fn quote(
    State(gw): State<Arc<Gateway>>,
    Caller(_key): Caller,
    ValidJson(req): ValidJson<VideoRequest>,
) -> Result<Json<Value>, ApiError> {
    let plan = submit::plan_request(&gw, &req).await?;
    Ok(Json(quote_object(&req, &plan)))
}

/// What a create with `req` would do under `plan`: the quote's JSON object.
pub fn quote_object(req: &VideoRequest, plan: &routing::Plan) -> Value {
    let chosen = &plan.candidates[0];
    let fallbacks = plan.candidates.iter().enumerate().skip(1).map(|(rank, c)| {
        json!({"provider": c.upstream.name, "estimated_usd": c.estimate_usd, "rank": rank + 1,
               "status": "fallback", "reason": "tried next if the providers before it refuse"})
    });
    let passed = plan.passed_over.iter().map(|p| {
        json!({"provider": p.provider, "estimated_usd": p.estimate_usd, "status": "passed_over",
               "why": p.why, "param": p.param, "reason": p.reason})
    });
    json!({
        "object": "video.quote",
        "model": req.model.as_str(),
        "provider": chosen.upstream.name,
        "estimated_usd": chosen.estimate_usd,
        "currency": "USD",
        "billed_seconds": routing::billed_seconds(req),
        "reason": plan.reason_for(0),
        "alternatives": fallbacks.chain(passed).collect::<Vec<_>>(),
    })
}

/// One task, from the store (or, once finished, this process's cache of it), with its
/// status history and submit attempts. With `Accept: text/event-stream`, its status
/// stream (as `GET /v1/video/generations/{id}/stream`).
#[utoipa::path(
    get,
    path = "/v1/video/generations/{id}",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "The task id (`vgt_...`)."),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` of an earlier read: 304 without a body while the task still reads the same."),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): hold the answer up to min(N, 60) seconds until the task is final."),
    ),
    responses(
        (status = 200, description = "The task.", body = super::schema::TaskDetail,
         headers(("ETag" = String, description = "The read's validator, for `If-None-Match`."),
                 ("Preference-Applied" = String, description = "`wait=N` when a `Prefer: wait` was honoured."))),
        (status = 304, description = "Not modified: `If-None-Match` named the task's current `ETag`."),
        (status = 400, description = "`invalid_request` with param `Prefer`: `wait` is not whole seconds.", body = super::error::ErrorBody),
    ),
)]
pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    slots: Option<Extension<HeldSlots>>,
) -> Result<Response, ApiError> {
    if super::stream::asks_for_stream(&headers) {
        return super::stream::open(gw, key.id, id, &headers).await;
    }
    let wait = live::wait_secs(&headers)?;
    let mut read = live::current_read(&gw, &key.id, &id).await?;
    if let (Some(secs), Some(mark)) = (wait, read.mark.clone()) {
        let slots = slots.as_ref().map(|Extension(s)| s);
        live::hold_until_final(&gw, &key.id, &id, mark, secs, slots).await?;
        read = live::current_read(&gw, &key.id, &id).await?;
    }
    Ok(live::answer(&headers, read, wait))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The query form one provider uses: `?task_id=` reads one task (then the answer is
    /// that task, as `GET /v1/video/generations/{id}` gives it).
    task_id: Option<String>,
    /// Only tasks in this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The id of the last task of the previous page.
    cursor: Option<String>,
}

/// The caller's tasks, newest first, a page at a time; or one task with `?task_id=`.
#[utoipa::path(
    get,
    path = "/v1/video/generations",
    tag = "tasks",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tasks (or, with `task_id`, that one task).",
         body = super::schema::TaskListOrTask),
        (status = 404, description = "`not_found`: with `task_id`, no such task for this key.", body = super::error::ErrorBody),
    ),
)]
pub async fn list_or_query(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    if let Some(id) = params.task_id {
        return detailed(&gw, &key.id, &id).await.map(Json);
    }
    let status = params
        .status
        .map(|s| {
            TaskStatus::parse(&s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "status must be one of queued, in_progress, completed, failed",
                )
            })
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    let cursor =
        match params.cursor {
            Some(c) => Some(gw.store.task_for_owner(&key.id, &c).await?.ok_or_else(|| {
                ApiError::invalid("cursor", "cursor is not one of your task ids")
            })?),
            None => None,
        };
    let page = gw
        .store
        .list_tasks(&key.id, status, cursor.as_ref(), limit)
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": page.tasks.iter().map(task_object).collect::<Vec<_>>(),
        "has_more": page.has_more,
        "next_cursor": if page.has_more { page.tasks.last().map(|t| t.id.clone()) } else { None },
    })))
}

/// One task with its status history and submit attempts.
async fn detailed(gw: &Gateway, owner: &str, id: &str) -> Result<Value, ApiError> {
    detailed_with_mark(gw, owner, id).await.map(|(obj, _)| obj)
}

/// `detailed`, and the task's mark as read (to watch it from).
pub(super) async fn detailed_with_mark(
    gw: &Gateway,
    owner: &str,
    id: &str,
) -> Result<(Value, TaskMark), ApiError> {
    let detail = gw
        .store
        .task_detail_for_owner(owner, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    let mark = TaskMark::of(&detail.task);
    let mut obj = with_queue_position(gw, task_object(&detail.task), &detail.task).await?;
    let (history, attempts) = (detail.history, detail.attempts);
    obj["status_history"] = json!(history
        .iter()
        .map(|c| json!({"status": c.status, "at": unix_secs(c.at)}))
        .collect::<Vec<_>>());
    obj["attempts"] = json!(attempts
        .iter()
        .map(|a| {
            let mut v = json!(a);
            v["at"] = json!(unix_secs(a.at));
            v
        })
        .collect::<Vec<_>>());
    Ok((obj, mark))
}

/// A waiting task's `queue.position`: 1 starts next. Read only for a waiting task (an
/// index range count), so other reads cost nothing more.
async fn with_queue_position(
    gw: &Gateway,
    mut obj: Value,
    t: &TaskRecord,
) -> Result<Value, ApiError> {
    if let Some(spot) = &t.queue {
        obj["queue"]["position"] = json!(gw.store.queue_position(spot.tag).await?);
    }
    Ok(obj)
}
