//! Signing in and out, the session cookie, and the CSRF check of every form.
//!
//! The cookie holds a random token; the store keeps only its SHA-256 with the viewer (the
//! operator, or one key), the session's CSRF token and what it signed in with. The cookie
//! is HttpOnly and SameSite=Strict. It is Secure as `console.secure_cookies` says (`auto`:
//! when the request came over https, `X-Forwarded-Proto: https` from the TLS proxy in
//! front of omnigate), and then named `__Host-...` with `Path=/` (the prefix makes the
//! browser refuse one set without Secure or by another host); otherwise it is limited to
//! `/console`. Either name is accepted, since a setting or a proxy header may change.
//!
//! A session ends with the credential it signed in with: a key's when that secret stops
//! working (revocation, or the end of the grace period after a rotation), the operator's
//! when the admin token changes or is removed. The operator's row holds a fingerprint of
//! the token, HMAC-SHA256 keyed with the session's own cookie token: the store never holds
//! that key, so its rows cannot be used to test guesses of the admin token.
//!
//! The sign-in form itself is protected by a double-submit token: a short-lived cookie
//! and the same value in a hidden field.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use hmac::{Hmac, Mac};
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::page::{self, ConsoleError};
use crate::api::{same_secret, Throttle};
use crate::config::SecureCookies;
use crate::gateway::Gateway;
use crate::store::{now_ms, SignedInWith};

const SESSION_COOKIE: CookieName = CookieName("omnigate_session");
const LOGIN_COOKIE: CookieName = CookieName("omnigate_login");
const SESSION_HOURS: i64 = 12;

/// A cookie's base name; a Secure one is set as `__Host-` + it.
#[derive(Clone, Copy)]
struct CookieName(&'static str);

impl CookieName {
    fn host_prefixed(self) -> String {
        format!("__Host-{}", self.0)
    }

    /// Its value under either name the gateway may have set, the prefixed one first.
    fn value_in(self, jar: &CookieJar) -> Option<String> {
        jar.get(&self.host_prefixed())
            .or_else(|| jar.get(self.0))
            .map(|c| c.value().to_string())
    }

    /// Removes it under both names.
    fn remove_from(self, jar: CookieJar) -> CookieJar {
        jar.remove(Cookie::build(self.host_prefixed()).path("/"))
            .remove(Cookie::build(self.0).path("/console"))
    }
}

/// Who is looking: the operator sees every key's data; a key sees only its own.
#[derive(Debug, Clone)]
pub enum Viewer {
    Operator,
    Key { id: String, name: String },
}

/// A signed-in request: who, and the CSRF token its forms must send back.
#[derive(Debug, Clone)]
pub struct Session {
    pub viewer: Viewer,
    pub csrf: String,
}

impl Session {
    /// The key whose data this session may see; None for the operator (every key).
    pub fn owner(&self) -> Option<&str> {
        match &self.viewer {
            Viewer::Operator => None,
            Viewer::Key { id, .. } => Some(id),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self.viewer, Viewer::Operator)
    }

    /// Operator-only pages do not exist for a key (404, as another key's task).
    pub fn require_operator(&self) -> Result<(), ConsoleError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ConsoleError::NotFound)
        }
    }

    /// Refuses a state-changing request whose form did not send this session's token.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), ConsoleError> {
        match sent {
            Some(token) if same_secret(token, &self.csrf) => Ok(()),
            _ => Err(ConsoleError::CsrfRejected),
        }
    }
}

impl FromRequestParts<Arc<Gateway>> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> Result<Self, ConsoleError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = SESSION_COOKIE
            .value_in(&jar)
            .ok_or(ConsoleError::SignInRequired)?;
        let stored = gw
            .store
            .console_session(&token_hash(&token))
            .await?
            .ok_or(ConsoleError::SignInRequired)?;
        let viewer = match (stored.api_key_id, stored.key_name) {
            (Some(id), name) => Viewer::Key {
                id,
                name: name.unwrap_or_default(),
            },
            (None, _) => {
                let current = admin_fingerprint(gw, &token);
                match (current, stored.admin_fingerprint) {
                    (Some(now), Some(then)) if same_secret(&now, &then) => Viewer::Operator,
                    // The admin token changed, or the admin API is off.
                    _ => return Err(ConsoleError::SignInRequired),
                }
            }
        };
        Ok(Session {
            viewer,
            csrf: stored.csrf_token,
        })
    }
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// `GET /console/login`
pub async fn login_page(
    State(gw): State<Arc<Gateway>>,
    jar: CookieJar,
    headers: HeaderMap,
) -> (CookieJar, Response) {
    let nonce = random_token();
    let cookie = cookie(&gw, LOGIN_COOKIE, nonce.clone(), &headers, 10 * 60);
    (jar.add(cookie), login_form(&nonce, None))
}

fn login_form(nonce: &str, problem: Option<&str>) -> Response {
    let body = html! {
        section.signin aria-labelledby="signin-title" {
            h1 #signin-title { "Sign in to omnigate" }
            p { "Use the admin token for the operator's view, or an API key (" code { "og_..." } ") to see that key's own tasks and usage." }
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(nonce);
                label for="token" { "Admin token or API key" }
                input #token type="password" name="token" required autocomplete="current-password" autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    page::bare("Sign in", body).into_response()
}

/// `POST /console/login`
/// Wrong tokens count against the client's address (`api::Throttle`): past its budget the
/// form answers 429 before the token is looked at.
pub async fn sign_in(
    State(gw): State<Arc<Gateway>>,
    throttle: Throttle,
    jar: CookieJar,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<(CookieJar, Response), ConsoleError> {
    let expected = LOGIN_COOKIE.value_in(&jar);
    match (&expected, form.csrf.as_deref()) {
        (Some(expected), Some(sent)) if same_secret(sent, expected) => {}
        _ => return Err(ConsoleError::CsrfRejected),
    }
    throttle.check()?;
    let token = form.token.trim();
    let session_token = random_token();
    let fingerprint;
    let with = if is_admin_token(&gw, token) {
        fingerprint = admin_fingerprint(&gw, &session_token).unwrap_or_default();
        SignedInWith::AdminToken {
            fingerprint: &fingerprint,
        }
    } else if let Some(key) = gw.store.authenticate(token).await? {
        fingerprint = key.id;
        SignedInWith::KeySecret {
            key_id: &fingerprint,
            secret: token,
        }
    } else {
        throttle.failed();
        let nonce = expected.unwrap_or_default();
        let mut resp = login_form(
            &nonce,
            Some("That is neither the admin token nor a live API key."),
        );
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok((jar, resp));
    };
    gw.store
        .create_console_session(
            &token_hash(&session_token),
            with,
            &random_token(),
            now_ms() + SESSION_HOURS * 3_600_000,
        )
        .await?;
    let jar = LOGIN_COOKIE.remove_from(jar).add(cookie(
        &gw,
        SESSION_COOKIE,
        session_token,
        &headers,
        SESSION_HOURS * 3600,
    ));
    Ok((jar, Redirect::to("/console/tasks").into_response()))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: Option<String>,
}

/// `POST /console/logout`
pub async fn sign_out(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Result<(CookieJar, Redirect), ConsoleError> {
    session.check_csrf(form.csrf.as_deref())?;
    if let Some(token) = SESSION_COOKIE.value_in(&jar) {
        gw.store.delete_console_session(&token_hash(&token)).await?;
    }
    let jar = SESSION_COOKIE.remove_from(jar);
    Ok((jar, Redirect::to("/console/login")))
}

fn is_admin_token(gw: &Gateway, given: &str) -> bool {
    gw.config
        .admin
        .token
        .as_ref()
        .is_some_and(|t| same_secret(given, t.expose()))
}

/// The fingerprint of the configured admin token for the session with this cookie token;
/// None when the admin API is off (and with it the operator's console).
fn admin_fingerprint(gw: &Gateway, session_token: &str) -> Option<String> {
    let admin = gw.config.admin.token.as_ref()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(session_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(admin.expose().as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

fn cookie(
    gw: &Gateway,
    name: CookieName,
    value: String,
    headers: &HeaderMap,
    max_age_secs: i64,
) -> Cookie<'static> {
    build_cookie(
        gw.config.console.secure_cookies,
        name,
        value,
        headers,
        max_age_secs,
    )
}

fn build_cookie(
    mode: SecureCookies,
    name: CookieName,
    value: String,
    headers: &HeaderMap,
    max_age_secs: i64,
) -> Cookie<'static> {
    let secure = match mode {
        SecureCookies::Always => true,
        SecureCookies::Never => false,
        SecureCookies::Auto => came_over_https(headers),
    };
    let (name, path) = if secure {
        (name.host_prefixed(), "/")
    } else {
        (name.0.to_string(), "/console")
    };
    Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::seconds(max_age_secs))
        .build()
}

/// omnigate serves plain HTTP; behind a TLS proxy, the proxy says the client used https.
fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_secure_and_host_prefixed_as_the_setting_says() {
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", "https".parse().unwrap());
        let plain = HeaderMap::new();
        let host =
            "__Host-omnigate_session=t; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=60";
        let bare = "omnigate_session=t; HttpOnly; SameSite=Strict; Path=/console; Max-Age=60";
        for (mode, headers, want) in [
            (SecureCookies::Auto, &plain, bare),
            (SecureCookies::Auto, &proxied, host),
            (SecureCookies::Always, &plain, host),
            (SecureCookies::Always, &proxied, host),
            (SecureCookies::Never, &plain, bare),
            (SecureCookies::Never, &proxied, bare),
        ] {
            let got = build_cookie(mode, SESSION_COOKIE, "t".into(), headers, 60).to_string();
            assert_eq!(got, want, "{mode:?}");
        }
    }

    #[test]
    fn a_form_without_the_session_token_is_refused() {
        let s = Session {
            viewer: Viewer::Operator,
            csrf: "abc".into(),
        };
        assert!(s.check_csrf(Some("abc")).is_ok());
        assert!(matches!(
            s.check_csrf(None),
            Err(ConsoleError::CsrfRejected)
        ));
        assert!(matches!(
            s.check_csrf(Some("abd")),
            Err(ConsoleError::CsrfRejected)
        ));
    }
}
