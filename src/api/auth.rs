//! `Authorization: Bearer <key>` on every `/v1` call.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

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

/// The authenticated caller.
pub struct Caller(pub ApiKey);

impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let secret = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        match gw.store.authenticate(secret).await? {
            Some(key) => Ok(Caller(key)),
            None => Err(ApiError::Unauthorized),
        }
    }
}
