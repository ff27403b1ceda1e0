//! `Authorization: Bearer <key>` on every `/v1` call.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::app::Gateway;
use crate::store::ApiKey;

/// The authenticated caller.
pub struct Caller(pub ApiKey);

impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        match gw.store.authenticate(secret).await? {
            Some(key) => Ok(Caller(key)),
            None => Err(ApiError::Unauthorized),
        }
    }
}
