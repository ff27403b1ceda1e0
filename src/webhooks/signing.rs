//! Standard Webhooks signing: `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, keyed with the bytes of a `whsec_<base64>` secret. Several
//! secrets (a key's new and its previous one during a rotation) give several signatures,
//! separated by spaces in one header.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

/// The bytes a `whsec_...` secret stands for.
fn key_bytes(secret: &str) -> anyhow::Result<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    // The error never quotes the secret.
    let bytes = STANDARD
        .decode(encoded)
        .ok()
        .context("a webhook secret is not whsec_ followed by base64")?;
    anyhow::ensure!(!bytes.is_empty(), "a webhook secret is empty");
    Ok(bytes)
}

/// One `v1,<base64>` signature of a message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes(secret)?)
        .context("HMAC accepts keys of any length")?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[String],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<String> {
    anyhow::ensure!(!secrets.is_empty(), "no webhook secret to sign with");
    let signatures = secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference libraries).
    #[test]
    fn matches_the_specification_example() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures_and_a_bad_secret_is_not_quoted() {
        let secrets = vec![
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            crate::store::new_webhook_secret(),
        ];
        let header = signature_header(&secrets, "msg_1", 1, b"{}").unwrap();
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
        let err = sign("whsec_not base64!", "m", 1, b"")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not base64!"), "{err}");
    }
}
