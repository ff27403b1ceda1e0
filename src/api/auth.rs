//! `Authorization: Bearer <key>` on every `/v1` call.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use super::ApiError;
use crate::gateway::Gateway;
use crate::store::ApiKey;

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Authenticates a `/v1` call once, before anything that needs its key (the rate limit,
/// the handler), and leaves the `ApiKey` in the request's extensions.
pub async fn authenticate(
    State(gw): State<Arc<Gateway>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = authenticate_headers(&gw, req.headers()).await?;
    req.extensions_mut().insert(key);
    Ok(next.run(req).await)
}

async fn authenticate_headers(gw: &Gateway, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
    let secret = bearer_token(headers).ok_or(ApiError::Unauthorized)?;
    gw.store
        .authenticate(secret)
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// The authenticated caller: the key `authenticate` found, or (on a route without that
/// middleware) found now.
pub struct Caller(pub ApiKey);

impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        if let Some(key) = parts.extensions.get::<ApiKey>() {
            return Ok(Caller(key.clone()));
        }
        Ok(Caller(authenticate_headers(gw, &parts.headers).await?))
    }
}
