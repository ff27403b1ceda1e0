//! Kling's answers: its error codes, the create answer, a query answer, the lookups by
//! our `external_task_id` (a single-task query and the task list), a callback body, and
//! the `parse_*` entry points the fuzz targets and property tests read them through.

use serde_json::Value;

use super::observe::{kling_state, observe, observe_kling};
use crate::providers::http::{self, check, malformed, Call, Reply, Verdict};
use crate::providers::{ErrorKind, ProviderError, Submitted, UpstreamTask};

/// Kling's error codes. The HTTP status beside them is not reliable (an empty balance
/// comes as 429), so the code decides. `None`: a code we do not know.
pub fn kind_for_code(code: i64) -> Option<ErrorKind> {
    Some(match code {
        1000..=1004 => ErrorKind::Auth,
        1100..=1102 => ErrorKind::Billing,
        1103 => ErrorKind::Auth,
        1200..=1201 => ErrorKind::BadRequest,
        // A path or model this reseller does not have says nothing against the request.
        1202..=1203 => ErrorKind::NotFound,
        1300..=1301 => ErrorKind::ContentPolicy,
        1302 => ErrorKind::RateLimited,
        1303 => ErrorKind::ConcurrencyLimited,
        1304 => ErrorKind::Auth,
        5000..=5002 => ErrorKind::Retryable,
        _ => return None,
    })
}

/// Kling's envelope says `code: 0`; the relay wrapper says `code: "success"`.
fn classify_code(code: &Value) -> Option<Verdict> {
    if let Some(n) = http::integer(code) {
        return Some(match n {
            0 => Verdict::Success,
            n => Verdict::Error(kind_for_code(n)),
        });
    }
    let word = code.as_str().map(str::trim).filter(|w| !w.is_empty())?;
    Some(if word.eq_ignore_ascii_case("success") {
        Verdict::Success
    } else {
        Verdict::Error(None)
    })
}

/// Reads a create answer: Kling's envelope (`data.task_id`, `data.task_status`) or
/// anyfast's OpenAI-like object (`task_id`/`id`, `status`).
pub(in crate::providers) fn read_created(reply: &Reply) -> Result<Submitted, ProviderError> {
    let body = check(reply, Call::Submit, classify_code).map_err(|mut e| {
        if is_duplicate_external_id(&e) {
            // Our id is unique per task, so a task already carries it: an earlier submit
            // landed although its answer was lost. Not a refusal of this request; looking
            // the task up (by that id) finds it.
            e.ambiguous = true;
        }
        e
    })?;
    let task = body.get("data").filter(|d| d.is_object()).unwrap_or(&body);
    let upstream_id = ["task_id", "id"]
        .iter()
        .find_map(|k| task.get(k).and_then(http::text))
        .ok_or_else(|| malformed(reply, Call::Submit, "no task id in the create answer"))?;
    let state = ["task_status", "status"]
        .iter()
        .find_map(|k| task.get(k).and_then(Value::as_str))
        .unwrap_or_default();
    Ok(http::submitted(upstream_id, state, kling_state))
}

/// Kling documents no code for "external_task_id already used" (a parameter error,
/// 1200-1201, in practice), so the refusal is recognized by naming the field and saying
/// it is taken.
fn is_duplicate_external_id(e: &ProviderError) -> bool {
    let message = e.message.to_ascii_lowercase().replace([' ', '-'], "_");
    e.kind == ErrorKind::BadRequest
        && message.contains("external_task_id")
        && [
            "exist", "already", "duplicat", "repeat", "used", "unique", "taken",
        ]
        .iter()
        .any(|w| message.contains(w))
}

/// Reads a create answer (HTTP `status` and `body`) exactly as a submit does: the entry
/// point of the fuzz targets and property tests.
pub fn parse_create_answer(status: u16, body: &[u8]) -> Result<Submitted, ProviderError> {
    http::read_answer(status, body, read_created)
}

/// Reads a task answer (HTTP `status` and `body`) about `upstream_id` exactly as a poll
/// does; for the fuzz targets and property tests.
pub fn parse_status_answer(
    status: u16,
    body: &[u8],
    upstream_id: &str,
) -> Result<UpstreamTask, ProviderError> {
    http::read_answer(status, body, |reply| read_task(reply, upstream_id))
}

/// Reads the answer to the single-task query made with our id, as a lookup by our id
/// ([`Provider::find_by_external_id`]) does; for the fuzz targets and property tests.
pub fn parse_lookup_answer(
    status: u16,
    body: &[u8],
    external_task_id: &str,
) -> Result<Option<UpstreamTask>, ProviderError> {
    http::read_answer(status, body, |reply| {
        read_task_by_external_id(reply, external_task_id).map_err(|e| transient_on_lookup(reply, e))
    })
}

/// Reads one page of the task list as a lookup by our id does: the task carrying
/// `external_task_id` if listed, and how many the page held. For the fuzz targets and
/// property tests.
pub fn parse_list_page(
    status: u16,
    body: &[u8],
    external_task_id: &str,
) -> Result<(Option<UpstreamTask>, usize), ProviderError> {
    http::read_answer(status, body, |reply| {
        read_list_page(reply, external_task_id).map_err(|e| transient_on_lookup(reply, e))
    })
}

pub(in crate::providers) fn read_task(
    reply: &Reply,
    upstream_id: &str,
) -> Result<UpstreamTask, ProviderError> {
    let body = check(reply, Call::Read, classify_code)?;
    observe(&body, Some(upstream_id))
        .ok_or_else(|| malformed(reply, Call::Read, "no task state in the answer"))?
        .settle(reply)
}

/// Reads a callback body: the task object, flat or in Kling's envelope (WIRE-NOTES: both
/// arrive), or the relay wrapper, read exactly as a query answer is. The task id is the
/// one the body names.
pub(in crate::providers) fn read_callback(body: &[u8]) -> Result<UpstreamTask, ProviderError> {
    let reply = http::callback_reply(body);
    let json = check(&reply, Call::Read, classify_code)?;
    observe(&json, None)
        .ok_or_else(|| malformed(&reply, Call::Read, "no task state in the callback"))?
        .settle(&reply)
}

/// Reads the answer to a single-task query made with our id in place of Kling's:
/// the task with its own `task_id`, or `None` when the answer is about another task.
pub(in crate::providers) fn read_task_by_external_id(
    reply: &Reply,
    external_task_id: &str,
) -> Result<Option<UpstreamTask>, ProviderError> {
    let body = check(reply, Call::Read, classify_code)?;
    let observed = observe(&body, None)
        .ok_or_else(|| malformed(reply, Call::Read, "no task state in the answer"))?;
    let labelled = [
        "/data/task_info/external_task_id",
        "/data/data/data/task_info/external_task_id",
    ]
    .iter()
    .find_map(|p| body.pointer(p).and_then(Value::as_str));
    if labelled.is_some_and(|id| id != external_task_id) {
        return Ok(None);
    }
    if observed.upstream_id.is_empty() {
        return Err(malformed(reply, Call::Read, "task has no task_id"));
    }
    observed.settle(reply).map(Some)
}

/// Reads one page of the task list: the task carrying `external_task_id` if listed, and
/// how many tasks the page held (a full page means there may be more).
pub(in crate::providers) fn read_list_page(
    reply: &Reply,
    external_task_id: &str,
) -> Result<(Option<UpstreamTask>, usize), ProviderError> {
    let body = check(reply, Call::Read, classify_code)?;
    let tasks = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(reply, Call::Read, "task list is not an array"))?;
    let listed = tasks.iter().find(|t| {
        t.pointer("/task_info/external_task_id")
            .and_then(Value::as_str)
            == Some(external_task_id)
    });
    let found = match listed {
        None => None,
        Some(task) => {
            let observed = observe_kling(task, None, "data[].");
            if observed.upstream_id.is_empty() {
                return Err(malformed(reply, Call::Read, "listed task has no task_id"));
            }
            Some(observed.settle(reply)?)
        }
    };
    Ok((found, tasks.len()))
}

/// A lookup decides between resubmitting and waiting, so only a definite answer may
/// end it: a garbled 2xx (a proxy's page, a cut-off body) is asked again, not taken as
/// "this provider cannot look tasks up".
pub(super) fn transient_on_lookup(reply: &Reply, mut e: ProviderError) -> ProviderError {
    if e.kind == ErrorKind::Malformed
        && reply.is_success()
        && !reply.oversized
        && reply.json().is_none()
    {
        e.kind = ErrorKind::Retryable;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskStatus;
    use crate::providers::fixtures::reply;
    use crate::providers::kling::envelope;
    use serde_json::json;

    #[test]
    fn create_answer_in_kling_envelope() {
        let r = reply(
            200,
            json!({"code": 0, "message": "SUCCEED", "request_id": "r",
                   "data": {"task_id": "86", "task_status": "submitted", "created_at": 1773130665000_u64}}),
        );
        assert_eq!(
            read_created(&r).unwrap(),
            Submitted {
                upstream_id: "86".into(),
                status: TaskStatus::Queued
            }
        );
    }

    #[test]
    fn create_answer_as_anyfast_video_object() {
        let r = reply(
            200,
            json!({"id": "860260753860210752", "task_id": "860260753860210752", "object": "video",
                   "model": "kling-v3-omni", "status": "", "progress": 0, "created_at": 1773130665}),
        );
        assert_eq!(
            read_created(&r).unwrap(),
            Submitted {
                upstream_id: "860260753860210752".into(),
                status: TaskStatus::Queued
            }
        );
        let r = reply(
            200,
            json!({"id": "9", "object": "video", "status": "IN_PROGRESS"}),
        );
        assert_eq!(read_created(&r).unwrap().status, TaskStatus::InProgress);
    }

    #[test]
    fn create_answer_without_task_id_is_malformed_and_ambiguous() {
        let err = read_created(&reply(200, json!({}))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(err.ambiguous);
    }

    #[test]
    fn every_kling_code_group_is_classified_by_code_not_status() {
        let cases = [
            (401, 1000, ErrorKind::Auth),
            (401, 1004, ErrorKind::Auth),
            (429, 1100, ErrorKind::Billing),
            (429, 1102, ErrorKind::Billing),
            (403, 1103, ErrorKind::Auth),
            (400, 1200, ErrorKind::BadRequest),
            (400, 1201, ErrorKind::BadRequest),
            (404, 1202, ErrorKind::NotFound),
            (404, 1203, ErrorKind::NotFound),
            (400, 1300, ErrorKind::ContentPolicy),
            (400, 1301, ErrorKind::ContentPolicy),
            (429, 1302, ErrorKind::RateLimited),
            (429, 1303, ErrorKind::ConcurrencyLimited),
            (429, 1304, ErrorKind::Auth),
            (500, 5000, ErrorKind::Retryable),
            (503, 5001, ErrorKind::Retryable),
            (504, 5002, ErrorKind::Retryable),
        ];
        for (status, code, kind) in cases {
            let r = reply(
                status,
                json!({"code": code, "message": "words", "request_id": "r"}),
            );
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, kind, "code {code}");
            assert_eq!(err.code.as_deref(), Some(code.to_string().as_str()));
            assert_eq!(err.http_status, Some(status));
            assert_eq!(err.message, "words");
            assert!(!err.ambiguous, "code {code} is an explicit refusal");
        }
    }

    #[test]
    fn nonzero_code_on_http_200_is_an_error() {
        let r = reply(
            200,
            json!({"code": 1303, "message": "parallel task over resource pack limit"}),
        );
        let err = read_created(&r).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConcurrencyLimited);
        assert_eq!(err.http_status, Some(200));
        let r = reply(200, json!({"code": "1301", "message": "risky"}));
        assert_eq!(read_created(&r).unwrap_err().kind, ErrorKind::ContentPolicy);
    }

    #[test]
    fn without_a_known_code_the_http_status_decides() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (402, ErrorKind::Billing),
            (404, ErrorKind::NotFound),
            (429, ErrorKind::RateLimited),
            (502, ErrorKind::Retryable),
        ];
        for (status, kind) in cases {
            let r = reply(status, json!({"error": {"message": "nope", "type": "x"}}));
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, kind, "HTTP {status}");
            assert_eq!(err.message, "nope");
        }
        let r = reply(429, json!({"code": 1999, "message": "new"}));
        assert_eq!(read_created(&r).unwrap_err().kind, ErrorKind::RateLimited);
    }

    #[test]
    fn a_duplicate_external_task_id_refusal_is_ambiguous_not_a_refusal() {
        for message in [
            "external_task_id: \"vgt_1\" is already used by a task of this account",
            "Duplicate external_task_id",
            "external task id already exists",
        ] {
            let r = reply(400, json!({"code": 1201, "message": message}));
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadRequest, "{message}");
            assert!(err.ambiguous, "{message}");
        }
        let r = reply(
            400,
            json!({"code": 1201, "message": "external_task_id too long"}),
        );
        assert!(!read_created(&r).unwrap_err().ambiguous);
        let r = reply(
            400,
            json!({"code": 1201, "message": "duration already invalid"}),
        );
        assert!(!read_created(&r).unwrap_err().ambiguous);
    }

    #[test]
    fn query_answer_without_a_state_is_malformed_but_not_ambiguous() {
        let err = read_task(&reply(200, json!({"code": 0, "data": {}})), "86").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(!err.ambiguous);
        let err = read_task(&reply(404, json!({"code": 1202, "message": "no"})), "86").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_direct_lookup_reads_kling_s_own_id_and_skips_another_task() {
        let answer = envelope(json!({
            "task_id": "86", "task_status": "processing",
            "task_info": {"external_task_id": "vgt_9"},
        }));
        let found = read_task_by_external_id(&reply(200, answer), "vgt_9").unwrap();
        assert_eq!(found.map(|t| t.upstream_id), Some("86".into()));
        let other = envelope(json!({
            "task_id": "vgt_9", "task_status": "processing",
            "task_info": {"external_task_id": "someone_else"},
        }));
        assert_eq!(
            read_task_by_external_id(&reply(200, other), "vgt_9").unwrap(),
            None
        );
    }

    #[test]
    fn a_garbled_lookup_answer_is_retryable_but_a_query_s_stays_malformed() {
        let garbled = Reply {
            status: 200,
            body: b"<html>upstream hiccup</html>".to_vec(),
            oversized: false,
        };
        let err = read_task_by_external_id(&garbled, "vgt_9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert_eq!(
            transient_on_lookup(&garbled, err).kind,
            ErrorKind::Retryable
        );
        let not_found = reply(404, json!({"code": 1203, "message": "no"}));
        let err = read_task_by_external_id(&not_found, "vgt_9").unwrap_err();
        assert_eq!(
            transient_on_lookup(&not_found, err).kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn list_page_finds_the_task_by_external_id() {
        let page = envelope(json!([
            {"task_id": "1", "task_status": "processing", "task_info": {"external_task_id": "other"}},
            {"task_id": "2", "task_status": "submitted", "task_info": {"external_task_id": "vgt_9"}},
            {"task_id": "3", "task_status": "failed", "task_info": {}},
        ]));
        let (found, listed) = read_list_page(&reply(200, page), "vgt_9").unwrap();
        assert_eq!(listed, 3);
        let found = found.expect("task is listed");
        assert_eq!(found.upstream_id, "2");
        assert_eq!(found.status, TaskStatus::Queued);
    }

    #[test]
    fn list_page_without_the_task_is_absent_and_bad_pages_are_errors() {
        let (found, listed) = read_list_page(&reply(200, envelope(json!([]))), "vgt_9").unwrap();
        assert_eq!((found, listed), (None, 0));
        let err = read_list_page(&reply(200, envelope(json!({}))), "vgt_9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        let err = read_list_page(
            &reply(401, json!({"code": 1001, "message": "bad token"})),
            "vgt_9",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
    }

    #[test]
    fn a_listed_task_in_an_unknown_state_is_unreadable() {
        let page = envelope(json!([
            {"task_id": "2", "task_status": "frobbing", "task_info": {"external_task_id": "vgt_9"}},
        ]));
        let err = read_list_page(&reply(200, page), "vgt_9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data[].task_status: unknown state word "frobbing""#
        );
    }

    #[test]
    fn a_callback_reads_flat_and_enveloped_alike_with_the_query_mapping() {
        let flat = json!({
            "task_id": "86", "task_status": "succeed", "task_status_msg": "",
            "task_info": {"external_task_id": "vgt_1"},
            "task_result": {"videos": [{"id": "v", "url": "https://cdn/v.mp4", "duration": "5.041"}]},
            "created_at": 1773130665000_u64, "updated_at": 1773130700000_u64,
        });
        let from_flat = read_callback(flat.to_string().as_bytes()).unwrap();
        assert_eq!(from_flat.upstream_id, "86");
        assert_eq!(from_flat.status, TaskStatus::Completed);
        assert_eq!(from_flat.videos[0].url, "https://cdn/v.mp4");
        let wrapped = envelope(flat).to_string();
        assert_eq!(read_callback(wrapped.as_bytes()).unwrap(), from_flat);
        let unknown = json!({"task_id": "86", "task_status": "paused"}).to_string();
        let err = read_callback(unknown.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        for garbage in [&b"not json"[..], br#"{"hello": 1}"#] {
            let err = read_callback(garbage).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Malformed);
        }
    }
}
