//! The apimodels dialect: Kling-shaped lists under a `model` field, `{code, msg, data}`
//! answers with `taskId`/`state`/`resultUrls`, and HTTP-status error codes.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::http::{self, Observed, Reply, Upstream, Verdict};
use super::{Capabilities, Lookup, Provider, ProviderError, Submitted, UpstreamTask};
use crate::config::ProviderConfig;
use crate::domain::{TaskStatus, VideoRequest};

const GENERATIONS_PATH: &str = "/api/v1/video/generations";

static CAPABILITIES: Capabilities = Capabilities {
    element_list: true,
    negative_prompt: false,
    watermark: true,
    frame_images: true,
    feature_video: true,
    keep_original_sound: true,
    o1_free_duration_from_references: true,
    // Its document types multi_prompt as a string and needs a prompt in every request:
    // Kling's storyboard cannot be carried faithfully, so multi-shot is not offered.
    shot_types: &[],
    upstream_callback: true,
    external_task_id: false,
};

pub struct Apimodels {
    name: String,
    upstream: Upstream,
}

impl Apimodels {
    pub fn new(name: &str, cfg: &ProviderConfig) -> anyhow::Result<Self> {
        Ok(Apimodels {
            name: name.to_string(),
            upstream: Upstream::new(cfg)?,
        })
    }
}

#[async_trait]
impl Provider for Apimodels {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    /// `task_id` is not sent: apimodels has no `external_task_id`.
    async fn submit_with_callback(
        &self,
        _task_id: &str,
        req: &VideoRequest,
        callback_url: Option<&str>,
    ) -> Result<Submitted, ProviderError> {
        let mut body = create_body(req);
        http::set_callback_url(&mut body, callback_url);
        let request = self.upstream.post(GENERATIONS_PATH, &body);
        self.upstream.call(request, read_created).await
    }

    async fn query(&self, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
        let request = self
            .upstream
            .get(GENERATIONS_PATH)
            .query(&[("task_id", upstream_id)]);
        self.upstream
            .call(request, |reply| read_task(reply, upstream_id))
            .await
            .inspect_err(|e| http::log_unreadable(&self.name, upstream_id, e))
    }

    /// Its callback (terminal states only) is the `{code, msg, data}` of a query answer.
    fn parse_callback(&self, body: &[u8]) -> Result<UpstreamTask, ProviderError> {
        let reply = http::callback_reply(body);
        let named = reply
            .json()
            .and_then(|v| v.pointer("/data/taskId").and_then(http::text))
            .unwrap_or_default();
        read_task(&reply, &named).inspect_err(|e| http::log_unreadable(&self.name, &named, e))
    }

    async fn find_by_external_id(&self, _task_id: &str) -> Result<Lookup, ProviderError> {
        Err(http::no_external_id_lookup(&self.name))
    }
}

/// Kling's own fields (apimodels forwards them to Kling) under `model`. `mode` is always
/// sent because apimodels defaults to `std` where omnigate defaults to `pro`.
pub fn create_body(req: &VideoRequest) -> Value {
    let mut body = super::kling::shared_fields(req);
    body.insert("model".into(), json!(req.model.as_str()));
    Value::Object(body)
}

/// `{code: 200, msg: "success"}` is success; other codes repeat an HTTP status.
fn classify_code(code: &Value) -> Option<Verdict> {
    http::classify_http_like(code, 200)
}

pub(super) fn read_created(reply: &Reply) -> Result<Submitted, ProviderError> {
    http::read_data_created(reply, classify_code, "taskId", "state", apimodels_state)
}

/// Reads a create answer (HTTP `status` and `body`) exactly as a submit does: the entry
/// point of the fuzz targets and property tests.
pub fn parse_create_answer(status: u16, body: &[u8]) -> Result<Submitted, ProviderError> {
    http::read_answer(status, body, read_created)
}

/// Reads a task answer (HTTP `status` and `body`) about `upstream_id` exactly as a poll
/// does; for the fuzz targets and property tests.
pub fn parse_status_answer(
    status: u16,
    body: &[u8],
    upstream_id: &str,
) -> Result<UpstreamTask, ProviderError> {
    http::read_answer(status, body, |reply| read_task(reply, upstream_id))
}

pub(super) fn read_task(reply: &Reply, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
    let (body, state) = http::read_data_task(reply, classify_code, "state")?;
    let data = &body["data"];
    let observed = Observed {
        upstream_id: upstream_id.to_string(),
        status: apimodels_state(&state),
        raw_state: state,
        state_field: "data.state".into(),
        videos: http::videos(data.get("resultUrls")),
        videos_field: "data.resultUrls".into(),
        failure_message: data.get("failMsg").and_then(http::text),
        progress: data.get("progress").and_then(http::progress),
    };
    observed.settle(reply)
}

/// apimodels' states (WIRE-NOTES: `processing` unconfirmed), case-insensitively.
pub fn apimodels_state(state: &str) -> Option<TaskStatus> {
    match state.trim().to_ascii_lowercase().as_str() {
        "pending" => Some(TaskStatus::Queued),
        "processing" => Some(TaskStatus::InProgress),
        "completed" => Some(TaskStatus::Completed),
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
    fn text_to_video_body_always_sends_mode_and_a_string_duration() {
        let req = request(json!({
            "model": "kling-video-o1",
            "prompt": "a girl dancing on the beach",
            "aspect_ratio": "16:9",
            "callback_url": "https://client.example/hook",
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "model": "kling-video-o1",
                "prompt": "a girl dancing on the beach",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": "5",
                "multi_shot": false,
                "sound": "off",
            })
        );
    }

    #[test]
    fn frames_elements_and_watermark_use_kling_shapes() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "<<<element_1>>> walks",
            "duration": 6,
            "image_list": [
                {"image_url": "data:image/png;base64,AAAA", "type": "first_frame"},
                {"image_url": "https://img.example/end.png", "type": "end_frame"},
            ],
            "element_list": [{"element_id": 42}],
            "watermark": true,
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "model": "kling-v3-omni",
                "prompt": "<<<element_1>>> walks",
                "mode": "pro",
                "duration": "6",
                "multi_shot": false,
                "image_list": [
                    {"image_url": "AAAA", "type": "first_frame"},
                    {"image_url": "https://img.example/end.png", "type": "end_frame"},
                ],
                "element_list": [{"element_id": 42}],
                "sound": "off",
                "watermark_info": {"enabled": true},
            })
        );
    }

    #[test]
    fn base_video_edit_omits_duration() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "recolor",
            "video_list": [{"video_url": "https://v.example/in.mp4", "refer_type": "base", "keep_original_sound": "no"}],
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "model": "kling-v3-omni",
                "prompt": "recolor",
                "mode": "pro",
                "multi_shot": false,
                "video_list": [{"video_url": "https://v.example/in.mp4", "refer_type": "base", "keep_original_sound": "no"}],
                "sound": "off",
            })
        );
    }

    #[test]
    fn customized_multi_shot_matches_kling() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "duration": 4,
            "aspect_ratio": "9:16",
            "multi_shot": true,
            "shot_type": "customize",
            "multi_prompt": [{"prompt": "one", "duration": 2}, {"prompt": "two", "duration": 2}],
        }));
        assert_eq!(
            create_body(&req),
            json!({
                "model": "kling-v3-omni",
                "mode": "pro",
                "aspect_ratio": "9:16",
                "duration": "4",
                "multi_shot": true,
                "shot_type": "customize",
                "multi_prompt": [
                    {"index": 1, "prompt": "one", "duration": "2"},
                    {"index": 2, "prompt": "two", "duration": "2"},
                ],
                "sound": "off",
            })
        );
    }

    #[test]
    fn create_answer_gives_the_task_id() {
        let r = reply(
            200,
            json!({"code": 200, "msg": "success", "data": {
                "taskId": "clx1", "state": "pending", "model": "kling-video/kling-video-o1"}}),
        );
        assert_eq!(
            read_created(&r).unwrap(),
            Submitted {
                upstream_id: "clx1".into(),
                status: TaskStatus::Queued
            }
        );
        let err = read_created(&reply(200, json!({"code": 200, "msg": "success"}))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(err.ambiguous);
    }

    #[test]
    fn error_statuses_are_classified_with_the_provider_msg() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Auth),
            (402, ErrorKind::Billing),
            (404, ErrorKind::NotFound),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Retryable),
        ];
        for (status, kind) in cases {
            let r = reply(
                status,
                json!({"code": status, "msg": "Insufficient credits"}),
            );
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, kind, "HTTP {status}");
            assert_eq!(err.message, "Insufficient credits");
            assert_eq!(err.http_status, Some(status));
            assert_eq!(err.code, Some(status.to_string()));
        }
    }

    #[test]
    fn non_200_body_code_on_http_200_is_an_error() {
        let r = reply(200, json!({"code": 401, "msg": "invalid key"}));
        let err = read_created(&r).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert_eq!(err.http_status, Some(200));
        let r = reply(200, json!({"code": 402, "msg": "no credits"}));
        let err = read_task(&r, "clx1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Billing);
    }

    fn task(data: Value) -> UpstreamTask {
        let body = json!({"code": 200, "msg": "success", "data": data});
        read_task(&reply(200, body), "clx1").expect("answer reads")
    }

    #[test]
    fn states_map_onto_normalized_states() {
        let states = [
            ("pending", TaskStatus::Queued),
            ("processing", TaskStatus::InProgress),
            ("failed", TaskStatus::Failed),
        ];
        for (state, want) in states {
            assert_eq!(
                task(json!({"taskId": "clx1", "state": state})).status,
                want,
                "{state}"
            );
        }
    }

    #[test]
    fn completed_task_carries_its_result_urls() {
        let t = task(json!({
            "taskId": "clx1", "state": "completed", "model": "kling-video/kling-video-o1",
            "resultUrls": ["https://cdn/v.mp4"], "createTime": 1705123450000_u64, "completeTime": 1705123500000_u64,
        }));
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(
            t.videos,
            vec![VideoResult {
                url: "https://cdn/v.mp4".into(),
                duration: None
            }]
        );
    }

    fn unreadable(data: Value) -> ProviderError {
        let body = json!({"code": 200, "msg": "success", "data": data});
        read_task(&reply(200, body), "clx1").expect_err("answer is unreadable")
    }

    #[test]
    fn an_unknown_state_word_is_unreadable_naming_data_state_with_the_body() {
        let err = unreadable(json!({"taskId": "clx1", "state": "generating"}));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data.state: unknown state word "generating""#
        );
        assert!(err.raw_body.as_deref().unwrap().contains("generating"));
        assert!(!err.ambiguous);
    }

    #[test]
    fn completed_without_a_result_url_is_unreadable() {
        let err = unreadable(json!({"taskId": "clx1", "state": "completed", "resultUrls": []}));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert!(
            err.message.starts_with("data.resultUrls: no video URL"),
            "{}",
            err.message
        );
    }

    #[test]
    fn policy_failure_is_only_the_provider_message() {
        let t = task(
            json!({"taskId": "clx1", "state": "failed", "failMsg": "Content policy violation"}),
        );
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(
            t.failure_message.as_deref(),
            Some("Content policy violation")
        );
    }

    #[test]
    fn a_callback_is_read_like_a_query_answer_naming_its_task() {
        let adapter = Apimodels {
            name: "apimodels".into(),
            upstream: Upstream::new(
                &serde_json::from_value(json!({
                    "dialect": "apimodels", "base_url": "http://127.0.0.1:9",
                    "models": ["kling-video-o1"],
                }))
                .unwrap(),
            )
            .unwrap(),
        };
        let body = json!({"code": 200, "msg": "success", "data": {
            "taskId": "clx9", "state": "completed", "resultUrls": ["https://cdn/v.mp4"],
        }});
        let t = adapter.parse_callback(body.to_string().as_bytes()).unwrap();
        assert_eq!(t.upstream_id, "clx9");
        assert_eq!(t.status, TaskStatus::Completed);
        let odd =
            json!({"code": 200, "msg": "success", "data": {"taskId": "clx9", "state": "odd"}});
        let err = adapter
            .parse_callback(odd.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        let err = adapter.parse_callback(b"[]").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
    }

    #[test]
    fn capabilities_are_kling_s_without_negative_prompt_or_external_id() {
        let caps = &CAPABILITIES;
        assert!(caps.element_list && caps.watermark && caps.frame_images);
        assert!(caps.feature_video && caps.keep_original_sound && caps.upstream_callback);
        assert!(!caps.negative_prompt && !caps.external_task_id);
        assert!(caps.shot_types.is_empty());
    }
}
