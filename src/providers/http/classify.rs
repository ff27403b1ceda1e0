//! Error classification: a reply's body code and HTTP status turned into an
//! [`ErrorKind`], and the errors every dialect raises alike.

use serde_json::Value;

use super::fields::{integer, scalar_text, text};
use super::reply::{Reply, MAX_BODY_BYTES};
use super::Call;
use crate::providers::{ErrorKind, ProviderError};

/// What a dialect makes of the `code` field of a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::providers) enum Verdict {
    Success,
    /// An error; `None` when the dialect does not know the code (fall back on HTTP status).
    Error(Option<ErrorKind>),
}

/// Turns a reply into its JSON body or a classified error. A body code the dialect
/// recognizes wins over the HTTP status (Kling answers 429 for an empty balance);
/// without one the HTTP status decides. `classify` returns `None` for values it does
/// not treat as a code at all.
pub(in crate::providers) fn check(
    reply: &Reply,
    call: Call,
    classify: impl Fn(&Value) -> Option<Verdict>,
) -> Result<Value, ProviderError> {
    if reply.oversized {
        let what = format!("answer larger than {MAX_BODY_BYTES} bytes");
        return Err(malformed(reply, call, &what));
    }
    if (300..400).contains(&reply.status) {
        // Not followed (see `Upstream::new`). No dialect redirects, so this is a proxy or
        // a moved endpoint; after a submit nobody can say whether the task was made.
        let what = format!("redirect (HTTP {}) not followed", reply.status);
        return Err(malformed(reply, call, &what));
    }
    let json = reply.json();
    let code = json.as_ref().and_then(|v| v.get("code"));
    let verdict = code.and_then(&classify);
    let kind = match verdict {
        Some(Verdict::Error(Some(kind))) => kind,
        Some(Verdict::Error(None)) => kind_for_http_status(reply.status),
        Some(Verdict::Success) | None if !reply.is_success() => kind_for_http_status(reply.status),
        Some(Verdict::Success) | None => {
            return json.ok_or_else(|| malformed(reply, call, "body is not JSON"));
        }
    };
    // A provider's own code says it refused; one that only repeats a gateway failure
    // status (modellix, apimodels) does not.
    let explicit_refusal = matches!(verdict, Some(Verdict::Error(Some(_))))
        && !code.and_then(integer).is_some_and(is_gateway_failure);
    let message = json
        .as_ref()
        .and_then(provider_message)
        .unwrap_or_else(|| format!("provider answered HTTP {}", reply.status));
    Err(ProviderError {
        kind,
        message,
        http_status: Some(reply.status),
        code: code.and_then(scalar_text),
        // A front proxy that timed out waiting on the origin (504, 524) or lost the
        // connection to it mid-answer (502) may still have let the task through, exactly
        // like our own timeout; an explicit provider error code says it did not.
        ambiguous: call == Call::Submit && is_gateway_failure(reply.status) && !explicit_refusal,
        raw_body: None,
    })
}

/// Statuses a front proxy answers when it lost track of the origin mid-request. A body
/// `code` repeating one of them (modellix, apimodels) says no more than the status.
fn is_gateway_failure(status: impl TryInto<u16>) -> bool {
    matches!(status.try_into().ok(), Some(502 | 504 | 524))
}

/// The fallback classification by HTTP status, shared by every dialect (modellix and
/// apimodels also put HTTP-like numbers in their body `code`).
pub(in crate::providers) fn kind_for_http_status(status: u16) -> ErrorKind {
    match status {
        400 => ErrorKind::BadRequest,
        401 | 403 => ErrorKind::Auth,
        402 => ErrorKind::Billing,
        404 => ErrorKind::NotFound,
        // The server gave up reading our request: it was not accepted.
        408 => ErrorKind::Retryable,
        429 => ErrorKind::RateLimited,
        405..=499 => ErrorKind::BadRequest,
        500..=599 => ErrorKind::Retryable,
        _ => ErrorKind::Malformed,
    }
}

/// For dialects whose body `code` repeats an HTTP status (modellix, apimodels):
/// `success` or any 2xx is success, other HTTP-like numbers classify as that status.
pub(in crate::providers) fn classify_http_like(code: &Value, success: i64) -> Option<Verdict> {
    let n = integer(code)?;
    Some(match n {
        n if n == success || (200..300).contains(&n) => Verdict::Success,
        100..=599 => Verdict::Error(u16::try_from(n).ok().map(kind_for_http_status)),
        _ => Verdict::Error(None),
    })
}

/// A 2xx answer we cannot read as the dialect's success shape. After a submit the task
/// may exist upstream, so it is ambiguous there.
pub(in crate::providers) fn malformed(reply: &Reply, call: Call, what: &str) -> ProviderError {
    ProviderError {
        kind: ErrorKind::Malformed,
        message: format!("unexpected answer from provider: {what}"),
        http_status: Some(reply.status),
        code: None,
        ambiguous: call == Call::Submit,
        raw_body: None,
    }
}

/// The error of a dialect that cannot find tasks by our id. Whether the submit landed
/// stays unknown, hence ambiguous.
pub(in crate::providers) fn no_external_id_lookup(provider: &str) -> ProviderError {
    let mut err = ProviderError::new(
        ErrorKind::BadRequest,
        format!("{provider} cannot look tasks up by external_task_id"),
    );
    err.ambiguous = true;
    err
}

/// The provider's own error text: `message`, `msg`, or an OpenAI-style `error`.
pub(in crate::providers) fn provider_message(v: &Value) -> Option<String> {
    ["message", "msg"]
        .iter()
        .filter_map(|k| v.get(k))
        .chain(v.get("error").map(|e| e.get("message").unwrap_or(e)))
        .find_map(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::test_reply as reply;
    use serde_json::json;

    fn numeric_zero_is_success(v: &Value) -> Option<Verdict> {
        integer(v).map(|n| {
            if n == 0 {
                Verdict::Success
            } else {
                Verdict::Error(None)
            }
        })
    }

    fn classify_modellix(v: &Value) -> Option<Verdict> {
        classify_http_like(v, 0)
    }

    #[test]
    fn http_statuses_map_onto_error_kinds() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (402, ErrorKind::Billing),
            (404, ErrorKind::NotFound),
            (422, ErrorKind::BadRequest),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Retryable),
            (503, ErrorKind::Retryable),
            (302, ErrorKind::Malformed),
        ];
        for (status, kind) in cases {
            assert_eq!(kind_for_http_status(status), kind, "HTTP {status}");
        }
    }

    #[test]
    fn non_json_2xx_is_malformed_and_ambiguous_only_for_submits() {
        let r = reply(200, "<html>");
        let submit = check(&r, Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(submit.kind, ErrorKind::Malformed);
        assert!(submit.ambiguous);
        let read = check(&r, Call::Read, numeric_zero_is_success).unwrap_err();
        assert!(!read.ambiguous);
    }

    #[test]
    fn error_without_body_falls_back_on_http_status_with_short_message() {
        let err = check(&reply(503, "busy"), Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert_eq!(err.http_status, Some(503));
        assert_eq!(err.message, "provider answered HTTP 503");
        assert!(!err.ambiguous);
    }

    #[test]
    fn gateway_timeout_on_submit_is_ambiguous() {
        let err = check(&reply(504, ""), Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert!(err.ambiguous);
    }

    #[test]
    fn provider_message_reads_message_msg_and_openai_error() {
        assert_eq!(provider_message(&json!({"message": "m"})), Some("m".into()));
        assert_eq!(provider_message(&json!({"msg": "x"})), Some("x".into()));
        assert_eq!(
            provider_message(&json!({"error": {"message": "e"}})),
            Some("e".into())
        );
        assert_eq!(provider_message(&json!({"message": ""})), None);
    }

    #[test]
    fn a_nul_in_provider_text_is_replaced_so_the_text_can_be_stored() {
        assert_eq!(text(&json!("a\u{0}b")).as_deref(), Some("a\u{FFFD}b"));
        let err = check(
            &reply(400, r#"{"msg": "bad\u0000thing"}"#),
            Call::Read,
            |_| None,
        );
        assert_eq!(err.unwrap_err().message, "bad\u{FFFD}thing");
    }

    #[test]
    fn a_redirect_is_an_error_ambiguous_only_after_a_submit() {
        let r = reply(302, "");
        let submit = check(&r, Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(submit.kind, ErrorKind::Malformed);
        assert!(submit.ambiguous);
        assert!(submit.message.contains("redirect"), "{}", submit.message);
        assert!(
            !check(&r, Call::Read, numeric_zero_is_success)
                .unwrap_err()
                .ambiguous
        );
    }

    #[test]
    fn an_oversized_answer_is_malformed_whatever_it_starts_with() {
        let mut r = reply(200, r#"{"code":0,"data":{}}"#);
        r.oversized = true;
        let err = check(&r, Call::Read, numeric_zero_is_success).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(!err.ambiguous);
        assert!(
            check(&r, Call::Submit, numeric_zero_is_success)
                .unwrap_err()
                .ambiguous
        );
    }

    #[test]
    fn a_bad_gateway_after_a_submit_is_ambiguous_unless_the_provider_refused() {
        for body in [
            "",
            "<html>502 Bad Gateway</html>",
            r#"{"code":502,"message":"bad gateway"}"#,
        ] {
            let err = check(&reply(502, body), Call::Submit, classify_modellix).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Retryable, "{body}");
            assert!(err.ambiguous, "{body}");
        }
        let refused = reply(502, r#"{"code":400,"message":"bad prompt"}"#);
        let err = check(&refused, Call::Submit, classify_modellix).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(!err.ambiguous);
        assert!(
            !check(&reply(502, ""), Call::Read, classify_modellix)
                .unwrap_err()
                .ambiguous
        );
    }
}
