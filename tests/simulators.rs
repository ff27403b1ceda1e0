//! The provider simulators checked against the provider documents, so that the gateway's
//! tests can trust them: documented bodies are accepted and answered in each dialect's
//! shape, every rule violation is refused (and recorded), tasks progress per script, and
//! faults play as described.

// Only the simulators: this test does not need the gateway harness in `support::app`.
#[allow(dead_code)]
#[path = "support/sim/mod.rs"]
mod sim;

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use omnigate::config::{Credential, Dialect};
use omnigate::domain::Model;
use serde_json::{json, Value};
use sim::{Fault, Outcome, Script, Sim, SimDialect, SimError};

const KLING_FLAVOURS: [SimDialect; 3] = [
    SimDialect::Anyfast,
    SimDialect::Kkiai,
    SimDialect::KlingOfficial,
];
/// The dialects whose create body is Kling's (apimodels under `model`).
const KLING_BODIES: [SimDialect; 4] = [
    SimDialect::Anyfast,
    SimDialect::Kkiai,
    SimDialect::KlingOfficial,
    SimDialect::Apimodels,
];

// ---------------------------------------------------------------------------------------
// Talking to a simulator

struct Answer {
    status: u16,
    body: Value,
}

async fn send(sim: &Sim, request: reqwest::RequestBuilder) -> Answer {
    let response = request
        .header("Authorization", sim.auth_header())
        .send()
        .await
        .expect("simulator answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("answer body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
    Answer { status, body }
}

async fn post(sim: &Sim, path: &str, body: &Value) -> Answer {
    let url = format!("{}{path}", sim.base_url);
    send(sim, reqwest::Client::new().post(url).json(body)).await
}

async fn get(sim: &Sim, path: &str) -> Answer {
    let url = format!("{}{path}", sim.base_url);
    send(sim, reqwest::Client::new().get(url)).await
}

fn create_path(dialect: SimDialect, model: &str) -> String {
    match dialect {
        SimDialect::Modellix if model == "kling-video-o1" => {
            "/api/v1/kling/kling-video-o1/async".into()
        }
        SimDialect::Modellix => "/api/v1/kling/kling-v3-omni-video/async".into(),
        SimDialect::Anyfast | SimDialect::Kkiai => "/kling/v1/videos/omni-video".into(),
        SimDialect::KlingOfficial => "/v1/videos/omni-video".into(),
        SimDialect::Apimodels => "/api/v1/video/generations".into(),
    }
}

fn query_path(dialect: SimDialect, task_id: &str) -> String {
    match dialect {
        SimDialect::Modellix => format!("/api/v1/tasks/{task_id}"),
        SimDialect::Anyfast => format!("/kling/v1/videos/text2video/{task_id}"),
        SimDialect::Kkiai => format!("/kling/v1/videos/omni-video/{task_id}"),
        SimDialect::KlingOfficial => format!("/v1/videos/omni-video/{task_id}"),
        SimDialect::Apimodels => format!("/api/v1/video/generations?task_id={task_id}"),
    }
}

/// Posts a create body (Kling-shaped bodies name their model; modellix goes to v3).
async fn submit(sim: &Sim, body: &Value) -> Answer {
    let model = body["model_name"]
        .as_str()
        .or(body["model"].as_str())
        .unwrap_or("kling-v3-omni");
    post(sim, &create_path(sim.dialect, model), body).await
}

async fn submit_ok(sim: &Sim, body: &Value) -> String {
    let answer = submit(sim, body).await;
    assert_eq!(
        answer.status, 200,
        "{:?} refused {body}: {}",
        sim.dialect, answer.body
    );
    task_id(sim.dialect, &answer.body)
}

async fn query(sim: &Sim, task_id: &str) -> Answer {
    get(sim, &query_path(sim.dialect, task_id)).await
}

fn task_id(dialect: SimDialect, created: &Value) -> String {
    let id = match dialect {
        SimDialect::Modellix | SimDialect::Kkiai | SimDialect::KlingOfficial => {
            &created["data"]["task_id"]
        }
        SimDialect::Anyfast => &created["task_id"],
        SimDialect::Apimodels => &created["data"]["taskId"],
    };
    id.as_str().expect("a task id").to_string()
}

/// The dialect's own state word in a query answer.
fn state(dialect: SimDialect, answer: &Value) -> String {
    let state = match dialect {
        SimDialect::Modellix => &answer["data"]["status"],
        SimDialect::Anyfast => &answer["data"]["status"],
        SimDialect::Kkiai | SimDialect::KlingOfficial => &answer["data"]["task_status"],
        SimDialect::Apimodels => &answer["data"]["state"],
    };
    state.as_str().expect("a state").to_string()
}

fn video_url(dialect: SimDialect, answer: &Value) -> String {
    let url = match dialect {
        SimDialect::Modellix => &answer["data"]["result"]["resources"][0]["url"],
        SimDialect::Anyfast => &answer["data"]["data"]["data"]["task_result"]["videos"][0]["url"],
        SimDialect::Kkiai | SimDialect::KlingOfficial => {
            &answer["data"]["task_result"]["videos"][0]["url"]
        }
        SimDialect::Apimodels => &answer["data"]["resultUrls"][0],
    };
    url.as_str().expect("a video url").to_string()
}

fn failure_message(dialect: SimDialect, answer: &Value) -> String {
    let message = match dialect {
        SimDialect::Modellix => &answer["data"]["error"],
        SimDialect::Anyfast => &answer["data"]["fail_reason"],
        SimDialect::Kkiai | SimDialect::KlingOfficial => &answer["data"]["task_status_msg"],
        SimDialect::Apimodels => &answer["data"]["failMsg"],
    };
    message.as_str().expect("a failure message").to_string()
}

/// The states a task shows on its first three queries under the default script.
fn default_progression(dialect: SimDialect) -> [&'static str; 3] {
    match dialect {
        SimDialect::Modellix => ["pending", "processing", "success"],
        SimDialect::Anyfast => ["SUBMITTED", "PROCESSING", "SUCCESS"],
        SimDialect::Kkiai | SimDialect::KlingOfficial => ["submitted", "processing", "succeed"],
        SimDialect::Apimodels => ["pending", "processing", "completed"],
    }
}

/// The HTTP status and body `code` each dialect answers an error with.
fn expected_error(dialect: SimDialect, error: SimError) -> (u16, i64) {
    if dialect.is_kling() {
        return match error {
            SimError::Server => (500, 5000),
            SimError::RateLimited => (429, 1302),
            SimError::TooManyParallel => (429, 1303),
            SimError::Billing => (429, 1102),
            SimError::BadRequest => (400, 1201),
            SimError::ContentPolicy => (400, 1301),
            SimError::Auth => (401, 1000),
        };
    }
    let status = match error {
        SimError::Server if dialect == SimDialect::Modellix => 503,
        SimError::Server => 500,
        SimError::RateLimited | SimError::TooManyParallel => 429,
        SimError::Billing => 402,
        SimError::BadRequest | SimError::ContentPolicy => 400,
        SimError::Auth => 401,
    };
    (status, i64::from(status))
}

fn error_message(dialect: SimDialect, body: &Value) -> String {
    let key = if dialect == SimDialect::Apimodels {
        "msg"
    } else {
        "message"
    };
    body[key].as_str().expect("an error message").to_string()
}

fn assert_error(dialect: SimDialect, answer: &Answer, error: SimError) {
    let (status, code) = expected_error(dialect, error);
    assert_eq!(
        answer.status, status,
        "{dialect:?} {error:?}: {}",
        answer.body
    );
    assert_eq!(
        answer.body["code"], code,
        "{dialect:?} {error:?}: {}",
        answer.body
    );
    error_message(dialect, &answer.body);
}

// ---------------------------------------------------------------------------------------
// Bodies

/// A documented text-to-video body for kling-v3-omni in the dialect's shape.
fn text_to_video(dialect: SimDialect) -> Value {
    match dialect {
        SimDialect::Modellix => json!({
            "prompt": "a cat walking across a sunlit garden",
            "mode": "pro", "duration": 5, "aspect_ratio": "16:9", "sound": "off",
        }),
        _ => kling_body(
            dialect,
            json!({
                "model_name": "kling-v3-omni",
                "prompt": "a cat walking across a sunlit garden",
                "mode": "pro", "duration": "5", "aspect_ratio": "16:9", "sound": "off",
            }),
        ),
    }
}

/// A Kling body as the dialect spells it: apimodels names the model `model`.
fn kling_body(dialect: SimDialect, mut body: Value) -> Value {
    if dialect == SimDialect::Apimodels {
        let obj = body.as_object_mut().unwrap();
        if let Some(model) = obj.remove("model_name") {
            obj.insert("model".into(), model);
        }
    }
    body
}

/// `base` with the top-level keys of `patch` set; a `null` in the patch removes the key.
fn patched(base: &Value, patch: Value) -> Value {
    let mut body = base.clone();
    let obj = body.as_object_mut().unwrap();
    for (key, value) in patch.as_object().unwrap() {
        if value.is_null() {
            obj.remove(key);
        } else {
            obj.insert(key.clone(), value.clone());
        }
    }
    body
}

fn kling_base() -> Value {
    json!({
        "model_name": "kling-v3-omni",
        "prompt": "a cat walking across a sunlit garden",
        "mode": "pro", "duration": "5", "aspect_ratio": "16:9",
    })
}

fn image(url: &str) -> Value {
    json!({"image_url": url})
}

fn frame(url: &str, kind: &str) -> Value {
    json!({"image_url": url, "type": kind})
}

fn video(refer_type: &str) -> Value {
    json!({"video_url": "https://cdn.example/in.mp4", "refer_type": refer_type, "keep_original_sound": "no"})
}

fn images(n: usize) -> Value {
    (0..n)
        .map(|i| image(&format!("https://cdn.example/{i}.png")))
        .collect()
}

fn elements(n: u64) -> Value {
    (0..n)
        .map(|i| json!({"element_id": 835266081714884677u64 + i}))
        .collect()
}

fn shots(durations: &[&str]) -> Value {
    durations
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"index": i + 1, "prompt": format!("shot {}", i + 1), "duration": d}))
        .collect()
}

/// Kling-shaped bodies every Kling-bodied dialect accepts (as patches of `kling_base`).
fn valid_kling_bodies() -> Vec<(&'static str, Value)> {
    vec![
        ("plain text to video", json!({})),
        ("v3 takes 15 seconds", json!({"duration": "15"})),
        ("std mode with sound", json!({"mode": "std", "sound": "on"})),
        (
            "a first frame makes aspect_ratio optional",
            json!({"model_name": "kling-video-o1", "duration": "10", "aspect_ratio": null,
                   "image_list": [frame("https://cdn.example/a.png", "first_frame")]}),
        ),
        (
            "first and end frames",
            json!({"image_list": [frame("https://cdn.example/a.png", "first_frame"),
                                  frame("https://cdn.example/b.png", "end_frame")]}),
        ),
        (
            "base64 image without a data: prefix",
            json!({"image_list": [image("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB")]}),
        ),
        (
            "a base video edit has no duration and no aspect_ratio",
            json!({"duration": null, "aspect_ratio": null, "sound": "off",
                   "video_list": [{"video_url": "https://cdn.example/in.mp4", "refer_type": "base", "keep_original_sound": "yes"}]}),
        ),
        (
            "a video without refer_type is the base video to edit",
            json!({"duration": null, "video_list": [{"video_url": "https://cdn.example/in.mp4"}]}),
        ),
        (
            "v3 with a feature video takes up to 10 seconds",
            json!({"duration": "10", "video_list": [video("feature")]}),
        ),
        (
            "o1 from reference images takes any duration up to 10",
            json!({"model_name": "kling-video-o1", "duration": "7", "aspect_ratio": "16:9", "image_list": images(2)}),
        ),
        (
            "o1 with a feature video takes any duration up to 10",
            json!({"model_name": "kling-video-o1", "duration": "7", "video_list": [video("feature")]}),
        ),
        (
            "seven references without a video",
            json!({"image_list": images(5), "element_list": elements(2)}),
        ),
        (
            "four references with a video",
            json!({"image_list": images(2), "element_list": elements(2), "video_list": [video("feature")]}),
        ),
        (
            "a customized storyboard whose shots sum to the duration",
            json!({"multi_shot": true, "shot_type": "customize", "duration": "7",
                   "multi_prompt": shots(&["2", "3", "2"])}),
        ),
        ("multi_shot false", json!({"multi_shot": false})),
        (
            "watermark and callback",
            json!({"watermark_info": {"enabled": false}, "callback_url": "https://hooks.example/cb"}),
        ),
        (
            "a 2500-character prompt",
            json!({"prompt": "a".repeat(2500)}),
        ),
    ]
}

/// Kling-shaped bodies every Kling-bodied dialect refuses, with a word of the reason.
fn invalid_kling_bodies() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("duration as a number", json!({"duration": 5}), "duration"),
        ("v3 duration over 15", json!({"duration": "16"}), "duration"),
        ("duration under 3", json!({"duration": "2"}), "duration"),
        (
            "duration not a number",
            json!({"duration": "five"}),
            "duration",
        ),
        (
            "o1 duration over 10",
            json!({"model_name": "kling-video-o1", "duration": "11", "video_list": [video("feature")]}),
            "duration",
        ),
        (
            "o1 text to video in 7 seconds",
            json!({"model_name": "kling-video-o1", "duration": "7"}),
            "only",
        ),
        (
            "o1 first-frame image to video in 3 seconds",
            json!({"model_name": "kling-video-o1", "duration": "3",
                   "image_list": [{"image_url": "https://cdn.example/f.png", "type": "first_frame"}]}),
            "only",
        ),
        (
            "v3 with a video over 10 seconds",
            json!({"duration": "12", "video_list": [video("feature")]}),
            "at most 10",
        ),
        (
            "a duration with a base video edit",
            json!({"video_list": [video("base")]}),
            "must be omitted",
        ),
        (
            "sound on with a video",
            json!({"sound": "on", "video_list": [video("feature")]}),
            "sound",
        ),
        ("an unknown mode", json!({"mode": "fast"}), "mode"),
        ("an unknown sound", json!({"sound": "yes"}), "sound"),
        (
            "an unknown aspect ratio",
            json!({"aspect_ratio": "4:3"}),
            "aspect_ratio",
        ),
        (
            "no aspect ratio, first frame or base video",
            json!({"aspect_ratio": null}),
            "aspect_ratio",
        ),
        (
            "a prompt over 2500 characters",
            json!({"prompt": "a".repeat(2501)}),
            "prompt",
        ),
        (
            "images as plain strings",
            json!({"image_list": ["https://cdn.example/a.png"]}),
            "image_list[0]",
        ),
        (
            "a data: URL image",
            json!({"image_list": [image("data:image/png;base64,iVBORw0KGgo")]}),
            "data:",
        ),
        (
            "an end frame without a first frame",
            json!({"image_list": [frame("https://cdn.example/b.png", "end_frame")]}),
            "first_frame",
        ),
        (
            "two first frames",
            json!({"image_list": [frame("https://cdn.example/a.png", "first_frame"),
                                  frame("https://cdn.example/b.png", "first_frame")]}),
            "first_frame",
        ),
        (
            "an unknown image type",
            json!({"image_list": [frame("https://cdn.example/a.png", "middle_frame")]}),
            "type",
        ),
        (
            "an image without a url",
            json!({"image_list": [{"type": "first_frame"}]}),
            "image_url",
        ),
        (
            "two videos",
            json!({"duration": "5", "video_list": [video("feature"), video("feature")]}),
            "at most 1",
        ),
        (
            "an unknown refer_type",
            json!({"video_list": [video("style")]}),
            "refer_type",
        ),
        (
            "keep_original_sound as a boolean",
            json!({"video_list": [{"video_url": "https://cdn.example/in.mp4", "refer_type": "feature", "keep_original_sound": true}]}),
            "keep_original_sound",
        ),
        (
            "frames with a base video edit",
            json!({"duration": null, "image_list": [frame("https://cdn.example/a.png", "first_frame")],
                   "video_list": [video("base")]}),
            "base video",
        ),
        (
            "five references with a video",
            json!({"image_list": images(3), "element_list": elements(2), "video_list": [video("feature")]}),
            "at most 4",
        ),
        (
            "eight references without a video",
            json!({"image_list": images(6), "element_list": elements(2)}),
            "at most 7",
        ),
        (
            "an element id as a string",
            json!({"element_list": [{"element_id": "835266081714884677"}]}),
            "element_id",
        ),
        (
            "multi_shot without shot_type",
            json!({"multi_shot": true, "multi_prompt": shots(&["5"])}),
            "shot_type",
        ),
        (
            "multi_shot with the intelligence shot type",
            json!({"multi_shot": true, "shot_type": "intelligence", "multi_prompt": shots(&["5"])}),
            "shot_type",
        ),
        (
            "multi_shot without multi_prompt",
            json!({"multi_shot": true, "shot_type": "customize"}),
            "multi_prompt",
        ),
        (
            "shots that do not sum to the duration",
            json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": shots(&["2", "2"])}),
            "sum",
        ),
        (
            "seven shots",
            json!({"multi_shot": true, "shot_type": "customize", "duration": "7",
                   "multi_prompt": shots(&["1", "1", "1", "1", "1", "1", "1"])}),
            "1 to 6",
        ),
        (
            "a shot prompt over 512 characters",
            json!({"multi_shot": true, "shot_type": "customize",
                   "multi_prompt": [{"index": 1, "prompt": "a".repeat(513), "duration": "5"}]}),
            "512",
        ),
        (
            "a shot duration as a number",
            json!({"multi_shot": true, "shot_type": "customize",
                   "multi_prompt": [{"index": 1, "prompt": "one", "duration": 5}]}),
            "duration",
        ),
        (
            "a shot without an index",
            json!({"multi_shot": true, "shot_type": "customize",
                   "multi_prompt": [{"prompt": "one", "duration": "5"}]}),
            "index",
        ),
        (
            "a watermark flag as a string",
            json!({"watermark_info": {"enabled": "yes"}}),
            "enabled",
        ),
        (
            "a callback that is not http",
            json!({"callback_url": "ftp://x"}),
            "callback_url",
        ),
        (
            "an unknown top-level field",
            json!({"seed": 42}),
            "unknown field",
        ),
        (
            "an unknown field inside an image",
            json!({"image_list": [{"image_url": "https://cdn.example/a.png", "weight": 1}]}),
            "unknown field",
        ),
        (
            "an unknown model",
            json!({"model_name": "kling-v2"}),
            "kling-v2",
        ),
        ("no model", json!({"model_name": null}), "required"),
    ]
}

// ---------------------------------------------------------------------------------------
// Every dialect: creates, progression, failures, unknown ids

#[tokio::test]
async fn every_dialect_accepts_a_documented_body_and_answers_in_its_own_shape() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let body = text_to_video(dialect);
        let answer = submit(&sim, &body).await;
        assert_eq!(answer.status, 200, "{dialect:?}: {}", answer.body);
        let a = &answer.body;
        match dialect {
            SimDialect::Kkiai | SimDialect::KlingOfficial => {
                assert_eq!(a["code"], 0);
                assert_eq!(a["message"], "SUCCEED");
                assert!(a["request_id"].is_string());
                assert_eq!(a["data"]["task_status"], "submitted");
                assert!(
                    a["data"]["created_at"].as_u64().unwrap() > 1_000_000_000_000,
                    "ms"
                );
                assert!(
                    a["data"]["updated_at"].as_u64().unwrap() > 1_000_000_000_000,
                    "ms"
                );
                assert!(a["data"]["task_info"].is_object());
            }
            SimDialect::Anyfast => {
                assert_eq!(a["id"], a["task_id"]);
                assert_eq!(a["object"], "video");
                assert_eq!(a["model"], "kling-v3-omni");
                assert_eq!(a["status"], "SUBMITTED");
                assert_eq!(a["progress"], 0);
                let created = a["created_at"].as_u64().unwrap();
                assert!(
                    (1_000_000_000..10_000_000_000).contains(&created),
                    "seconds"
                );
            }
            SimDialect::Modellix => {
                assert_eq!(a["code"], 0);
                assert_eq!(a["message"], "success");
                assert_eq!(a["data"]["status"], "pending");
                assert_eq!(a["data"]["model_id"], "kling-v3-omni-video");
                assert_eq!(a["data"]["get_result"]["method"], "GET");
                let id = task_id(dialect, a);
                let url = format!("{}/api/v1/tasks/{id}", sim.base_url);
                assert_eq!(a["data"]["get_result"]["url"], url.as_str());
            }
            SimDialect::Apimodels => {
                assert_eq!(a["code"], 200);
                assert_eq!(a["msg"], "success");
                assert_eq!(a["data"]["state"], "pending");
                assert_eq!(a["data"]["model"], "kling-video/kling-v3-omni");
            }
        }
        assert_eq!(sim.created_count(), 1);
        assert_eq!(sim.submit_count(), 1);
        assert_eq!(sim.created_bodies(), vec![body]);
        assert!(sim.rejections().is_empty(), "{:?}", sim.rejections());
    }
}

#[tokio::test]
async fn tasks_move_from_queued_through_processing_to_a_video_by_query_count() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        let mut answers = Vec::new();
        for expected in default_progression(dialect) {
            let answer = query(&sim, &id).await;
            assert_eq!(answer.status, 200, "{dialect:?}: {}", answer.body);
            assert_eq!(state(dialect, &answer.body), expected, "{dialect:?}");
            answers.push(answer.body);
        }
        let done = &answers[2];
        assert_eq!(
            video_url(dialect, done),
            format!("https://cdn.sim.test/{id}.mp4"),
            "{dialect:?}"
        );
        // A finished task stays finished.
        let again = query(&sim, &id).await;
        assert_eq!(state(dialect, &again.body), default_progression(dialect)[2]);
        assert_eq!(sim.query_count(), 4);

        match dialect {
            SimDialect::Kkiai | SimDialect::KlingOfficial => {
                assert_eq!(answers[0]["code"], 0);
                assert_eq!(answers[0]["data"]["task_result"], json!({}));
                assert_eq!(answers[1]["data"]["task_result"], json!({}));
                let video = &done["data"]["task_result"]["videos"][0];
                assert_eq!(video["duration"], "5.041");
                assert!(video["id"].is_string());
                assert_eq!(done["data"]["task_status_msg"], "");
                assert!(done["data"]["updated_at"].as_u64() >= done["data"]["created_at"].as_u64());
            }
            SimDialect::Anyfast => {
                assert_eq!(answers[0]["code"], "success");
                assert_eq!(answers[0]["data"]["progress"], "0%");
                assert_eq!(answers[1]["data"]["progress"], "50%");
                assert_eq!(done["data"]["progress"], "100%");
                assert_eq!(answers[0]["data"]["finish_time"], 0);
                assert!(done["data"]["finish_time"].as_u64().unwrap() > 1_000_000_000);
                let inner = &done["data"]["data"];
                assert_eq!(inner["code"], 0);
                assert_eq!(inner["data"]["task_status"], "succeed");
                assert_eq!(
                    inner["data"]["task_result"]["videos"][0]["duration"],
                    "5.041"
                );
            }
            SimDialect::Modellix => {
                assert!(answers[0]["data"].get("result").is_none());
                assert_eq!(done["data"]["result"]["resources"][0]["type"], "video");
            }
            SimDialect::Apimodels => {
                assert_eq!(answers[0]["code"], 200);
                assert!(answers[0]["data"].get("resultUrls").is_none());
                assert!(answers[0]["data"]["createTime"].as_u64().unwrap() > 1_000_000_000_000);
                assert!(done["data"]["completeTime"].as_u64().unwrap() > 1_000_000_000_000);
                assert_eq!(done["data"]["model"], "kling-video/kling-v3-omni");
            }
        }
    }
}

#[tokio::test]
async fn a_failing_script_reports_its_reason_in_each_dialects_failure_field() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        sim.set_script(Script {
            queued_polls: 0,
            processing_polls: 0,
            outcome: Outcome::Fail("flagged by moderation".into()),
        });
        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        let answer = query(&sim, &id).await;
        assert_eq!(answer.status, 200);
        let failed = match dialect {
            SimDialect::Modellix | SimDialect::Kkiai | SimDialect::KlingOfficial => "failed",
            SimDialect::Anyfast => "FAILED",
            SimDialect::Apimodels => "failed",
        };
        assert_eq!(state(dialect, &answer.body), failed, "{dialect:?}");
        assert_eq!(
            failure_message(dialect, &answer.body),
            "flagged by moderation"
        );
        if dialect == SimDialect::Anyfast {
            let inner = &answer.body["data"]["data"]["data"];
            assert_eq!(inner["task_status"], "failed");
            assert_eq!(inner["task_status_msg"], "flagged by moderation");
        }
    }
}

#[tokio::test]
async fn a_script_applies_only_to_tasks_created_after_it_is_set() {
    let sim = Sim::start(SimDialect::Kkiai).await;
    let before = submit_ok(&sim, &text_to_video(sim.dialect)).await;
    sim.set_script(Script {
        queued_polls: 2,
        processing_polls: 3,
        outcome: Outcome::Succeed,
    });
    let after = submit_ok(&sim, &text_to_video(sim.dialect)).await;

    let first = query(&sim, &before).await;
    assert_eq!(state(sim.dialect, &first.body), "submitted");
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(state(sim.dialect, &query(&sim, &after).await.body));
    }
    let expected = [
        "submitted",
        "submitted",
        "processing",
        "processing",
        "processing",
        "succeed",
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn unknown_task_ids_are_404_in_each_dialect_and_not_counted_as_rule_breaking() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let answer = query(&sim, "123456789").await;
        assert_eq!(answer.status, 404, "{dialect:?}");
        match dialect {
            SimDialect::Kkiai | SimDialect::KlingOfficial => assert_eq!(answer.body["code"], 1203),
            SimDialect::Anyfast => assert_eq!(answer.body["code"], "task_not_exist"),
            SimDialect::Modellix | SimDialect::Apimodels => assert_eq!(answer.body["code"], 404),
        }
        assert!(sim.rejections().is_empty(), "{:?}", sim.rejections());
        assert_eq!(sim.query_count(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn a_wrong_or_missing_key_is_refused_with_401_in_each_dialect() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
        let client = reqwest::Client::new();
        for auth in [Some("Bearer sk-wrong"), Some("sk-no-bearer-word"), None] {
            let mut request = client.post(&url).json(&text_to_video(dialect));
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_error(dialect, &Answer { status, body }, SimError::Auth);
        }
        assert_eq!(sim.created_count(), 0);
        assert_eq!(sim.submit_count(), 3);
        assert_eq!(sim.rejections().len(), 3);
        assert!(sim.rejections().iter().all(|r| r.starts_with("auth:")));
    }
}

fn kling_keys(sim: &Sim) -> (String, String) {
    match sim.provider_config(&[Model::KlingV3Omni], 0.1).credential {
        Credential::KlingJwt {
            access_key,
            secret_key,
        } => (
            access_key.expose().to_string(),
            secret_key.expose().to_string(),
        ),
        other => panic!("Kling's own host needs a JWT credential, got {other:?}"),
    }
}

fn jwt(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn kling_official_verifies_the_jwt_signature_issuer_and_time_claims() {
    let sim = Sim::start(SimDialect::KlingOfficial).await;
    let (access, secret) = kling_keys(&sim);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({"iss": access, "exp": now + 1800, "nbf": now - 5});
    let cases = [
        ("valid", jwt(good.clone(), &secret), true),
        (
            "signed with another secret",
            jwt(good.clone(), "not-the-secret"),
            false,
        ),
        (
            "issued by another access key",
            jwt(
                json!({"iss": "someone-else", "exp": now + 1800, "nbf": now - 5}),
                &secret,
            ),
            false,
        ),
        (
            "expired",
            jwt(
                json!({"iss": access, "exp": now - 10, "nbf": now - 60}),
                &secret,
            ),
            false,
        ),
        (
            "not yet valid",
            jwt(
                json!({"iss": access, "exp": now + 1800, "nbf": now + 60}),
                &secret,
            ),
            false,
        ),
        (
            "without nbf",
            jwt(json!({"iss": access, "exp": now + 1800}), &secret),
            false,
        ),
        ("the secret as a plain key", secret.clone(), false),
    ];
    let url = format!("{}/v1/videos/omni-video", sim.base_url);
    for (case, token, accepted) in cases {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&token)
            .json(&text_to_video(sim.dialect))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if accepted {
            assert_eq!(status, 200, "{case}: {body}");
        } else {
            assert_eq!(
                (status, body["code"].as_i64()),
                (401, Some(1000)),
                "{case}: {body}"
            );
        }
    }
    assert_eq!(sim.created_count(), 1);
    assert_eq!(sim.rejections().len(), 6);
}

// ---------------------------------------------------------------------------------------
// Kling body rules (shared by the Kling flavours and apimodels)

#[tokio::test]
async fn kling_shaped_bodies_that_follow_the_documented_rules_are_accepted() {
    for dialect in KLING_BODIES {
        let sim = Sim::start(dialect).await;
        let mut accepted = 0;
        for (case, patch) in valid_kling_bodies() {
            let mut body = kling_body(dialect, patched(&kling_base(), patch));
            if dialect == SimDialect::Anyfast && body["model_name"] == "kling-video-o1" {
                continue;
            }
            if dialect == SimDialect::Kkiai && body.get("duration").is_none() {
                // kkiai marks duration Required even for a base video edit (ignored there).
                body["duration"] = json!("5");
            }
            let answer = submit(&sim, &body).await;
            assert_eq!(answer.status, 200, "{dialect:?} {case}: {}", answer.body);
            accepted += 1;
        }
        assert_eq!(sim.created_count(), accepted);
        assert!(
            sim.rejections().is_empty(),
            "{dialect:?}: {:?}",
            sim.rejections()
        );
    }
}

#[tokio::test]
async fn kling_shaped_bodies_that_break_a_documented_rule_are_refused_and_recorded() {
    for dialect in KLING_BODIES {
        let sim = Sim::start(dialect).await;
        let mut refused = 0;
        for (case, patch, reason) in invalid_kling_bodies() {
            let body = kling_body(dialect, patched(&kling_base(), patch));
            if dialect == SimDialect::Anyfast && body["model_name"] == "kling-video-o1" {
                continue;
            }
            // kkiai's table types element_id as a string and wants duration on a base
            // video edit too (covered by their own tests below).
            let kkiai_allows = [
                "an element id as a string",
                "a duration with a base video edit",
            ];
            if dialect == SimDialect::Kkiai && kkiai_allows.contains(&case) {
                continue;
            }
            let answer = submit(&sim, &body).await;
            assert_error(dialect, &answer, SimError::BadRequest);
            refused += 1;
            let rejections = sim.rejections();
            assert_eq!(
                rejections.len(),
                refused,
                "{dialect:?} {case}: {}",
                answer.body
            );
            let recorded = rejections.last().unwrap();
            assert!(
                recorded.contains(reason),
                "{dialect:?} {case}: expected a reason about {reason:?}, got {recorded:?}"
            );
            assert!(error_message(dialect, &answer.body).contains(reason));
        }
        assert_eq!(sim.created_count(), 0, "{dialect:?}");
        assert_eq!(sim.submit_count(), refused);
    }
}

#[tokio::test]
async fn a_json_null_anywhere_is_refused_in_every_dialect() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let mut body = text_to_video(dialect);
        body["aspect_ratio"] = Value::Null;
        let answer = submit(&sim, &body).await;
        assert_error(dialect, &answer, SimError::BadRequest);
        assert!(
            sim.rejections()[0].contains("null"),
            "{:?}",
            sim.rejections()
        );
        if dialect != SimDialect::Modellix {
            let mut body = text_to_video(dialect);
            body["image_list"] = json!([{"image_url": "https://cdn.example/a.png", "type": null}]);
            let answer = submit(&sim, &body).await;
            assert_error(dialect, &answer, SimError::BadRequest);
            assert!(sim.rejections()[1].contains("image_list[0].type"));
        }
        assert_eq!(sim.created_count(), 0);
    }
}

#[tokio::test]
async fn a_body_without_a_json_content_type_or_not_json_is_refused() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
        let client = reqwest::Client::new();
        let plain = client
            .post(&url)
            .header("Authorization", sim.auth_header())
            .body(text_to_video(dialect).to_string());
        let broken = client
            .post(&url)
            .header("Authorization", sim.auth_header())
            .header("Content-Type", "application/json")
            .body("{\"prompt\":");
        for request in [plain, broken] {
            let answer = send(&sim, request).await;
            assert_error(dialect, &answer, SimError::BadRequest);
        }
        assert!(sim.rejections()[0].contains("Content-Type"));
        assert!(sim.rejections()[1].contains("not JSON"));
        assert_eq!(sim.created_count(), 0);
    }
}

#[tokio::test]
async fn kling_flavours_require_a_prompt_unless_multi_shot_and_know_kling_only_fields() {
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        let no_prompt = patched(
            &kling_base(),
            json!({"prompt": null, "image_list": images(1)}),
        );
        let answer = submit(&sim, &no_prompt).await;
        assert_error(dialect, &answer, SimError::BadRequest);
        assert!(sim.rejections()[0].contains("prompt: required"));

        let storyboard = patched(
            &kling_base(),
            json!({"prompt": null, "multi_shot": true, "shot_type": "customize", "multi_prompt": shots(&["5"])}),
        );
        submit_ok(&sim, &storyboard).await;
        let kling_only = patched(
            &kling_base(),
            json!({"negative_prompt": "blurry", "cfg_scale": 0.5, "external_task_id": "vgt_1"}),
        );
        submit_ok(&sim, &kling_only).await;
        let out_of_range = patched(&kling_base(), json!({"cfg_scale": 2}));
        assert_error(
            dialect,
            &submit(&sim, &out_of_range).await,
            SimError::BadRequest,
        );
        assert_eq!(sim.created_count(), 2);
    }
}

#[tokio::test]
async fn kkiai_and_kling_require_mode_and_duration_as_kkiai_marks_them_but_anyfast_does_not() {
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        for missing in ["mode", "duration"] {
            let mut body = kling_base();
            body.as_object_mut().unwrap().remove(missing);
            let answer = submit(&sim, &body).await;
            if dialect == SimDialect::Anyfast {
                assert_eq!(answer.status, 200, "{missing}: {}", answer.body);
            } else {
                assert_error(dialect, &answer, SimError::BadRequest);
                assert!(sim.rejections().last().unwrap().starts_with(missing));
            }
        }
    }
}

#[tokio::test]
async fn kkiai_wants_duration_even_for_a_base_video_edit_where_kling_and_anyfast_forbid_it() {
    let edit = json!({"aspect_ratio": null, "video_list": [video("base")]});
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        let with = submit(&sim, &patched(&kling_base(), edit.clone())).await;
        let without = patched(
            &patched(&kling_base(), edit.clone()),
            json!({"duration": null}),
        );
        let without = submit(&sim, &without).await;
        if dialect == SimDialect::Kkiai {
            assert_eq!(with.status, 200, "{}", with.body);
            assert_error(dialect, &without, SimError::BadRequest);
            assert!(sim.rejections()[0].starts_with("duration: required"));
        } else {
            assert_error(dialect, &with, SimError::BadRequest);
            assert!(sim.rejections()[0].contains("must be omitted"));
            assert_eq!(without.status, 200, "{dialect:?}: {}", without.body);
        }
    }
}

#[tokio::test]
async fn kkiai_takes_element_id_as_a_string_or_a_number_and_others_only_a_number() {
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        let as_string = json!({"element_list": [{"element_id": "835266081714884677"}]});
        let answer = submit(&sim, &patched(&kling_base(), as_string)).await;
        if dialect == SimDialect::Kkiai {
            assert_eq!(answer.status, 200, "{}", answer.body);
            let not_a_number = json!({"element_list": [{"element_id": "8352e3"}]});
            let answer = submit(&sim, &patched(&kling_base(), not_a_number)).await;
            assert_error(dialect, &answer, SimError::BadRequest);
        } else {
            assert_error(dialect, &answer, SimError::BadRequest);
        }
        submit_ok(
            &sim,
            &patched(&kling_base(), json!({"element_list": elements(1)})),
        )
        .await;
    }
}

#[tokio::test]
async fn anyfast_sells_only_kling_v3_omni() {
    let sim = Sim::start(SimDialect::Anyfast).await;
    let o1 = patched(&kling_base(), json!({"model_name": "kling-video-o1"}));
    let answer = submit(&sim, &o1).await;
    assert_error(sim.dialect, &answer, SimError::BadRequest);
    assert!(sim.rejections()[0].contains("model_name"));
    assert_eq!(sim.created_count(), 0);
}

#[tokio::test]
async fn apimodels_needs_some_content_and_refuses_kling_only_fields() {
    let sim = Sim::start(SimDialect::Apimodels).await;
    let base = kling_body(sim.dialect, kling_base());
    let image_only = patched(
        &base,
        json!({"prompt": null, "image_list": [frame("https://cdn.example/a.png", "first_frame")]}),
    );
    submit_ok(&sim, &image_only).await;
    let defaults = json!({"model": "kling-video-o1", "prompt": "a cat", "aspect_ratio": "1:1"});
    submit_ok(&sim, &defaults).await;

    let refused = [
        (json!({"prompt": null}), "at least one"),
        (json!({"prompt": ""}), "at least one"),
        (
            json!({"negative_prompt": "blurry"}),
            "negative_prompt: unknown field",
        ),
        (
            json!({"external_task_id": "vgt_1"}),
            "external_task_id: unknown field",
        ),
        (json!({"cfg_scale": 0.5}), "cfg_scale: unknown field"),
        (
            json!({"model_name": "kling-v3-omni"}),
            "model_name: unknown field",
        ),
    ];
    for (patch, reason) in refused {
        let answer = submit(&sim, &patched(&base, patch)).await;
        assert_error(sim.dialect, &answer, SimError::BadRequest);
        let recorded = sim.rejections().last().unwrap().clone();
        assert!(recorded.contains(reason), "{recorded}");
    }
    assert_eq!(sim.created_count(), 2);
}

#[tokio::test]
async fn a_reused_external_task_id_is_refused_without_creating_a_task() {
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        let body = patched(&kling_base(), json!({"external_task_id": "vgt_abc"}));
        let id = submit_ok(&sim, &body).await;
        let answer = submit(&sim, &body).await;
        assert_error(dialect, &answer, SimError::BadRequest);
        assert!(sim.rejections()[0].contains("external_task_id"));
        assert_eq!(sim.created_count(), 1);
        assert_eq!(sim.submit_count(), 2);

        let other = patched(&kling_base(), json!({"external_task_id": "vgt_def"}));
        submit_ok(&sim, &other).await;
        let answer = query(&sim, &id).await;
        let task = match dialect {
            SimDialect::Anyfast => &answer.body["data"]["data"]["data"],
            _ => &answer.body["data"],
        };
        assert_eq!(task["task_info"]["external_task_id"], "vgt_abc");
    }
}

#[tokio::test]
async fn kling_lists_tasks_newest_first_by_page_without_advancing_them() {
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        let prefix = if dialect == SimDialect::KlingOfficial {
            ""
        } else {
            "/kling"
        };
        for ext in ["e1", "e2", "e3"] {
            submit_ok(
                &sim,
                &patched(&kling_base(), json!({"external_task_id": ext})),
            )
            .await;
        }
        let ext_ids = |answer: &Answer| -> Vec<String> {
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(answer.body["code"], 0);
            answer.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t["task_info"]["external_task_id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let list = format!("{prefix}/v1/videos/omni-video");
        let first = get(&sim, &format!("{list}?pageNum=1&pageSize=2")).await;
        assert_eq!(ext_ids(&first), ["e3", "e2"]);
        assert_eq!(first.body["data"][0]["task_status"], "submitted");
        let second = get(&sim, &format!("{list}?pageNum=2&pageSize=2")).await;
        assert_eq!(ext_ids(&second), ["e1"]);
        let all = get(&sim, &list).await;
        assert_eq!(ext_ids(&all), ["e3", "e2", "e1"]);

        let bad = get(&sim, &format!("{list}?pageNum=1&pageSize=0")).await;
        assert_error(dialect, &bad, SimError::BadRequest);
        assert!(sim.rejections()[0].contains("pageSize"));

        // Listing is a read: it counts and takes query faults, but does not advance tasks.
        assert_eq!(sim.query_count(), 4);
        sim.push_query_fault(Fault::Error(SimError::Server));
        assert_error(dialect, &get(&sim, &list).await, SimError::Server);
        let id = first.body["data"][0]["task_id"].as_str().unwrap();
        let answer = query(&sim, id).await;
        let status = match dialect {
            SimDialect::Anyfast => answer.body["data"]["status"].clone(),
            _ => answer.body["data"]["task_status"].clone(),
        };
        assert!(status == "submitted" || status == "SUBMITTED", "{status}");
    }
}

// ---------------------------------------------------------------------------------------
// Paths

#[tokio::test]
async fn requests_to_paths_a_dialect_does_not_serve_are_refused_and_recorded() {
    let cases = [
        (SimDialect::Kkiai, "/v1/videos/omni-video"),
        (SimDialect::KlingOfficial, "/kling/v1/videos/omni-video"),
        (SimDialect::Anyfast, "/v1/videos/omni-video"),
        (SimDialect::Modellix, "/api/v1/kling/kling-v3-omni/async"),
        (SimDialect::Modellix, "/api/v1/kling/kling-video-o1"),
        (SimDialect::Apimodels, "/api/v1/videos/generations"),
    ];
    for (dialect, path) in cases {
        let sim = Sim::start(dialect).await;
        let answer = post(&sim, path, &text_to_video(dialect)).await;
        assert_eq!(answer.status, 404, "{dialect:?} {path}: {}", answer.body);
        assert_eq!(sim.rejections().len(), 1, "{dialect:?} {path}");
        assert!(sim.rejections()[0].contains(path), "{:?}", sim.rejections());
        assert_eq!(sim.created_count(), 0);
    }
}

#[tokio::test]
async fn anyfast_answers_queries_only_at_the_text2video_path() {
    let sim = Sim::start(SimDialect::Anyfast).await;
    let id = submit_ok(&sim, &text_to_video(sim.dialect)).await;
    let answer = get(&sim, &format!("/kling/v1/videos/omni-video/{id}")).await;
    assert_eq!(answer.status, 404);
    assert!(sim.rejections()[0].contains("text2video"));
    let answer = get(&sim, &format!("/kling/v1/videos/text2video/{id}")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["data"]["task_id"], id.as_str());
}

#[tokio::test]
async fn kkiai_and_kling_do_not_answer_the_anyfast_query_path() {
    for dialect in [SimDialect::Kkiai, SimDialect::KlingOfficial] {
        let sim = Sim::start(dialect).await;
        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        let prefix = if dialect == SimDialect::Kkiai {
            "/kling"
        } else {
            ""
        };
        let answer = get(&sim, &format!("{prefix}/v1/videos/text2video/{id}")).await;
        assert_eq!(answer.status, 404);
        assert_eq!(sim.rejections().len(), 1);
    }
}

#[tokio::test]
async fn apimodels_queries_need_a_task_id() {
    let sim = Sim::start(SimDialect::Apimodels).await;
    let answer = get(&sim, "/api/v1/video/generations").await;
    assert_error(sim.dialect, &answer, SimError::BadRequest);
    assert!(sim.rejections()[0].contains("task_id"));
}

// ---------------------------------------------------------------------------------------
// modellix

#[tokio::test]
async fn modellix_accepts_its_flattened_bodies() {
    let sim = Sim::start(SimDialect::Modellix).await;
    let bodies = [
        ("kling-v3-omni", json!({"prompt": "a cat"})),
        (
            "kling-v3-omni",
            json!({"prompt": "a cat", "duration": 15, "mode": "std", "sound": "on"}),
        ),
        (
            "kling-v3-omni",
            json!({"prompt": "a cat", "duration": 3, "aspect_ratio": "9:16"}),
        ),
        (
            "kling-v3-omni",
            json!({"prompt": "restyle", "videos": ["https://cdn.example/in.mp4"], "sound": "off"}),
        ),
        (
            "kling-v3-omni",
            json!({"prompt": "a cat", "multi_shot": true, "shot_type": "intelligence"}),
        ),
        (
            "kling-v3-omni",
            json!({"prompt": "a cat", "multi_shot": false}),
        ),
        (
            "kling-video-o1",
            json!({"prompt": "a cat", "duration": 10, "images": ["https://cdn.example/a.png", "data:image/png;base64,iVBORw0KGgo"]}),
        ),
        (
            "kling-video-o1",
            json!({"prompt": "restyle", "videos": ["https://cdn.example/in.mp4"]}),
        ),
        ("kling-video-o1", json!({"prompt": "a".repeat(2500)})),
    ];
    for (model, body) in &bodies {
        let answer = post(&sim, &create_path(sim.dialect, model), body).await;
        assert_eq!(answer.status, 200, "{model} {body}: {}", answer.body);
    }
    assert_eq!(sim.created_count(), bodies.len());
    let o1 = post(
        &sim,
        "/api/v1/kling/kling-video-o1/async",
        &json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(o1.body["data"]["model_id"], "kling-video-o1");
    assert!(sim.rejections().is_empty(), "{:?}", sim.rejections());
}

#[tokio::test]
async fn modellix_refuses_bodies_that_break_its_conditional_rules() {
    let sim = Sim::start(SimDialect::Modellix).await;
    let v3 = "kling-v3-omni";
    let o1 = "kling-video-o1";
    let video = json!(["https://cdn.example/in.mp4"]);
    let cases = [
        (v3, json!({}), "prompt: required"),
        (v3, json!({"prompt": ""}), "prompt"),
        (v3, json!({"prompt": "a".repeat(2501)}), "prompt"),
        (v3, json!({"prompt": "a cat", "duration": "5"}), "duration"),
        (v3, json!({"prompt": "a cat", "duration": 16}), "duration"),
        (v3, json!({"prompt": "a cat", "duration": 2}), "duration"),
        (v3, json!({"prompt": "a cat", "duration": 5.5}), "duration"),
        (o1, json!({"prompt": "a cat", "duration": 7}), "duration"),
        (
            v3,
            json!({"prompt": "a cat", "shot_type": "intelligence"}),
            "shot_type",
        ),
        (
            v3,
            json!({"prompt": "a cat", "multi_shot": false, "shot_type": "intelligence"}),
            "shot_type",
        ),
        (
            v3,
            json!({"prompt": "a cat", "multi_shot": true}),
            "shot_type",
        ),
        (
            v3,
            json!({"prompt": "a cat", "multi_shot": true, "shot_type": "customize"}),
            "shot_type",
        ),
        (
            v3,
            json!({"prompt": "a cat", "multi_shot": "yes"}),
            "multi_shot",
        ),
        (v3, json!({"prompt": "a cat", "images": []}), "images"),
        (v3, json!({"prompt": "a cat", "images": [""]}), "images[0]"),
        (
            v3,
            json!({"prompt": "a cat", "images": [{"image_url": "https://cdn.example/a.png"}]}),
            "images[0]",
        ),
        (v3, json!({"prompt": "a cat", "videos": []}), "videos"),
        (
            v3,
            json!({"prompt": "a cat", "videos": ["https://a/1.mp4", "https://a/2.mp4"]}),
            "videos",
        ),
        (
            v3,
            json!({"prompt": "a cat", "videos": video, "sound": "on"}),
            "sound",
        ),
        (
            v3,
            json!({"prompt": "a cat", "videos": video, "duration": 5}),
            "duration",
        ),
        (v3, json!({"prompt": "a cat", "mode": "fast"}), "mode"),
        (
            v3,
            json!({"prompt": "a cat", "aspect_ratio": "4:3"}),
            "aspect_ratio",
        ),
        (v3, json!({"prompt": "a cat", "sound": true}), "sound"),
        (
            v3,
            json!({"prompt": "a cat", "negative_prompt": "blurry"}),
            "unknown field",
        ),
        (
            v3,
            json!({"prompt": "a cat", "image_list": [{"image_url": "https://a/1.png"}]}),
            "unknown field",
        ),
        (
            v3,
            json!({"prompt": "a cat", "callback_url": "https://hooks.example/cb"}),
            "unknown field",
        ),
    ];
    for (i, (model, body, reason)) in cases.iter().enumerate() {
        let answer = post(&sim, &create_path(sim.dialect, model), body).await;
        assert_error(sim.dialect, &answer, SimError::BadRequest);
        let rejections = sim.rejections();
        assert_eq!(rejections.len(), i + 1, "{body}: {}", answer.body);
        assert!(
            rejections[i].contains(reason),
            "{body}: {:?}",
            rejections[i]
        );
    }
    assert_eq!(sim.created_count(), 0);
}

#[tokio::test]
async fn modellix_serves_only_its_two_model_slugs() {
    let sim = Sim::start(SimDialect::Modellix).await;
    for slug in ["kling-v3-omni", "kling-o1", "kling-video-o1-video"] {
        let answer = post(
            &sim,
            &format!("/api/v1/kling/{slug}/async"),
            &json!({"prompt": "a"}),
        )
        .await;
        assert_eq!(
            (answer.status, answer.body["code"].as_i64()),
            (404, Some(404))
        );
    }
    assert_eq!(sim.rejections().len(), 3);
    assert_eq!(sim.created_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn error_faults_render_each_dialects_status_and_code_then_normal_service_resumes() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        for error in SimError::ALL {
            sim.push_submit_fault(Fault::Error(error));
        }
        for error in SimError::ALL {
            let answer = submit(&sim, &text_to_video(dialect)).await;
            assert_error(dialect, &answer, error);
            if error == SimError::ContentPolicy {
                assert!(error_message(dialect, &answer.body).contains("content policy"));
            }
        }
        assert_eq!(sim.created_count(), 0);
        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        assert_eq!(sim.submit_count(), SimError::ALL.len() + 1);

        for error in SimError::ALL {
            sim.push_query_fault(Fault::Error(error));
        }
        for error in SimError::ALL {
            assert_error(dialect, &query(&sim, &id).await, error);
        }
        // Faulted queries did not read the task: the first real one sees it queued.
        let answer = query(&sim, &id).await;
        assert_eq!(
            state(dialect, &answer.body),
            default_progression(dialect)[0]
        );
        assert_eq!(sim.query_count(), SimError::ALL.len() + 1);
        assert!(
            sim.rejections().is_empty(),
            "faults are not rule violations"
        );
    }
}

#[tokio::test]
async fn twisted_answers_carry_an_unknown_word_or_success_without_a_url_then_service_resumes() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        sim.push_query_fault(Fault::StateWord("frobbing".into()));
        sim.push_query_fault(Fault::SucceededWithoutUrl);
        let answer = query(&sim, &id).await;
        assert_eq!(answer.status, 200);
        assert_eq!(state(dialect, &answer.body), "frobbing", "{dialect:?}");
        let answer = query(&sim, &id).await;
        let success = match dialect {
            SimDialect::Modellix => "success",
            SimDialect::Apimodels => "completed",
            SimDialect::Anyfast => "SUCCESS",
            _ => "succeed",
        };
        assert_eq!(state(dialect, &answer.body), success, "{dialect:?}");
        assert!(
            !answer.body.to_string().contains("cdn.sim.test"),
            "{dialect:?}"
        );
        let answer = query(&sim, &id).await;
        assert_ne!(state(dialect, &answer.body), "frobbing");
    }
}

#[tokio::test]
async fn redirect_and_oversized_faults_play_as_described() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        sim.push_submit_fault(Fault::Redirect);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
        let answer = client
            .post(url)
            .header("Authorization", sim.auth_header())
            .json(&text_to_video(dialect))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302);
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(location, format!("{}/redirected", sim.base_url));
        assert_eq!(sim.created_count(), 0);
        // Following it is a request the simulator does not serve, and records.
        client.get(location).send().await.unwrap();
        assert_eq!(sim.rejections().len(), 1, "{dialect:?}");

        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        sim.push_query_fault(Fault::Oversized(100_000));
        let url = format!("{}{}", sim.base_url, query_path(dialect, &id));
        let body = client
            .get(url)
            .header("Authorization", sim.auth_header())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), 100_000);
    }
}

#[tokio::test]
async fn kling_and_kkiai_answer_a_query_by_our_external_task_id_and_anyfast_does_not() {
    for dialect in KLING_FLAVOURS {
        let sim = Sim::start(dialect).await;
        let body = patched(&kling_base(), json!({"external_task_id": "vgt_ours"}));
        let id = submit_ok(&sim, &body).await;
        let answer = query(&sim, "vgt_ours").await;
        if dialect == SimDialect::Anyfast {
            assert_eq!(answer.status, 404);
        } else {
            assert_eq!(answer.status, 200, "{dialect:?}: {}", answer.body);
            assert_eq!(answer.body["data"]["task_id"], json!(id));
        }
        assert_eq!(sim.list_count(), 0);
    }
}

#[tokio::test]
async fn raw_status_and_malformed_faults_are_played_verbatim() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        sim.push_submit_fault(Fault::Status(418, json!({"teapot": true})));
        sim.push_submit_fault(Fault::Malformed);
        let answer = submit(&sim, &text_to_video(dialect)).await;
        assert_eq!((answer.status, answer.body), (418, json!({"teapot": true})));

        let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
        let response = reqwest::Client::new()
            .post(url)
            .header("Authorization", sim.auth_header())
            .json(&text_to_video(dialect))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let text = response.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
        assert_eq!(sim.created_count(), 0);

        let id = submit_ok(&sim, &text_to_video(dialect)).await;
        sim.push_query_fault(Fault::Malformed);
        let response = reqwest::Client::new()
            .get(format!("{}{}", sim.base_url, query_path(dialect, &id)))
            .header("Authorization", sim.auth_header())
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
}

fn impatient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_slow_submit_creates_the_task_but_answers_after_the_client_gave_up() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        sim.push_submit_fault(Fault::Slow(Duration::from_secs(2)));
        let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
        let started = Instant::now();
        let result = impatient_client()
            .post(url)
            .header("Authorization", sim.auth_header())
            .json(&text_to_video(dialect))
            .send()
            .await;
        assert!(result.unwrap_err().is_timeout());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(sim.created_count(), 1, "{dialect:?}");
        assert_eq!(sim.created_bodies(), vec![text_to_video(dialect)]);
    }
}

#[tokio::test]
async fn a_slow_answer_is_the_normal_answer_late() {
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.push_submit_fault(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    let id = submit_ok(&sim, &text_to_video(sim.dialect)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    sim.push_query_fault(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    let answer = query(&sim, &id).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer.body["data"]["state"], "pending");
    // The slow query read the task, so it advanced.
    assert_eq!(
        state(sim.dialect, &query(&sim, &id).await.body),
        "processing"
    );
}

#[tokio::test]
async fn a_hanging_submit_never_answers_and_creates_nothing() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        sim.push_submit_fault(Fault::Hang);
        let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
        let result = impatient_client()
            .post(url)
            .header("Authorization", sim.auth_header())
            .json(&text_to_video(dialect))
            .send()
            .await;
        assert!(result.unwrap_err().is_timeout());
        assert_eq!(sim.created_count(), 0);
        assert_eq!(sim.submit_count(), 1);
        // The queue is spent: the next submit is served normally.
        submit_ok(&sim, &text_to_video(dialect)).await;

        sim.push_query_fault(Fault::Hang);
        let result = impatient_client()
            .get(format!("{}{}", sim.base_url, query_path(dialect, "x")))
            .header("Authorization", sim.auth_header())
            .send()
            .await;
        assert!(result.unwrap_err().is_timeout());
    }
}

// ---------------------------------------------------------------------------------------
// Provider config

#[tokio::test]
async fn provider_config_points_at_the_sim_with_its_paths_price_and_credential() {
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let models = [Model::KlingVideoO1, Model::KlingV3Omni];
        let cfg = sim.provider_config(&models, 0.25);
        assert_eq!(cfg.base_url, sim.base_url);
        assert_eq!(cfg.models, models);
        assert_eq!(cfg.poll_interval_secs, 0.05);
        assert_eq!(cfg.request_timeout_secs, 2.0);
        assert_eq!(cfg.connect_timeout_secs, 1.0);
        for model in models {
            let table = cfg.price_table(model).expect("a price table per model");
            for value in [
                table.std,
                table.std_sound,
                table.std_keep_sound,
                table.pro,
                table.pro_sound,
                table.pro_keep_sound,
            ] {
                assert_eq!(value, Some(0.25));
            }
        }
        let expected: (Dialect, Option<&str>, Option<&str>) = match dialect {
            SimDialect::Modellix => (Dialect::Modellix, None, None),
            SimDialect::Apimodels => (Dialect::Apimodels, None, None),
            SimDialect::Anyfast => (
                Dialect::Kling,
                Some("/kling"),
                Some("/kling/v1/videos/text2video/{task_id}"),
            ),
            SimDialect::Kkiai => (Dialect::Kling, Some("/kling"), None),
            SimDialect::KlingOfficial => (Dialect::Kling, Some(""), None),
        };
        let actual = (
            cfg.dialect,
            cfg.path_prefix.as_deref(),
            cfg.query_path.as_deref(),
        );
        assert_eq!(actual, expected);
        match (&cfg.credential, dialect) {
            (Credential::KlingJwt { .. }, SimDialect::KlingOfficial) => {}
            (Credential::Bearer(key), _) if dialect != SimDialect::KlingOfficial => {
                // The configured key is the one the simulator accepts.
                let url = format!("{}{}", sim.base_url, create_path(dialect, "kling-v3-omni"));
                let response = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(key.expose())
                    .json(&text_to_video(dialect))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
            }
            (other, _) => panic!("{dialect:?}: unexpected credential {other:?}"),
        }
    }
}
