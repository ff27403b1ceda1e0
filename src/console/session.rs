//! Signing in and out, the session cookie, and the CSRF check of every form.
//!
//! The cookie holds a random token; the store keeps only its SHA-256 with the viewer (the
//! operator, or one key) and the session's CSRF token. The cookie is HttpOnly,
//! SameSite=Strict, limited to `/console`, and Secure when the request came over https
//! (`X-Forwarded-Proto: https` from the TLS proxy in front of omnigate).
//!
//! The sign-in form itself is protected by a double-submit token: a short-lived cookie
//! and the same value in a hidden field.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::page::{self, ConsoleError};
use crate::api::same_secret;
use crate::gateway::Gateway;
use crate::store::now_ms;

const SESSION_COOKIE: &str = "omnigate_session";
const LOGIN_COOKIE: &str = "omnigate_login";
const SESSION_HOURS: i64 = 12;

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
        let token = jar
            .get(SESSION_COOKIE)
            .map(|c| c.value().to_string())
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
            (None, _) => Viewer::Operator,
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
pub async fn login_page(jar: CookieJar, headers: HeaderMap) -> (CookieJar, Response) {
    let nonce = random_token();
    let cookie = cookie(LOGIN_COOKIE, nonce.clone(), &headers, 10 * 60);
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
pub async fn sign_in(
    State(gw): State<Arc<Gateway>>,
    jar: CookieJar,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<(CookieJar, Response), ConsoleError> {
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_string());
    match (&expected, form.csrf.as_deref()) {
        (Some(expected), Some(sent)) if same_secret(sent, expected) => {}
        _ => return Err(ConsoleError::CsrfRejected),
    }
    let token = form.token.trim();
    let key_id = if is_admin_token(&gw, token) {
        None
    } else {
        match gw.store.authenticate(token).await? {
            Some(key) => Some(key.id),
            None => {
                let nonce = expected.unwrap_or_default();
                let mut resp = login_form(
                    &nonce,
                    Some("That is neither the admin token nor a live API key."),
                );
                *resp.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
                return Ok((jar, resp));
            }
        }
    };
    let session_token = random_token();
    gw.store
        .create_console_session(
            &token_hash(&session_token),
            key_id.as_deref(),
            &random_token(),
            now_ms() + SESSION_HOURS * 3_600_000,
        )
        .await?;
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/console"))
        .add(cookie(
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
    if let Some(c) = jar.get(SESSION_COOKIE) {
        gw.store
            .delete_console_session(&token_hash(c.value()))
            .await?;
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/console"));
    Ok((jar, Redirect::to("/console/login")))
}

fn is_admin_token(gw: &Gateway, given: &str) -> bool {
    gw.config
        .admin
        .token
        .as_ref()
        .is_some_and(|t| same_secret(given, t.expose()))
}

fn cookie(
    name: &'static str,
    value: String,
    headers: &HeaderMap,
    max_age_secs: i64,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(came_over_https(headers))
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
    fn the_session_cookie_is_http_only_strict_and_secure_only_over_https() {
        let plain = cookie(SESSION_COOKIE, "t".into(), &HeaderMap::new(), 60).to_string();
        assert!(
            plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
            "{plain}"
        );
        assert!(!plain.contains("Secure"), "{plain}");
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", "https".parse().unwrap());
        let secure = cookie(SESSION_COOKIE, "t".into(), &proxied, 60).to_string();
        assert!(secure.contains("Secure"), "{secure}");
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
