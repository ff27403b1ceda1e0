//! The create body: Kling's field names and spellings for a [`VideoRequest`], and the
//! kkiai variants of it.

use serde_json::{json, Map, Value};

use crate::domain::{FrameType, ReferType, Shot, ShotType, VideoRef, VideoRequest};

/// The create body. `task_id` (omnigate's id) always goes as `external_task_id`, so a
/// lost answer can be recovered by a lookup. The client's `callback_url` is ours to
/// serve, never the provider's.
pub fn create_body(task_id: &str, req: &VideoRequest) -> Value {
    let mut body = Map::new();
    body.insert("model_name".into(), json!(req.model.as_str()));
    if let Some(negative) = req.negative_prompt() {
        body.insert("negative_prompt".into(), json!(negative));
    }
    body.extend(shared_fields(req));
    body.insert("external_task_id".into(), json!(task_id));
    Value::Object(body)
}

/// kkiai's parameter table types `element_id` as a string (its example sends a number).
pub(super) fn stringify_element_ids(body: &mut Value) {
    let elements = body.get_mut("element_list").and_then(Value::as_array_mut);
    for e in elements.into_iter().flatten() {
        if let Some(id) = e.get("element_id").and_then(Value::as_u64) {
            e["element_id"] = json!(id.to_string());
        }
    }
}

/// kkiai marks `duration` Required even for a base-video edit, where the output lasts as
/// long as the input and the value "is invalid" (ignored; billing follows the input).
/// Sent then as the input's length when the client gave one within Kling's 3-10 s
/// (what a video allows), else Kling's default.
pub(super) fn fill_ignored_duration(body: &mut Value, req: &VideoRequest) {
    if let Some(body) = body.as_object_mut().filter(|b| !b.contains_key("duration")) {
        let input = req.base_video().and_then(|v| v.duration).map(f64::round);
        let seconds = input
            .filter(|s| (3.0..=10.0).contains(s))
            .map_or(crate::domain::DEFAULT_DURATION, |s| s as u32);
        body.insert("duration".into(), json!(seconds.to_string()));
    }
}

/// The fields that every Kling-shaped body carries (apimodels takes them too). Absent
/// optional fields are left out, never sent as null.
pub(in crate::providers) fn shared_fields(req: &VideoRequest) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(prompt) = &req.prompt {
        body.insert("prompt".into(), json!(prompt));
    }
    body.insert("mode".into(), json!(req.mode().as_str()));
    if let Some(ratio) = req.aspect_ratio {
        body.insert("aspect_ratio".into(), json!(ratio.as_str()));
    }
    if let Some(seconds) = req.output_seconds() {
        body.insert("duration".into(), json!(seconds.to_string()));
    }
    // Always sent: kkiai marks it required.
    body.insert("multi_shot".into(), json!(req.is_multi_shot()));
    if let Some(shot_type) = req.shot_type {
        body.insert("shot_type".into(), json!(shot_type_name(shot_type)));
    }
    if let Some(shots) = &req.multi_prompt {
        body.insert("multi_prompt".into(), multi_prompt(shots));
    }
    if !req.image_list.is_empty() {
        body.insert("image_list".into(), image_list(req));
    }
    if !req.element_list.is_empty() {
        let elements = req.element_list.iter();
        let elements = elements.map(|e| json!({ "element_id": e.element_id }));
        body.insert("element_list".into(), Value::Array(elements.collect()));
    }
    if !req.video_list.is_empty() {
        let videos = req.video_list.iter().map(video_entry).collect();
        body.insert("video_list".into(), Value::Array(videos));
    }
    body.insert("sound".into(), json!(req.sound().as_str()));
    if let Some(enabled) = req.watermark {
        body.insert("watermark_info".into(), json!({ "enabled": enabled }));
    }
    body
}

fn shot_type_name(shot_type: ShotType) -> &'static str {
    match shot_type {
        ShotType::Customize => "customize",
        ShotType::Intelligence => "intelligence",
    }
}

fn multi_prompt(shots: &[Shot]) -> Value {
    let shots = shots.iter().enumerate().map(|(i, shot)| {
        // 1-based, as Kling numbers its shots.
        let index = shot.number(i);
        json!({
            "index": index,
            "prompt": shot.prompt,
            "duration": shot.duration.to_string(),
        })
    });
    Value::Array(shots.collect())
}

fn image_list(req: &VideoRequest) -> Value {
    let images = req.image_list.iter().map(|image| {
        let mut entry = Map::new();
        entry.insert("image_url".into(), json!(raw_image(&image.image_url)));
        if let Some(frame) = image.frame {
            let name = match frame {
                FrameType::FirstFrame => "first_frame",
                FrameType::EndFrame => "end_frame",
            };
            entry.insert("type".into(), json!(name));
        }
        Value::Object(entry)
    });
    Value::Array(images.collect())
}

fn video_entry(video: &VideoRef) -> Value {
    let mut entry = Map::new();
    entry.insert("video_url".into(), json!(video.video_url));
    // Explicit even though `base` is Kling's default: resellers need not share defaults.
    let refer_type = match video.refer_type() {
        ReferType::Base => "base",
        ReferType::Feature => "feature",
    };
    entry.insert("refer_type".into(), json!(refer_type));
    if let Some(keep) = video.keep_original_sound {
        entry.insert("keep_original_sound".into(), json!(keep.as_str()));
    }
    Value::Object(entry)
}

/// Kling wants raw base64: strips a `data:<mime>;base64,` prefix and leaves URLs alone.
pub(in crate::providers) fn raw_image(image: &str) -> &str {
    let is_data_uri = image
        .get(..5)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:"));
    match image.split_once(";base64,") {
        Some((_, raw)) if is_data_uri => raw,
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fixtures::request;

    #[test]
    fn text_to_video_body_applies_defaults_and_sends_our_id() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "a cat",
            "aspect_ratio": "16:9",
            "callback_url": "https://client.example/hook",
            "metadata": {"k": "v"},
        }));
        assert_eq!(
            create_body("vgt_1", &req),
            json!({
                "model_name": "kling-v3-omni",
                "prompt": "a cat",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": "5",
                "multi_shot": false,
                "sound": "off",
                "external_task_id": "vgt_1",
            })
        );
    }

    #[test]
    fn frame_images_keep_their_roles_and_lose_the_data_uri_prefix() {
        let req = request(json!({
            "model": "kling-video-o1",
            "prompt": "from here to there",
            "mode": "std",
            "duration": 10,
            "sound": "on",
            "image_list": [
                {"image_url": "data:image/png;base64,iVBORw0KGgo=", "type": "first_frame"},
                {"image_url": "https://img.example/end.jpg", "type": "end_frame"},
                {"image_url": "https://img.example/style.jpg"},
            ],
        }));
        assert_eq!(
            create_body("vgt_2", &req),
            json!({
                "model_name": "kling-video-o1",
                "prompt": "from here to there",
                "mode": "std",
                "duration": "10",
                "multi_shot": false,
                "sound": "on",
                "image_list": [
                    {"image_url": "iVBORw0KGgo=", "type": "first_frame"},
                    {"image_url": "https://img.example/end.jpg", "type": "end_frame"},
                    {"image_url": "https://img.example/style.jpg"},
                ],
                "external_task_id": "vgt_2",
            })
        );
    }

    #[test]
    fn element_ids_can_be_sent_as_strings() {
        let req = request(
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1",
                                 "element_list": [{"element_id": 835266081714884677_u64}]}),
        );
        let mut body = create_body("vgt_9", &req);
        stringify_element_ids(&mut body);
        assert_eq!(
            body["element_list"],
            json!([{"element_id": "835266081714884677"}])
        );
    }

    #[test]
    fn with_always_send_duration_a_base_edit_carries_an_ignored_duration() {
        let edit = |video: Value| {
            let req =
                request(json!({"model": "kling-v3-omni", "prompt": "p", "video_list": [video]}));
            let mut body = create_body("vgt_3", &req);
            fill_ignored_duration(&mut body, &req);
            body["duration"].clone()
        };
        let url = "https://v.example/in.mp4";
        assert_eq!(edit(json!({"video_url": url})), json!("5"));
        assert_eq!(edit(json!({"video_url": url, "duration": 7.4})), json!("7"));
        assert_eq!(edit(json!({"video_url": url, "duration": 30})), json!("5"));
        // A request that has a duration keeps its own.
        let req = request(
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1", "duration": 8}),
        );
        let mut body = create_body("vgt_4", &req);
        fill_ignored_duration(&mut body, &req);
        assert_eq!(body["duration"], json!("8"));
    }

    #[test]
    fn base_video_edit_omits_duration() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "make it snow",
            "video_list": [{"video_url": "https://v.example/in.mp4", "keep_original_sound": "yes"}],
        }));
        assert_eq!(
            create_body("vgt_3", &req),
            json!({
                "model_name": "kling-v3-omni",
                "prompt": "make it snow",
                "mode": "pro",
                "multi_shot": false,
                "video_list": [{
                    "video_url": "https://v.example/in.mp4",
                    "refer_type": "base",
                    "keep_original_sound": "yes",
                }],
                "sound": "off",
                "external_task_id": "vgt_3",
            })
        );
    }

    #[test]
    fn feature_video_keeps_the_duration() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "in this style",
            "duration": 7,
            "aspect_ratio": "9:16",
            "video_list": [{"video_url": "https://v.example/ref.mp4", "refer_type": "feature"}],
        }));
        let body = create_body("vgt_4", &req);
        assert_eq!(body["duration"], json!("7"));
        assert_eq!(
            body["video_list"],
            json!([{"video_url": "https://v.example/ref.mp4", "refer_type": "feature"}])
        );
    }

    #[test]
    fn customized_multi_shot_numbers_shots_from_one_with_string_durations() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "duration": 8,
            "aspect_ratio": "1:1",
            "multi_shot": true,
            "shot_type": "customize",
            "multi_prompt": [
                {"prompt": "wide shot", "duration": 3},
                {"index": 7, "prompt": "close up", "duration": "5"},
            ],
        }));
        assert_eq!(
            create_body("vgt_5", &req),
            json!({
                "model_name": "kling-v3-omni",
                "mode": "pro",
                "aspect_ratio": "1:1",
                "duration": "8",
                "multi_shot": true,
                "shot_type": "customize",
                "multi_prompt": [
                    {"index": 1, "prompt": "wide shot", "duration": "3"},
                    {"index": 7, "prompt": "close up", "duration": "5"},
                ],
                "sound": "off",
                "external_task_id": "vgt_5",
            })
        );
    }

    #[test]
    fn elements_are_numbers_and_watermark_and_negative_prompt_are_passed() {
        let req = request(json!({
            "model": "kling-video-o1",
            "prompt": "<<<element_1>>> dancing",
            "negative_prompt": "blur",
            "aspect_ratio": "16:9",
            "element_list": [{"element_id": "835266081714884677"}, {"element_id": 12}],
            "watermark": false,
        }));
        assert_eq!(
            create_body("vgt_6", &req),
            json!({
                "model_name": "kling-video-o1",
                "prompt": "<<<element_1>>> dancing",
                "negative_prompt": "blur",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": "5",
                "multi_shot": false,
                "element_list": [{"element_id": 835266081714884677_u64}, {"element_id": 12}],
                "sound": "off",
                "watermark_info": {"enabled": false},
                "external_task_id": "vgt_6",
            })
        );
    }

    #[test]
    fn raw_image_strips_only_data_uris() {
        assert_eq!(raw_image("data:image/jpeg;base64,/9j/4AAQ"), "/9j/4AAQ");
        assert_eq!(raw_image("/9j/4AAQ"), "/9j/4AAQ");
        assert_eq!(
            raw_image("https://x.example/a;base64,b.png"),
            "https://x.example/a;base64,b.png"
        );
    }
}
