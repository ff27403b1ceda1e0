//! The operator's view under `/admin`, behind the admin bearer token from the config.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::bearer_token;
use super::error::ApiError;
use super::throttle::Throttle;
use crate::config::AdminConfig;
use crate::gateway::Gateway;

/// `GET /admin/providers`: each configured provider's circuit, success rate, submit
/// latency, in-flight tasks and last error.
#[utoipa::path(
    get,
    path = "/admin/providers",
    tag = "admin",
    responses((status = 200, description = "One row per configured provider.", body = super::schema::ProviderList)),
)]
pub async fn providers(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let names: Vec<String> = gw.router.names().map(str::to_string).collect();
    let report = gw.health.report(&names).await?;
    let capacity = gw.store.capacity().await?;
    let outcomes = gw.timings.outcomes();
    let data: Vec<Value> = report
        .iter()
        .map(|r| {
            let mut row = json!(r);
            if let Some(c) = capacity.iter().find(|c| c.provider == r.provider) {
                row["capacity"] = capacity_object(c);
            }
            let o = outcomes.get(&r.provider).cloned().unwrap_or_default();
            row["task_outcomes"] = task_outcomes_object(&gw, &o);
            row
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// A provider's outcomes after acceptance over the health window, and the completed-task
/// rate routing compares (`null` below `routing.outcome_min_tasks` ended tasks).
pub fn task_outcomes_object(gw: &Gateway, o: &crate::store::TaskOutcomes) -> Value {
    let mut v = json!(o);
    v["completed_rate"] = json!(o.completed_rate(gw.config.routing.outcome_min_tasks));
    v
}

/// A provider's caps (`null`: none), the cap in force, its slots in use and its capacity
/// refusals.
fn capacity_object(c: &crate::store::ProviderCapacity) -> Value {
    let effective = match (c.configured_cap, c.effective_cap) {
        (Some(cap), Some(e)) => Some(cap.min(e)),
        (cap, _) => cap,
    };
    json!({
        "max_in_flight": c.configured_cap,
        "max_submits_per_minute": c.per_minute,
        "effective_cap": effective,
        "in_flight": c.in_flight,
        "capacity_refusals": c.refusals,
        "full_until": (c.cooldown_until > crate::store::now_ms()).then_some(c.cooldown_until / 1000),
    })
}

/// Guards every `/admin` route as a layer, so the token is checked before any extractor
/// reads the body (an unauthenticated caller learns nothing of the body's fields, and with
/// the admin API off gets a 404). A client with too many failures lately gets 429 before
/// its token is looked at. Answers carry key secrets, so none is stored by a cache.
pub async fn require_admin(
    State(gw): State<Arc<Gateway>>,
    throttle: Throttle,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if gw.config.admin.token.is_some() {
        throttle.check()?;
    }
    if let Err(e) = authorize(&gw.config.admin, req.headers()) {
        if matches!(e, ApiError::AdminUnauthorized) {
            throttle.failed();
        }
        return Err(e);
    }
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Without a configured token the admin API does not exist: 404, like any unknown path.
pub(super) fn authorize(admin: &AdminConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &admin.token else {
        return Err(ApiError::NotFound("no such endpoint".into()));
    };
    match bearer_token(headers) {
        Some(given) if same_secret(given, token.expose()) => Ok(()),
        _ => Err(ApiError::AdminUnauthorized),
    }
}

/// Compares digests without stopping at the first difference, so the time taken says
/// nothing about how much of the token was right (nor its length).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn the_admin_api_is_absent_without_a_token_and_needs_the_exact_one_with_it() {
        let off = AdminConfig::default();
        assert!(matches!(
            authorize(&off, &bearer("t")),
            Err(ApiError::NotFound(_))
        ));
        let on = AdminConfig {
            token: Some(Secret::new("s3cret")),
            ..AdminConfig::default()
        };
        assert!(authorize(&on, &bearer("s3cret")).is_ok());
        for wrong in [bearer("s3cre"), bearer("s3cret2"), HeaderMap::new()] {
            assert!(matches!(
                authorize(&on, &wrong),
                Err(ApiError::AdminUnauthorized)
            ));
        }
    }
}
