//! omnigate's parsers of outside input, each called as its handler or adapter calls it,
//! with what must hold for every input: no panic, a refusal is a 4xx (never a 5xx), and
//! what is accepted obeys the rules every later step relies on. Shared by the property
//! tests (`tests/properties.rs`, in CI) and the fuzz targets (`fuzz/fuzz_targets/`, which
//! include this file by path), so both check the same functions the same way.

use std::sync::{Arc, OnceLock};

use omnigate::api::parsers::{
    is_token_shaped, judge_callback, kling_request, openai_request, parse_json_body,
    parse_openai_create_body, CallbackVerdict, KlingCreate,
};
use omnigate::api::ApiError;
use omnigate::config::ProviderConfig;
use omnigate::domain::{TaskStatus, VideoRequest};
use omnigate::providers::{
    self, apimodels, kling, modellix, Provider, ProviderError, Submitted, UpstreamTask,
};
use omnigate::store::TaskState;
use omnigate::validation;
use serde_json::{json, Value};

/// Where a modellix provider is configured in these checks: `get_result` URLs on it are
/// followed, others are not.
pub const MODELLIX_BASE_URL: &str = "https://api.modellix.ai";
/// The most characters of provider text an error or a failure message keeps, plus the
/// `…` that marks a cut.
const MAX_MESSAGE_CHARS: usize = 501;
const MAX_RAW_BODY_BYTES: usize = 2048;

/// The wire dialects whose answers omnigate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Modellix,
    Kling,
    Apimodels,
}

impl Dialect {
    pub const ALL: [Dialect; 3] = [Dialect::Modellix, Dialect::Kling, Dialect::Apimodels];
}

/// A refusal of client input must be a 4xx: the client's fault, never the gateway's.
fn assert_client_error(e: &ApiError, input: &str) {
    assert!(
        e.status().is_client_error(),
        "{input}: refused with {} ({e})",
        e.status()
    );
}

/// The body of `POST /v1/video/generations`: parsed as its extractor does, then checked
/// as a create checks it (every rule, and the callback URL as a gateway that refuses
/// private targets does). `Some` when a create would go on to routing.
pub fn native_create(bytes: &[u8]) -> Option<VideoRequest> {
    let req = match parse_json_body::<VideoRequest>(bytes) {
        Ok(req) => req,
        Err(e) => {
            assert_client_error(&e, "POST /v1/video/generations body");
            return None;
        }
    };
    accepted(req)
}

/// The body of `POST /v1/videos` under `content_type` (JSON or multipart form): parsed as
/// its extractor does, mapped onto a request as the handler does, then checked as a create
/// checks it.
pub fn openai_create(content_type: &str, bytes: &[u8]) -> Option<VideoRequest> {
    let body = futures::executor::block_on(parse_openai_create_body(
        content_type,
        bytes.to_vec().into(),
    ));
    let req = body.and_then(openai_request);
    match req {
        Ok(req) => accepted(req),
        Err(e) => {
            assert_client_error(&e, "POST /v1/videos body");
            None
        }
    }
}

/// The body of the Kling facade's create (`POST /v1/videos/omni-video`): parsed as its
/// extractor does, mapped onto a request as the handler does, then checked as a create
/// checks it.
pub fn kling_create(bytes: &[u8]) -> Option<VideoRequest> {
    let req = parse_json_body::<KlingCreate>(bytes).and_then(kling_request);
    match req {
        Ok((req, _external_task_id)) => accepted(req),
        Err(e) => {
            assert_client_error(&e, "POST /v1/videos/omni-video body");
            None
        }
    }
}

/// The checks a parsed request meets before routing; an accepted one must survive being
/// stored (serialized, then read back) unchanged, and every dialect's body builder must
/// take it.
fn accepted(req: VideoRequest) -> Option<VideoRequest> {
    validation::validate(&req).ok()?;
    validation::check_callback_url(req.callback_url.as_deref(), false).ok()?;
    let stored = serde_json::to_vec(&req).expect("an accepted request serializes");
    let read_back: VideoRequest =
        serde_json::from_slice(&stored).expect("a stored request reads back");
    assert_eq!(read_back, req, "a stored request reads back unchanged");
    for body in dialect_bodies(&req) {
        assert!(body.is_object(), "a create body is a JSON object: {body}");
    }
    Some(req)
}

/// What each dialect's body builder makes of `req`.
pub fn dialect_bodies(req: &VideoRequest) -> [Value; 3] {
    [
        modellix::create_body(req),
        kling::create_body("vgt_entrypoints", req),
        apimodels::create_body(req),
    ]
}

/// A provider's answer to a create and to a status query, read as a submit and a poll
/// read them (and, for Kling, as a lookup by our id reads them).
pub fn provider_answer(dialect: Dialect, status: u16, body: &[u8]) {
    let (created, task) = match dialect {
        Dialect::Modellix => (
            modellix::parse_create_answer(status, body, MODELLIX_BASE_URL),
            modellix::parse_status_answer(status, body, "task-1"),
        ),
        Dialect::Kling => {
            let lookup = kling::parse_lookup_answer(status, body, "vgt_entrypoints");
            let listed = kling::parse_list_page(status, body, "vgt_entrypoints");
            for found in [lookup, listed.map(|(found, _)| found)] {
                match found {
                    Ok(found) => found.iter().for_each(check_task),
                    Err(e) => check_error(&e),
                }
            }
            (
                kling::parse_create_answer(status, body),
                kling::parse_status_answer(status, body, "task-1"),
            )
        }
        Dialect::Apimodels => (
            apimodels::parse_create_answer(status, body),
            apimodels::parse_status_answer(status, body, "task-1"),
        ),
    };
    match created {
        Ok(created) => check_created(&created),
        Err(e) => check_error(&e),
    }
    match task {
        Ok(task) => check_task(&task),
        Err(e) => check_error(&e),
    }
}

/// Text from a provider that omnigate stores in a column of its own: the database refuses
/// a NUL in text, and a row it refuses is a task step that can never be recorded.
fn assert_storable(text: &str) {
    assert!(!text.contains('\0'), "provider text with a NUL: {text:?}");
}

/// A create answer names the task, and never reports it finished (there is no video yet).
fn check_created(created: &Submitted) {
    assert!(!created.upstream_id.trim().is_empty(), "{created:?}");
    assert_storable(&created.upstream_id);
    assert_ne!(created.status, TaskStatus::Completed, "{created:?}");
}

/// What the poller relies on in every task it records.
fn check_task(task: &UpstreamTask) {
    assert_storable(&task.upstream_id);
    if task.status == TaskStatus::Completed {
        assert!(
            !task.videos.is_empty(),
            "completed without a video: {task:?}"
        );
    }
    assert!(
        task.videos.iter().all(|v| !v.url.trim().is_empty()),
        "{task:?}"
    );
    if let Some(message) = &task.failure_message {
        assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
        assert_storable(message);
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS, "{task:?}");
    }
    assert!(task.progress.is_none_or(|p| p <= 100), "{task:?}");
}

/// A provider error keeps a bounded share of the provider's words.
fn check_error(e: &ProviderError) {
    assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS, "{e:?}");
    assert_storable(&e.message);
    e.code.as_deref().map(assert_storable);
    if let Some(raw) = &e.raw_body {
        assert!(
            raw.len() <= MAX_RAW_BODY_BYTES,
            "raw body of {} bytes",
            raw.len()
        );
    }
}

/// One adapter per dialect, built as the router builds them.
fn adapters() -> &'static [(Dialect, Arc<dyn Provider>); 3] {
    static ADAPTERS: OnceLock<[(Dialect, Arc<dyn Provider>); 3]> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let build = |dialect: Dialect, name: &str, base_url: &str| {
            let cfg: ProviderConfig = serde_json::from_value(json!({
                "dialect": name, "base_url": base_url, "models": ["kling-v3-omni"],
            }))
            .expect("a provider config");
            let adapter = providers::build(name, &cfg).expect("an adapter");
            (dialect, adapter)
        };
        [
            build(Dialect::Modellix, "modellix", MODELLIX_BASE_URL),
            build(Dialect::Kling, "kling", "https://api.klingai.com"),
            build(Dialect::Apimodels, "apimodels", "https://apimodels.app"),
        ]
    })
}

/// Every state a task can be in when a callback about it arrives.
pub const TASK_STATES: [TaskState; TaskState::ALL.len()] = TaskState::ALL;

/// A callback POSTed to `/upstream/callbacks/{token}` about a task in `state` whose
/// provider id is `ours`, judged as the intake judges it with each dialect's adapter.
pub fn upstream_callback(token: &str, body: &[u8], state: TaskState, ours: Option<&str>) {
    // Only a token-shaped path reaches the store: 43 URL-safe base64 characters.
    if is_token_shaped(token) {
        assert_eq!(token.len(), 43, "{token:?}");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
    for (dialect, adapter) in adapters() {
        let verdict = judge_callback(adapter.as_ref(), body, state, ours);
        if *dialect == Dialect::Modellix {
            // modellix makes no callbacks: whatever arrives is refused.
            assert_eq!(verdict, CallbackVerdict::NotATaskUpdate);
        }
    }
}
