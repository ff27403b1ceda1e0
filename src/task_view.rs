//! The public task objects: what the API answers for a task and what its webhooks carry,
//! rendered from the store's `TaskRecord`. Below both `api` and `webhooks`, so a callback's
//! body is the very object a read returns.

use serde_json::{json, Value};

use crate::domain::TaskStatus;
use crate::store::{TaskRecord, TaskState};

/// The public task object (see API.md).
pub fn task_object(t: &TaskRecord) -> Value {
    let status = t.state.public();
    let mut cost = json!({"estimated_usd": t.cost_estimated_usd, "currency": "USD"});
    if let Some(f) = t.cost_final_usd {
        cost["final_usd"] = json!(f);
    }
    // Only where the provider billed more than the task reserved of its key's budget (and
    // the key was charged the reservation): the owner sees the under-estimate.
    if let Some(r) = t
        .provider_reported_usd
        .filter(|r| Some(*r) != t.cost_final_usd)
    {
        cost["provider_reported_usd"] = json!(r);
    }
    let mut obj = json!({
        "id": t.id,
        "object": "video.generation",
        "model": t.model.as_str(),
        "status": status,
        "progress": t.progress,
        "provider": t.provider,
        "cost": cost,
        "metadata": t.metadata.clone().unwrap_or_else(|| json!({})),
        "routing": {"reason": t.routing_reason},
        "created_at": unix_secs(t.created_at),
        "updated_at": unix_secs(t.updated_at),
        "completed_at": t.completed_at.map(unix_secs),
    });
    if let Some(eta) = t.eta_at.filter(|_| !status.is_terminal()) {
        obj["eta"] = json!(crate::timing::rfc3339(eta));
    }
    if t.sandbox {
        obj["sandbox"] = json!(true);
    }
    if let Some(spot) = &t.queue {
        obj["queue"] = json!({
            "waiting_since": unix_secs(spot.waiting_since),
            "max_wait_until": unix_secs(spot.max_wait_until),
        });
    }
    if status == TaskStatus::Completed {
        obj["result"] = json!({ "videos": t.videos });
        // Beside the provider's `url` (which expires), omnigate's verified copy, once made.
        let videos = obj["result"]["videos"].as_array_mut().into_iter().flatten();
        for (i, video) in videos.enumerate() {
            if let Some(bytes) = t.stored_bytes_of(i) {
                video["omnigate_url"] = json!(content_path(&t.id, i));
                video["stored_bytes"] = json!(bytes);
            }
        }
    }
    if let (TaskStatus::Failed, Some(e)) = (status, &t.error) {
        obj["error"] = json!(e);
    }
    obj
}

/// The store keeps milliseconds; the API speaks Unix seconds everywhere (`created_at` and
/// the times in `status_history` and `attempts` alike). Changes within one second keep
/// their order in the list, and an attempt's duration is in its `latency_ms`.
pub fn unix_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Where video `index` of task `id` is served (its `omnigate_url`).
pub fn content_path(id: &str, index: usize) -> String {
    match index {
        0 => format!("/v1/video/generations/{id}/content"),
        i => format!("/v1/video/generations/{id}/content?video={i}"),
    }
}

/// Kling's task object for a task: what a query answers in `data`, and the body of a
/// Kling-shaped callback. Times in milliseconds; a video's `duration` a string, as Kling
/// writes them.
pub fn kling_task_data(t: &TaskRecord, external_task_id: Option<&str>) -> Value {
    let (status, message) = match t.state.public() {
        TaskStatus::Queued => ("submitted", String::new()),
        TaskStatus::InProgress => ("processing", String::new()),
        TaskStatus::Completed => ("succeed", String::new()),
        TaskStatus::Failed => (
            "failed",
            t.error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        ),
        TaskStatus::Cancelled => ("failed", "cancelled while it waited for a provider".into()),
    };
    let mut task_info = serde_json::Map::new();
    if let Some(id) = external_task_id {
        task_info.insert("external_task_id".into(), json!(id));
    }
    let mut result = json!({});
    if t.state == TaskState::Completed {
        let videos: Vec<Value> = t
            .videos
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({
                    "id": format!("{}-{i}", t.id),
                    "url": v.url,
                    "duration": v.duration.map(|d| format!("{d:.3}")),
                })
            })
            .collect();
        result = json!({ "videos": videos });
    }
    json!({
        "task_id": t.id,
        "task_status": status,
        "task_status_msg": message,
        "task_info": task_info,
        "task_result": result,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    })
}
