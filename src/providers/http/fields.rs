//! Single values in a dialect's JSON: reading text, numbers, progress and result videos
//! out of an answer, the percent-encoding of an id put into a path, and the
//! `callback_url` put into a create body.

use serde_json::{json, Value};

use super::reply::storable;
use crate::domain::VideoResult;

/// A non-empty string, or a number spelled out (some relays send ids as numbers). Its NULs
/// are already gone when it came through [`Reply::json`]; a value built some other way is
/// cleaned the same way here.
pub(in crate::providers) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(storable(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        other => text(other),
    }
}

/// A whole number sent as a number or a numeric string.
pub(in crate::providers) fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A progress percentage sent as `40`, `"40"` or `"40%"`.
pub(in crate::providers) fn progress(v: &Value) -> Option<u8> {
    let pct = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok(),
        _ => None,
    }?;
    // Truncation is intended: the value is clamped to 0..=100 first.
    pct.is_finite().then(|| pct.clamp(0.0, 100.0) as u8)
}

/// One result video: a plain URL string, or an object with `url` (or `video_url`) and an
/// optional `duration` (Kling sends it as a string such as `"5.041"`).
pub(in crate::providers) fn video(entry: &Value) -> Option<VideoResult> {
    if let Some(url) = entry.as_str() {
        return (!url.trim().is_empty()).then(|| VideoResult {
            url: url.to_string(),
            duration: None,
        });
    }
    let url = ["url", "video_url"]
        .iter()
        .find_map(|k| entry.get(k).and_then(Value::as_str))
        .filter(|u| !u.trim().is_empty())?;
    let duration = entry.get("duration").and_then(|d| match d {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Some(VideoResult {
        url: url.to_string(),
        duration,
    })
}

pub(in crate::providers) fn videos(list: Option<&Value>) -> Vec<VideoResult> {
    list.and_then(Value::as_array)
        .map(|items| items.iter().filter_map(video).collect())
        .unwrap_or_default()
}

/// Adds omnigate's upstream intake for the task as the create body's `callback_url`, for
/// the dialects that call back under that name (Kling's and apimodels'). `None`: no
/// callback is asked for and the field is left out.
pub(in crate::providers) fn set_callback_url(body: &mut Value, callback_url: Option<&str>) {
    if let (Some(url), Some(body)) = (callback_url, body.as_object_mut()) {
        body.insert("callback_url".into(), json!(url));
    }
}

/// Percent-encodes a path segment (upstream ids are opaque to us).
pub(in crate::providers) fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_accepts_numbers_and_percent_strings() {
        assert_eq!(progress(&json!(40)), Some(40));
        assert_eq!(progress(&json!("100%")), Some(100));
        assert_eq!(progress(&json!("250")), Some(100));
        assert_eq!(progress(&json!("soon")), None);
    }

    #[test]
    fn video_entries_may_be_strings_or_objects_with_url_or_video_url() {
        assert_eq!(
            video(&json!("https://v/1.mp4")).map(|v| v.url),
            Some("https://v/1.mp4".into())
        );
        assert_eq!(
            video(&json!({"url": "https://v/2.mp4", "duration": "5.041"})),
            Some(VideoResult {
                url: "https://v/2.mp4".into(),
                duration: Some(5.041)
            })
        );
        assert_eq!(
            video(&json!({"video_url": "https://v/3.mp4"})).map(|v| v.url),
            Some("https://v/3.mp4".into())
        );
        assert_eq!(video(&json!({"id": "x"})), None);
    }

    #[test]
    fn a_callback_url_is_added_only_when_there_is_one() {
        let mut body = json!({"prompt": "p"});
        set_callback_url(&mut body, None);
        assert_eq!(body, json!({"prompt": "p"}));
        set_callback_url(&mut body, Some("https://gw.example/cb/1"));
        assert_eq!(
            body,
            json!({"prompt": "p", "callback_url": "https://gw.example/cb/1"})
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("abc-1_2.3~"), "abc-1_2.3~");
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
