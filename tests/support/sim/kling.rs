//! Kling's own dialect and its two resellers. Kling's host: no path prefix, JWT auth.
//! kkiai: the same under `/kling` with a bearer key. anyfast: `/kling`, kling-v3-omni only,
//! an OpenAI-like create answer and a relay wrapper around the envelope on queries, which
//! it serves at `/kling/v1/videos/text2video/{task_id}`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::rules::{self, ContentRule, Shape};
use super::{
    body, Call, CallbackStyle, NewTask, Phase, Problem, Refusal, Sim, SimDialect, SimError,
    SimTask, Twist,
};

/// The top-level keys of Kling's create body.
const FIELDS: &[&str] = &[
    "model_name",
    "prompt",
    "negative_prompt",
    "mode",
    "aspect_ratio",
    "duration",
    "multi_shot",
    "shot_type",
    "multi_prompt",
    "image_list",
    "element_list",
    "video_list",
    "sound",
    "watermark_info",
    "callback_url",
    "external_task_id",
    "cfg_scale",
];

fn shape(dialect: SimDialect) -> Shape {
    let anyfast = dialect == SimDialect::Anyfast;
    Shape {
        model_field: "model_name",
        models: if anyfast {
            &[rules::V3]
        } else {
            &[rules::O1, rules::V3]
        },
        fields: FIELDS,
        // anyfast documents defaults for both; kkiai (Kling's body) marks them Required.
        mode_and_duration_required: !anyfast,
        duration_on_base_edit: dialect == SimDialect::Kkiai,
        element_id_string: dialect == SimDialect::Kkiai,
        content: ContentRule::PromptUnlessMultiShot,
    }
}

pub(super) fn routes(dialect: SimDialect) -> Router<Sim> {
    let prefix = if dialect == SimDialect::KlingOfficial {
        ""
    } else {
        "/kling"
    };
    let tasks = format!("{prefix}/v1/videos/omni-video");
    let router = Router::new().route(&tasks, post(create).get(list));
    if dialect == SimDialect::Anyfast {
        router.route("/kling/v1/videos/{action}/{task_id}", get(relay_query))
    } else {
        router.route(&format!("{tasks}/{{task_id}}"), get(query))
    }
}

/// Kling's error envelope: the HTTP status and the `code` callers are told to branch on.
pub(super) fn error(problem: Problem, message: &str) -> (u16, Value) {
    let (status, code) = match problem {
        Problem::Sim(SimError::Server) => (500, 5000),
        Problem::Sim(SimError::RateLimited) => (429, 1302),
        Problem::Sim(SimError::TooManyParallel) => (429, 1303),
        Problem::Sim(SimError::Billing) => (429, 1102),
        Problem::Sim(SimError::BadRequest) => (400, 1201),
        Problem::Sim(SimError::ContentPolicy) => (400, 1301),
        Problem::Sim(SimError::Auth) => (401, 1000),
        Problem::NotFound => (404, 1203),
    };
    let body = json!({"code": code, "message": message, "request_id": request_id()});
    (status, body)
}

async fn create(State(sim): State<Sim>, headers: HeaderMap, bytes: Bytes) -> Response {
    sim.serve(Call::Submit, &headers, |ledger| {
        let body = body::parse_object(&headers, &bytes)?;
        let accepted = rules::check(&body, &shape(sim.dialect))?;
        if let Some(external_id) = accepted.external_task_id {
            if ledger.external_id_taken(external_id) {
                return Err(Refusal::rule(format!(
                    "external_task_id: {external_id:?} is already used by a task of this account"
                )));
            }
        }
        let new = NewTask {
            id: super::numeric_id(),
            external_id: accepted.external_task_id.map(str::to_string),
            model: accepted.model.to_string(),
            seconds: ledger.output_seconds(&accepted),
        };
        let task = ledger.create(new, Value::Object(body.clone()));
        let answer = if sim.dialect == SimDialect::Anyfast {
            json!({
                "id": task.id,
                "task_id": task.id,
                "object": "video",
                "model": task.model,
                "status": "SUBMITTED",
                "progress": 0,
                "created_at": task.created_ms / 1000,
            })
        } else {
            envelope(json!({
                "task_id": task.id,
                "task_status": "submitted",
                "task_info": task_info(task),
                "created_at": task.created_ms,
                "updated_at": task.updated_ms,
            }))
        };
        Ok(Json(answer).into_response())
    })
    .await
}

async fn query(
    State(sim): State<Sim>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    sim.serve(Call::Query, &headers, |ledger| {
        let twist = ledger.twist.take();
        // Kling's query page: the path takes the task_id or the external_task_id.
        let task = ledger.task_by_either_id_mut(&task_id)?;
        let phase = task.poll();
        let mut answer = task_object(task, &phase);
        apply_twist(&mut answer, twist.as_ref());
        Ok(Json(envelope(answer)).into_response())
    })
    .await
}

/// Bends a task object as a [`Twist`] says.
fn apply_twist(task: &mut Value, twist: Option<&Twist>) {
    match twist {
        Some(Twist::StateWord(word)) => task["task_status"] = json!(word),
        Some(Twist::NoUrl) => {
            task["task_status"] = json!("succeed");
            task["task_result"] = json!({});
        }
        None => {}
    }
}

async fn relay_query(
    State(sim): State<Sim>,
    Path((action, task_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    sim.serve(Call::Query, &headers, |ledger| {
        let twist = ledger.twist.take();
        if action != "text2video" {
            return Err(Refusal::route(format!(
                "GET /kling/v1/videos/{action}/{{task_id}}: anyfast answers omni-video \
                 queries at /kling/v1/videos/text2video/{{task_id}}"
            )));
        }
        let Ok(task) = ledger.task_mut(&task_id) else {
            let body = json!({"code": "task_not_exist", "message": format!("task {task_id} does not exist")});
            return Ok((StatusCode::NOT_FOUND, Json(body)).into_response());
        };
        let phase = task.poll();
        let (status, progress, fail_reason) = match &phase {
            Phase::Queued => ("SUBMITTED", 0, ""),
            Phase::Processing { progress } => ("PROCESSING", *progress, ""),
            Phase::Succeeded => ("SUCCESS", 100, ""),
            Phase::Failed(reason) => ("FAILED", 100, reason.as_str()),
        };
        let status = match &twist {
            Some(Twist::StateWord(word)) => word.as_str(),
            Some(Twist::NoUrl) => "SUCCESS",
            None => status,
        };
        let mut inner = task_object(task, &phase);
        apply_twist(&mut inner, twist.as_ref());
        let wrapper = json!({
            "code": "success",
            "message": "",
            "data": {
                "task_id": task.id,
                "status": status,
                "fail_reason": fail_reason,
                "progress": format!("{progress}%"),
                "submit_time": task.created_ms / 1000,
                "finish_time": task.finished_ms.map_or(0, |ms| ms / 1000),
                "data": envelope(inner),
            }
        });
        Ok(Json(wrapper).into_response())
    })
    .await
}

/// `GET .../omni-video?pageNum=N&pageSize=M`: the account's tasks, newest first. Reading a
/// task here does not advance its script.
async fn list(
    State(sim): State<Sim>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    sim.serve(Call::Query, &headers, |ledger| {
        ledger.list_count += 1;
        let page = page_param(&params, "pageNum", 1, 1000)?;
        let size = page_param(&params, "pageSize", 30, 500)?;
        let tasks: Vec<Value> = ledger
            .tasks
            .iter()
            .rev()
            .skip((page - 1) * size)
            .take(size)
            .map(|t| task_object(t, &t.phase()))
            .collect();
        Ok(Json(envelope(Value::Array(tasks))).into_response())
    })
    .await
}

fn page_param(
    params: &HashMap<String, String>,
    key: &str,
    default: usize,
    most: usize,
) -> Result<usize, Refusal> {
    let Some(text) = params.get(key) else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=most).contains(n))
        .ok_or_else(|| Refusal::rule(format!("{key}: {text:?} is not a whole number 1..{most}")))
}

fn envelope(data: Value) -> Value {
    json!({"code": 0, "message": "SUCCEED", "request_id": request_id(), "data": data})
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn task_info(task: &SimTask) -> Value {
    match &task.external_id {
        Some(external_id) => json!({"external_task_id": external_id}),
        None => json!({}),
    }
}

/// What Kling POSTs to a `callback_url` on every status change: the task object, flat or
/// in its envelope.
pub(super) fn callback_body(task: &SimTask, phase: &Phase, style: CallbackStyle) -> Value {
    let object = task_object(task, phase);
    match style {
        CallbackStyle::Flat => object,
        CallbackStyle::Enveloped => envelope(object),
    }
}

fn task_object(task: &SimTask, phase: &Phase) -> Value {
    let (status, message) = match phase {
        Phase::Queued => ("submitted", ""),
        Phase::Processing { .. } => ("processing", ""),
        Phase::Succeeded => ("succeed", ""),
        Phase::Failed(reason) => ("failed", reason.as_str()),
    };
    let result = if *phase == Phase::Succeeded {
        let videos: Vec<Value> = (task.video_urls().into_iter().enumerate())
            .map(|(i, url)| {
                json!({
                    "id": format!("{}{}", task.id, i + 1),
                    "url": url,
                    "duration": task.video_duration(),
                })
            })
            .collect();
        json!({ "videos": videos })
    } else {
        json!({})
    };
    json!({
        "task_id": task.id,
        "task_status": status,
        "task_status_msg": message,
        "task_info": task_info(task),
        "task_result": result,
        "created_at": task.created_ms,
        "updated_at": task.updated_ms,
    })
}
