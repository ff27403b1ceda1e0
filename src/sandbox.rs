//! The built-in sandbox upstream: a loopback server that speaks the modellix, Kling and
//! apimodels dialects, so a fresh install can run a task end to end with no credentials.
//! Every task it serves is marked `"sandbox": true`; its videos are not real.
//!
//! It keeps no state: a task id carries its creation time, and the task's status is
//! derived from the time since, so sandbox tasks survive a gateway restart like real ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::config::{Credential, Dialect, PriceTable, ProviderConfig, Secret};
use crate::domain::Model;
use crate::store::now_ms;

pub const SANDBOX_KEY: &str = "sandbox";

pub struct Sandbox {
    pub addr: SocketAddr,
    pub server: JoinHandle<()>,
}

#[derive(Clone, Copy)]
struct Timing {
    task_ms: i64,
    /// The sandbox's own address: finished tasks' videos are served from it.
    addr: SocketAddr,
}

/// Every sandbox task's "video": a real 3-second clip (a test pattern), so a browser can
/// play a sandbox result end to end.
const CLIP: &[u8] = include_bytes!("assets/sandbox-clip.webm");

pub async fn start(task_seconds: f64) -> anyhow::Result<Sandbox> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let timing = Timing {
        task_ms: (task_seconds * 1000.0) as i64,
        addr,
    };
    let app = Router::new()
        .route("/api/v1/kling/{slug}/async", post(modellix_create))
        .route("/api/v1/tasks/{id}", get(modellix_query))
        .route(
            "/kling/v1/videos/omni-video",
            post(kling_create).get(kling_list),
        )
        .route("/kling/v1/videos/omni-video/{id}", get(kling_query))
        .route(
            "/api/v1/video/generations",
            post(apimodels_create).get(apimodels_query),
        )
        .route("/videos/{file}", get(clip))
        .with_state(timing);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "sandbox upstream stopped");
        }
    });
    Ok(Sandbox { addr, server })
}

/// One sandbox provider per dialect, priced like apimodels' list (modellix a little
/// cheaper, Kling a little dearer) so routing has a real choice to make.
pub fn provider_configs(addr: SocketAddr) -> Vec<(String, ProviderConfig)> {
    let base = PriceTable {
        std: Some(0.0633),
        std_sound: Some(0.0956),
        std_keep_sound: Some(0.0853),
        pro: Some(0.0853),
        pro_sound: Some(0.1280),
        pro_keep_sound: Some(0.1059),
    };
    let scaled = |f: f64| PriceTable {
        std: base.std.map(|p| p * f),
        std_sound: base.std_sound.map(|p| p * f),
        std_keep_sound: base.std_keep_sound.map(|p| p * f),
        pro: base.pro.map(|p| p * f),
        pro_sound: base.pro_sound.map(|p| p * f),
        pro_keep_sound: base.pro_keep_sound.map(|p| p * f),
    };
    [
        ("sandbox-modellix", Dialect::Modellix, 0.9),
        ("sandbox-apimodels", Dialect::Apimodels, 1.0),
        ("sandbox-kling", Dialect::Kling, 1.1),
    ]
    .into_iter()
    .map(|(name, dialect, factor)| {
        let models = vec![Model::KlingVideoO1, Model::KlingV3Omni];
        let prices: BTreeMap<String, PriceTable> = models
            .iter()
            .map(|m| (m.as_str().to_string(), scaled(factor)))
            .collect();
        let cfg = ProviderConfig {
            dialect,
            base_url: format!("http://{addr}"),
            api_key_env: None,
            access_key_env: None,
            secret_key_env: None,
            models,
            prices,
            request_timeout_secs: 10.0,
            connect_timeout_secs: 2.0,
            poll_interval_secs: 1.0,
            priority: 0,
            path_prefix: None,
            query_path: None,
            unsupported_features: Vec::new(),
            element_id_as_string: None,
            always_send_duration: None,
            unknown_submit: Default::default(),
            max_in_flight: None,
            max_submits_per_minute: None,
            credential: Credential::Bearer(Secret::new(SANDBOX_KEY)),
            sandbox: true,
        };
        (name.to_string(), cfg)
    })
    .collect()
}

fn new_id() -> String {
    format!(
        "sbx-{}-{}",
        now_ms(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

enum Phase {
    Queued,
    Processing,
    Done(String),
}

fn phase(t: Timing, id: &str) -> Option<Phase> {
    let created: i64 = id.strip_prefix("sbx-")?.split('-').next()?.parse().ok()?;
    let elapsed = now_ms() - created;
    Some(if elapsed < t.task_ms / 4 {
        Phase::Queued
    } else if elapsed < t.task_ms {
        Phase::Processing
    } else {
        Phase::Done(format!("http://{}/videos/{id}.webm", t.addr))
    })
}

async fn clip() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "video/webm")], CLIP)
}

fn not_found() -> (axum::http::StatusCode, Json<Value>) {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(json!({"code": 404, "message": "task not found", "msg": "task not found"})),
    )
}

/// Answers as modellix's document shows: `get_result.url` absolute, on its own host.
async fn modellix_create(State(t): State<Timing>, Path(slug): Path<String>) -> Json<Value> {
    let id = new_id();
    let result_url = format!("http://{}/api/v1/tasks/{id}", t.addr);
    Json(json!({"code": 0, "message": "success", "data": {
        "status": "pending", "task_id": id, "model_id": slug,
        "get_result": {"method": "GET", "url": result_url}}}))
}

async fn modellix_query(
    State(t): State<Timing>,
    Path(id): Path<String>,
) -> Result<Json<Value>, (axum::http::StatusCode, Json<Value>)> {
    let (status, resources) = match phase(t, &id).ok_or_else(not_found)? {
        Phase::Queued => ("pending", json!([])),
        Phase::Processing => ("processing", json!([])),
        Phase::Done(url) => ("success", json!([{"url": url, "type": "video"}])),
    };
    Ok(Json(json!({"code": 0, "message": "success", "data": {
        "status": status, "task_id": id, "model_id": "sandbox", "result": {"resources": resources}}})))
}

fn kling_task(t: Timing, id: &str, external: Option<&str>) -> Option<Value> {
    let (status, result) = match phase(t, id)? {
        Phase::Queued => ("submitted", json!({})),
        Phase::Processing => ("processing", json!({})),
        Phase::Done(url) => (
            "succeed",
            json!({"videos": [{"id": id, "url": url, "duration": "5.041"}]}),
        ),
    };
    Some(
        json!({"task_id": id, "task_status": status, "task_status_msg": "",
        "task_info": {"external_task_id": external}, "task_result": result,
        "created_at": now_ms(), "updated_at": now_ms()}),
    )
}

async fn kling_create(State(t): State<Timing>, Json(body): Json<Value>) -> Json<Value> {
    let id = new_id();
    let external = body.get("external_task_id").and_then(Value::as_str);
    Json(
        json!({"code": 0, "message": "SUCCEED", "request_id": new_id(), "data": kling_task(t, &id, external)}),
    )
}

async fn kling_query(
    State(t): State<Timing>,
    Path(id): Path<String>,
) -> Result<Json<Value>, (axum::http::StatusCode, Json<Value>)> {
    let task = kling_task(t, &id, None).ok_or_else(not_found)?;
    Ok(Json(
        json!({"code": 0, "message": "SUCCEED", "request_id": new_id(), "data": task}),
    ))
}

/// Stateless, so it remembers no tasks: a lookup by external id finds none.
async fn kling_list() -> Json<Value> {
    Json(json!({"code": 0, "message": "SUCCEED", "request_id": new_id(), "data": []}))
}

async fn apimodels_create(Json(body): Json<Value>) -> Json<Value> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Json(json!({"code": 200, "msg": "success", "data": {
        "taskId": new_id(), "state": "pending", "model": format!("kling-video/{model}")}}))
}

async fn apimodels_query(
    State(t): State<Timing>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, (axum::http::StatusCode, Json<Value>)> {
    let id = q.get("task_id").ok_or_else(not_found)?;
    let mut data = json!({"taskId": id, "model": "kling-video/sandbox", "createTime": now_ms()});
    match phase(t, id).ok_or_else(not_found)? {
        Phase::Queued => data["state"] = json!("pending"),
        Phase::Processing => data["state"] = json!("processing"),
        Phase::Done(url) => {
            data["state"] = json!("completed");
            data["resultUrls"] = json!([url]);
            data["completeTime"] = json!(now_ms());
        }
    }
    Ok(Json(json!({"code": 200, "msg": "success", "data": data})))
}
