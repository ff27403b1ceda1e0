//! The HTTP API: routes, extractors, the task object and the error envelope.

pub mod admin;
mod auth;
mod cancel;
mod content;
mod docs;
mod error;
mod events;
pub mod headers;
mod intake;
mod json;
mod keys;
mod kling;
mod kling_auth;
mod live;
pub mod load;
mod observe;
mod openai;
mod openapi;
pub mod rate_limit;
mod schema;
mod stream;
mod tasks;
mod throttle;
mod usage;

pub use admin::same_secret;
pub use content::{content_of, WhichVideo};
pub use error::ApiError;
pub use json::parse as parse_json;
pub use kling::is_create_path as is_kling_create_path;
pub use stream::open as status_stream;
pub use tasks::{quote_object, refuse_while_draining};
pub use throttle::Throttle;

/// The request and callback parsers, for the fuzz targets (`fuzz/`) and the property
/// tests (`tests/properties.rs`): the very functions the handlers call.
pub mod parsers {
    pub use super::intake::{is_token_shaped, judge_callback, CallbackVerdict};
    pub use super::json::parse as parse_json_body;
    pub use super::kling::{to_request as kling_request, KlingCreate};
    pub use super::openai::{
        parse_create_body as parse_openai_create_body, to_request as openai_request, CreateVideo,
    };
}

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::middleware::{from_fn_with_state, map_response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::gateway::Gateway;
use crate::telemetry;

/// Middleware, outermost first:
/// 0. `X-Content-Type-Options: nosniff` on every answer (`headers`), and the
///    failed-credentials throttle (`throttle`) in the requests' extensions;
/// 0. the request id (`telemetry::request_id`): taken or made, returned, and carried to
///    upstream calls;
/// 1. tracing (one span per request, with its id and route template, so shed requests
///    are logged too), then the request metrics (by route template, so also for shed
///    requests);
/// 2. the in-flight request limit (`server.max_in_flight_requests`): beyond it, 503 at once;
/// 3. the request-body byte budget (`server.body_memory_budget_bytes`), the early 413 on a
///    declared length over `server.max_body_bytes`, and the body idle timeout;
/// 4. the body size limit for chunked bodies (axum's, counted as the body is read);
/// 5. on `/v1` routes, authentication (once: the key goes into the request's extensions),
///    then the per-key rate limit (`rate_limit.rs`), so a refused call never reaches its
///    handler nor takes a create slot;
/// 6. on `POST /v1/video/generations`, `POST /v1/videos` and the Kling facade's create
///    only, the in-flight create limit (`server.max_in_flight_creates`), one count for all.
///
/// The Kling facade (`kling.rs`, `/v1/videos/omni-video` and `/kling/...`) has layers 0-4,
/// then its own authentication (`kling_auth`: the key or a Kling JWT) and the same rate
/// limit, inside a layer that puts every refusal in Kling's envelope.
///
/// `POST /upstream/callbacks/{token}` (providers' callbacks, `intake`) has layers 1-4 only:
/// its token is its authentication. So do the `pages` (the console, `crate::console`),
/// which sign in with a session cookie of their own.
///
/// `/admin/*` routes have the admin token check (`admin::require_admin`, which counts
/// failures in the throttle) as a route layer, before any handler's extractors, so a body is
/// never read for a caller without the token. `/docs` and the console add their pages'
/// security headers (`headers`).
///
/// The header-read timeout is the server's (`server.rs`). There is no blanket request
/// timeout: a create is bounded by its providers' timeouts, and its submit runs on its own
/// task so that a client hanging up cannot interrupt it.
pub fn router(gw: Arc<Gateway>, pages: Router<Arc<Gateway>>) -> Router {
    let server = &gw.config.server;
    let max_body = server.max_body_bytes;
    let requests = load::Slots::new(server.max_in_flight_requests, "requests");
    let creates = load::Slots::new(server.max_in_flight_creates, "creates");
    let budget = load::BodyBudget::new(server);
    // The Kling-shaped facade (`kling.rs`), with its own authentication and error envelope.
    let kling = kling::routes(gw.clone(), creates.clone());
    let v1 = Router::new()
        .route(
            "/v1/video/generations",
            get(tasks::list_or_query)
                .post(tasks::create.layer(from_fn_with_state(creates.clone(), load::shed_beyond))),
        )
        .route("/v1/video/generations/{id}", get(tasks::get_one))
        .route("/v1/video/generations/{id}/stream", get(stream::stream))
        .route("/v1/video/generations/{id}/cancel", post(cancel::cancel))
        .route(
            "/v1/video/generations/{id}/content",
            get(content::generation_content),
        )
        // The OpenAI-compatible facade over the same tasks (`openai.rs`).
        .route(
            "/v1/videos",
            get(openai::list)
                .post(openai::create.layer(from_fn_with_state(creates, load::shed_beyond))),
        )
        .route(
            "/v1/videos/{id}",
            get(openai::retrieve).delete(openai::delete),
        )
        .route("/v1/videos/{id}/content", get(openai::content))
        .route("/v1/video/generations/{id}/events", get(events::list))
        .route(
            "/v1/video/generations/{id}/events/{event_id}/redeliver",
            post(events::redeliver),
        )
        .route("/v1/video/quotes", post(tasks::quote))
        .route("/v1/usage", get(usage::mine))
        .route_layer(from_fn_with_state(gw.clone(), rate_limit::rate_limit))
        .route_layer(from_fn_with_state(gw.clone(), auth::authenticate));
    Router::new()
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/metrics", get(observe::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(docs_routes())
        .merge(v1)
        .merge(kling)
        // HTML pages (the console), under the same outer layers as the API.
        .merge(pages)
        // Providers' callbacks: authenticated by the token in the path, not an API key.
        .route(
            "/upstream/callbacks/{token}",
            post(intake::upstream_callback),
        )
        .merge(admin_routes(gw.clone()))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::Extension(json::BodyLimit(max_body)))
        .layer(from_fn_with_state(budget, load::hold_body_budget))
        .layer(from_fn_with_state(requests, load::shed_beyond))
        .layer(axum::middleware::from_fn(telemetry::http::record))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::http::request_span))
        .layer(axum::middleware::from_fn(telemetry::request_id::assign))
        .layer(axum::Extension(Arc::new(throttle::FailedAuth::new(
            server.trust_forwarded_for,
            server.failed_auth_burst,
            server.failed_auth_per_minute,
        ))))
        .layer(map_response(headers::nosniff))
        .with_state(gw)
}

/// `/admin/*`, each route behind the admin token (`admin::require_admin`).
fn admin_routes(gw: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin/providers", get(admin::providers))
        .route("/admin/usage", get(usage::all))
        .route("/admin/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", get(keys::show).patch(keys::update))
        .route("/admin/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/keys/{id}/rotate", post(keys::rotate))
        .route(
            "/admin/keys/{id}/kling-credentials",
            post(keys::kling_credentials),
        )
        .route_layer(from_fn_with_state(gw, admin::require_admin))
}

/// The API reference page and its vendored assets, with the pages' security headers.
fn docs_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/docs", get(docs::page))
        .route("/docs/assets/{file}", get(docs::asset))
        .layer(map_response(headers::docs_page))
}
