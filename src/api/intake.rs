//! The upstream intake: the callbacks providers make on `/upstream/callbacks/{token}` when
//! a task of theirs changes state. Authenticated by the task's unguessable token alone
//! (providers sign nothing), so it sits outside the API-key routes.
//!
//! A callback is a hint, never the record: WIRE-NOTES says to re-read the task before
//! trusting the body, and the bodies are unsigned. One that says the task moved ahead of
//! what omnigate holds makes the task due for a poll now, and the poller reads the
//! provider and records what it says through the same code as every other poll. So a
//! repeat, a stale or out-of-order body, or one about a finished task changes nothing; the
//! provider still gets 200, since it retries anything else.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::admin::same_secret;
use super::error::ApiError;
use crate::domain::TaskStatus;
use crate::gateway::Gateway;
use crate::providers::{ErrorKind, Provider};
use crate::store::TaskState;

/// Length of a token as `submit` makes them: 32 bytes in unpadded base64.
const TOKEN_LEN: usize = 43;
/// A callback is one task object; anything much larger is not one.
const MAX_CALLBACK_BYTES: usize = 1024 * 1024;

/// `POST /upstream/callbacks/{token}`: 200 when taken (whether or not it moved anything),
/// 404 for a token no task has, 400 for a body that is no task of the provider's dialect.
#[utoipa::path(
    post,
    path = "/upstream/callbacks/{token}",
    tag = "upstream",
    params(("token" = String, Path, description = "The task's callback token, given to its provider with the submit.")),
    request_body(content = Object, description = "The provider's task update, in its own dialect (at most 1 MiB)."),
    responses(
        (status = 200, description = "Taken, whether or not it moved anything.", body = super::schema::CallbackReceived),
        (status = 400, description = "`invalid_request`: the body is no task update of the provider's dialect.", body = super::error::ErrorBody),
        (status = 404, description = "`not_found`: no task has this token.", body = super::error::ErrorBody),
    ),
)]
pub async fn upstream_callback(
    State(gw): State<Arc<Gateway>>,
    Path(token): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let unknown = || ApiError::NotFound("no such callback".into());
    if !is_token_shaped(&token) {
        return Err(unknown());
    }
    // The lookup goes through an index; the stored token is then compared in full in
    // constant time, so the answer's timing says nothing about how much of a guess was right.
    let (task, stored) = gw
        .store
        .task_by_callback_token(&token)
        .await?
        .ok_or_else(unknown)?;
    if !same_secret(&token, &stored) {
        return Err(unknown());
    }
    // From here on the request's logs say which task, since its path (the token) is never
    // logged.
    crate::telemetry::http::record_task_id(&task.id);
    // Read only once the token is known good, and only a callback's worth.
    let body = axum::body::to_bytes(body, MAX_CALLBACK_BYTES)
        .await
        .map_err(|_| ApiError::InvalidRequest {
            param: None,
            message: format!(
                "could not read the body (a callback is at most {MAX_CALLBACK_BYTES} bytes)"
            ),
        })?;
    let provider = task.provider.as_deref().unwrap_or_default();
    let Some(up) = gw.router.get(provider) else {
        tracing::info!(task_id = %task.id, provider, "callback for a provider no longer configured; ignored");
        return Ok(received(false));
    };
    let ours = task.provider_task_id.as_deref();
    // The span gives the verdict's log lines the task and provider they are about.
    let verdict = tracing::info_span!("upstream_callback", task_id = %task.id, provider)
        .in_scope(|| judge_callback(up.adapter.as_ref(), &body, task.state, ours));
    match verdict {
        CallbackVerdict::PollNow => Ok(received(gw.store.hasten_poll(&task.id).await?)),
        CallbackVerdict::Ignore => Ok(received(false)),
        CallbackVerdict::NotATaskUpdate => Err(ApiError::InvalidRequest {
            param: None,
            message: format!("the body is not a {provider} task update"),
        }),
    }
}

/// What a callback body makes omnigate do with the task it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackVerdict {
    /// The task may have moved ahead: poll the provider now.
    PollNow,
    /// Nothing new (a repeat, a stale body, another task): 200 and no poll.
    Ignore,
    /// Not a task update of the provider's dialect: 400.
    NotATaskUpdate,
}

/// Reads a callback `body` with the task's provider `adapter` and decides, against what
/// omnigate holds of the task (`state`, and the provider's id for it, `ours`), whether it
/// calls for a poll. Pure, so that the fuzz targets and property tests call exactly what
/// the handler calls.
pub fn judge_callback(
    adapter: &dyn Provider,
    body: &[u8],
    state: TaskState,
    ours: Option<&str>,
) -> CallbackVerdict {
    let hint = match adapter.parse_callback(body) {
        Ok(seen) => seen,
        // A state word we do not know (or "done" without a URL): something changed, and
        // the poller's read will be counted and kept as an unreadable answer if it is.
        Err(e) if e.kind == ErrorKind::Unreadable => return CallbackVerdict::PollNow,
        Err(e) => {
            tracing::info!(error = %e, "callback body refused");
            return CallbackVerdict::NotATaskUpdate;
        }
    };
    if ours.is_some_and(|id| !hint.upstream_id.is_empty() && id != hint.upstream_id) {
        tracing::warn!(upstream_id = %hint.upstream_id, "callback names another upstream task; ignored");
        return CallbackVerdict::Ignore;
    }
    let moved = rank_public(hint.status) > rank(state);
    tracing::debug!(status = ?hint.status, moved, "upstream callback");
    if moved {
        CallbackVerdict::PollNow
    } else {
        CallbackVerdict::Ignore
    }
}

fn received(poll_now: bool) -> Json<Value> {
    Json(json!({"received": true, "poll_scheduled": poll_now}))
}

/// Whether `token` could be a callback token at all; only such a path reaches the store.
pub fn is_token_shaped(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How far along a task is: a state only ever moves to a higher rank.
fn rank(state: TaskState) -> u8 {
    rank_public(state.public())
}

fn rank_public(status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Queued => 0,
        TaskStatus::InProgress => 1,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_forward_move_counts_and_finished_is_final() {
        assert!(rank_public(TaskStatus::InProgress) > rank(TaskState::Queued));
        assert!(rank_public(TaskStatus::Completed) > rank(TaskState::InProgress));
        assert!(rank_public(TaskStatus::Failed) > rank(TaskState::Submitting));
        assert!(rank_public(TaskStatus::InProgress) <= rank(TaskState::InProgress));
        assert!(rank_public(TaskStatus::Queued) <= rank(TaskState::InProgress));
        assert!(rank_public(TaskStatus::Failed) <= rank(TaskState::Completed));
        assert!(rank_public(TaskStatus::Completed) <= rank(TaskState::Failed));
    }

    #[test]
    fn only_token_shaped_paths_reach_the_store() {
        assert!(is_token_shaped(&"aA0-_".repeat(9)[..TOKEN_LEN]));
        assert!(!is_token_shaped("vgt_0123"));
        assert!(!is_token_shaped(&"a".repeat(TOKEN_LEN + 1)));
        assert!(!is_token_shaped(&format!("{}=", "a".repeat(TOKEN_LEN - 1))));
    }
}
