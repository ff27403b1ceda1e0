use std::collections::HashSet;

use serde_json::{json, Value};

use super::*;

struct Case {
    name: &'static str,
    body: Value,
    param: &'static str,
    message: &'static str,
}

fn case(name: &'static str, body: Value, param: &'static str, message: &'static str) -> Case {
    Case {
        name,
        body,
        param,
        message,
    }
}

fn request(name: &str, body: &Value) -> VideoRequest {
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("case {name}: body does not deserialize: {e}"))
}

/// A tiny valid PNG-ish payload; only its base64 shape matters here.
const B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk";

#[rustfmt::skip] // one case per line reads as a table
fn rejected_cases() -> Vec<Case> {
    let long = "x".repeat(2501);
    let shot = |prompt: &str, duration: u32| json!({"prompt": prompt, "duration": duration});
    let img = |url: &str| json!({"image_url": url});
    let first = json!({"image_url": "https://a.example/1.png", "type": "first_frame"});
    let end = json!({"image_url": "https://a.example/2.png", "type": "end_frame"});
    let base = json!({"video_url": "https://a.example/v.mp4"});
    let feature = json!({"video_url": "https://a.example/v.mp4", "refer_type": "feature"});
    let o1 = |extra: Value| merge(json!({"model": "kling-video-o1", "prompt": "a cat", "aspect_ratio": "16:9"}), extra);
    let v3 = |extra: Value| merge(json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9"}), extra);
    vec![
        // 1. prompt
        case("r1_prompt_missing", v3(json!({"prompt": null})), "prompt", "required"),
        case("r1_prompt_blank", v3(json!({"prompt": "   \n"})), "prompt", "required"),
        case("r1_prompt_too_long", v3(json!({"prompt": long})), "prompt", "at most 2500"),
        case("r1_negative_prompt_too_long", v3(json!({"negative_prompt": long})), "negative_prompt", "at most 2500"),
        case("r1_intelligence_needs_prompt", v3(json!({"prompt": null, "multi_shot": true, "shot_type": "intelligence"})), "prompt", "required"),
        // 2. duration
        case("r2_o1_above_10", o1(json!({"duration": 11, "video_list": [feature]})), "duration", "3 to 10"),
        case("r2_v3_above_15", v3(json!({"duration": 16})), "duration", "3 to 15"),
        case("r2_v3_below_3", v3(json!({"duration": 2})), "duration", "3 to 15"),
        case("r2_o1_text_to_video_only_5_or_10", o1(json!({"duration": 7})), "duration", "5 or 10"),
        case("r2_o1_image_to_video_only_5_or_10", o1(json!({"duration": "3", "image_list": [first]})), "duration", "5 or 10"),
        case("r2_v3_with_video_at_most_10", v3(json!({"duration": 11, "video_list": [feature]})), "duration", "3 to 10"),
        case("r2_base_edit_forbids_duration", v3(json!({"duration": 5, "video_list": [base]})), "duration", "omitted"),
        // 3. multi_shot
        case("r3_shot_type_without_multi_shot", v3(json!({"shot_type": "intelligence"})), "shot_type", "only allowed when multi_shot"),
        case("r3_multi_prompt_without_multi_shot", v3(json!({"multi_shot": false, "multi_prompt": [shot("a", 5)]})), "multi_prompt", "only allowed when multi_shot"),
        case("r3_shot_type_required", v3(json!({"multi_shot": true})), "shot_type", "required"),
        case("r3_customize_needs_multi_prompt", v3(json!({"multi_shot": true, "shot_type": "customize"})), "multi_prompt", "required"),
        case("r3_customize_at_least_one_shot", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": []})), "multi_prompt", "1 to 6 shots"),
        case("r3_customize_at_most_six_shots", v3(json!({"duration": 7, "multi_shot": true, "shot_type": "customize", "multi_prompt": vec![shot("a", 1); 7]})), "multi_prompt", "1 to 6 shots"),
        case("r3_shot_prompt_empty", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 2), shot(" ", 3)]})), "multi_prompt[1].prompt", "1 to 512"),
        case("r3_shot_prompt_too_long", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot(&"é".repeat(513), 5)]})), "multi_prompt[0].prompt", "1 to 512"),
        case("r3_shot_duration_zero", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 5), shot("b", 0)]})), "multi_prompt[1].duration", "1 to 5 seconds"),
        case("r3_shot_duration_above_total", v3(json!({"duration": 6, "multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 7)]})), "multi_prompt[0].duration", "1 to 6 seconds"),
        case("r3_shot_durations_must_sum_to_duration", v3(json!({"duration": 10, "multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 4), shot("b", 4)]})), "multi_prompt", "add up to the task duration of 10"),
        case("r3_shot_durations_sum_to_default_5", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 3), shot("b", 3)]})), "multi_prompt", "the default, as duration is omitted"),
        case("r3_shot_indexes_unique", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 1, "prompt": "a", "duration": 2}, {"index": 1, "prompt": "b", "duration": 3}]})), "multi_prompt[1].index", "unique"),
        case("r3_unindexed_shot_collides_with_given_index", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a", "duration": 2}, {"index": 1, "prompt": "b", "duration": 3}]})), "multi_prompt[1].index", "used twice"),
        case("r3_shot_index_at_most_6", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 7, "prompt": "a", "duration": 5}]})), "multi_prompt[0].index", "1 to 6"),
        case("r3_shot_index_at_least_1", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 0, "prompt": "a", "duration": 5}]})), "multi_prompt[0].index", "1 to 6"),
        case("r3_intelligence_forbids_multi_prompt", v3(json!({"multi_shot": true, "shot_type": "intelligence", "multi_prompt": [shot("a", 5)]})), "multi_prompt", "omitted with shot_type intelligence"),
        case("r3_multi_shot_not_with_base_edit", v3(json!({"multi_shot": true, "shot_type": "intelligence", "video_list": [base]})), "multi_shot", "editing a video"),
        // 4. sound
        case("r4_sound_off_with_video", v3(json!({"sound": "on", "video_list": [feature]})), "sound", "must be off"),
        // 5. video_list
        case("r5_at_most_one_video", v3(json!({"video_list": [feature, feature]})), "video_list", "at most 1"),
        case("r5_video_url_not_empty", v3(json!({"video_list": [{"video_url": "", "refer_type": "feature"}]})), "video_list[0].video_url", "must not be empty"),
        // 6. image_list
        case("r6_image_url_not_empty", v3(json!({"image_list": [img(" ")]})), "image_list[0].image_url", "must not be empty"),
        case("r6_one_first_frame", v3(json!({"image_list": [first, first]})), "image_list[1].type", "at most one first_frame"),
        case("r6_one_end_frame", v3(json!({"image_list": [first, end, end]})), "image_list[2].type", "at most one end_frame"),
        case("r6_end_frame_needs_first_frame", v3(json!({"image_list": [img("https://a.example/x.png"), end]})), "image_list[1].type", "needs a first_frame"),
        case("r6_no_frames_with_base_edit", v3(json!({"image_list": [first], "video_list": [base]})), "image_list[0].type", "editing a video"),
        // 7. reference counts
        case("r7_at_most_7_refs_without_video", v3(json!({"image_list": vec![img("https://a.example/x.png"); 5], "element_list": [{"element_id": 1}, {"element_id": 2}, {"element_id": "3"}]})), "element_list", "at most 7 without"),
        case("r7_at_most_4_refs_with_video", v3(json!({"image_list": vec![img("https://a.example/x.png"); 5], "video_list": [feature]})), "image_list", "at most 4 with"),
        // 8. aspect_ratio
        case("r8_aspect_ratio_required", v3(json!({"aspect_ratio": null, "image_list": [img("https://a.example/x.png")]})), "aspect_ratio", "required unless a first_frame"),
        case("r8_feature_video_does_not_set_shape", v3(json!({"aspect_ratio": null, "video_list": [feature]})), "aspect_ratio", "required"),
        // 9. callback_url and routing
        case("r9_callback_must_be_http_or_https", v3(json!({"callback_url": "ftp://a.example/hook"})), "callback_url", "absolute https URL"),
        case("r9_callback_events_need_a_url", v3(json!({"callback_events": ["in_progress"]})), "callback_events", "needs a callback_url"),
        case("r9_callback_events_unique", v3(json!({"callback_url": "https://a.example/h", "callback_events": ["in_progress", "in_progress"]})), "callback_events[1]", "twice"),
        case("r9_callback_must_be_absolute", v3(json!({"callback_url": "/hook"})), "callback_url", "absolute https URL"),
        case("r9_callback_not_empty", v3(json!({"callback_url": ""})), "callback_url", "absolute https URL"),
        case("r9_callback_without_control_characters", v3(json!({"callback_url": "https://a.example/a\u{0}b"})), "callback_url", "control characters"),
        case("r9_callback_without_a_tab", v3(json!({"callback_url": "https://a.example/a\tb"})), "callback_url", "control characters"),
        case("r9_max_cost_positive", v3(json!({"routing": {"max_cost_usd": 0.0}})), "routing.max_cost_usd", "positive"),
        case("r9_providers_not_empty", v3(json!({"routing": {"providers": []}})), "routing.providers", "at least one"),
        case("r9_provider_name_not_empty", v3(json!({"routing": {"providers": ["anyfast", " "]}})), "routing.providers[1]", "must not be empty"),
        // 10. metadata
        case("r10_metadata_object", v3(json!({"metadata": ["a"]})), "metadata", "JSON object"),
        case("r10_metadata_at_most_16_keys", v3(json!({"metadata": (0..17).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()})), "metadata", "at most 16 keys"),
        case("r10_metadata_key_at_most_64", v3(json!({"metadata": {"k".repeat(65): "v"}})), "metadata", "at most 64"),
        case("r10_metadata_value_at_most_512", v3(json!({"metadata": {"order": "v".repeat(513)}})), "metadata.order", "at most 512"),
        case("r10_metadata_value_string", v3(json!({"metadata": {"order": {"id": 1}}})), "metadata.order", "must be strings"),
        // 11. media sources
        case("r11_image_ftp_rejected", v3(json!({"image_list": [img("ftp://a.example/x.png")]})), "image_list[0].image_url", "the ftp scheme is not accepted"),
        case("r11_image_file_rejected", v3(json!({"image_list": [img("https://a.example/x.png"), img("file:///etc/passwd")]})), "image_list[1].image_url", "the file scheme is not accepted"),
        case("r11_image_neither_url_nor_base64", v3(json!({"image_list": [img("cat.png")]})), "image_list[0].image_url", "base64 image data"),
        case("r11_image_data_url_not_image", v3(json!({"image_list": [img(&format!("data:text/plain;base64,{B64}"))]})), "image_list[0].image_url", "data:image/<type>;base64"),
        case("r11_image_data_url_bad_payload", v3(json!({"image_list": [img("data:image/png;base64,not base64!")]})), "image_list[0].image_url", "data:image/<type>;base64"),
        case("r11_base64_image_at_most_10_mb", v3(json!({"image_list": [img("https://a.example/x.png"), img(&"A".repeat(14_000_004))]})), "image_list[1].image_url", "at most 10 MB"),
        case("r11_data_url_image_at_most_10_mb", v3(json!({"image_list": [img(&format!("data:image/png;base64,{}", "A".repeat(14_000_004)))]})), "image_list[0].image_url", "at most 10 MB"),
        case("r11_video_base64_rejected", v3(json!({"video_list": [{"video_url": B64, "refer_type": "feature"}]})), "video_list[0].video_url", "an http(s) URL"),
        case("r11_video_file_rejected", v3(json!({"video_list": [{"video_url": "file:///tmp/v.mp4", "refer_type": "feature"}]})), "video_list[0].video_url", "the file scheme is not accepted"),
    ]
}

#[rustfmt::skip] // one case per line reads as a table
fn accepted_cases() -> Vec<(&'static str, Value)> {
    let first = json!({"image_url": "https://a.example/1.png", "type": "first_frame"});
    let end = json!({"image_url": B64, "type": "end_frame"});
    let img = json!({"image_url": format!("data:image/png;base64,{B64}")});
    vec![
        ("text_to_video_o1_5s", json!({"model": "kling-video-o1", "prompt": "a cat", "aspect_ratio": "16:9", "duration": 5})),
        ("text_to_video_o1_default_duration", json!({"model": "kling-o1", "prompt": "a cat", "aspect_ratio": "1:1"})),
        ("text_to_video_v3_15s", json!({"model": "kling-v3-omni-video", "prompt": "a cat", "aspect_ratio": "9:16", "duration": "15", "sound": "on"})),
        ("first_and_end_frame_without_aspect_ratio", json!({"model": "kling-video-o1", "prompt": "a cat", "duration": 10, "image_list": [end, first]})),
        ("base_video_edit_without_duration", json!({"model": "kling-v3-omni", "prompt": "make it snow", "video_list": [{"video_url": "https://a.example/v.mp4", "keep_original_sound": "yes"}]})),
        ("feature_video_v3_10s", json!({"model": "kling-v3-omni", "prompt": "in the style of <<<video_1>>>", "aspect_ratio": "16:9", "duration": 10, "video_list": [{"video_url": "https://a.example/v.mp4", "refer_type": "feature"}]})),
        ("o1_reference_images_7s", json!({"model": "kling-video-o1", "prompt": "<<<image_1>>> on a beach", "aspect_ratio": "16:9", "duration": 7, "image_list": [{"image_url": "https://a.example/1.png"}]})),
        ("feature_video_o1_7s", json!({"model": "kling-video-o1", "prompt": "like <<<video_1>>>", "aspect_ratio": "16:9", "duration": 7, "video_list": [{"video_url": "http://a.example/v.mp4", "refer_type": "feature", "keep_original_sound": "no"}]})),
        ("multi_shot_unindexed_then_next_index", json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "duration": 5, "multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a door opens", "duration": 2}, {"index": 2, "prompt": "a cat walks in", "duration": 3}]})),
        ("multi_shot_customize_summing_to_duration", json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "duration": 12, "multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 1, "prompt": "a door opens", "duration": 4}, {"index": 2, "prompt": "a cat walks in", "duration": "8"}]})),
        ("multi_shot_customize_default_duration", json!({"model": "kling-v3-omni", "prompt": "   ", "aspect_ratio": "16:9", "multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a", "duration": 2}, {"prompt": "b", "duration": 3}]})),
        ("multi_shot_intelligence", json!({"model": "kling-v3-omni", "prompt": "a heist in three acts", "aspect_ratio": "16:9", "duration": 15, "multi_shot": true, "shot_type": "intelligence"})),
        ("seven_images_no_video", json!({"model": "kling-v3-omni", "prompt": "a collage", "aspect_ratio": "1:1", "image_list": vec![img.clone(); 7]})),
        ("four_refs_with_a_video", json!({"model": "kling-v3-omni", "prompt": "<<<element_1>>> in <<<video_1>>>", "aspect_ratio": "16:9", "image_list": vec![img.clone(); 2], "element_list": [{"element_id": 835266081714884677_u64}, {"element_id": "42"}], "video_list": [{"video_url": "https://a.example/v.mp4", "refer_type": "feature"}]})),
        ("prompt_of_2500_multibyte_chars", json!({"model": "kling-v3-omni", "prompt": "é".repeat(2500), "negative_prompt": "", "aspect_ratio": "16:9"})),
        ("callback_routing_metadata", json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9", "callback_url": "https://hooks.example.com/omnigate?token=abc", "routing": {"providers": ["anyfast"], "max_cost_usd": 1.5}, "metadata": {"order": "42"}, "watermark": false, "mode": "std"})),
    ]
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
    }
    base
}

#[test]
fn every_rule_rejects_its_violation_with_param_and_reason() {
    let mut failures = Vec::new();
    for c in rejected_cases() {
        match validate(&request(c.name, &c.body)) {
            Err(e) if e.param == c.param && e.message.contains(c.message) => {}
            other => failures.push(format!(
                "{}: expected {} / {:?}, got {other:?}",
                c.name, c.param, c.message
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_requests_pass() {
    let failures: Vec<String> = accepted_cases()
        .into_iter()
        .filter_map(|(name, body)| {
            validate(&request(name, &body))
                .err()
                .map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn case_names_are_unique() {
    let mut names = HashSet::new();
    let rejected = rejected_cases().into_iter().map(|c| c.name);
    let accepted = accepted_cases().into_iter().map(|(n, _)| n);
    for name in rejected.chain(accepted) {
        assert!(names.insert(name), "duplicate case name {name}");
    }
}

#[test]
fn error_displays_param_and_message() {
    let e = ValidationError::new("duration", "duration must be omitted.");
    assert_eq!(e.to_string(), "duration: duration must be omitted.");
}

#[test]
fn callback_urls_must_be_public_https_unless_private_targets_are_allowed() {
    for refused in [
        "http://hooks.example.com/h",
        "https://127.0.0.1/h",
        "https://10.0.0.8/h",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/h",
        "https://[fd00:ec2::254]/h",
        "ftp://hooks.example.com/h",
    ] {
        let e = check_callback_url(Some(refused), false).unwrap_err();
        assert_eq!(e.param, "callback_url", "{refused}");
    }
    assert!(check_callback_url(Some("https://hooks.example.com/h?t=1"), false).is_ok());
    assert!(check_callback_url(Some("https://8.8.8.8/h"), false).is_ok());
    assert!(check_callback_url(None, false).is_ok());
    for allowed in [
        "http://127.0.0.1:8080/h",
        "https://10.0.0.8/h",
        "http://localhost/h",
    ] {
        assert!(check_callback_url(Some(allowed), true).is_ok(), "{allowed}");
    }
    assert!(check_callback_url(Some("ftp://127.0.0.1/h"), true).is_err());
}
