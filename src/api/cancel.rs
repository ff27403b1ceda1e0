//! `POST /v1/video/generations/{id}/cancel`: a task still waiting in omnigate's queue ends
//! `cancelled`, nothing charged. Once a provider has a task it cannot be cancelled: no
//! reseller offers a cancel, and the provider bills it either way.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use super::auth::Caller;
use super::error::ApiError;
use crate::gateway::Gateway;
use crate::store::TaskState;

/// Cancels a waiting task; cancelling a cancelled task answers it again.
#[utoipa::path(
    post,
    path = "/v1/video/generations/{id}/cancel",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id (`vgt_...`).")),
    responses(
        (status = 200, description = "The task, `cancelled` (also when it already was): nothing is charged, its budget reservation is released, and a `video.generation.cancelled` event is sent to its `callback_url`.", body = super::schema::TaskObject),
        (status = 404, description = "`not_found`: no such task for this key.", body = super::error::ErrorBody),
        (status = 409, description = "`not_cancellable`: a provider has the task (no reseller offers a cancel), it is being submitted right now, or it has finished.", body = super::error::ErrorBody),
    ),
)]
pub async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    gw.store
        .end_waiting(&id, Some(&key.id), TaskState::Cancelled, None)
        .await?;
    let task = gw
        .store
        .task_for_owner(&key.id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    match task.state {
        TaskState::Cancelled => Ok(Json(crate::task_view::task_object(&task))),
        TaskState::Waiting | TaskState::Submitting => Err(ApiError::NotCancellable(format!(
            "task {id} is being submitted to a provider right now; read it again shortly"
        ))),
        _ => Err(ApiError::NotCancellable(format!(
            "task {id} is no longer waiting ({}): once a provider has a task it cannot be \
             cancelled, as no reseller offers a cancel",
            task.state.public().as_str()
        ))),
    }
}
