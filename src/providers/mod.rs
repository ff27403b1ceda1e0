//! Upstream providers: one adapter per wire dialect behind the [`Provider`] trait.
//! Nothing outside this module knows a dialect's field names, paths or error codes.

pub mod apimodels;
mod http;
mod instrumented;

/// Test fixtures shared by the adapters' unit tests.
#[cfg(test)]
mod fixtures {
    use serde_json::Value;

    use super::http::Reply;
    use crate::domain::VideoRequest;

    pub fn request(v: Value) -> VideoRequest {
        serde_json::from_value(v).expect("test request parses")
    }

    pub fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string().into_bytes(),
            oversized: false,
        }
    }
}
pub mod kling;
pub mod modellix;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Dialect, ProviderConfig};
use crate::domain::{ShotType, TaskStatus, VideoRequest, VideoResult};

/// What a dialect can carry on the wire. Which models a provider serves comes from its
/// config; everything here is fixed by the dialect (or by the provider's documents).
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub element_list: bool,
    pub negative_prompt: bool,
    pub watermark: bool,
    /// Image roles (`first_frame` / `end_frame`); a dialect of plain URL lists cannot say them.
    pub frame_images: bool,
    /// Feature-reference videos (`refer_type: feature`), as opposed to a base video to edit.
    pub feature_video: bool,
    pub keep_original_sound: bool,
    pub shot_types: &'static [ShotType],
    /// kling-video-o1 from reference images or elements alone may last 3-10 s (Kling);
    /// false where the provider allows only 5 or 10 without a video (modellix).
    pub o1_free_duration_from_references: bool,
    /// The provider can call us back on status changes.
    pub upstream_callback: bool,
    /// The provider accepts our own id as `external_task_id`, unique per account, and
    /// can find a task by it: what makes a lost submit answer recoverable.
    pub external_task_id: bool,
}

/// A task as the provider reports it, already mapped onto the normalized states.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTask {
    pub upstream_id: String,
    pub status: TaskStatus,
    pub progress: Option<u8>,
    pub videos: Vec<VideoResult>,
    /// The provider's own failure text, kept verbatim for `error.provider_message`.
    pub failure_message: Option<String>,
}

/// Why an upstream call did not succeed, classified so that callers can decide on retry,
/// failover or a client error without knowing the dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Upstream trouble worth retrying (5xx, Kling 5000-5002, connection refused).
    Retryable,
    RateLimited,
    ConcurrencyLimited,
    /// Out of balance / credits / account problems: not retryable on this provider.
    Billing,
    BadRequest,
    ContentPolicy,
    Auth,
    NotFound,
    /// No answer in time, or an answer we could not read.
    Timeout,
    Malformed,
    /// A well-formed answer we cannot interpret (an unknown state word, finished with no
    /// video URL): the message names the field and `raw_body` keeps the answer.
    Unreadable,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "upstream_unavailable",
            ErrorKind::RateLimited => "upstream_rate_limited",
            ErrorKind::ConcurrencyLimited => "upstream_concurrency_limited",
            ErrorKind::Billing => "upstream_billing",
            ErrorKind::BadRequest => "upstream_bad_request",
            ErrorKind::ContentPolicy => "content_policy",
            ErrorKind::Auth => "upstream_auth",
            ErrorKind::NotFound => "upstream_not_found",
            ErrorKind::Timeout => "upstream_timeout",
            ErrorKind::Malformed => "upstream_malformed_response",
            ErrorKind::Unreadable => "upstream_unreadable",
        }
    }

    /// The request itself is at fault: no other provider will take it either.
    pub fn is_final_for_request(self) -> bool {
        matches!(self, ErrorKind::BadRequest | ErrorKind::ContentPolicy)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
// `{message:?}`: provider words are quoted and escaped, so a newline in them cannot
// forge a log line wherever this error is logged with `%`.
#[error("{kind:?} from provider (http {http_status:?}, code {code:?}): {message:?}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// The provider's own words (never a credential), for `error.provider_message`.
    pub message: String,
    pub http_status: Option<u16>,
    pub code: Option<String>,
    /// The request may have reached the provider and been accepted even though we did
    /// not get (or could not read) the answer. Submitting elsewhere could make a duplicate.
    pub ambiguous: bool,
    /// The provider's answer (truncated), kept where it could not be interpreted.
    pub raw_body: Option<String>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            http_status: None,
            code: None,
            ambiguous: false,
            raw_body: None,
        }
    }
}

/// What a successful submit gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub upstream_id: String,
    /// Some dialects answer the create with the task's first state.
    pub status: TaskStatus,
}

/// The outcome of looking a task up by the `external_task_id` we gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(UpstreamTask),
    /// The provider answered and has no such task: the submit never landed.
    Absent,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured name (e.g. `anyfast`).
    fn name(&self) -> &str;
    fn capabilities(&self) -> &Capabilities;
    /// Submits the (already validated) request; `task_id` is omnigate's own id, sent as
    /// `external_task_id` where the dialect has it. `callback_url` is omnigate's upstream
    /// intake for this task: sent as the dialect's `callback_url` where it has one
    /// (`capabilities().upstream_callback`), ignored elsewhere. Never the client's own
    /// `callback_url`, which omnigate serves itself.
    async fn submit_with_callback(
        &self,
        task_id: &str,
        req: &VideoRequest,
        callback_url: Option<&str>,
    ) -> Result<Submitted, ProviderError>;
    /// [`Provider::submit_with_callback`] without an upstream callback.
    async fn submit(&self, task_id: &str, req: &VideoRequest) -> Result<Submitted, ProviderError> {
        self.submit_with_callback(task_id, req, None).await
    }
    /// Reads a body the provider POSTed to the upstream intake, with the same state mapping
    /// as [`Provider::query`]: an unknown state word or a completion without a video URL is
    /// [`ErrorKind::Unreadable`], a body that is no task at all [`ErrorKind::Malformed`].
    /// The default is for dialects without callbacks: every body is malformed.
    fn parse_callback(&self, body: &[u8]) -> Result<UpstreamTask, ProviderError> {
        let _ = body;
        Err(ProviderError::new(
            ErrorKind::Malformed,
            format!("{} does not make callbacks", self.name()),
        ))
    }
    async fn query(&self, upstream_id: &str) -> Result<UpstreamTask, ProviderError>;
    /// Finds the task submitted with `external_task_id = task_id`. Only called when
    /// `capabilities().external_task_id` is true.
    async fn find_by_external_id(&self, task_id: &str) -> Result<Lookup, ProviderError>;
}

/// Builds the adapter for a configured provider, its calls timed, counted and traced.
pub fn build(name: &str, cfg: &ProviderConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let adapter: Arc<dyn Provider> = match cfg.dialect {
        Dialect::Modellix => Arc::new(modellix::Modellix::new(name, cfg)?),
        Dialect::Kling => Arc::new(kling::Kling::new(name, cfg)?),
        Dialect::Apimodels => Arc::new(apimodels::Apimodels::new(name, cfg)?),
    };
    Ok(Arc::new(instrumented::Instrumented(adapter)))
}
