//! The one API error type and its JSON envelope:
//! `{"error": {"type", "code", "message", "param"?, "provider_message"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// What went wrong, for programs: `invalid_request`, `invalid_api_key`, `not_found`,
    /// `rate_limited`, `no_capable_provider`, `store_unavailable`, ... (the table in docs/api.md).
    #[schema(value_type = String, example = "invalid_request")]
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault, as the client wrote it (`multi_prompt[2].duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A provider's own words, when a provider refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message: Option<String>,
}

/// The class of an error, as OpenAI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    InsufficientQuota,
    RateLimitError,
    UpstreamError,
    ApiError,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: names the offending field.
    #[error("{message}")]
    InvalidRequest {
        param: Option<String>,
        message: String,
    },
    /// Well-formed input that no configured provider can serve, or that a provider refused
    /// as a bad request or on content policy.
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        param: Option<String>,
        message: String,
        provider_message: Option<String>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    /// `/admin/*` (and `/metrics` when it asks for it) without the configured admin token.
    #[error("invalid admin token")]
    AdminUnauthorized,
    /// Too many failed sign-ins or admin calls from this client address lately.
    #[error("too many failed attempts from this address; try again in {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A cancel of a task past the point where it can be cancelled (409 `not_cancellable`).
    #[error("{0}")]
    NotCancellable(String),
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    #[error("the body is larger than this gateway accepts ({0} bytes at most)")]
    PayloadTooLarge(usize),
    #[error("the request body stalled; send it without long pauses")]
    BodyTimeout,
    /// No provider could take the task (503), or the last one timed out (504).
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        code: &'static str,
        message: String,
        provider_message: Option<String>,
    },
    /// A limit of the caller's key: 429 (tasks in flight) or 402 (budget).
    #[error("{message}")]
    Limited {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// The gateway itself cannot take the request now: overloaded, shutting down, or its
    /// database unreachable (503, `type: api_error`, with `Retry-After`).
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u32,
    },
    /// Logged with its details; the client sees only that something went wrong.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// An error from below the API: a database outage (found by type anywhere in the chain,
/// never by message text) is a quick 503 `store_unavailable`; anything else is internal.
/// A query string that does not parse into the handler's parameters: a 400 saying why.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::InvalidRequest {
            param: None,
            message: e.body_text(),
        }
    }
}

impl From<crate::results::StorageUnavailable> for ApiError {
    fn from(e: crate::results::StorageUnavailable) -> Self {
        ApiError::Unavailable {
            code: "storage_unavailable",
            message: e.to_string(),
            retry_after_secs: 5,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if e.chain().any(is_store_outage) {
            tracing::warn!(error = ?e, "database unavailable");
            return ApiError::Unavailable {
                code: "store_unavailable",
                message: "the gateway's database is unavailable; retry shortly".into(),
                retry_after_secs: 5,
            };
        }
        ApiError::Internal(e)
    }
}

/// Is this cause the database being out of reach (rather than a bug or bad data)?
fn is_store_outage(cause: &(dyn std::error::Error + 'static)) -> bool {
    let Some(e) = cause.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes whose primary code is SQLITE_BUSY (5) or
                // SQLITE_LOCKED (6): the busy timeout ran out waiting for the lock.
                code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            } else {
                // SQLSTATE class 08: connection exception; 57P01-57P03: the server is
                // shutting down or not accepting connections; 57014: statement timeout;
                // 40001/40P01: a serialization failure or deadlock victim, worth a retry.
                code.starts_with("08")
                    || matches!(
                        &*code,
                        "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01"
                    )
            }
        }
        _ => false,
    }
}

impl ApiError {
    /// 503 `overloaded`: a limit of this gateway is reached; retrying in a moment is fine.
    pub fn overloaded(message: impl Into<String>) -> Self {
        ApiError::Unavailable {
            code: "overloaded",
            message: message.into(),
            retry_after_secs: 1,
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized | ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::NotCancellable(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Upstream { status, .. } => *status,
            ApiError::Limited { status, .. } => *status,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see: an internal error's details go to the log instead.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error; the details are in the gateway's log".to_string()
            }
            other => other.to_string(),
        }
    }

    fn kind_and_code(&self) -> (ErrorType, &'static str) {
        use ErrorType as T;
        match self {
            ApiError::InvalidRequest { .. } => (T::InvalidRequestError, "invalid_request"),
            ApiError::Unprocessable { code, .. } => (T::InvalidRequestError, code),
            ApiError::Unauthorized => (T::AuthenticationError, "invalid_api_key"),
            ApiError::AdminUnauthorized => (T::AuthenticationError, "invalid_admin_token"),
            ApiError::TooManyFailures { .. } => (T::RateLimitError, "too_many_failed_attempts"),
            ApiError::NotFound(_) => (T::InvalidRequestError, "not_found"),
            ApiError::Conflict(_) => (T::InvalidRequestError, "idempotency_conflict"),
            ApiError::NotCancellable(_) => (T::InvalidRequestError, "not_cancellable"),
            ApiError::MethodNotAllowed => (T::InvalidRequestError, "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => (T::InvalidRequestError, "body_too_large"),
            ApiError::BodyTimeout => (T::InvalidRequestError, "body_timeout"),
            ApiError::Upstream { code, .. } => (T::UpstreamError, code),
            ApiError::Limited { status, code, .. } if *status == StatusCode::PAYMENT_REQUIRED => {
                (T::InsufficientQuota, code)
            }
            ApiError::Limited { code, .. } => (T::RateLimitError, code),
            ApiError::Unavailable { code, .. } => (T::ApiError, code),
            ApiError::Internal(_) => (T::ApiError, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, code) = self.kind_and_code();
        crate::telemetry::metrics::limit_refusal(code);
        let message = self.public_message();
        let param = match &self {
            ApiError::InvalidRequest { param, .. } | ApiError::Unprocessable { param, .. } => {
                param.clone()
            }
            _ => None,
        };
        let provider_message = match &self {
            ApiError::Unprocessable {
                provider_message, ..
            }
            | ApiError::Upstream {
                provider_message, ..
            } => provider_message.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorObject {
                kind,
                code,
                message,
                param,
                provider_message,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = match &self {
                ApiError::Unavailable {
                    retry_after_secs, ..
                } => *retry_after_secs,
                _ => 30,
            };
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            // A slot frees when one of the key's tasks ends: no exact time to give. The rate
            // limiter sets its own, exact Retry-After over this one; the failed-credentials
            // throttle knows its own.
            let secs = match &self {
                ApiError::TooManyFailures { retry_after_secs } => *retry_after_secs,
                _ => 5,
            };
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The task logic says what went wrong; the API alone decides the status codes.
impl From<crate::submit::SubmitError> for ApiError {
    fn from(e: crate::submit::SubmitError) -> Self {
        use crate::submit::SubmitError as S;
        match e {
            S::Invalid { param, message } => ApiError::InvalidRequest { param, message },
            S::NoCapableProvider { param, message } => ApiError::Unprocessable {
                code: "no_capable_provider",
                param,
                message,
                provider_message: None,
            },
            S::Refused {
                code,
                message,
                provider_message,
            } => ApiError::Unprocessable {
                code,
                param: None,
                message,
                provider_message,
            },
            S::Unavailable {
                code,
                message,
                provider_message,
                timed_out,
            } => ApiError::Upstream {
                status: if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                code,
                message,
                provider_message,
            },
            e @ S::IdempotencyConflict => ApiError::Conflict(e.to_string()),
            S::Limited(refusal) => ApiError::Limited {
                status: match refusal {
                    crate::store::LimitRefusal::Concurrency { .. } => StatusCode::TOO_MANY_REQUESTS,
                    crate::store::LimitRefusal::Budget { .. } => StatusCode::PAYMENT_REQUIRED,
                },
                code: match refusal {
                    crate::store::LimitRefusal::Concurrency { .. } => "concurrency_limited",
                    crate::store::LimitRefusal::Budget { .. } => "budget_exceeded",
                },
                message: S::Limited(refusal).to_string(),
            },
            e @ S::QueueFull { .. } => ApiError::Limited {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "queue_full",
                message: e.to_string(),
            },
            S::StoreAfterWrite { task_id, source } => {
                tracing::error!(%task_id, error = ?source, "store failed after the task was written");
                ApiError::Unavailable {
                    code: "store_unavailable",
                    message: format!(
                        "task {task_id} was written, but the store failed while recording its \
                         submit; read it with GET /v1/video/generations/{task_id} before creating \
                         it again (an Idempotency-Key makes a retry safe)"
                    ),
                    retry_after_secs: 5,
                }
            }
            S::Store(source) => ApiError::from(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_database_outage_anywhere_in_the_chain_is_a_503_and_anything_else_a_500() {
        let outage = Err::<(), _>(sqlx::Error::PoolTimedOut)
            .context("reading a task")
            .context("handling a read")
            .unwrap_err();
        let e = ApiError::from(outage);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.kind_and_code(),
            (ErrorType::ApiError, "store_unavailable")
        );
        let bug = ApiError::from(anyhow::Error::new(sqlx::Error::RowNotFound));
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let other = ApiError::from(anyhow::anyhow!("connection refused"));
        assert_eq!(
            other.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "a message is not a type"
        );
    }
}
