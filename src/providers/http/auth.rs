//! The credential on every request, and kept out of every error message.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::RequestBuilder;

use crate::config::Credential;
use crate::providers::kling::jwt::JwtCache;
use crate::providers::{ErrorKind, ProviderError};

/// Adds the credential to requests and keeps it out of error messages. Kling's own host
/// takes a short-lived JWT, signed and cached by [`JwtCache`].
pub(in crate::providers) struct Auth {
    credential: Credential,
    jwt: JwtCache,
}

impl Auth {
    pub fn new(credential: Credential) -> Self {
        Auth {
            credential,
            jwt: JwtCache::default(),
        }
    }

    pub(super) fn apply(&self, req: RequestBuilder) -> Result<RequestBuilder, ProviderError> {
        match self.header_value(unix_now())? {
            Some(value) => Ok(req.header(AUTHORIZATION, value)),
            // No credential (a local sandbox): let the upstream decide.
            None => Ok(req),
        }
    }

    fn header_value(&self, now: u64) -> Result<Option<HeaderValue>, ProviderError> {
        let token = match &self.credential {
            Credential::Missing => return Ok(None),
            Credential::Bearer(key) => key.expose().to_string(),
            Credential::KlingJwt {
                access_key,
                secret_key,
            } => self
                .jwt
                .token(access_key.expose(), secret_key.expose(), now)?,
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ProviderError::new(ErrorKind::Auth, "credential is not a valid header value")
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Removes any credential (or issued token) a provider echoed into its message.
    pub(super) fn redact(&self, mut err: ProviderError) -> ProviderError {
        let token = self.jwt.issued();
        let secrets: Vec<String> = match &self.credential {
            Credential::Missing => vec![],
            Credential::Bearer(key) => vec![key.expose().to_string()],
            Credential::KlingJwt {
                access_key,
                secret_key,
            } => vec![
                access_key.expose().to_string(),
                secret_key.expose().to_string(),
            ],
        };
        for secret in secrets.iter().chain(token.iter()) {
            if !secret.is_empty() {
                err.message = err.message.replace(secret.as_str(), "*****");
            }
        }
        err
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn bearer_credential_becomes_a_sensitive_authorization_header() {
        let auth = Auth::new(Credential::Bearer(Secret::new("sk-1")));
        let value = auth.header_value(1_000).unwrap().unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer sk-1");
        assert!(value.is_sensitive());
    }

    #[test]
    fn credentials_are_scrubbed_from_error_messages() {
        let auth = Auth::new(Credential::Bearer(Secret::new("sk-secret")));
        let err = auth.redact(ProviderError::new(
            ErrorKind::Auth,
            "invalid key sk-secret for this account",
        ));
        assert_eq!(err.message, "invalid key ***** for this account");
    }
}
