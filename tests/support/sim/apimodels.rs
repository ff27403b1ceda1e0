//! apimodels: Kling's body under `model` (checked by the shared rules) at one path for
//! create and query, `{code, msg, data}` answers with camelCase task fields.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::rules::{self, ContentRule, Shape};
use super::{body, Call, NewTask, Phase, Problem, Refusal, Sim, SimError, SimTask, Twist};

/// The request parameters its page documents.
const SHAPE: Shape = Shape {
    model_field: "model",
    models: &[rules::O1, rules::V3],
    fields: &[
        "model",
        "prompt",
        "image_list",
        "video_list",
        "element_list",
        "mode",
        "duration",
        "sound",
        "aspect_ratio",
        "callback_url",
        "multi_shot",
        "shot_type",
        "multi_prompt",
        "watermark_info",
    ],
    mode_and_duration_required: false,
    duration_on_base_edit: false,
    element_id_string: false,
    content: ContentRule::PromptOrMedia,
};

pub(super) fn routes() -> Router<Sim> {
    Router::new().route("/api/v1/video/generations", post(create).get(query))
}

pub(super) fn error(problem: Problem, message: &str) -> (u16, Value) {
    let status = match problem {
        Problem::Sim(SimError::Server) => 500,
        Problem::Sim(SimError::RateLimited | SimError::TooManyParallel) => 429,
        Problem::Sim(SimError::Billing) => 402,
        Problem::Sim(SimError::BadRequest | SimError::ContentPolicy) => 400,
        Problem::Sim(SimError::Auth) => 401,
        Problem::NotFound => 404,
    };
    (status, json!({"code": status, "msg": message}))
}

async fn create(State(sim): State<Sim>, headers: HeaderMap, bytes: Bytes) -> Response {
    sim.serve(Call::Submit, &headers, |ledger| {
        let body = body::parse_object(&headers, &bytes)?;
        let accepted = rules::check(&body, &SHAPE)?;
        let new = NewTask {
            id: format!("cl{}", uuid::Uuid::new_v4().simple()),
            external_id: None,
            model: accepted.model.to_string(),
            seconds: accepted.seconds,
        };
        let task = ledger.create(new, Value::Object(body.clone()));
        let answer = json!({"code": 200, "msg": "success", "data": {
            "taskId": task.id,
            "state": "pending",
            "model": format!("kling-video/{}", task.model),
        }});
        Ok(Json(answer).into_response())
    })
    .await
}

async fn query(
    State(sim): State<Sim>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    sim.serve(Call::Query, &headers, |ledger| {
        let task_id = params
            .get("task_id")
            .ok_or_else(|| Refusal::rule("task_id: required query parameter"))?;
        let twist = ledger.twist.take();
        let task = ledger.task_mut(task_id)?;
        let phase = task.poll();
        let state = match phase {
            Phase::Queued => "pending",
            Phase::Processing { .. } => "processing",
            Phase::Succeeded => "completed",
            Phase::Failed(_) => "failed",
        };
        // A twisted answer carries neither result URLs nor a failure message.
        let (state, phase) = match twist {
            Some(Twist::StateWord(word)) => (word, Phase::Queued),
            Some(Twist::NoUrl) => ("completed".to_string(), Phase::Queued),
            None => (state.to_string(), phase),
        };
        let data = task_data(task, &state, &phase);
        Ok(Json(json!({"code": 200, "msg": "success", "data": data})).into_response())
    })
    .await
}

/// The `data` of a task answer, with `state` as the answer words it.
fn task_data(task: &SimTask, state: &str, phase: &Phase) -> Value {
    let mut data = json!({
        "taskId": task.id,
        "state": state,
        "model": format!("kling-video/{}", task.model),
        "createTime": task.created_ms,
    });
    if let Some(finished) = task.finished_ms {
        data["completeTime"] = json!(finished);
    }
    match phase {
        Phase::Succeeded => data["resultUrls"] = json!(task.video_urls()),
        Phase::Failed(reason) => data["failMsg"] = json!(reason),
        _ => {}
    }
    data
}

/// apimodels calls back on a terminal state only, with the body of a query answer.
pub(super) fn callback_body(task: &SimTask, phase: &Phase) -> Option<Value> {
    let state = match phase {
        Phase::Succeeded => "completed",
        Phase::Failed(_) => "failed",
        _ => return None,
    };
    let data = task_data(task, state, phase);
    Some(json!({"code": 200, "msg": "success", "data": data}))
}
