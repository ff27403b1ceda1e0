//! The HTTP API: routes, extractors, the task object and the error envelope.

pub mod admin;
mod auth;
mod error;
mod json;
mod tasks;

pub use error::ApiError;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::Gateway;

/// Middleware, outermost first: tracing (one span per request), a 60 s ceiling so a stuck
/// request cannot hang a connection forever, then the body size limit.
pub fn router(gw: Arc<Gateway>) -> Router {
    let max_body = gw.config.server.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/video/generations",
            get(tasks::list_or_query).post(tasks::create),
        )
        .route("/v1/video/generations/{id}", get(tasks::get_one))
        .route("/v1/video/quotes", post(tasks::quote))
        .route("/admin/providers", get(admin::providers))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(gw)
}
