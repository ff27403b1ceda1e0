//! `GET /v1/usage` (the caller's key) and `GET /admin/usage` (every key): tasks, seconds
//! of video and money, grouped by day, model, provider or status.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::ApiError;
use crate::gateway::Gateway;
use crate::store::{now_ms, period_start, BudgetPeriod, GroupBy, UsageRow};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Start (inclusive) and end (exclusive) of the creation times counted: Unix seconds,
    /// an RFC 3339 time or a `YYYY-MM-DD` date (UTC). Default: this calendar month so far.
    from: Option<String>,
    /// End (exclusive), in the same forms as `from`; after `from`. Default: now.
    to: Option<String>,
    /// `day` (the default), `model`, `provider` or `status`.
    #[param(pattern = "^(day|model|provider|status)$")]
    group_by: Option<String>,
}

/// (from, to) in Unix ms, and the grouping.
fn window(
    p: Result<Query<UsageParams>, QueryRejection>,
) -> Result<(i64, i64, GroupBy, String), ApiError> {
    let Query(p) = p?;
    let now = now_ms();
    let from = match p.from.as_deref() {
        Some(s) => parse_time("from", s)?,
        None => period_start(BudgetPeriod::Month, now),
    };
    let to = match p.to.as_deref() {
        Some(s) => parse_time("to", s)?,
        None => now + 1,
    };
    if to <= from {
        return Err(ApiError::invalid("to", "to must be after from"));
    }
    let name = p.group_by.unwrap_or_else(|| "day".into());
    let group_by = GroupBy::parse(&name).ok_or_else(|| {
        ApiError::invalid(
            "group_by",
            "group_by must be day, model, provider or status",
        )
    })?;
    Ok((from, to, group_by, name))
}

fn parse_time(field: &'static str, s: &str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_format) {
        let start = d.with_time(time::Time::MIDNIGHT).assume_utc();
        return Ok(start.unix_timestamp() * 1000);
    }
    Err(ApiError::invalid(
        field,
        format!("{field} must be Unix seconds, an RFC 3339 time or a YYYY-MM-DD date"),
    ))
}

fn report(rows: Vec<UsageRow>, from: i64, to: i64, group_by: String) -> Value {
    let mut total = json!({
        "tasks": rows.iter().map(|r| r.tasks).sum::<i64>(),
        "seconds": rows.iter().map(|r| r.seconds).sum::<i64>(),
        "estimated_usd": round(rows.iter().map(|r| r.estimated_usd).sum()),
        "final_usd": round(rows.iter().map(|r| r.final_usd).sum()),
    });
    let reported: Option<f64> = rows.iter().map(|r| r.provider_reported_usd).sum();
    if let Some(reported) = reported.filter(|_| !rows.is_empty()) {
        total["provider_reported_usd"] = json!(round(reported));
    }
    json!({
        "object": "usage",
        "from": from / 1000,
        "to": to / 1000,
        "group_by": group_by,
        "currency": "USD",
        "data": rows,
        "total": total,
    })
}

/// Sums of micro-dollar amounts, shown without float noise.
fn round(usd: f64) -> f64 {
    (usd * 1e6).round() / 1e6
}

/// The caller's key's tasks, seconds of video and money, grouped.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    params(UsageParams),
    responses((status = 200, description = "The report.", body = super::schema::UsageReport)),
)]
pub async fn mine(
    State(gw): State<Arc<Gateway>>,
    Caller(key): Caller,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, group_by, name) = window(params)?;
    let rows = gw.store.usage(Some(&key.id), from, to, group_by).await?;
    Ok(Json(report(rows, from, to, name)))
}

/// Every key's usage, with its name and team.
#[utoipa::path(
    get,
    path = "/admin/usage",
    tag = "admin",
    params(UsageParams),
    responses((status = 200, description = "The report, a row per key and group.", body = super::schema::UsageReport)),
)]
pub async fn all(
    State(gw): State<Arc<Gateway>>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (from, to, group_by, name) = window(params)?;
    let rows = gw.store.usage(None, from, to, group_by).await?;
    Ok(Json(report(rows, from, to, name)))
}
