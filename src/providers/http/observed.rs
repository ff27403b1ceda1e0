//! The rules every dialect's task report obeys: a task as a dialect read it
//! ([`Observed`]) settled into an [`UpstreamTask`], and the `{code, data}` answer shapes
//! that modellix and apimodels share.

use serde_json::Value;

use super::classify::{check, malformed, Verdict};
use super::fields::text;
use super::reply::{truncate_message, Reply};
use super::Call;
use crate::domain::{TaskStatus, VideoResult};
use crate::providers::{ErrorKind, ProviderError, Submitted, UpstreamTask};

/// A task as a dialect read it, before the rules every dialect shares are applied.
#[derive(Debug, Clone, Default)]
pub(in crate::providers) struct Observed {
    pub upstream_id: String,
    /// The provider's state word, for the error when it is not one we know.
    pub raw_state: String,
    /// Where the state word sits in the answer (`data.status`), named in that error.
    pub state_field: String,
    pub status: Option<TaskStatus>,
    pub videos: Vec<VideoResult>,
    /// Where the video URLs sit in the answer, named when a finished task has none.
    pub videos_field: String,
    pub failure_message: Option<String>,
    pub progress: Option<u8>,
}

impl Observed {
    /// The state of a task a create answer reports. The task exists whatever the answer
    /// says, so a state word we do not know counts as in progress (and is logged); the
    /// first query reads it properly.
    pub fn created_status(&self) -> TaskStatus {
        match self.status {
            Some(TaskStatus::Completed) | None => {
                tracing::warn!(
                    upstream_id = ?self.upstream_id,
                    state = ?self.raw_state,
                    "unexpected state in a create answer; treating it as in progress"
                );
                TaskStatus::InProgress
            }
            Some(status) => status,
        }
    }

    /// Applies the rules every read of a task obeys: a state word we do not know, or a
    /// completion without a video URL, is an answer we cannot interpret. Guessing
    /// "in progress" would poll a finished (and paid) task forever, so it is an
    /// [`ErrorKind::Unreadable`] naming the field, with the answer kept in `raw_body`.
    pub fn settle(self, reply: &Reply) -> Result<UpstreamTask, ProviderError> {
        let unreadable = |message: String| ProviderError {
            kind: ErrorKind::Unreadable,
            message,
            http_status: Some(reply.status),
            code: None,
            ambiguous: false,
            raw_body: Some(reply.raw_text()),
        };
        let status = match self.status {
            None => {
                let (field, word) = (&self.state_field, &self.raw_state);
                return Err(unreadable(format!("{field}: unknown state word {word:?}")));
            }
            // Stored, copied and shown to clients as a link: it must be a web URL. (Not
            // quoted in the message: a signed URL is a credential; raw_body keeps it.)
            Some(TaskStatus::Completed) if !self.videos.iter().all(|v| is_web_url(&v.url)) => {
                let field = &self.videos_field;
                return Err(unreadable(format!(
                    "{field}: a video URL is not an http(s) URL"
                )));
            }
            Some(TaskStatus::Completed) if self.videos.is_empty() => {
                let (field, word) = (&self.videos_field, &self.raw_state);
                return Err(unreadable(format!(
                    "{field}: no video URL although the task says {word:?}"
                )));
            }
            Some(status) => status,
        };
        Ok(UpstreamTask {
            upstream_id: self.upstream_id,
            status,
            progress: self.progress,
            videos: self.videos,
            failure_message: self
                .failure_message
                .filter(|_| status == TaskStatus::Failed)
                .map(|m| truncate_message(&m)),
        })
    }
}

/// An absolute `http` or `https` URL with a host.
fn is_web_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A create answer shaped `{code, data: {<id_field>, <state_field>}}` (modellix and
/// apimodels). A missing state means just queued.
pub(in crate::providers) fn read_data_created(
    reply: &Reply,
    classify: fn(&Value) -> Option<Verdict>,
    id_field: &str,
    state_field: &str,
    map_state: fn(&str) -> Option<TaskStatus>,
) -> Result<Submitted, ProviderError> {
    let body = check(reply, Call::Submit, classify)?;
    let data = body.get("data");
    let upstream_id = data
        .and_then(|d| d.get(id_field))
        .and_then(text)
        .ok_or_else(|| {
            let what = format!("no data.{id_field} in the create answer");
            malformed(reply, Call::Submit, &what)
        })?;
    let state = data
        .and_then(|d| d.get(state_field))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(submitted(upstream_id, state, map_state))
}

/// What a create answer says: the new task's id, and its state read from the dialect's
/// `state` word by `map_state`. A fresh task whose answer names no state is queued; see
/// [`Observed::created_status`] for the rest.
pub(in crate::providers) fn submitted(
    upstream_id: String,
    state: &str,
    map_state: fn(&str) -> Option<TaskStatus>,
) -> Submitted {
    let observed = Observed {
        upstream_id: upstream_id.clone(),
        raw_state: state.to_string(),
        status: if state.trim().is_empty() {
            Some(TaskStatus::Queued)
        } else {
            map_state(state)
        },
        ..Default::default()
    };
    Submitted {
        upstream_id,
        status: observed.created_status(),
    }
}

/// A task answer shaped `{code, data: {...}}` (modellix and apimodels): the checked body
/// and the raw state found at `data.<state_field>`.
pub(in crate::providers) fn read_data_task(
    reply: &Reply,
    classify: fn(&Value) -> Option<Verdict>,
    state_field: &str,
) -> Result<(Value, String), ProviderError> {
    let body = check(reply, Call::Read, classify)?;
    if !body.get("data").is_some_and(Value::is_object) {
        return Err(malformed(
            reply,
            Call::Read,
            "no data object in the task answer",
        ));
    }
    let state = body["data"]
        .get(state_field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok((body, state))
}

/// Logs an [`ErrorKind::Unreadable`] read once, where the provider and task are known.
pub(in crate::providers) fn log_unreadable(provider: &str, upstream_id: &str, err: &ProviderError) {
    if err.kind == ErrorKind::Unreadable {
        tracing::warn!(
            provider,
            upstream_id = ?upstream_id,
            problem = ?err.message,
            "upstream task answer cannot be interpreted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::test_reply as reply;

    #[test]
    fn settle_refuses_unknown_state_and_urlless_completion_as_unreadable() {
        let r = reply(200, r#"{"state":"weird"}"#);
        let unknown = Observed {
            upstream_id: "t".into(),
            raw_state: "weird".into(),
            state_field: "data.state".into(),
            ..Default::default()
        };
        let err = unknown.settle(&r).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(err.message, r#"data.state: unknown state word "weird""#);
        assert_eq!(err.raw_body.as_deref(), Some(r#"{"state":"weird"}"#));
        let urlless = Observed {
            upstream_id: "t".into(),
            status: Some(TaskStatus::Completed),
            videos_field: "data.resultUrls".into(),
            ..Default::default()
        };
        assert_eq!(urlless.settle(&r).unwrap_err().kind, ErrorKind::Unreadable);
        let created = Observed {
            status: None,
            ..Default::default()
        };
        assert_eq!(created.created_status(), TaskStatus::InProgress);
    }

    #[test]
    fn a_finished_task_whose_video_url_is_no_web_url_is_unreadable() {
        let finished = |url: &str| Observed {
            status: Some(TaskStatus::Completed),
            videos: vec![VideoResult {
                url: url.into(),
                duration: None,
            }],
            videos_field: "data.resultUrls".into(),
            ..Default::default()
        };
        for bad in [
            "not a url",
            "javascript:alert(1)",
            "ftp://h/v.mp4",
            "/v.mp4",
            "https://",
        ] {
            let err = finished(bad).settle(&reply(200, "")).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Unreadable, "{bad}");
            assert!(
                err.message.starts_with("data.resultUrls: "),
                "{}",
                err.message
            );
        }
        for good in ["https://cdn.example/v.mp4?sig=1", "http://10.0.0.1:9/v.mp4"] {
            assert!(finished(good).settle(&reply(200, "")).is_ok(), "{good}");
        }
    }

    #[test]
    fn failure_messages_are_cut_to_500_characters() {
        let failed = Observed {
            status: Some(TaskStatus::Failed),
            failure_message: Some("é".repeat(600)),
            ..Default::default()
        };
        let message = failed
            .settle(&reply(200, ""))
            .unwrap()
            .failure_message
            .unwrap();
        assert_eq!(message.chars().count(), 501, "500 and the mark");
        assert!(message.ends_with('…'));
    }
}
