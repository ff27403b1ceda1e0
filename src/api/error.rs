//! The one API error type and its JSON envelope:
//! `{"error": {"type", "code", "message", "param"?, "provider_message"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    #[error("the body is larger than this gateway accepts ({0} bytes at most)")]
    PayloadTooLarge(usize),
    /// No provider could take the task (503), or the last one timed out (504).
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        code: &'static str,
        message: String,
        provider_message: Option<String>,
    },
    /// A rate limit of the caller's key is reached (429, with `Retry-After`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// The gateway itself cannot take the request now (503, `type: api_error`, with
    /// `Retry-After`).
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u32,
    },
    /// Logged with its details; the client sees only that something went wrong.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Upstream { status, .. } => *status,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_code(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::InvalidRequest { .. } => ("invalid_request_error", "invalid_request"),
            ApiError::Unprocessable { code, .. } => ("invalid_request_error", code),
            ApiError::Unauthorized => ("authentication_error", "invalid_api_key"),
            ApiError::NotFound(_) => ("invalid_request_error", "not_found"),
            ApiError::Conflict(_) => ("invalid_request_error", "idempotency_conflict"),
            ApiError::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => ("invalid_request_error", "body_too_large"),
            ApiError::Upstream { code, .. } => ("upstream_error", code),
            ApiError::RateLimited { .. } => ("rate_limit_error", "rate_limited"),
            ApiError::Unavailable { code, .. } => ("api_error", code),
            ApiError::Internal(_) => ("api_error", "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, code) = self.kind_and_code();
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error; the details are in the gateway's log".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({"type": kind, "code": code, "message": message});
        match &self {
            ApiError::InvalidRequest { param: Some(p), .. }
            | ApiError::Unprocessable { param: Some(p), .. } => {
                body["param"] = json!(p);
            }
            _ => {}
        }
        if let ApiError::Unprocessable {
            provider_message: Some(m),
            ..
        }
        | ApiError::Upstream {
            provider_message: Some(m),
            ..
        } = &self
        {
            body["provider_message"] = json!(m);
        }
        let mut resp = (status, Json(json!({ "error": body }))).into_response();
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
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
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
            S::StoreAfterWrite { task_id, source } => {
                tracing::error!(%task_id, error = ?source, "store failed after the task was written");
                ApiError::Upstream {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "store_unavailable",
                    message: format!(
                        "task {task_id} was written, but the store failed while recording its \
                         submit; read it with GET /v1/video/generations/{task_id} before creating \
                         it again (an Idempotency-Key makes a retry safe)"
                    ),
                    provider_message: None,
                }
            }
            S::Store(source) => ApiError::from(source),
        }
    }
}
