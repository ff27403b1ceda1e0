//! Secrets omnigate must be able to read back (a key's Kling secret key, to verify the
//! JWTs signed with it) are sealed with AES-256-GCM under `server.secrets_key` before they
//! reach the store: a copy of the database alone does not give them away.
//!
//! A sealed value is `v1:` and the base64 of a fresh 96-bit nonce followed by the
//! ciphertext and its tag. The value's label (the access key) is authenticated with it, so
//! a sealed secret moved to another row does not open.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::config::secret::Secret;
use crate::config::server::ServerConfig;

const VERSION: &str = "v1:";

/// The key that seals and opens stored secrets.
pub struct SecretBox {
    key: LessSafeKey,
}

impl SecretBox {
    /// A box from `server.secrets_key`: 32 bytes, written as base64 or as 64 hex digits.
    pub fn new(secret: &Secret) -> anyhow::Result<SecretBox> {
        let bytes = key_bytes(secret.expose().trim())
            .context("server.secrets_key must be 32 bytes as base64 (openssl rand -base64 32) or 64 hex digits")?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| anyhow::anyhow!("server.secrets_key is not a valid AES-256 key"))?;
        Ok(SecretBox {
            key: LessSafeKey::new(key),
        })
    }

    /// The configured box, or None when `server.secrets_key` is not set.
    pub fn from_config(server: &ServerConfig) -> anyhow::Result<Option<SecretBox>> {
        server.secrets_key.as_ref().map(SecretBox::new).transpose()
    }

    /// `plain` sealed, bound to `label`.
    pub fn seal(&self, label: &str, plain: &str) -> anyhow::Result<String> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(label.as_bytes()),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("could not seal a secret"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{VERSION}{}", STANDARD.encode(out)))
    }

    /// The secret `sealed` holds, if it was sealed under this key with this `label`.
    pub fn open(&self, label: &str, sealed: &str) -> anyhow::Result<String> {
        let raw = sealed
            .strip_prefix(VERSION)
            .and_then(|b| STANDARD.decode(b).ok())
            .context("a sealed secret is not v1: and base64")?;
        anyhow::ensure!(raw.len() > NONCE_LEN, "a sealed secret is too short");
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("a sealed secret has a bad nonce"))?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut data)
            .map_err(|_| {
                anyhow::anyhow!("a sealed secret does not open (another secrets_key, or altered)")
            })?;
        String::from_utf8(plain.to_vec()).context("a sealed secret is not text")
    }
}

/// A key's Kling-style credential pair, as issued: the secret key is here only.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KlingCredentials {
    /// The JWT's `iss`.
    pub access_key: String,
    /// Signs the JWT (HS256); shown once, stored sealed.
    pub secret_key: String,
}

/// Gives the active key `api_key_id` a new Kling access/secret pair (replacing any it had),
/// the secret sealed under `server.secrets_key`; an error without that key or the API key.
pub async fn issue_kling_credentials(
    store: &crate::store::Store,
    server: &ServerConfig,
    api_key_id: &str,
) -> anyhow::Result<KlingCredentials> {
    let sealer = SecretBox::from_config(server)?.context(
        "Kling credentials need server.secrets_key: set the variable named by \
         server.secrets_key_env (OMNIGATE_SECRETS_KEY) to 32 bytes of base64 (openssl rand -base64 32)",
    )?;
    anyhow::ensure!(
        store.active_key(api_key_id).await?.is_some(),
        "no active key {api_key_id}"
    );
    let credentials = KlingCredentials {
        access_key: format!("ak_{}", uuid::Uuid::new_v4().simple()),
        secret_key: format!(
            "sk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        ),
    };
    let sealed = sealer.seal(&credentials.access_key, &credentials.secret_key)?;
    store
        .set_kling_credentials(api_key_id, &credentials.access_key, &sealed)
        .await?;
    Ok(credentials)
}

fn key_bytes(text: &str) -> Option<[u8; 32]> {
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        STANDARD.decode(text).ok()?
    };
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(key: &str) -> SecretBox {
        SecretBox::new(&Secret::new(key)).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_label() {
        let one = sealer(&STANDARD.encode([7u8; 32]));
        let sealed = one.seal("ak_1", "sk_secret").unwrap();
        assert!(!sealed.contains("sk_secret"));
        assert_ne!(
            sealed,
            one.seal("ak_1", "sk_secret").unwrap(),
            "fresh nonce"
        );
        assert_eq!(one.open("ak_1", &sealed).unwrap(), "sk_secret");
        assert!(one.open("ak_2", &sealed).is_err(), "bound to its label");
        let other = sealer(&"ab".repeat(32));
        assert!(other.open("ak_1", &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered.replace_range(10..11, if &sealed[10..11] == "A" { "B" } else { "A" });
        assert!(one.open("ak_1", &tampered).is_err());
    }

    #[test]
    fn a_key_of_the_wrong_size_is_refused_without_quoting_it() {
        let err = SecretBox::new(&Secret::new("c2hvcnQ="))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("server.secrets_key") && !err.contains("c2hvcnQ"),
            "{err}"
        );
    }
}
