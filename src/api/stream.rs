//! `GET /v1/video/generations/{id}/stream` (and the task read with `Accept:
//! text/event-stream`): the task's status as Server-Sent Events. The current state first,
//! then one event per change, each named as the webhook event type
//! (`video.generation.<status>`) with the task object as data and an `id:` that a
//! reconnecting client sends back as `Last-Event-ID` so the state it already has is not
//! repeated; a comment heartbeat every `live.heartbeat_secs`; closed after the final state.
//!
//! Each stream has a producer task that sends into a channel of `live.stream_buffer`
//! events; a reader that lets it fill is dropped (the stream closes), never buffered
//! without bound.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::ACCEPT;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::auth::Caller;
use super::error::ApiError;
use super::live::{current_read, Read};
use crate::gateway::Gateway;
use crate::live::StreamSlot;

/// The task's status stream.
#[utoipa::path(
    get,
    path = "/v1/video/generations/{id}/stream",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "The task id (`vgt_...`)."),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: the stream resumes after it, without repeating it."),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: events named `video.generation.<status>` whose data is the task object (as `GET /v1/video/generations/{id}` answers it), each with an `id`; comment heartbeats; closed after the final state.", content_type = "text/event-stream", body = String),
        (status = 404, description = "`not_found`: no such task for this key.", body = super::error::ErrorBody),
        (status = 429, description = "`too_many_streams`: the key already has `live.max_streams` streams open on this gateway.", body = super::error::ErrorBody),
    ),
)]
pub async fn stream(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open(gw, key.id, id, &headers).await
}

/// Whether a task read asks for the stream (`Accept: text/event-stream`).
pub fn asks_for_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The status stream of task `id` of key `owner` (counted against that key's
/// `live.max_streams`): for the API and for the console's task page alike.
pub async fn open(
    gw: Arc<Gateway>,
    owner: String,
    id: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let first = current_read(&gw, &owner, &id).await?;
    let slot = gw
        .live
        .streams
        .open(&owner)
        .ok_or_else(|| too_many_streams(gw.live.streams.max()))?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (tx, rx) = mpsc::channel(gw.config.live.stream_buffer);
    let heartbeat = gw.config.live.heartbeat();
    tokio::spawn(produce(gw, owner, id, first, last_seen, tx));
    let events =
        futures::stream::unfold((rx, slot), |(mut rx, slot): (_, StreamSlot)| async move {
            let event = rx.recv().await?;
            Some((Ok::<Event, Infallible>(event), (rx, slot)))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}

fn too_many_streams(max: usize) -> ApiError {
    ApiError::Limited {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_streams",
        message: format!(
            "this key already has {max} status streams open on this gateway (live.max_streams); close one first"
        ),
    }
}

/// The stream's producer: sends the task's state whenever it differs from the last one
/// sent, until the task is final, the reader hangs up, or falls `stream_buffer` behind.
async fn produce(
    gw: Arc<Gateway>,
    owner: String,
    id: String,
    mut read: Read,
    mut last_sent: Option<String>,
    tx: mpsc::Sender<Event>,
) {
    let mut watching = None;
    loop {
        let event_id = event_id(&read);
        if last_sent.as_deref() != Some(event_id.as_str()) {
            match offer(&tx, event(&read, &event_id)) {
                Offered::Taken => last_sent = Some(event_id),
                Offered::ReaderBehind => {
                    crate::telemetry::metrics::stream_dropped_slow_reader();
                    tracing::info!(task = %id, "status stream dropped: its reader fell behind");
                    return;
                }
                Offered::ReaderGone => return,
            }
        }
        let Some(mark) = read.mark.clone().filter(|m| !m.is_final()) else {
            return;
        };
        let changed = watching.get_or_insert_with(|| gw.live.watchers.watch(&id, mark));
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
        read = match current_read(&gw, &owner, &id).await {
            Ok(r) => r,
            // Deleted, or the store unreachable: the reader reconnects and is told.
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "status stream ended by a failed read");
                return;
            }
        };
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Offered {
    Taken,
    /// The buffer is full: the reader has not taken `stream_buffer` events.
    ReaderBehind,
    ReaderGone,
}

/// Hands an event to the stream's buffer without waiting: a full buffer is not waited
/// on (nor grown), it ends the stream.
fn offer<T>(tx: &mpsc::Sender<T>, event: T) -> Offered {
    match tx.try_send(event) {
        Ok(()) => Offered::Taken,
        Err(mpsc::error::TrySendError::Full(_)) => Offered::ReaderBehind,
        Err(mpsc::error::TrySendError::Closed(_)) => Offered::ReaderGone,
    }
}

/// The event's id: the read's validator, so that a client resuming with it as
/// `Last-Event-ID` is not sent the state it already has.
fn event_id(read: &Read) -> String {
    read.etag.trim_matches('"').to_string()
}

fn event(read: &Read, event_id: &str) -> Event {
    let body = String::from_utf8_lossy(&read.body);
    let status = serde_json::from_slice::<serde_json::Value>(&read.body)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_default();
    Event::default()
        .event(format!("video.generation.{status}"))
        .id(event_id)
        .data(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_lets_the_buffer_fill_is_dropped_not_buffered() {
        let (tx, mut rx) = mpsc::channel(2);
        assert_eq!(offer(&tx, 1), Offered::Taken);
        assert_eq!(offer(&tx, 2), Offered::Taken);
        assert_eq!(
            offer(&tx, 3),
            Offered::ReaderBehind,
            "the buffer stays at 2"
        );
        assert_eq!(rx.try_recv().unwrap(), 1);
        assert_eq!(
            offer(&tx, 4),
            Offered::Taken,
            "a reader that caught up is fed"
        );
        drop(rx);
        assert_eq!(offer(&tx, 5), Offered::ReaderGone);
    }

    #[test]
    fn the_stream_is_asked_for_by_accept() {
        let mut h = HeaderMap::new();
        assert!(!asks_for_stream(&h));
        h.insert(
            ACCEPT,
            "application/json, Text/Event-Stream".parse().unwrap(),
        );
        assert!(asks_for_stream(&h));
    }
}
