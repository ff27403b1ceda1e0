//! A JSON body extractor whose errors name the offending field in the API's own envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use tower_http::timeout::TimeoutError;

use super::error::ApiError;
use super::load::BodyBudgetSpent;

pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(ValidJson)
    }
}

/// The configured body limit, for the error that names it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The whole body, with the size, budget and timeout refusals in the API's envelope.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit.unwrap_or_default())
        } else if caused_by::<BodyBudgetSpent>(&e) {
            ApiError::overloaded(BodyBudgetSpent.to_string())
        } else if caused_by::<TimeoutError>(&e) {
            ApiError::BodyTimeout
        } else {
            ApiError::InvalidRequest {
                param: None,
                message: format!("could not read the body: {}", e.body_text()),
            }
        }
    })
}

/// Whether an error of type `T` is anywhere in `e`'s chain of sources.
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<T>() {
            return true;
        }
        cause = c.source();
    }
    false
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidRequest {
            param: None,
            message: format!("the body is not valid JSON: {e}"),
        })?;
    if !value.is_object() {
        return Err(ApiError::InvalidRequest {
            param: None,
            message: "the body must be a JSON object".into(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_path_to_error puts an unknown field in the path, but a missing one only in
        // the message.
        let param = field_in_message(&inner)
            .map(|f| join_path(&path, &f))
            .unwrap_or(path);
        let param = if param == "." { None } else { Some(param) };
        ApiError::InvalidRequest {
            param,
            message: inner,
        }
    })
}

fn field_in_message(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

fn join_path(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}
