//! One delivery attempt of one event: the body, its signature, the POST, and what the
//! answer means for the event (delivered, retried later, failed, or the URL turned off).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::client::{SendError, WebhookClient};
use super::signing;
use crate::config::WebhooksConfig;
use crate::store::{
    now_ms, CallbackShape, EventNext, TaskRecord, TaskState, WebhookAttempt, WebhookEvent,
};

/// What an attempt (or the decision not to make one) leaves behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attempt: Option<WebhookAttempt>,
    pub next: EventNext,
}

/// The event's body: `{"type", "timestamp", "data"}`, `data` the public task object.
///
/// Only the progress is stored with an event, so `data` is composed when it is sent. A
/// `completed` or `failed` event belongs to a finished task, whose object no longer
/// changes: `data` is exact. An `in_progress` event shows the task as it is now but with
/// status `in_progress`, the progress and time of the event, and no result, error,
/// `completed_at` or final cost (the task may have finished since).
pub fn payload(event: &WebhookEvent, task: &TaskRecord) -> Value {
    json!({
        "type": event.kind,
        "timestamp": rfc3339(event.created_at),
        "data": crate::task_view::task_object(&task_at(event, task)),
    })
}

/// The event's body in the task's callback shape: omnigate's (`payload`), or for a task
/// made through the Kling facade, Kling's callback body (the task object as a Kling query
/// answers it, as of the event). The signature headers are the same for every shape.
pub fn payload_in(shape: &CallbackShape, event: &WebhookEvent, task: &TaskRecord) -> Value {
    match shape {
        CallbackShape::Omnigate => payload(event, task),
        CallbackShape::Kling { external_task_id } => {
            crate::task_view::kling_task_data(&task_at(event, task), external_task_id.as_deref())
        }
    }
}

/// The task as of the event (see `payload`).
fn task_at(event: &WebhookEvent, task: &TaskRecord) -> TaskRecord {
    let mut task = task.clone();
    if event.kind.ends_with(".in_progress") {
        task.state = TaskState::InProgress;
        task.progress = event.progress;
        task.videos.clear();
        task.error = None;
        task.completed_at = None;
        task.cost_final_usd = None;
        task.updated_at = event.created_at;
    }
    task
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Signs `body` with every secret in `secrets` and POSTs it to the event's URL once.
pub async fn attempt(
    client: &WebhookClient,
    config: &WebhooksConfig,
    secrets: &[String],
    event: &WebhookEvent,
    body: Vec<u8>,
) -> Outcome {
    let at = now_ms();
    let timestamp = at.div_euclid(1000);
    let signature = match signing::signature_header(secrets, &event.id, timestamp, &body) {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                attempt: Some(WebhookAttempt {
                    at,
                    status_code: None,
                    latency_ms: 0,
                    error: Some(format!("not sent: {e}")),
                    response_excerpt: None,
                }),
                next: EventNext::Failed,
            }
            .counted(None)
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        ("webhook-id", event.id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    let started = Instant::now();
    let sent = client.post(&event.url, headers, body).await;
    let latency_ms = started.elapsed().as_millis() as i64;
    let mut record = WebhookAttempt {
        at,
        status_code: None,
        latency_ms,
        error: None,
        response_excerpt: None,
    };
    let next = match sent {
        Ok(answer) => {
            record.status_code = Some(i64::from(answer.status));
            record.response_excerpt = Some(answer.excerpt);
            match answer.status {
                200..=299 => EventNext::Delivered,
                410 => {
                    record.error =
                        Some("410 Gone: this URL gets no more events from this key".into());
                    EventNext::Disabled
                }
                status => {
                    record.error = Some(if (300..400).contains(&status) {
                        format!("{status}: redirects are not followed")
                    } else {
                        format!("{status}: not a 2xx")
                    });
                    retry(config, event, answer.retry_after)
                }
            }
        }
        Err(SendError::Refused(why)) => {
            record.error = Some(format!("refused: {why}"));
            EventNext::Failed
        }
        Err(SendError::Failed(why)) => {
            record.error = Some(why);
            retry(config, event, None)
        }
    };
    Outcome {
        attempt: Some(record),
        next,
    }
    .counted(Some(started.elapsed()))
}

impl Outcome {
    /// Counts the attempt in the webhook metrics by what it led to.
    pub(crate) fn counted(self, took: Option<Duration>) -> Self {
        let outcome = match self.next {
            EventNext::Delivered => "delivered",
            EventNext::RetryAt(_) => "retry",
            EventNext::Failed => "failed",
            EventNext::Disabled => "disabled",
        };
        crate::telemetry::metrics::webhook_delivery(outcome, took);
        self
    }
}

/// A receiver's `Retry-After` is honoured up to an hour, or the schedule's longest wait if
/// that is longer: enough for any real back-pressure, not a way to park events for days.
const RETRY_AFTER_CEILING_SECS: f64 = 3600.0;

/// The next attempt per the schedule, no sooner than the receiver's `Retry-After` (up to
/// the ceiling above), or failed when the schedule is used up.
fn retry(
    config: &WebhooksConfig,
    event: &WebhookEvent,
    retry_after: Option<Duration>,
) -> EventNext {
    let made = u32::try_from(event.attempts + 1).unwrap_or(u32::MAX);
    let Some(wait) = config.delay_before_attempt(made) else {
        return EventNext::Failed;
    };
    let longest = config
        .retry_schedule_secs
        .iter()
        .copied()
        .fold(RETRY_AFTER_CEILING_SECS, f64::max);
    let asked = retry_after
        .unwrap_or_default()
        .min(Duration::from_secs_f64(longest));
    EventNext::RetryAt(now_ms() + wait.max(asked).as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(attempts: i64) -> WebhookEvent {
        WebhookEvent {
            id: "msg_1".into(),
            task_id: "vgt_1".into(),
            api_key_id: "key_1".into(),
            seq: 0,
            kind: "video.generation.completed".into(),
            url: "https://example.com/h".into(),
            progress: 100,
            created_at: 1_700_000_000_123,
            state: "pending".into(),
            attempts,
            next_attempt_at: 0,
            delivered_at: None,
        }
    }

    #[test]
    fn the_schedule_spaces_attempts_and_retry_after_only_lengthens_them() {
        let cfg = WebhooksConfig {
            retry_schedule_secs: vec![0.0, 5.0, 300.0],
            ..WebhooksConfig::default()
        };
        let at = |n| match retry(&cfg, &event(n), None) {
            EventNext::RetryAt(t) => t - now_ms(),
            other => panic!("{other:?}"),
        };
        assert!((4_900..=5_000).contains(&at(0)));
        assert!((299_900..=300_000).contains(&at(1)));
        assert_eq!(retry(&cfg, &event(2), None), EventNext::Failed);
        let EventNext::RetryAt(t) = retry(&cfg, &event(0), Some(Duration::from_secs(60))) else {
            panic!()
        };
        assert!(t - now_ms() > 59_000, "Retry-After lengthens the wait");
        let EventNext::RetryAt(t) = retry(&cfg, &event(0), Some(Duration::from_secs(1))) else {
            panic!()
        };
        assert!(t - now_ms() > 4_900, "but never shortens it");
        let EventNext::RetryAt(t) = retry(&cfg, &event(0), Some(Duration::from_secs(99_999)))
        else {
            panic!()
        };
        assert!(t - now_ms() <= 3_600_000, "capped at an hour");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
