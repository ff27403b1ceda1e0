//! The console: server-rendered HTML pages at `/console` for the operator (signed in with
//! the admin token) and for client teams (signed in with their API key, seeing only that
//! key's tasks and usage). No build step and no CDN: the pages are maud templates, and the
//! one stylesheet and one script are compiled into the binary.
//!
//! Sessions live in the shared store (`session.rs`), so any replica serves any page.
//! Every state-changing form carries the session's CSRF token. Every answer carries the
//! pages' security headers (`api::headers::console_page`): a CSP of this origin only (the
//! pages have no inline script or style), no framing, no referrer, no caching.

mod charts;
mod keys;
mod page;
mod playground;
mod providers;
mod queue;
mod session;
mod tasks;
mod usage;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;

use crate::gateway::Gateway;

/// The console's routes, merged into the API's router (`api::router`) under its outer layers.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/tasks") }))
        .route(
            "/console/login",
            get(session::login_page).post(session::sign_in),
        )
        .route("/console/logout", post(session::sign_out))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/task-follow.js", get(task_follow_script))
        .route("/console/tasks", get(tasks::list))
        .route("/console/tasks/{id}", get(tasks::show))
        .route("/console/tasks/{id}/video", get(tasks::video))
        .route("/console/tasks/{id}/stream", get(tasks::stream))
        .route(
            "/console/tasks/{id}/events/{event_id}/redeliver",
            post(tasks::redeliver),
        )
        .route("/console/providers", get(providers::page))
        .route("/console/queue", get(queue::page))
        .route("/console/keys", get(keys::page).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/keys/{id}/rotate", post(keys::rotate))
        .route("/console/usage", get(usage::page))
        .route(
            "/console/playground",
            get(playground::page).post(playground::submit),
        )
        .route("/console/playground/quote", post(playground::quote))
        .layer(axum::middleware::map_response(
            crate::api::headers::console_page,
        ))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("assets/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    javascript(include_str!("assets/console.js"))
}

/// The task page's follower of its task's status stream.
async fn task_follow_script() -> impl IntoResponse {
    javascript(include_str!("assets/task-follow.js"))
}

fn javascript(source: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        source,
    )
}
