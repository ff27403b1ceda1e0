//! The operator's keys page: every key with its limits and what it uses now (creates in
//! the last minute, tasks in flight, this budget period's money), and issuing, revoking
//! and rotating keys.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{Html, Redirect};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::page::{self, csrf_field, time_ms, usd, ConsoleError};
use super::session::{CsrfForm, Session};
use crate::gateway::Gateway;
use crate::store::{now_ms, BudgetPeriod, IssuedKey, KeyChange};

/// `GET /console/keys`
pub async fn page(
    State(gw): State<Arc<Gateway>>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    session.require_operator()?;
    render(&gw, &session, None).await
}

async fn render(
    gw: &Gateway,
    session: &Session,
    issued: Option<(&str, &IssuedKey)>,
) -> Result<Html<String>, ConsoleError> {
    let keys = gw.store.list_keys().await?;
    let per_minute: HashMap<String, i64> = gw
        .store
        .creates_per_key_since(now_ms() - 60_000)
        .await?
        .into_iter()
        .collect();
    let body = html! {
        @if let Some((what, k)) = issued {
            section.issued role="status" aria-labelledby="issued-title" {
                h2 #issued-title { "Key " (what) ": copy its secrets now" }
                p { "They are shown only this once." }
                dl.facts {
                    dt { "Key" } dd { code #issued-key { (k.key) } }
                    dt { "Webhook signing secret" } dd { code { (k.webhook_secret) } }
                    @if let Some(until) = k.previous_valid_until {
                        dt { "Previous secret valid until" } dd { (time_ms(until * 1000)) " UTC" }
                    }
                }
            }
        }
        table.keys {
            caption { "Keys, with their limits and current use" }
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Team" } th scope="col" { "Id" }
                th scope="col" { "Creates/min (limit)" } th scope="col" { "In flight (limit)" }
                th scope="col" { "Budget this period" } th scope="col" { "State" } th scope="col" { "Actions" }
            } }
            tbody { @for k in &keys { tr {
                th scope="row" { (k.name) }
                td { (k.team.as_deref().unwrap_or("—")) }
                td { code { (k.id) } }
                td.num { (per_minute.get(&k.id).copied().unwrap_or(0)) " (" (limit(k.rpm)) ")" }
                td.num { (k.in_flight) " (" (limit(k.max_in_flight)) ")" }
                td.num {
                    (usd(k.spent_usd)) " spent, " (usd(k.reserved_usd)) " reserved"
                    @if let Some(b) = k.budget_usd { " of " (usd(b)) " per " (k.budget_period) }
                }
                td { @if k.revoked_at.is_some() { span.badge.badge-failed { "revoked" } } @else { span.badge.badge-completed { "active" } } }
                td.actions {
                    @if k.revoked_at.is_none() {
                        form method="post" action={"/console/keys/" (k.id) "/rotate"} {
                            (csrf_field(session))
                            button type="submit" aria-label={"Rotate key " (k.name)} { "Rotate" }
                        }
                        form method="post" action={"/console/keys/" (k.id) "/revoke"} data-confirm={"Revoke key " (k.name) "? Its calls are refused from now on."} {
                            (csrf_field(session))
                            button.danger type="submit" aria-label={"Revoke key " (k.name)} { "Revoke" }
                        }
                    }
                }
            } } }
        }
        (create_form(session))
    };
    Ok(page::page(session, "Keys", "/console/keys", body))
}

fn limit(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

fn create_form(session: &Session) -> Markup {
    html! {
        section aria-labelledby="new-key-title" {
            h2 #new-key-title { "Issue a key" }
            form.grid method="post" action="/console/keys" {
                (csrf_field(session))
                label { "Name" input type="text" name="name" required maxlength="200"; }
                label { "Team" input type="text" name="team" maxlength="200"; }
                label { "Creates per minute" input type="number" name="rpm" min="1"; }
                label { "Tasks in flight" input type="number" name="max_in_flight" min="1"; }
                label { "Budget (USD)" input type="number" name="budget_usd" min="0" step="0.01"; }
                label { "Budget period"
                    select name="budget_period" {
                        option value="month" { "month" } option value="day" { "day" }
                    }
                }
                button type="submit" { "Issue key" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct NewKeyForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    max_in_flight: String,
    #[serde(default)]
    budget_usd: String,
    #[serde(default)]
    budget_period: String,
}

/// `POST /console/keys`
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Form(form): Form<NewKeyForm>,
) -> Result<Html<String>, ConsoleError> {
    session.require_operator()?;
    session.check_csrf(form.csrf.as_deref())?;
    let name = form.name.trim();
    if name.is_empty() {
        return Err(invalid("name", "a name is required".into()));
    }
    crate::store::check_label("name", name).map_err(|(f, m)| invalid(f, m))?;
    let change = change_of(&form)?;
    let issued = gw.store.issue_key(name, &change).await?;
    render(&gw, &session, Some(("issued", &issued))).await
}

fn change_of(form: &NewKeyForm) -> Result<KeyChange, ConsoleError> {
    let team = form.team.trim();
    let change = KeyChange {
        team: (!team.is_empty()).then(|| Some(team.to_string())),
        rpm: Some(number("rpm", &form.rpm)?),
        max_in_flight: Some(number("max_in_flight", &form.max_in_flight)?),
        budget_usd: Some(match form.budget_usd.trim() {
            "" => None,
            s => Some(
                s.parse::<f64>()
                    .map_err(|_| invalid("budget_usd", "a number of US dollars".into()))?,
            ),
        }),
        budget_period: match form.budget_period.trim() {
            "" => None,
            p => Some(
                BudgetPeriod::parse(p)
                    .ok_or_else(|| invalid("budget_period", "day or month".into()))?,
            ),
        },
        ..KeyChange::default()
    };
    change.validate().map_err(|(f, m)| invalid(f, m))?;
    Ok(change)
}

fn number(field: &'static str, s: &str) -> Result<Option<u32>, ConsoleError> {
    match s.trim() {
        "" => Ok(None),
        s => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(field, "a whole number, or empty for no limit".into())),
    }
}

fn invalid(field: &'static str, message: String) -> ConsoleError {
    ConsoleError::Invalid { field, message }
}

/// `POST /console/keys/{id}/revoke`
pub async fn revoke(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, ConsoleError> {
    session.require_operator()?;
    session.check_csrf(form.csrf.as_deref())?;
    if !gw.store.revoke_key(&id).await? {
        return Err(ConsoleError::NotFound);
    }
    Ok(Redirect::to("/console/keys"))
}

/// `POST /console/keys/{id}/rotate`
pub async fn rotate(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Html<String>, ConsoleError> {
    session.require_operator()?;
    session.check_csrf(form.csrf.as_deref())?;
    let grace_ms = (gw.config.admin.key_rotation_grace_secs as i64).saturating_mul(1000);
    let issued = gw
        .store
        .rotate_key(&id, grace_ms)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    render(&gw, &session, Some(("rotated", &issued))).await
}
