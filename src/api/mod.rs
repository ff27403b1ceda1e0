//! The HTTP API: routes, extractors, the task object and the error envelope.

pub mod admin;
mod auth;
mod error;
mod json;
mod tasks;

pub use error::ApiError;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::gateway::Gateway;
use crate::limits;

/// The configured body limit, for the error that names it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Middleware, outermost first: tracing (one span per request), then the body size limit;
/// on `/v1` routes, then authentication (once; the key goes into the extensions) and the
/// per-key rate limit (`limits::layer`), so a refused call never reaches its handler.
/// There is no blanket request timeout: a create is bounded by its providers' timeouts,
/// and its submit runs on its own task so that a client hanging up cannot interrupt it.
pub fn router(gw: Arc<Gateway>) -> Router {
    let max_body = gw.config.server.max_body_bytes;
    let v1 = Router::new()
        .route(
            "/v1/video/generations",
            get(tasks::list_or_query).post(tasks::create),
        )
        .route("/v1/video/generations/{id}", get(tasks::get_one))
        .route("/v1/video/quotes", post(tasks::quote))
        .route_layer(from_fn_with_state(gw.clone(), limits::layer::rate_limit))
        .route_layer(from_fn_with_state(gw.clone(), auth::authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(v1)
        .route("/admin/providers", get(admin::providers))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::Extension(BodyLimit(max_body)))
        .layer(TraceLayer::new_for_http())
        .with_state(gw)
}
