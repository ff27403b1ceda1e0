//! modellix: one path per model (`kling-video-o1`, `kling-v3-omni-video`), a flattened
//! body (`images`/`videos` as plain strings, `duration` an integer, `shot_type` only
//! `intelligence`), `{code, message}` answers whose `code` is the HTTP status on errors.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::body::{self, Fields};
use super::rules::{ASPECT_RATIOS, DEFAULT_SECONDS};
use super::{Call, NewTask, Phase, Problem, Refusal, Sim, SimError, Twist};

const O1_SLUG: &str = "kling-video-o1";
const V3_SLUG: &str = "kling-v3-omni-video";

const FIELDS: &[&str] = &[
    "prompt",
    "multi_shot",
    "shot_type",
    "images",
    "videos",
    "sound",
    "mode",
    "aspect_ratio",
    "duration",
];

pub(super) fn routes() -> Router<Sim> {
    Router::new()
        .route("/api/v1/kling/{slug}/async", post(create))
        .route("/api/v1/tasks/{task_id}", get(query))
}

pub(super) fn error(problem: Problem, message: &str) -> (u16, Value) {
    let status = match problem {
        Problem::Sim(SimError::Server) => 503,
        Problem::Sim(SimError::RateLimited | SimError::TooManyParallel) => 429,
        Problem::Sim(SimError::Billing) => 402,
        Problem::Sim(SimError::BadRequest | SimError::ContentPolicy) => 400,
        Problem::Sim(SimError::Auth) => 401,
        Problem::NotFound => 404,
    };
    (status, json!({"code": status, "message": message}))
}

async fn create(
    State(sim): State<Sim>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    sim.serve(Call::Submit, &headers, |ledger| {
        if slug != O1_SLUG && slug != V3_SLUG {
            return Err(Refusal::route(format!(
                "POST /api/v1/kling/{slug}/async: modellix serves only {O1_SLUG} and {V3_SLUG}"
            )));
        }
        let body = body::parse_object(&headers, &bytes)?;
        let seconds = check(&body, &slug)?;
        let new = NewTask {
            id: format!("task-{}", uuid::Uuid::new_v4()),
            external_id: None,
            model: slug.clone(),
            seconds,
        };
        let task = ledger.create(new, Value::Object(body));
        let answer = json!({"code": 0, "message": "success", "data": {
            "status": "pending",
            "task_id": task.id,
            "model_id": task.model,
            "get_result": {
                "method": "GET",
                "url": format!("{}/api/v1/tasks/{}", sim.base_url, task.id),
            },
        }});
        Ok(Json(answer).into_response())
    })
    .await
}

/// The documented conditional rules; answers the seconds the video will last.
fn check(body: &Map<String, Value>, slug: &str) -> Result<u32, String> {
    let f = Fields::root(body, FIELDS)?;
    f.required_str("prompt")?;
    f.text("prompt", 2500)?;
    let multi_shot = f.bool("multi_shot")?.unwrap_or(false);
    match (multi_shot, f.one_of("shot_type", &["intelligence"])?) {
        (true, None) => {
            return Err("shot_type: required (intelligence) when multi_shot is true".into())
        }
        (false, Some(_)) => {
            return Err("shot_type: must be omitted unless multi_shot is true".into())
        }
        _ => {}
    }
    if let Some(images) = f.array("images")? {
        if images.is_empty() {
            return Err("images: at least 1 item when given".into());
        }
        non_empty_strings("images", images)?;
    }
    let videos = f.array("videos")?;
    if let Some(videos) = videos {
        if videos.len() != 1 {
            return Err(format!(
                "videos: exactly 1 item when given, got {}",
                videos.len()
            ));
        }
        non_empty_strings("videos", videos)?;
    }
    let sound = f.one_of("sound", &["on", "off"])?;
    f.one_of("mode", &["std", "pro"])?;
    f.one_of("aspect_ratio", ASPECT_RATIOS)?;
    let duration = f.integer("duration")?;
    if videos.is_some() {
        if sound == Some("on") {
            return Err("sound: must be off when videos is given".into());
        }
        if duration.is_some() {
            return Err("duration: must be omitted when videos is given".into());
        }
    }
    match duration {
        None => Ok(DEFAULT_SECONDS),
        Some(d @ (5 | 10)) => Ok(d as u32),
        Some(d @ 3..=15) if slug == V3_SLUG => Ok(d as u32),
        Some(d) if slug == V3_SLUG => Err(format!("duration: {d} is outside 3..15")),
        Some(d) => Err(format!("duration: {d}; {O1_SLUG} takes only 5 or 10")),
    }
}

fn non_empty_strings(field: &str, items: &[Value]) -> Result<(), String> {
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.is_empty() => {}
            other => {
                return Err(format!(
                    "{field}[{i}]: must be a non-empty string, got {other}"
                ))
            }
        }
    }
    Ok(())
}

async fn query(
    State(sim): State<Sim>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    sim.serve(Call::Query, &headers, |ledger| {
        let twist = ledger.twist.take();
        let task = ledger.task_mut(&task_id)?;
        let phase = task.poll();
        let status = match phase {
            Phase::Queued => "pending",
            Phase::Processing { .. } => "processing",
            Phase::Succeeded => "success",
            Phase::Failed(_) => "failed",
        };
        let (status, phase) = match twist {
            Some(Twist::StateWord(word)) => (word, Phase::Queued),
            Some(Twist::NoUrl) => ("success".to_string(), Phase::Queued),
            None => (status.to_string(), phase),
        };
        let mut data = json!({"status": status, "task_id": task.id, "model_id": task.model});
        match phase {
            Phase::Succeeded => {
                let resources: Vec<Value> = (task.video_urls().into_iter())
                    .map(|url| json!({"url": url, "type": "video"}))
                    .collect();
                data["result"] = json!({ "resources": resources });
            }
            Phase::Failed(reason) => data["error"] = json!(reason),
            _ => {}
        }
        Ok(Json(json!({"code": 0, "message": "success", "data": data})).into_response())
    })
    .await
}
