//! The operator's probes: `GET /healthz` (are the background workers running), `GET
//! /readyz` (can this process serve: store, schema, Redis) and `GET /metrics` (Prometheus
//! text).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::gateway::Gateway;

/// `GET /healthz`: 200 with each background worker's last step, or 503 naming a worker
/// that stopped or has not completed a step for `workers.stall_secs` beyond its tick.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "Every background worker is running.", body = super::schema::HealthReport)),
)]
pub async fn healthz(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let workers = gw.heartbeats.report(gw.config.workers.stall());
    let problems: Vec<&str> = workers
        .iter()
        .filter_map(|w| w.problem.as_deref())
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::Unavailable {
            code: "worker_unhealthy",
            message: problems.join("; "),
            retry_after_secs: 5,
        });
    }
    Ok(Json(json!({"status": "ok", "workers": workers})))
}

/// Longest a readiness check waits on the store or Redis: a probe must answer quickly
/// even when what it probes hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: 200 when the store answers, every embedded migration is applied and
/// Redis (if configured) answers; else 503 `not_ready` naming what is wrong. Unlike
/// `/healthz` (is the process alive), a failing `/readyz` means "send no traffic here".
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready: the store answers, its schema is current, Redis (if configured) answers. Otherwise 503 `not_ready`, its message naming each failed check.", body = super::schema::ReadyReport),
    ),
)]
pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let mut problems = Vec::new();
    let (store, migrations) =
        match tokio::time::timeout(CHECK_TIMEOUT, gw.store.pending_migrations()).await {
            Ok(Ok(pending)) if pending.is_empty() => ("ok", "ok"),
            Ok(Ok(pending)) => {
                problems.push(format!("database migrations not applied: {pending:?}"));
                ("ok", "pending")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "readyz: the store cannot be read");
                problems.push("the database cannot be reached".to_string());
                ("unreachable", "unknown")
            }
            Err(_) => {
                problems.push(format!(
                    "the database did not answer within {CHECK_TIMEOUT:?}"
                ));
                ("unreachable", "unknown")
            }
        };
    let redis = if gw.limits.is_shared() {
        match tokio::time::timeout(CHECK_TIMEOUT, gw.limits.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "readyz: Redis cannot be reached");
                problems.push("Redis (limits.redis_url) cannot be reached".to_string());
                "unreachable"
            }
            Err(_) => {
                problems.push(format!("Redis did not answer within {CHECK_TIMEOUT:?}"));
                "unreachable"
            }
        }
    } else {
        "not_configured"
    };
    if !problems.is_empty() {
        return Err(ApiError::Unavailable {
            code: "not_ready",
            message: problems.join("; "),
            retry_after_secs: 5,
        });
    }
    Ok(Json(json!({
        "status": "ready",
        "checks": {"store": store, "migrations": migrations, "redis": redis},
    })))
}

/// `GET /metrics`: the Prometheus text exposition. Open unless
/// `metrics.require_admin_token`; a 404 when `metrics.enabled` is off.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition (version 0.0.4).", content_type = "text/plain", body = String),
        (status = 401, description = "`metrics.require_admin_token` is on and the admin token is missing or wrong.", body = super::error::ErrorBody),
        (status = 404, description = "`metrics.enabled` is off.", body = super::error::ErrorBody),
    ),
)]
pub async fn metrics(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !gw.config.metrics.enabled {
        return Err(ApiError::NotFound("no such endpoint".into()));
    }
    if gw.config.metrics.require_admin_token {
        super::admin::authorize(&gw.config.admin, &headers)?;
    }
    let text = crate::telemetry::metrics::render().unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
