//! Who calls the Kling facade: `Authorization: Bearer <token>` where the token is the
//! omnigate key, or a JWT as Kling's clients sign it: HS256 with the key's Kling secret
//! key, `iss` its access key, `exp` (required) and `nbf` checked with a small leeway. Any
//! other `alg` is refused. Refusals are Kling's 1001-1004 with 401.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind as JwtError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::auth::bearer_token;
use super::error::ApiError;
use super::kling::refusal;
use crate::gateway::Gateway;
use crate::secrets::SecretBox;
use crate::store::ApiKey;
use crate::telemetry::request_id::X_REQUEST_ID;

/// Seconds of clock difference forgiven on `exp` and `nbf`.
pub const JWT_LEEWAY_SECS: u64 = 10;

/// Why a caller was not let in, in Kling's words.
#[derive(Debug)]
enum Refused {
    /// 1001: no credential.
    Missing,
    /// 1002: not a key or a JWT this gateway can verify.
    Invalid(String),
    /// 1003: `nbf` is still ahead.
    NotYetValid,
    /// 1004: `exp` has passed.
    Expired,
    /// Not the caller's fault (the store, the sealed secret).
    Api(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

impl From<anyhow::Error> for Refused {
    fn from(e: anyhow::Error) -> Self {
        Refused::Api(ApiError::from(e))
    }
}

/// The facade's authentication: leaves the caller's `ApiKey` in the request's extensions
/// (for the rate limit and the handlers), or answers in Kling's envelope.
pub async fn authenticate(
    State(gw): State<Arc<Gateway>>,
    mut req: Request,
    next: Next,
) -> Response {
    match caller(&gw, req.headers()).await {
        Ok(key) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        Err(refused) => {
            let request_id = req
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let unauthorized = StatusCode::UNAUTHORIZED;
            match refused {
                Refused::Missing => {
                    refusal(1001, unauthorized, "Authorization is empty", request_id)
                }
                Refused::Invalid(why) => refusal(
                    1002,
                    unauthorized,
                    &format!("Authorization is invalid: {why}"),
                    request_id,
                ),
                Refused::NotYetValid => refusal(
                    1003,
                    unauthorized,
                    "Authorization is not yet valid (nbf)",
                    request_id,
                ),
                Refused::Expired => refusal(
                    1004,
                    unauthorized,
                    "Authorization has expired (exp)",
                    request_id,
                ),
                // Rewritten into Kling's envelope by the facade's outer layer.
                Refused::Api(e) => e.into_response(),
            }
        }
    }
}

async fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<ApiKey, Refused> {
    let token = bearer_token(headers).ok_or(Refused::Missing)?;
    if !is_jwt_shaped(token) {
        return gw
            .store
            .authenticate(token)
            .await?
            .ok_or_else(|| Refused::Invalid("unknown API key".into()));
    }
    verify_jwt(gw, token).await
}

/// Three base64url parts: a JWT. omnigate keys (`og_...`) have no dots.
fn is_jwt_shaped(token: &str) -> bool {
    token.split('.').count() == 3
}

async fn verify_jwt(gw: &Gateway, token: &str) -> Result<ApiKey, Refused> {
    let alg = claim_of(token, 0, "alg").ok_or_else(|| Refused::Invalid("malformed JWT".into()))?;
    if alg != "HS256" {
        return Err(Refused::Invalid(format!(
            "alg {alg} is not accepted; sign with HS256"
        )));
    }
    let access_key =
        claim_of(token, 1, "iss").ok_or_else(|| Refused::Invalid("the JWT has no iss".into()))?;
    let Some((key, sealed)) = gw.store.kling_credential(&access_key).await? else {
        return Err(Refused::Invalid("unknown access key".into()));
    };
    let Some(sealer) = SecretBox::from_config(&gw.config.server)? else {
        tracing::warn!(
            "a Kling JWT arrived, but server.secrets_key is not set: it cannot be verified"
        );
        return Err(Refused::Invalid(
            "this gateway cannot verify JWTs (no secrets key configured); use the API key".into(),
        ));
    };
    let secret = sealer.open(&access_key, &sealed)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = JWT_LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[&access_key]);
    match jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    ) {
        Ok(_) => Ok(key),
        Err(e) => Err(match e.kind() {
            JwtError::ExpiredSignature => Refused::Expired,
            JwtError::ImmatureSignature => Refused::NotYetValid,
            JwtError::InvalidSignature => Refused::Invalid("bad signature".into()),
            JwtError::MissingRequiredClaim(c) => Refused::Invalid(format!("the JWT has no {c}")),
            _ => Refused::Invalid("malformed JWT".into()),
        }),
    }
}

/// A string claim of part `part` (0 the header, 1 the claims) of a JWT, read before the
/// signature is checked: only to choose how to check it.
fn claim_of(token: &str, part: usize, name: &str) -> Option<String> {
    let encoded = token.split('.').nth(part)?;
    let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?;
    json.get(name)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn the_alg_and_issuer_are_read_before_the_signature() {
        let t = jwt(r#"{"alg":"none","typ":"JWT"}"#, r#"{"iss":"ak_1","exp":1}"#);
        assert!(is_jwt_shaped(&t));
        assert_eq!(claim_of(&t, 0, "alg").as_deref(), Some("none"));
        assert_eq!(claim_of(&t, 1, "iss").as_deref(), Some("ak_1"));
        assert_eq!(claim_of("a.b.c", 1, "iss"), None);
        assert!(!is_jwt_shaped("og_abc"));
    }
}
