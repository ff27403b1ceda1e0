//! The HTTP side of observability: the request span (with the request id and route
//! template) and the request metrics, as middleware for `api::router`.
//!
//! The span never holds the raw path: `/upstream/callbacks/{token}` carries a secret in
//! it, and logs and exported spans (OpenTelemetry) must not. The route template says which
//! endpoint it was, and `task_id` (recorded by a handler once known) which task.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Span;

use super::request_id::X_REQUEST_ID;

/// The span of one request: every log line inside it carries `request_id` and `route`
/// (the template, `unmatched` when none matched), never the path.
/// Used as `TraceLayer::make_span_with`, inside `request_id::assign`, which has already
/// put a sane id into the request's headers.
pub fn request_span(req: &Request) -> Span {
    let id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http_request",
        method = %req.method(),
        route,
        request_id = id,
        task_id = tracing::field::Empty,
        status = tracing::field::Empty,
        otel.kind = "server",
        otel.name = format_args!("{} {route}", req.method()),
    );
    super::propagation::adopt_parent(&span, req.headers());
    span
}

/// Records on the current request's span the task it turned out to be about (for a route
/// whose path names the task by a secret, such as an upstream callback's token).
pub fn record_task_id(task_id: &str) {
    Span::current().record("task_id", task_id);
}

/// Counts the request and records its latency once answered, by route template.
pub async fn record(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    Span::current().record("status", resp.status().as_u16());
    super::metrics::http_request(
        &method,
        route.as_ref().map(MatchedPath::as_str),
        resp.status(),
        started.elapsed(),
    );
    resp
}
