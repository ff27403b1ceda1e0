//! Kling's own host takes a short-lived HS256 JWT signed with the account's secret key
//! (`iss` the access key), not the key itself: signed here and cached until near expiry.

use std::sync::Mutex;

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::providers::{ErrorKind, ProviderError};

/// Lifetime of a Kling JWT, as Kling's own examples issue them.
const JWT_TTL_SECS: u64 = 1800;
/// Re-issue this long before expiry so a token never expires in flight.
const JWT_REFRESH_MARGIN_SECS: u64 = 300;
/// Kling rejects tokens whose `nbf` is in its future; allow for clock skew.
const JWT_NBF_SKEW_SECS: u64 = 5;

/// The token last issued for one provider, re-signed when it comes near expiry.
#[derive(Default)]
pub(in crate::providers) struct JwtCache {
    cached: Mutex<Option<CachedJwt>>,
}

#[derive(Clone)]
struct CachedJwt {
    token: String,
    expires_at: u64,
}

#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    exp: u64,
    nbf: u64,
}

impl JwtCache {
    /// A token valid at `now` (unix seconds): the cached one unless it is near expiry.
    pub fn token(
        &self,
        access_key: &str,
        secret_key: &str,
        now: u64,
    ) -> Result<String, ProviderError> {
        // A poisoned lock only means another thread panicked mid-update of a cache.
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(jwt) = cached.as_ref() {
            if now + JWT_REFRESH_MARGIN_SECS < jwt.expires_at {
                return Ok(jwt.token.clone());
            }
        }
        let expires_at = now + JWT_TTL_SECS;
        let claims = JwtClaims {
            iss: access_key,
            exp: expires_at,
            nbf: now.saturating_sub(JWT_NBF_SKEW_SECS),
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret_key.as_bytes()),
        )
        .map_err(|_| ProviderError::new(ErrorKind::Auth, "could not sign the Kling JWT"))?;
        *cached = Some(CachedJwt {
            token: token.clone(),
            expires_at,
        });
        Ok(token)
    }

    /// The token last issued, if any: a secret to scrub from error messages too.
    pub fn issued(&self) -> Option<String> {
        self.cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|j| j.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::{json, Value};

    #[test]
    fn kling_jwt_has_the_documented_claims_and_is_cached_until_near_expiry() {
        let jwt = JwtCache::default();
        let now = 1_700_000_000;
        let first = jwt.token("ak", "sk", now).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims =
            jsonwebtoken::decode::<Value>(&first, &DecodingKey::from_secret(b"sk"), &validation)
                .unwrap()
                .claims;
        assert_eq!(
            claims,
            json!({"iss": "ak", "exp": now + 1800, "nbf": now - 5})
        );
        assert_eq!(jwt.token("ak", "sk", now + 1000).unwrap(), first);
        assert_ne!(jwt.token("ak", "sk", now + 1501).unwrap(), first);
        assert_eq!(
            jwt.issued().as_deref(),
            Some(jwt.token("ak", "sk", now + 1501).unwrap().as_str())
        );
    }
}
