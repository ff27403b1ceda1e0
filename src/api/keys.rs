//! `/admin/keys`: the operator's key management, the same operations as `omnigate keys`.
//! The admin token is checked by the layer on every `/admin` route (`admin::require_admin`)
//! before any of these handlers, and so before a body is read.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ValidJson;
use crate::gateway::Gateway;
use crate::store::{BudgetPeriod, IssuedKey, KeyChange, KeyInfo};

/// The body of `POST /admin/keys` and `PATCH /admin/keys/{id}`. In a PATCH an absent field
/// stays as it is and `null` removes the limit.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// Required to create a key; a key's name cannot be changed.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    team: Option<Option<String>>,
    /// Creates per minute.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    rpm: Option<Option<u32>>,
    /// Creates at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    burst: Option<Option<u32>>,
    /// Reads per minute.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    read_rpm: Option<Option<u32>>,
    /// Unfinished tasks at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    max_in_flight: Option<Option<u32>>,
    /// Money per budget period, in US dollars.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1e12)]
    budget_usd: Option<Option<f64>>,
    /// `month` (the default) or `day`.
    #[schema(pattern = "^(month|day)$")]
    budget_period: Option<String>,
    /// The key's share of the admission queue against other keys' (1-1000; null: 1).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    weight: Option<Option<u32>>,
    /// Tasks the key may have waiting (null: `queue.default_max_queued`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    max_queued: Option<Option<u32>>,
}

/// Tells a field given as `null` (Some(None)) from one left out (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl KeyBody {
    fn change(self) -> Result<KeyChange, ApiError> {
        let budget_period = self
            .budget_period
            .map(|p| {
                BudgetPeriod::parse(&p).ok_or_else(|| {
                    ApiError::invalid("budget_period", "budget_period must be month or day")
                })
            })
            .transpose()?;
        let change = KeyChange {
            team: self.team,
            rpm: self.rpm,
            burst: self.burst,
            read_rpm: self.read_rpm,
            max_in_flight: self.max_in_flight,
            budget_usd: self.budget_usd,
            budget_period,
            weight: self.weight,
            max_queued: self.max_queued,
        };
        change
            .validate_removing_with("null")
            .map_err(|(field, message)| ApiError::invalid(field, message))?;
        Ok(change)
    }
}

/// Issues a key: its secret and webhook secret are in this answer only.
#[utoipa::path(
    post,
    path = "/admin/keys",
    tag = "admin",
    request_body = KeyBody,
    responses((status = 201, description = "The key, with its secrets (shown once).", body = IssuedKey)),
)]
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    ValidJson(mut body): ValidJson<KeyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body.name.take().unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::invalid("name", "name is required"));
    }
    crate::store::check_label("name", &name).map_err(|(f, m)| ApiError::invalid(f, m))?;
    let issued = gw.store.issue_key(name.trim(), &body.change()?).await?;
    Ok((StatusCode::CREATED, Json(json!(issued))))
}

#[utoipa::path(
    get,
    path = "/admin/keys",
    tag = "admin",
    responses((status = 200, description = "Every key (never a secret).", body = super::schema::KeyList)),
)]
pub async fn list(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let keys = gw.store.list_keys().await?;
    Ok(Json(json!({"object": "list", "data": keys})))
}

#[utoipa::path(
    get,
    path = "/admin/keys/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The key.", body = KeyInfo)),
)]
pub async fn show(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    found(gw.store.key_info_by_id(&id).await?, &id).map(Json)
}

/// Changes a key's limits: an absent field stays as it is, `null` removes the limit.
#[utoipa::path(
    patch,
    path = "/admin/keys/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The key id.")),
    request_body = KeyBody,
    responses((status = 200, description = "The key as changed.", body = KeyInfo)),
)]
pub async fn update(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<KeyBody>,
) -> Result<Json<KeyInfo>, ApiError> {
    if body.name.is_some() {
        return Err(ApiError::invalid("name", "a key's name cannot be changed"));
    }
    let change = body.change()?;
    found(gw.store.change_key(&id, &change).await?, &id).map(Json)
}

/// Revokes a key at once.
#[utoipa::path(
    post,
    path = "/admin/keys/{id}/revoke",
    tag = "admin",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The key, revoked.", body = KeyInfo)),
)]
pub async fn revoke(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    if !gw.store.revoke_key(&id).await? {
        return Err(ApiError::NotFound(format!("no active key {id}")));
    }
    found(gw.store.key_info_by_id(&id).await?, &id).map(Json)
}

/// Gives a key a new secret; the old one works for `admin.key_rotation_grace_secs` more.
#[utoipa::path(
    post,
    path = "/admin/keys/{id}/rotate",
    tag = "admin",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The key with its new secret (shown once).", body = IssuedKey)),
)]
pub async fn rotate(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let grace_ms = (gw.config.admin.key_rotation_grace_secs as i64).saturating_mul(1000);
    let issued = gw.store.rotate_key(&id, grace_ms).await?;
    found(issued, &id).map(|k| Json(json!(k)))
}

fn found<T>(value: Option<T>, id: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::NotFound(format!("no key {id}")))
}

/// Gives a key a Kling-style access key and secret key (for the Kling facade's JWTs),
/// replacing the pair it had; the secret key is in this answer only, and stored sealed.
#[utoipa::path(
    post,
    path = "/admin/keys/{id}/kling-credentials",
    tag = "admin",
    params(("id" = String, Path, description = "The key id.")),
    responses(
        (status = 201, description = "The pair (shown once).", body = crate::secrets::KlingCredentials),
        (status = 422, description = "`secrets_key_missing`: `server.secrets_key` is not configured, so no secret can be stored.", body = super::error::ErrorBody),
    ),
)]
pub async fn kling_credentials(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if crate::secrets::SecretBox::from_config(&gw.config.server)?.is_none() {
        return Err(ApiError::Unprocessable {
            code: "secrets_key_missing",
            param: None,
            message: format!(
                "Kling credentials need server.secrets_key: set {} on the gateway",
                gw.config.server.secrets_key_env
            ),
            provider_message: None,
        });
    }
    if gw.store.active_key(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no active key {id}")));
    }
    let issued = crate::secrets::issue_kling_credentials(&gw.store, &gw.config.server, &id).await?;
    Ok((StatusCode::CREATED, Json(json!(issued))))
}
