//! Bounds on what requests may hold at once, so a flood is shed with a quick 503 instead
//! of exhausting memory or the database: requests in flight, creates in flight, and
//! request-body bytes held in memory. Also the request-body timeout.
//!
//! Each bound is a semaphore taken without waiting (load shedding): a request that finds
//! one spent is answered `503 overloaded` with `Retry-After` at once. That is tower's
//! `load_shed` over `concurrency_limit`, written as one middleware so the refusal is our
//! own error body without an error-handling layer in between.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::TimeoutBody;

use super::error::ApiError;
use crate::config::ServerConfig;

/// A number of requests that may run at once; beyond it they are refused, not queued.
#[derive(Clone)]
pub struct Slots {
    free: Arc<Semaphore>,
    what: &'static str,
}

impl Slots {
    pub fn new(limit: usize, what: &'static str) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(limit)),
            what,
        }
    }
}

/// The load-shedding slots a request holds, in its extensions: a handler about to wait
/// a long time on purpose (`Prefer: wait`) gives them back, so that held requests do not
/// crowd out the ones that do work.
#[derive(Clone, Default)]
pub struct HeldSlots(Arc<Mutex<Vec<OwnedSemaphorePermit>>>);

impl HeldSlots {
    pub fn release(&self) {
        lock(&self.0).clear();
    }
}

/// Middleware: holds one slot for the request's whole handling (unless its handler gives
/// it back, see `HeldSlots`), or answers 503 at once.
pub async fn shed_beyond(State(slots): State<Slots>, mut req: Request, next: Next) -> Response {
    let Ok(slot) = slots.free.clone().try_acquire_owned() else {
        tracing::warn!(limit = slots.what, "request shed");
        return ApiError::overloaded(format!(
            "too many {} in flight on this gateway; retry shortly",
            slots.what
        ))
        .into_response();
    };
    let held = req
        .extensions_mut()
        .get_or_insert_default::<HeldSlots>()
        .clone();
    lock(&held.0).push(slot);
    let resp = next.run(req).await;
    held.release();
    resp
}

/// The request-body bytes all requests may hold in memory at once, and the per-body rules.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    max_body: usize,
    idle_timeout: Duration,
}

impl BodyBudget {
    pub fn new(server: &ServerConfig) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(server.body_memory_budget_bytes)),
            max_body: server.max_body_bytes,
            idle_timeout: server.body_timeout(),
        }
    }
}

/// The body of a chunked request found the byte budget spent: the request is shed.
#[derive(Debug, thiserror::Error)]
#[error("the gateway is holding too many request bodies; retry shortly")]
pub struct BodyBudgetSpent;

/// Middleware: a body declaring more than `max_body_bytes` is refused (413) before a byte
/// of it is read; a declared length is taken from the byte budget up front, a chunked
/// body's chunks as they arrive. The bytes stay taken until the response is ready (the
/// handler holds the buffered body until then). A body that stalls longer than the body
/// timeout ends in an error the JSON extractor answers with 408.
pub async fn hold_body_budget(
    State(budget): State<BodyBudget>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let no_body = body.size_hint().exact() == Some(0);
    let body = TimeoutBody::new(budget.idle_timeout, body);
    let held: Arc<Mutex<Option<OwnedSemaphorePermit>>> = Arc::default();
    let body = match declared {
        Some(n) if n > budget.max_body as u64 => {
            return ApiError::PayloadTooLarge(budget.max_body).into_response();
        }
        Some(0) => Body::new(body),
        // No length and no chunked body: nothing to count.
        None if no_body => Body::new(body),
        Some(n) => {
            // `n` is at most max_body_bytes, which the config keeps within u32.
            let Ok(permit) = budget.bytes.clone().try_acquire_many_owned(n as u32) else {
                return shed_body();
            };
            *lock(&held) = Some(permit);
            Body::new(body)
        }
        None => {
            let (bytes, held) = (budget.bytes.clone(), held.clone());
            Body::from_stream(Body::new(body).into_data_stream().map(move |chunk| {
                let chunk = chunk.map_err(axum::BoxError::from)?;
                if chunk.is_empty() {
                    return Ok(chunk);
                }
                let n = u32::try_from(chunk.len()).map_err(|_| BodyBudgetSpent)?;
                let permit = bytes
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| BodyBudgetSpent)?;
                let mut held = lock(&held);
                match held.as_mut() {
                    Some(p) => p.merge(permit),
                    None => *held = Some(permit),
                }
                Ok::<_, axum::BoxError>(chunk)
            }))
        }
    };
    let resp = next.run(Request::from_parts(parts, body)).await;
    // The handler is done with the body (a stream left unread keeps its clone of `held`).
    lock(&held).take();
    resp
}

fn shed_body() -> Response {
    tracing::warn!(limit = "body_memory_budget_bytes", "request shed");
    ApiError::overloaded(BodyBudgetSpent.to_string()).into_response()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
