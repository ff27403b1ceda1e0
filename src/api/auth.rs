//! `Authorization: Bearer <key>` on every `/v1` call.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::gateway::Gateway;
use crate::store::ApiKey;

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
/// The scheme name is case-insensitive (RFC 9110 section 11.1): `bearer` works too.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_required() {
        for v in [
            "Bearer og_1",
            "bearer og_1",
            "BEARER  og_1 ",
            "bEaReR\tog_1",
        ] {
            assert_eq!(bearer_token(&with_auth(v)), Some("og_1"), "{v:?}");
        }
        for v in ["Bearer", "Bearer   ", "Basic og_1", "Bearerog_1", "og_1"] {
            assert_eq!(bearer_token(&with_auth(v)), None, "{v:?}");
        }
    }
}
