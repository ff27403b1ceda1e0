//! The modellix dialect: a flattened body (`images`, `videos` as plain URL lists),
//! per-model create paths, a generic task endpoint, and HTTP-status error codes.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::http::{self, Observed, Reply, Upstream, Verdict};
use super::{Capabilities, Lookup, Provider, ProviderError, Submitted, UpstreamTask};
use crate::config::ProviderConfig;
use crate::domain::{Model, ShotType, TaskStatus, VideoRequest};

static CAPABILITIES: Capabilities = Capabilities {
    element_list: false,
    negative_prompt: false,
    watermark: false,
    // Plain URL lists cannot say which image is the first or the end frame.
    frame_images: false,
    // Its `videos` are videos to edit, never feature references.
    feature_video: false,
    keep_original_sound: false,
    o1_free_duration_from_references: false,
    shot_types: &[ShotType::Intelligence],
    upstream_callback: false,
    external_task_id: false,
};

pub struct Modellix {
    name: String,
    upstream: Upstream,
}

impl Modellix {
    pub fn new(name: &str, cfg: &ProviderConfig) -> anyhow::Result<Self> {
        Ok(Modellix {
            name: name.to_string(),
            upstream: Upstream::new(cfg)?,
        })
    }
}

#[async_trait]
impl Provider for Modellix {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    /// `task_id` is not sent: modellix has no `external_task_id`.
    async fn submit(&self, _task_id: &str, req: &VideoRequest) -> Result<Submitted, ProviderError> {
        let request = self
            .upstream
            .post(&create_path(req.model), &create_body(req));
        self.upstream.call(request, read_created).await
    }

    async fn query(&self, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
        let path = format!("/api/v1/tasks/{}", http::path_segment(upstream_id));
        let request = self.upstream.get(&path);
        self.upstream
            .call(request, |reply| read_task(reply, upstream_id))
            .await
    }

    async fn find_by_external_id(&self, _task_id: &str) -> Result<Lookup, ProviderError> {
        Err(http::no_external_id_lookup(&self.name))
    }
}

/// Note the `-video` in the v3 slug, which the o1 slug lacks.
fn create_path(model: Model) -> String {
    let slug = match model {
        Model::KlingVideoO1 => "kling-video-o1",
        Model::KlingV3Omni => "kling-v3-omni-video",
    };
    format!("/api/v1/kling/{slug}/async")
}

/// The flattened create body. `multi_shot` and `shot_type` go only for a multi-shot
/// request (modellix wants `shot_type` omitted otherwise); `duration` is an integer and
/// is left out whenever a video is given.
pub fn create_body(req: &VideoRequest) -> Value {
    let mut body = Map::new();
    if let Some(prompt) = &req.prompt {
        body.insert("prompt".into(), json!(prompt));
    }
    body.insert("mode".into(), json!(req.mode().as_str()));
    if let Some(ratio) = req.aspect_ratio {
        body.insert("aspect_ratio".into(), json!(ratio.as_str()));
    }
    if req.video_list.is_empty() {
        if let Some(seconds) = req.output_seconds() {
            body.insert("duration".into(), json!(seconds));
        }
    }
    body.insert("sound".into(), json!(req.sound().as_str()));
    if req.is_multi_shot() {
        body.insert("multi_shot".into(), json!(true));
        body.insert("shot_type".into(), json!("intelligence"));
    }
    if !req.image_list.is_empty() {
        let images = req.image_list.iter();
        let images = images.map(|i| json!(super::kling::raw_image(&i.image_url)));
        body.insert("images".into(), Value::Array(images.collect()));
    }
    if !req.video_list.is_empty() {
        let videos = req.video_list.iter().map(|v| json!(v.video_url));
        body.insert("videos".into(), Value::Array(videos.collect()));
    }
    Value::Object(body)
}

/// `{code: 0, ...}` is success; other codes repeat the HTTP status.
fn classify_code(code: &Value) -> Option<Verdict> {
    http::classify_http_like(code, 0)
}

pub(super) fn read_created(reply: &Reply) -> Result<Submitted, ProviderError> {
    http::read_data_created(reply, classify_code, "task_id", "status", modellix_state)
}

pub(super) fn read_task(reply: &Reply, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
    let (body, state) = http::read_data_task(reply, classify_code, "status")?;
    let data = &body["data"];
    let observed = Observed {
        upstream_id: upstream_id.to_string(),
        status: modellix_state(&state),
        raw_state: state,
        // Resource field names are unconfirmed (WIRE-NOTES): `http::video` accepts `url`,
        // `video_url` or a plain string entry.
        videos: http::videos(data.pointer("/result/resources")),
        failure_message: failure_message(&body, data),
        progress: data.get("progress").and_then(http::progress),
    };
    Ok(observed.settle())
}

/// Where modellix puts a failure reason is unconfirmed: `data.error` (text or
/// `{message}`), then `data.message`, then the top-level `message` unless it is the
/// generic "success".
fn failure_message(body: &Value, data: &Value) -> Option<String> {
    let error = data
        .get("error")
        .and_then(|e| http::text(e).or_else(|| e.get("message").and_then(http::text)));
    error
        .or_else(|| data.get("message").and_then(http::text))
        .or_else(|| {
            body.get("message")
                .and_then(http::text)
                .filter(|m| !m.eq_ignore_ascii_case("success"))
        })
}

/// modellix's states (WIRE-NOTES: `processing` unconfirmed), case-insensitively.
pub fn modellix_state(state: &str) -> Option<TaskStatus> {
    match state.trim().to_ascii_lowercase().as_str() {
        "pending" => Some(TaskStatus::Queued),
        "processing" => Some(TaskStatus::InProgress),
        "success" => Some(TaskStatus::Completed),
        "failed" => Some(TaskStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::VideoResult;
    use crate::providers::fixtures::{reply, request};
    use crate::providers::ErrorKind;

    #[test]
    fn each_model_has_its_own_slug() {
        assert_eq!(
            create_path(Model::KlingVideoO1),
            "/api/v1/kling/kling-video-o1/async"
        );
        assert_eq!(
            create_path(Model::KlingV3Omni),
            "/api/v1/kling/kling-v3-omni-video/async"
        );
    }

    #[test]
    fn text_to_video_body_has_integer_duration_and_no_multi_shot() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "a cat",
            "aspect_ratio": "16:9",
            "callback_url": "https://client.example/hook",
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "prompt": "a cat",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": 5,
                "sound": "off",
            })
        );
    }

    #[test]
    fn images_are_a_plain_list_with_base64_prefix_stripped() {
        let req = request(json!({
            "model": "kling-video-o1",
            "prompt": "look",
            "mode": "std",
            "duration": "10",
            "sound": "on",
            "aspect_ratio": "9:16",
            "image_list": [
                {"image_url": "data:image/jpeg;base64,/9j/4AAQ"},
                {"image_url": "https://img.example/b.png"},
            ],
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "prompt": "look",
                "mode": "std",
                "aspect_ratio": "9:16",
                "duration": 10,
                "sound": "on",
                "images": ["/9j/4AAQ", "https://img.example/b.png"],
            })
        );
    }

    #[test]
    fn video_edit_sends_one_video_and_no_duration() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "clay look",
            "video_list": [{"video_url": "https://v.example/in.mp4", "refer_type": "base"}],
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "prompt": "clay look",
                "mode": "pro",
                "sound": "off",
                "videos": ["https://v.example/in.mp4"],
            })
        );
    }

    #[test]
    fn multi_shot_goes_as_intelligence() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "a chase",
            "duration": 12,
            "aspect_ratio": "16:9",
            "multi_shot": true,
            "shot_type": "intelligence",
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "prompt": "a chase",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": 12,
                "sound": "off",
                "multi_shot": true,
                "shot_type": "intelligence",
            })
        );
    }

    #[test]
    fn create_answer_gives_the_task_id() {
        let r = reply(
            200,
            json!({"code": 0, "message": "success", "data": {
                "status": "pending", "task_id": "task-v2v-def456", "model_id": "model-123",
                "get_result": {"method": "GET", "url": "https://api.modellix.ai/api/v1/tasks/task-v2v-def456"},
            }}),
        );
        assert_eq!(
            read_created(&r).unwrap(),
            Submitted {
                upstream_id: "task-v2v-def456".into(),
                status: TaskStatus::Queued
            }
        );
        let err = read_created(&reply(200, json!({"code": 0, "data": {}}))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(err.ambiguous);
    }

    #[test]
    fn error_statuses_are_classified() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Auth),
            (402, ErrorKind::Billing),
            (404, ErrorKind::NotFound),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Retryable),
            (503, ErrorKind::Retryable),
        ];
        for (status, kind) in cases {
            let r = reply(status, json!({"code": status, "message": "insufficient"}));
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, kind, "HTTP {status}");
            assert_eq!(err.message, "insufficient");
            assert_eq!(err.code, Some(status.to_string()));
            assert_eq!(err.http_status, Some(status));
        }
    }

    #[test]
    fn error_code_in_a_200_body_is_an_error() {
        let r = reply(200, json!({"code": 402, "message": "balance"}));
        let err = read_created(&r).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Billing);
        assert!(!err.ambiguous);
    }

    fn task(data: Value) -> UpstreamTask {
        let body = json!({"code": 0, "message": "success", "data": data});
        read_task(&reply(200, body), "t1").expect("answer reads")
    }

    #[test]
    fn states_map_onto_normalized_states() {
        let states = [
            ("pending", TaskStatus::Queued),
            ("processing", TaskStatus::InProgress),
            ("failed", TaskStatus::Failed),
            ("rendering", TaskStatus::InProgress),
        ];
        for (state, want) in states {
            let t = task(json!({"status": state, "task_id": "t1", "model_id": "m"}));
            assert_eq!(t.status, want, "{state}");
        }
    }

    #[test]
    fn success_reads_resources_in_any_of_the_accepted_shapes() {
        let t = task(
            json!({"status": "success", "task_id": "t1", "result": {"resources": [
                {"url": "https://cdn/a.mp4", "duration": 5},
                {"video_url": "https://cdn/b.mp4"},
                "https://cdn/c.mp4",
            ]}}),
        );
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(
            t.videos,
            vec![
                VideoResult {
                    url: "https://cdn/a.mp4".into(),
                    duration: Some(5.0)
                },
                VideoResult {
                    url: "https://cdn/b.mp4".into(),
                    duration: None
                },
                VideoResult {
                    url: "https://cdn/c.mp4".into(),
                    duration: None
                },
            ]
        );
    }

    #[test]
    fn success_without_resources_is_still_in_progress() {
        let t = task(json!({"status": "success", "task_id": "t1", "result": {"resources": []}}));
        assert_eq!(t.status, TaskStatus::InProgress);
    }

    #[test]
    fn failure_message_comes_from_error_then_message_but_never_success() {
        let t = task(json!({"status": "failed", "error": "prompt rejected"}));
        assert_eq!(t.failure_message.as_deref(), Some("prompt rejected"));
        let t = task(json!({"status": "failed", "error": {"message": "bad video"}}));
        assert_eq!(t.failure_message.as_deref(), Some("bad video"));
        let t = task(json!({"status": "failed", "message": "timeout"}));
        assert_eq!(t.failure_message.as_deref(), Some("timeout"));
        let t = task(json!({"status": "failed"}));
        assert_eq!(t.failure_message, None);
    }

    #[test]
    fn capabilities_match_the_flattened_dialect() {
        let caps = &CAPABILITIES;
        assert!(!caps.element_list && !caps.negative_prompt && !caps.watermark);
        assert!(!caps.frame_images && !caps.feature_video && !caps.keep_original_sound);
        assert!(!caps.upstream_callback && !caps.external_task_id);
        assert_eq!(caps.shot_types, &[ShotType::Intelligence]);
    }
}
