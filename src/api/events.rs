//! `/v1/video/generations/{id}/events`: the webhook events of a task with every delivery
//! attempt, and redelivery of one of them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::ApiError;
use crate::gateway::Gateway;
use crate::store::{Redelivery, WebhookAttempt, WebhookEvent};

/// The task's webhook events, oldest first, each with its delivery attempts.
#[utoipa::path(
    get,
    path = "/v1/video/generations/{id}/events",
    tag = "events",
    params(("id" = String, Path, description = "The task id.")),
    responses((status = 200, description = "The events.", body = super::schema::EventList)),
)]
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    own_task(&gw, &key.id, &id).await?;
    let events = gw.store.task_webhook_events(&id).await?;
    Ok(Json(json!({
        "object": "list",
        "data": events.iter().map(|(e, a)| event_object(e, a)).collect::<Vec<_>>(),
    })))
}

/// Queues one event for delivery again (at once, with a fresh schedule).
#[utoipa::path(
    post,
    path = "/v1/video/generations/{id}/events/{event_id}/redeliver",
    tag = "events",
    params(
        ("id" = String, Path, description = "The task id."),
        ("event_id" = String, Path, description = "The event id."),
    ),
    responses(
        (status = 202, description = "Queued: the event, with its delivery attempts so far.", body = super::schema::EventObject),
        (status = 422, description = "`event_in_flight`: the event is being delivered right now.", body = super::error::ErrorBody),
    ),
)]
pub async fn redeliver(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    own_task(&gw, &key.id, &id).await?;
    match gw.store.redeliver_webhook_event(&id, &event_id).await? {
        Redelivery::Queued(event) => {
            let attempts = attempts_so_far(&gw, &id, &event.id).await?;
            Ok((StatusCode::ACCEPTED, Json(event_object(&event, &attempts))))
        }
        Redelivery::NotFound => Err(ApiError::NotFound(format!(
            "no event {event_id} for task {id}"
        ))),
        Redelivery::InFlight => Err(ApiError::Unprocessable {
            code: "event_in_flight",
            param: None,
            message: format!(
                "event {event_id} is being delivered right now; ask again once its attempt is listed"
            ),
            provider_message: None,
        }),
    }
}

/// The delivery attempts the event has had so far (the new schedule's first may be among
/// them already), so the answer to a redelivery shows what it follows.
async fn attempts_so_far(
    gw: &Gateway,
    task_id: &str,
    event_id: &str,
) -> Result<Vec<WebhookAttempt>, ApiError> {
    Ok(gw
        .store
        .task_webhook_events(task_id)
        .await?
        .into_iter()
        .find(|(e, _)| e.id == event_id)
        .map(|(_, attempts)| attempts)
        .unwrap_or_default())
}

/// Another key's task does not exist.
async fn own_task(gw: &Gateway, owner: &str, id: &str) -> Result<(), ApiError> {
    gw.store
        .task_for_owner(owner, id)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn event_object(e: &WebhookEvent, attempts: &[WebhookAttempt]) -> Value {
    json!({
        "id": e.id,
        "object": "webhook.event",
        "type": e.kind,
        "url": e.url,
        "progress": e.progress,
        "state": e.state,
        "created_at": secs(e.created_at),
        "next_attempt_at": (e.state == "pending").then(|| secs(e.next_attempt_at)),
        "delivered_at": e.delivered_at.map(secs),
        "attempts": attempts.iter().map(|a| json!({
            "at": secs(a.at),
            "status_code": a.status_code,
            "latency_ms": a.latency_ms,
            "error": a.error,
            "response_excerpt": a.response_excerpt,
        })).collect::<Vec<_>>(),
    })
}
