//! `[admin]` and `[console]`: the admin token, key rotation and the console's cookies.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Env var holding the bearer token for `/admin/*`; unset disables the admin API.
    pub token_env: Option<String>,
    #[serde(skip)]
    pub token: Option<Secret>,
    /// After `keys rotate`, how long the previous secret keeps working, in seconds.
    pub key_rotation_grace_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token_env: None,
            token: None,
            key_rotation_grace_secs: 24 * 3600,
        }
    }
}

/// The shortest admin token accepted: a guessable one would open every key and the
/// operator's console.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// When the session cookie is `Secure` (and named with the `__Host-` prefix): `auto`
    /// when the request says it came over https (`X-Forwarded-Proto: https`, set by the TLS
    /// proxy), `always`, or `never` (plain-http test setups only).
    pub secure_cookies: SecureCookies,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookies {
    #[default]
    Auto,
    Always,
    Never,
}

impl AdminConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(token) = &self.token {
            let n = token.expose().chars().count();
            if n < MIN_ADMIN_TOKEN_CHARS {
                bail!("admin.token_env: the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters (this one has {n}); make one with `openssl rand -hex 32`");
            }
        }
        Ok(())
    }
}
