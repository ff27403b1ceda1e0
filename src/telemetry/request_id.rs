//! The `x-request-id` of every request: taken from the client when sane, made otherwise,
//! returned on the answer, carried by the request's span (so on every log line) and sent
//! on the upstream calls made on its behalf, including from the submit's own task.

use std::future::Future;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id kept; a longer one is replaced (it would bloat every log line).
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request this task works for. A task-local rather than a span field
    /// so that the provider HTTP client can read it without knowing about spans.
    static CURRENT: HeaderValue;
}

/// A client's id is kept if it is 1-128 visible ASCII characters (no spaces or control
/// characters, which could forge or break log lines); anything else is replaced.
pub fn is_sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

fn make() -> HeaderValue {
    let id = uuid::Uuid::new_v4();
    // A hyphenated uuid is always a valid header value.
    HeaderValue::from_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    )
    .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Middleware (outermost): settles the id, writes it back into the request's headers
/// (where the trace span reads it) and onto the answer, and runs the request under it.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(X_REQUEST_ID)
        .filter(|v| is_sane(v))
        .cloned()
        .unwrap_or_else(make);
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    let mut resp = CURRENT.scope(id.clone(), next.run(req)).await;
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}

/// The id of the request the current task works for, if any (workers have none).
pub fn current() -> Option<HeaderValue> {
    CURRENT.try_with(HeaderValue::clone).ok()
}

/// `fut` with the current request id and span, for work spawned onto its own task.
pub fn carry<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let id = current();
    let span = tracing::Span::current();
    async move {
        match id {
            Some(id) => CURRENT.scope(id, fut).await,
            None => fut.await,
        }
    }
    .instrument(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_kept() {
        assert!(is_sane(&HeaderValue::from_static("req-123_abc.DEF")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_static("has space")));
        assert!(!is_sane(&HeaderValue::from_str(&"x".repeat(129)).unwrap()));
        assert!(is_sane(&HeaderValue::from_str(&"x".repeat(128)).unwrap()));
        assert!(!is_sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
        assert!(is_sane(&make()));
    }

    #[tokio::test]
    async fn carry_takes_the_id_onto_a_spawned_task() {
        let id = HeaderValue::from_static("abc");
        let seen = CURRENT
            .scope(id.clone(), async {
                tokio::spawn(carry(async { current() })).await
            })
            .await
            .unwrap();
        assert_eq!(seen, Some(id));
        assert_eq!(tokio::spawn(async { current() }).await.unwrap(), None);
    }
}
