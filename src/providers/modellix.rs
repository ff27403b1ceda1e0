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
    /// modellix takes no `callback_url`: the URL is not sent and its tasks are polled.
    async fn submit_with_callback(
        &self,
        _task_id: &str,
        req: &VideoRequest,
        _callback_url: Option<&str>,
    ) -> Result<Submitted, ProviderError> {
        let request = self
            .upstream
            .post(&create_path(req.model), &create_body(req));
        let base_url = self.upstream.base_url();
        self.upstream
            .call(request, |reply| read_created(reply, base_url))
            .await
    }

    async fn query(&self, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
        let (task_id, path) = result_path(upstream_id);
        let request = self.upstream.get(&path);
        self.upstream
            .call(request, |reply| read_task(reply, task_id))
            .await
            .inspect_err(|e| http::log_unreadable(&self.name, task_id, e))
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

/// Reads a create answer. Its `data.get_result.url` says where the task is read; when
/// that is not the usual `/api/v1/tasks/{task_id}`, the path travels in the upstream id
/// as `{task_id}#{path}` (see [`result_path`]). The URL is followed only on the
/// configured `base_url`'s scheme, host and port (and under its path), never elsewhere.
pub(super) fn read_created(reply: &Reply, base_url: &str) -> Result<Submitted, ProviderError> {
    let mut created =
        http::read_data_created(reply, classify_code, "task_id", "status", modellix_state)?;
    let url = reply
        .json()
        .and_then(|b| b.pointer("/data/get_result/url").and_then(http::text));
    if let Some(url) = url {
        match path_on(base_url, &url) {
            Some(path) if path == default_result_path(&created.upstream_id) => {}
            Some(path) => created.upstream_id = format!("{}#{path}", created.upstream_id),
            None => tracing::warn!(
                upstream_id = ?created.upstream_id,
                get_result = ?url,
                "get_result URL is not on the configured base_url; not following it"
            ),
        }
    }
    Ok(created)
}

fn default_result_path(task_id: &str) -> String {
    format!("/api/v1/tasks/{}", http::path_segment(task_id))
}

/// The task id and the path to read it at, from a plain task id or `{task_id}#{path}`.
/// A path can never hold `#` (a URL fragment is not sent), so the last one splits.
fn result_path(upstream_id: &str) -> (&str, String) {
    match upstream_id.rsplit_once('#') {
        Some((task_id, path)) if path.starts_with('/') && !task_id.is_empty() => {
            (task_id, path.to_string())
        }
        _ => (upstream_id, default_result_path(upstream_id)),
    }
}

/// `url`'s path and query relative to `base_url`, if `url` has the same scheme, host and
/// port and lies under the base's path; `None` for anything else (no SSRF through a
/// provider's answer). A relative URL (`/api/v1/tasks/...`, as some deployments answer
/// where the document shows an absolute one) is read against `base_url`'s origin, so it
/// is followed too, and still only where an absolute one would be.
fn path_on(base_url: &str, url: &str) -> Option<String> {
    let base = reqwest::Url::parse(base_url).ok()?;
    let url = if url.starts_with('/') && !url.starts_with("//") {
        base.join(url).ok()?
    } else {
        reqwest::Url::parse(url).ok()?
    };
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none();
    if !same_origin {
        return None;
    }
    let rest = url.path().strip_prefix(base.path().trim_end_matches('/'))?;
    if !rest.starts_with('/') {
        return None;
    }
    Some(match url.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    })
}

/// Reads a create answer (HTTP `status` and `body`) exactly as a submit does, for a
/// provider configured at `base_url`: the entry point of the fuzz targets and property
/// tests.
pub fn parse_create_answer(
    status: u16,
    body: &[u8],
    base_url: &str,
) -> Result<Submitted, ProviderError> {
    http::read_answer(status, body, |reply| read_created(reply, base_url))
}

/// Reads a task answer (HTTP `status` and `body`) about `upstream_id` exactly as a poll
/// does; for the fuzz targets and property tests.
pub fn parse_status_answer(
    status: u16,
    body: &[u8],
    upstream_id: &str,
) -> Result<UpstreamTask, ProviderError> {
    http::read_answer(status, body, |reply| {
        read_task(reply, result_path(upstream_id).0)
    })
}

pub(super) fn read_task(reply: &Reply, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
    let (body, state) = http::read_data_task(reply, classify_code, "status")?;
    let data = &body["data"];
    let observed = Observed {
        upstream_id: upstream_id.to_string(),
        status: modellix_state(&state),
        raw_state: state,
        // Its documents show only the create answer: this shape is inferred, so an
        // answer outside it comes back Unreadable rather than guessed at.
        state_field: "data.status".into(),
        // Resource field names are unconfirmed (WIRE-NOTES): `http::video` accepts `url`,
        // `video_url` or a plain string entry.
        videos: http::videos(data.pointer("/result/resources")),
        videos_field: "data.result.resources".into(),
        failure_message: failure_message(&body, data),
        progress: data.get("progress").and_then(http::progress),
    };
    observed.settle(reply)
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

    const BASE: &str = "https://api.modellix.ai";

    fn created_with_get_result(url: &str) -> String {
        let r = reply(
            200,
            json!({"code": 0, "message": "success", "data": {
                "status": "pending", "task_id": "t-1",
                "get_result": {"method": "GET", "url": url},
            }}),
        );
        read_created(&r, BASE).unwrap().upstream_id
    }

    #[test]
    fn a_get_result_path_other_than_the_usual_travels_in_the_upstream_id() {
        let id = created_with_get_result("https://api.modellix.ai/api/v2/results/t-1?full=1");
        assert_eq!(id, "t-1#/api/v2/results/t-1?full=1");
        assert_eq!(
            result_path(&id),
            ("t-1", "/api/v2/results/t-1?full=1".to_string())
        );
        // The explicit default port is the same origin.
        let id = created_with_get_result("https://API.modellix.ai:443/api/v1/tasks/t-1");
        assert_eq!(id, "t-1");
        assert_eq!(result_path("t-1"), ("t-1", "/api/v1/tasks/t-1".to_string()));
    }

    #[test]
    fn a_relative_get_result_url_is_read_against_the_base_url() {
        assert_eq!(created_with_get_result("/api/v1/tasks/t-1"), "t-1");
        let id = created_with_get_result("/api/v2/results/t-1?full=1");
        assert_eq!(id, "t-1#/api/v2/results/t-1?full=1");
        // Relative to the origin, so under a base with a path it must still lie below it.
        assert_eq!(path_on("http://h:1/mx", "/mx/t"), Some("/t".into()));
        assert_eq!(path_on("http://h:1/mx", "/other/t"), None);
        // A network-path reference names another host: never followed.
        assert_eq!(
            created_with_get_result("//evil.example/api/v2/results/t-1"),
            "t-1"
        );
        assert_eq!(path_on(BASE, "//evil.example/api/v1/tasks/t-1"), None);
    }

    #[test]
    fn a_get_result_url_off_the_configured_origin_is_never_followed() {
        for url in [
            "http://api.modellix.ai/api/v2/results/t-1",
            "https://evil.example/api/v2/results/t-1",
            "https://api.modellix.ai:8443/api/v2/results/t-1",
            "https://api.modellix.ai.evil.example/api/v2/results/t-1",
            "https://user@api.modellix.ai/api/v2/results/t-1",
            "not a url",
        ] {
            assert_eq!(created_with_get_result(url), "t-1", "{url}");
        }
        // Under a base with a path, only URLs below that path are followed.
        assert_eq!(path_on("http://h:1/mx", "http://h:1/other/t"), None);
        assert_eq!(
            path_on("http://h:1/mx/", "http://h:1/mx/t"),
            Some("/t".into())
        );
        assert_eq!(path_on("http://h:1/mx", "http://h:1/mxx/t"), None);
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
            read_created(&r, BASE).unwrap(),
            Submitted {
                upstream_id: "task-v2v-def456".into(),
                status: TaskStatus::Queued
            }
        );
        let err = read_created(&reply(200, json!({"code": 0, "data": {}})), BASE).unwrap_err();
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
            let err = read_created(&r, BASE).unwrap_err();
            assert_eq!(err.kind, kind, "HTTP {status}");
            assert_eq!(err.message, "insufficient");
            assert_eq!(err.code, Some(status.to_string()));
            assert_eq!(err.http_status, Some(status));
        }
    }

    #[test]
    fn error_code_in_a_200_body_is_an_error() {
        let r = reply(200, json!({"code": 402, "message": "balance"}));
        let err = read_created(&r, BASE).unwrap_err();
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

    fn unreadable(data: Value) -> ProviderError {
        let body = json!({"code": 0, "message": "success", "data": data});
        read_task(&reply(200, body), "t1").expect_err("answer is unreadable")
    }

    #[test]
    fn an_unknown_state_word_is_unreadable_with_the_body_kept() {
        let err = unreadable(json!({"status": "frobbing", "task_id": "t1"}));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(err.message, r#"data.status: unknown state word "frobbing""#);
        assert!(!err.ambiguous);
        let raw = err.raw_body.expect("raw body kept");
        assert!(raw.contains(r#""frobbing""#), "{raw}");
        let err = unreadable(json!({"task_id": "t1"}));
        assert_eq!(err.message, r#"data.status: unknown state word """#);
    }

    #[test]
    fn success_without_resources_is_unreadable() {
        let err =
            unreadable(json!({"status": "success", "task_id": "t1", "result": {"resources": []}}));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data.result.resources: no video URL although the task says "success""#
        );
    }

    #[test]
    fn a_huge_unreadable_answer_keeps_about_two_kib_cut_on_a_char_boundary() {
        let err = unreadable(json!({"status": "frobbing", "pad": "é".repeat(3000)}));
        let raw = err.raw_body.unwrap();
        assert!(raw.len() <= 2048 && raw.len() > 2000, "{}", raw.len());
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
