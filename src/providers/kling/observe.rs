//! The shapes a Kling-dialect task arrives in (Kling's envelope, the relay wrapper, a
//! bare task) read into one [`Observed`], and Kling's state words.

use serde_json::Value;

use crate::domain::TaskStatus;
use crate::providers::http::{self, Observed};

/// Every shape a Kling-dialect task arrives in, in one place (WIRE-NOTES: the shapes of
/// kkiai's query and of callbacks are unconfirmed, so all are accepted everywhere):
/// - Kling's envelope: `{code: 0, data: {task_status, task_result, ...}}`;
/// - the relay wrapper (anyfast, maybe kkiai): `{code: "success", data: {status,
///   fail_reason, progress, data: <Kling envelope or bare task>}}`;
/// - a bare task (list entries, most callbacks): `{task_status, ...}`.
///
/// `None` when none of them is recognizable.
pub(super) fn observe(body: &Value, upstream_id: Option<&str>) -> Option<Observed> {
    let data = body.get("data");
    if let Some(task) = data.filter(|d| d.get("task_status").is_some()) {
        return Some(observe_kling(task, upstream_id, "data."));
    }
    if let Some(relay) = data.filter(|d| d.get("status").is_some()) {
        return Some(observe_relay(relay, upstream_id));
    }
    body.get("task_status")
        .is_some()
        .then(|| observe_kling(body, upstream_id, ""))
}

/// `at`: where `task` sits in the answer, for the field names in an Unreadable error.
pub(super) fn observe_kling(task: &Value, upstream_id: Option<&str>, at: &str) -> Observed {
    let state = task
        .get("task_status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Observed {
        upstream_id: upstream_id
            .map(str::to_string)
            .or_else(|| task.get("task_id").and_then(http::text))
            .unwrap_or_default(),
        raw_state: state.to_string(),
        state_field: format!("{at}task_status"),
        status: kling_state(state),
        videos: http::videos(task.pointer("/task_result/videos")),
        videos_field: format!("{at}task_result.videos"),
        failure_message: task.get("task_status_msg").and_then(http::text),
        progress: task.get("progress").and_then(http::progress),
    }
}

fn observe_relay(relay: &Value, upstream_id: Option<&str>) -> Observed {
    let inner = relay.get("data").and_then(|d| {
        if d.get("task_status").is_some() {
            Some((d, "data.data."))
        } else {
            let task = d.get("data").filter(|t| t.get("task_status").is_some());
            task.map(|t| (t, "data.data.data."))
        }
    });
    let inner = inner.map(|(t, at)| observe_kling(t, upstream_id, at));
    let state = relay
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let upstream_id = upstream_id
        .map(str::to_string)
        .or_else(|| relay.get("task_id").and_then(http::text))
        .or_else(|| inner.as_ref().map(|t| t.upstream_id.clone()))
        .unwrap_or_default();
    let inner = inner.unwrap_or_else(|| Observed {
        // Where anyfast's guide puts the URL when the relay wraps nothing yet.
        videos_field: "data.data.data.task_result.videos".into(),
        ..Observed::default()
    });
    Observed {
        upstream_id,
        raw_state: state.to_string(),
        state_field: "data.status".into(),
        // The relay's own word first; the wrapped Kling state if the relay's is new to us.
        status: kling_state(state).or(inner.status),
        videos: inner.videos,
        videos_field: inner.videos_field,
        failure_message: relay
            .get("fail_reason")
            .and_then(http::text)
            .or(inner.failure_message),
        progress: relay
            .get("progress")
            .and_then(http::progress)
            .or(inner.progress),
    }
}

/// Kling's states and the relay spellings of them (WIRE-NOTES "Normalized states"),
/// matched case-insensitively. `None`: a state we do not know.
pub fn kling_state(state: &str) -> Option<TaskStatus> {
    match state.trim().to_ascii_lowercase().as_str() {
        "submitted" | "queued" | "not_start" => Some(TaskStatus::Queued),
        "processing" | "in_progress" => Some(TaskStatus::InProgress),
        "succeed" | "success" => Some(TaskStatus::Completed),
        "failed" | "failure" => Some(TaskStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::VideoResult;
    use crate::providers::fixtures::reply;
    use crate::providers::kling::answer::read_task;
    use crate::providers::kling::envelope;
    use crate::providers::{ErrorKind, ProviderError, UpstreamTask};
    use serde_json::json;

    fn query(body: Value) -> UpstreamTask {
        read_task(&reply(200, body), "86").expect("answer reads")
    }

    fn unreadable(body: Value) -> ProviderError {
        read_task(&reply(200, body), "86").expect_err("answer is unreadable")
    }

    fn relay(status: &str, inner: Value) -> Value {
        json!({"code": "success", "message": "", "data": {
            "task_id": "86", "status": status, "fail_reason": "", "progress": "30%",
            "submit_time": 1773130665, "finish_time": 0, "data": inner,
        }})
    }

    #[test]
    fn kling_envelope_states_map_onto_normalized_states() {
        let states = [
            ("submitted", TaskStatus::Queued),
            ("processing", TaskStatus::InProgress),
            ("failed", TaskStatus::Failed),
        ];
        for (state, want) in states {
            let task = query(envelope(
                json!({"task_id": "86", "task_status": state, "task_result": {}}),
            ));
            assert_eq!(task.status, want, "{state}");
        }
    }

    #[test]
    fn succeeded_kling_task_carries_its_videos() {
        let task = query(envelope(json!({
            "task_id": "86", "task_status": "succeed", "task_status_msg": "",
            "task_info": {"external_task_id": "vgt_1"},
            "task_result": {"videos": [{"id": "v", "url": "https://cdn/v.mp4", "duration": "5.041"}]},
            "created_at": 1773130665000_u64, "updated_at": 1773130700000_u64,
        })));
        assert_eq!(
            task,
            UpstreamTask {
                upstream_id: "86".into(),
                status: TaskStatus::Completed,
                progress: None,
                videos: vec![VideoResult {
                    url: "https://cdn/v.mp4".into(),
                    duration: Some(5.041)
                }],
                failure_message: None,
            }
        );
    }

    #[test]
    fn failed_kling_task_keeps_the_provider_reason() {
        let task = query(envelope(json!({
            "task_id": "86", "task_status": "failed", "task_status_msg": "Failure to pass the risk control system",
        })));
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(
            task.failure_message.as_deref(),
            Some("Failure to pass the risk control system")
        );
    }

    #[test]
    fn success_without_a_video_url_is_unreadable_naming_the_videos_field() {
        let err = unreadable(envelope(
            json!({"task_id": "86", "task_status": "succeed", "task_result": {}}),
        ));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data.task_result.videos: no video URL although the task says "succeed""#
        );
        assert!(err.raw_body.unwrap().contains(r#""succeed""#));
        assert!(!err.ambiguous);
    }

    #[test]
    fn unknown_state_is_unreadable_naming_the_state_field() {
        let err = unreadable(envelope(json!({"task_id": "86", "task_status": "paused"})));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data.task_status: unknown state word "paused""#
        );
        let err =
            unreadable(json!({"code": "success", "data": {"task_id": "86", "status": "WAITING"}}));
        assert_eq!(err.message, r#"data.status: unknown state word "WAITING""#);
        let err = unreadable(json!({"task_id": "86", "task_status": "frobbing"}));
        assert_eq!(err.message, r#"task_status: unknown state word "frobbing""#);
    }

    #[test]
    fn an_unknown_relay_word_is_read_through_the_wrapped_kling_state() {
        let inner = envelope(json!({"task_id": "86", "task_status": "processing"}));
        let task = query(relay("WAITING", inner));
        assert_eq!(task.status, TaskStatus::InProgress);
    }

    #[test]
    fn relay_wrapper_states_map_case_insensitively() {
        let states = [
            ("SUBMITTED", TaskStatus::Queued),
            ("QUEUED", TaskStatus::Queued),
            ("NOT_START", TaskStatus::Queued),
            ("PROCESSING", TaskStatus::InProgress),
            ("IN_PROGRESS", TaskStatus::InProgress),
            ("in_progress", TaskStatus::InProgress),
            ("FAILED", TaskStatus::Failed),
            ("FAILURE", TaskStatus::Failed),
            ("Failure", TaskStatus::Failed),
        ];
        for (state, want) in states {
            let task = query(relay(state, Value::Null));
            assert_eq!(task.status, want, "{state}");
            assert_eq!(task.progress, Some(30));
        }
    }

    #[test]
    fn relay_success_takes_the_url_from_the_wrapped_envelope() {
        let inner = envelope(json!({
            "task_id": "86", "task_status": "succeed",
            "task_result": {"videos": [{"id": "v", "url": "https://cdn/r.mp4", "duration": "10.0"}]},
        }));
        let task = query(relay("SUCCESS", inner));
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.videos[0].url, "https://cdn/r.mp4");
        assert_eq!(task.videos[0].duration, Some(10.0));
        let err = unreadable(relay("SUCCESS", Value::Null));
        assert_eq!(err.kind, ErrorKind::Unreadable, "no URL, not completed");
        assert!(
            err.message
                .starts_with("data.data.data.task_result.videos: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn relay_failure_prefers_fail_reason() {
        let mut body = relay("FAILURE", Value::Null);
        body["data"]["fail_reason"] = json!("content blocked");
        let task = query(body);
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(task.failure_message.as_deref(), Some("content blocked"));
    }

    #[test]
    fn bare_task_object_is_read_too() {
        let task = query(json!({"task_id": "86", "task_status": "processing"}));
        assert_eq!(task.status, TaskStatus::InProgress);
    }
}
