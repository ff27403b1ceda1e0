//! Security headers: `X-Content-Type-Options: nosniff` on every answer of the gateway, and
//! on its HTML pages (the console, `/docs`) a Content-Security-Policy that allows this
//! origin only, no framing and no referrer. Added as layers (`api::router`,
//! `console::routes`), so a new page cannot forget them.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::Response;

/// The console's pages: its own stylesheet and script, nothing inline. Videos are the one
/// exception to `self`: without a stored copy the video route redirects to the provider's
/// URL (`api::content_of`), on whatever host the provider serves it from.
pub const CONSOLE_CSP: &str = "default-src 'self'; media-src 'self' https: http:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The API reference: Swagger UI's stylesheet draws its icons as `data:` images.
pub const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every answer: a browser must not guess a type other than the one declared.
pub async fn nosniff(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// The console's answers. Its pages show keys, secrets and other teams' data, so no cache
/// keeps them; its stylesheet and script set their own `Cache-Control`.
pub async fn console_page(mut resp: Response) -> Response {
    page_headers(&mut resp, CONSOLE_CSP);
    resp.headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// `/docs` and its assets.
pub async fn docs_page(mut resp: Response) -> Response {
    page_headers(&mut resp, DOCS_CSP);
    resp
}

fn page_headers(resp: &mut Response, csp: &'static str) {
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}
