//! The operator's provider page: each circuit and its numbers, tasks per provider over
//! the last hour, the price tables side by side, and where typical requests would go now.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::{html, Markup};

use super::charts::{columns, Column};
use super::page::{self, status_badge, time_ms, usd, ConsoleError};
use super::session::Session;
use serde_json::json;

use crate::domain::{Mode, Model, VideoRequest};
use crate::gateway::Gateway;
use crate::store::{now_ms, OutcomeSlot};

const SLOT_MS: i64 = 5 * 60_000;

/// "20 (12)": the configured cap, and the one in force after a capacity refusal.
fn cap_text(c: &crate::store::ProviderCapacity) -> String {
    match (c.configured_cap, c.effective_cap) {
        (None, _) => "none".into(),
        (Some(cap), Some(e)) if e < cap => format!("{cap} ({e})"),
        (Some(cap), _) => cap.to_string(),
    }
}
const HOUR_MS: i64 = 3_600_000;

/// `GET /console/providers`
pub async fn page(
    State(gw): State<Arc<Gateway>>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    session.require_operator()?;
    let names: Vec<String> = gw.router.names().map(str::to_string).collect();
    let reports = gw.health.report(&names).await?;
    let capacity = gw.store.capacity().await?;
    let now = now_ms();
    let since = (now - HOUR_MS) / SLOT_MS * SLOT_MS;
    let slots = gw.store.outcome_slots(since, SLOT_MS).await?;
    let typical = typical_quotes(&gw).await;
    let outcomes = gw.timings.outcomes();
    let min_tasks = gw.config.routing.outcome_min_tasks;
    let body = html! {
        table.providers {
            caption { "Circuits and submit health over the health window" }
            thead { tr {
                th scope="col" { "Provider" } th scope="col" { "Circuit" } th scope="col" { "Success rate" }
                th scope="col" { "Submit p50" } th scope="col" { "Submit p95" } th scope="col" { "In flight" }
                th scope="col" { "Cap (in force)" } th scope="col" { "Capacity refusals" }
                th scope="col" { "Last error" }
            } }
            tbody { @for r in &reports { tr {
                th scope="row" { (r.provider) }
                td { (status_badge(r.circuit)) @if let Some(until) = r.opened_until { " until " (time_ms(until)) } }
                td.num { (r.success_rate.map(|s| format!("{:.1}% of {}", s * 100.0, r.samples)).unwrap_or_else(|| "no samples".into())) }
                td.num { (ms(r.submit_latency_ms.p50)) }
                td.num { (ms(r.submit_latency_ms.p95)) }
                td.num { (r.in_flight_tasks) }
                @match capacity.iter().find(|c| c.provider == r.provider) {
                    Some(c) => {
                        td.num { (cap_text(c)) }
                        td.num { (c.refusals) }
                    },
                    None => { td.num { "none" } td.num { "0" } },
                }
                td { @match &r.last_error {
                    Some(e) => { code { (e.code) } " " (e.message.as_deref().unwrap_or("")) " at " (time_ms(e.at)) },
                    None => "none",
                } }
            } } }
        }
        table.providers {
            caption { "Outcomes after acceptance over the health window" }
            thead { tr {
                th scope="col" { "Provider" } th scope="col" { "Completed rate" } th scope="col" { "Completed" }
                th scope="col" { "Failed after acceptance" } th scope="col" { "Stuck past p90" }
                th scope="col" { "Content refusals" }
            } }
            tbody { @for name in &names {
                @let o = outcomes.get(name).cloned().unwrap_or_default();
                tr {
                    th scope="row" { (name) }
                    td.num { (o.completed_rate(min_tasks).map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "too few tasks".into())) }
                    td.num { (o.completed) }
                    td.num { (o.failed_after_accept) }
                    td.num { (o.stuck) }
                    td.num { (o.moderated) }
                }
            } }
        }
        h2 { "Tasks in the last hour, by provider" }
        div.charts {
            @for name in &names {
                (hour_chart(name, &slots, since, now))
            }
        }
        h2 { "Where a typical request goes now" }
        table {
            thead { tr { th scope="col" { "Request" } th scope="col" { "Provider" } th scope="col" { "Estimate" } th scope="col" { "Why" } } }
            tbody { @for (what, quote) in &typical { tr {
                th scope="row" { (what) }
                @match quote {
                    Ok((provider, estimate, why)) => { td { (provider) } td.num { (usd(*estimate)) } td { (why) } },
                    Err(e) => { td colspan="3" { (e) } },
                }
            } } }
        }
        h2 { "Prices (USD per second of video)" }
        (price_table(&gw, &names))
    };
    Ok(page::page(
        &session,
        "Providers",
        "/console/providers",
        body,
    ))
}

fn ms(v: Option<i64>) -> String {
    v.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into())
}

fn hour_chart(provider: &str, slots: &[OutcomeSlot], since: i64, now: i64) -> Markup {
    let mut cols = Vec::new();
    let mut start = since;
    while start <= now {
        let s = slots
            .iter()
            .find(|s| s.provider == provider && s.slot_start == start)
            .cloned()
            .unwrap_or_default();
        let total = s.completed + s.failed + s.unfinished;
        cols.push(Column {
            label: time_ms(start)[11..16].to_string(),
            parts: vec![
                ("completed", s.completed as f64),
                ("failed", s.failed as f64),
                ("unfinished", s.unfinished as f64),
            ],
            shown: total.to_string(),
        });
        start += SLOT_MS;
    }
    columns(
        &format!("{provider}: tasks created per 5 minutes (UTC)"),
        &["completed", "failed", "unfinished"],
        &cols,
    )
}

/// A few common requests and what the quote engine does with each now.
async fn typical_quotes(gw: &Gateway) -> Vec<(String, Result<(String, f64, String), String>)> {
    let mut out = Vec::new();
    for model in [Model::KlingVideoO1, Model::KlingV3Omni] {
        for mode in [Mode::Std, Mode::Pro] {
            let req: VideoRequest = match serde_json::from_value(json!({
                "model": model.as_str(), "mode": mode.as_str(), "duration": 5,
                "aspect_ratio": "16:9", "prompt": "a typical text-to-video request",
            })) {
                Ok(req) => req,
                Err(e) => {
                    out.push((model.as_str().to_string(), Err(e.to_string())));
                    continue;
                }
            };
            let what = format!("{} {} 5 s 16:9, text only", model.as_str(), mode.as_str());
            let quote = match crate::submit::plan_request(gw, &req).await {
                Ok(plan) => {
                    let c = &plan.candidates[0];
                    Ok((c.upstream.name.clone(), c.estimate_usd, plan.reason_for(0)))
                }
                Err(e) => Err(crate::api::ApiError::from(e).public_message()),
            };
            out.push((what, quote));
        }
    }
    out
}

fn price_table(gw: &Gateway, names: &[String]) -> Markup {
    let upstreams: Vec<_> = names.iter().filter_map(|n| gw.router.get(n)).collect();
    let mut rows: Vec<(String, &'static str)> = Vec::new();
    for u in &upstreams {
        for (model, table) in &u.config.prices {
            for (variant, price) in table.entries() {
                if price.is_some() && !rows.iter().any(|r| r.0 == *model && r.1 == variant) {
                    rows.push((model.clone(), variant));
                }
            }
        }
    }
    rows.sort();
    html! {
        table.prices {
            thead { tr {
                th scope="col" { "Model" } th scope="col" { "Mode" }
                @for u in &upstreams { th scope="col" { (u.name) } }
            } }
            tbody { @for (model, variant) in &rows {
                @let prices: Vec<Option<f64>> = upstreams.iter().map(|u| u.config.prices.get(model).and_then(|t| t.entries().into_iter().find(|e| e.0 == *variant).and_then(|e| e.1))).collect();
                @let cheapest = prices.iter().flatten().copied().fold(f64::INFINITY, f64::min);
                tr {
                    th scope="row" { (model) } td { (variant.replace('_', " ")) }
                    @for p in &prices {
                        @match p {
                            Some(p) if *p == cheapest => td.num.cheapest { strong { (usd(*p)) } " (cheapest)" },
                            Some(p) => td.num { (usd(*p)) },
                            None => td.num { "—" },
                        }
                    }
                }
            } }
        }
    }
}
