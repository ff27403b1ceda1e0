//! The task list (filtered, keyset-paginated) and the task page: request, timeline,
//! attempts, money, the video, and webhook deliveries with redelivery.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::page::{self, csrf_field, select_field, status_badge, time_ms, usd_opt, ConsoleError};
use super::session::{CsrfForm, Session};
use crate::domain::{Model, TaskStatus};
use crate::gateway::Gateway;
use crate::store::{
    Attempt, Redelivery, TaskFilter, TaskRecord, TaskState, WebhookAttempt, WebhookEvent,
};

const PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    key: String,
    /// `YYYY-MM-DD` (UTC), inclusive.
    #[serde(default)]
    from: String,
    /// `YYYY-MM-DD` (UTC), inclusive.
    #[serde(default)]
    to: String,
    /// `<created_at ms>.<id>` of the last task of the previous page.
    #[serde(default)]
    after: String,
}

/// `GET /console/tasks`
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ConsoleError> {
    let Query(q) = query.map_err(|e| ConsoleError::Invalid {
        field: "query",
        message: e.body_text(),
    })?;
    let filter = filter_of(&q, &session)?;
    let cursor = parse_cursor(&q.after)?;
    let page = gw
        .store
        .filtered_tasks(
            &filter,
            cursor.as_ref().map(|(at, id)| (*at, id.as_str())),
            PAGE_SIZE,
        )
        .await?;
    let providers: Vec<&str> = gw.router.names().collect();
    let next = page
        .has_more
        .then(|| page.tasks.last().map(|t| next_page_link(&q, t)))
        .flatten();
    let body = html! {
        form.filters method="get" action="/console/tasks" aria-label="Filter tasks" {
            (select_field("status", "Status", "any", &["queued", "in_progress", "completed", "failed"], &q.status))
            (select_field("model", "Model", "any", &[Model::KlingVideoO1.as_str(), Model::KlingV3Omni.as_str()], &q.model))
            (select_field("provider", "Provider", "any", &providers, &q.provider))
            @if session.is_operator() {
                label { "Key id" input type="text" name="key" value=(q.key) placeholder="key_..."; }
            }
            label { "From" input type="date" name="from" value=(q.from); }
            label { "To" input type="date" name="to" value=(q.to); }
            button type="submit" { "Filter" }
            a href="/console/tasks" { "Clear" }
        }
        @if page.tasks.is_empty() {
            p.empty { "No tasks match. " a href="/console/playground" { "Create one in the playground." } }
        } @else {
            table.tasks {
                caption.visually-hidden { "Tasks, newest first" }
                thead { tr {
                    th scope="col" { "Task" } th scope="col" { "Status" } th scope="col" { "Model" }
                    th scope="col" { "Provider" }
                    @if session.is_operator() { th scope="col" { "Key" } }
                    th scope="col" { "Estimated" } th scope="col" { "Final" } th scope="col" { "Created (UTC)" }
                } }
                tbody {
                    @for t in &page.tasks {
                        tr {
                            td { a href={"/console/tasks/" (t.id)} { code { (t.id) } } }
                            td { (status_badge(t.state.public().as_str())) }
                            td { (t.model.as_str()) }
                            td { (t.provider.as_deref().unwrap_or("—")) }
                            @if session.is_operator() { td { code { (t.api_key_id) } } }
                            td.num { (usd_opt(t.cost_estimated_usd)) }
                            td.num { (usd_opt(t.cost_final_usd)) }
                            td { (time_ms(t.created_at)) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            nav.pager aria-label="Pages" { a rel="next" href=(next) { "Older tasks →" } }
        }
    };
    Ok(page::page(&session, "Tasks", "/console/tasks", body))
}

fn filter_of(q: &ListQuery, session: &Session) -> Result<TaskFilter, ConsoleError> {
    let states = match q.status.as_str() {
        "" => Vec::new(),
        s => {
            let status: TaskStatus =
                serde_json::from_value(Value::String(s.into())).map_err(|_| {
                    ConsoleError::Invalid {
                        field: "status",
                        message: "one of queued, in_progress, completed, failed".into(),
                    }
                })?;
            internal_states(status)
        }
    };
    let model = match q.model.as_str() {
        "" => None,
        m => Some(
            serde_json::from_value::<Model>(Value::String(m.into()))
                .map_err(|_| ConsoleError::Invalid {
                    field: "model",
                    message: "not a model omnigate serves".into(),
                })?
                .as_str()
                .to_string(),
        ),
    };
    let owner = match session.owner() {
        Some(own) => Some(own.to_string()),
        None => non_empty(&q.key),
    };
    Ok(TaskFilter {
        owner,
        states,
        model,
        provider: non_empty(&q.provider),
        from: parse_day("from", &q.from)?,
        to: parse_day("to", &q.to)?.map(|start| start + 86_400_000),
    })
}

fn internal_states(status: TaskStatus) -> Vec<&'static str> {
    TaskState::ALL
        .into_iter()
        .filter(|s| s.public() == status)
        .map(TaskState::as_str)
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The start (Unix ms, UTC) of a `YYYY-MM-DD` day.
fn parse_day(field: &'static str, s: &str) -> Result<Option<i64>, ConsoleError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(s.trim(), &format).map_err(|_| ConsoleError::Invalid {
        field,
        message: "a date as YYYY-MM-DD".into(),
    })?;
    Ok(Some(day.midnight().assume_utc().unix_timestamp() * 1000))
}

fn parse_cursor(s: &str) -> Result<Option<(i64, String)>, ConsoleError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || ConsoleError::Invalid {
        field: "after",
        message: "the cursor of a page link".into(),
    };
    let (at, id) = s.split_once('.').ok_or_else(bad)?;
    Ok(Some((at.parse().map_err(|_| bad())?, id.to_string())))
}

fn next_page_link(q: &ListQuery, last: &TaskRecord) -> String {
    let mut url = url::Url::parse("http://console/console/tasks").expect("a fixed URL");
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in [
            ("status", &q.status),
            ("model", &q.model),
            ("provider", &q.provider),
            ("key", &q.key),
            ("from", &q.from),
            ("to", &q.to),
        ] {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("after", &format!("{}.{}", last.created_at, last.id));
    }
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// The task if this session may see it: the operator sees every key's.
async fn visible_task(
    gw: &Gateway,
    session: &Session,
    id: &str,
) -> Result<TaskRecord, ConsoleError> {
    let task = match session.owner() {
        Some(owner) => gw.store.task_for_owner(owner, id).await?,
        None => gw.store.task(id).await?,
    };
    task.ok_or(ConsoleError::NotFound)
}

/// `GET /console/tasks/{id}/stream`: the task's status stream (as the API's), for the
/// task page's script (`assets/task-follow.js`), under the session's sign-in.
pub async fn stream(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let task = visible_task(&gw, &session, &id).await?;
    Ok(crate::api::status_stream(gw.clone(), task.api_key_id, id, &headers).await?)
}

/// `GET /console/tasks/{id}`
pub async fn show(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let task = visible_task(&gw, &session, &id).await?;
    let detail = gw
        .store
        .task_detail_for_owner(&task.api_key_id, &id)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    let request = stored_request(&gw.store.task_request_body(&id).await?);
    let events = gw.store.task_webhook_events(&id).await?;
    let t = &detail.task;
    let finished = t.state.public().is_terminal();
    let position = match &t.queue {
        Some(spot) => Some(gw.store.queue_position(spot.tag).await?),
        None => None,
    };
    let body = html! {
        @if !finished { script src="/console/assets/task-follow.js" defer {} }
        div #task-live data-follow=[(!finished).then(|| format!("/console/tasks/{id}/stream"))] {
            (facts(t))
            @if let (Some(spot), Some(position)) = (&t.queue, position) {
                (queue_place(spot, position))
            }
            (result(t, finished))
            section aria-labelledby="timeline-title" {
                h2 #timeline-title { "Status history" }
                ol.timeline {
                    @for change in &detail.history {
                        li { time { (time_ms(change.at)) } " " (status_badge(&change.status)) }
                    }
                }
            }
            (attempts(&detail.attempts))
            (webhook_events(&session, &t.id, &events))
            section aria-labelledby="request-title" {
                h2 #request-title { "Request" }
                @match &request {
                    Some(r) => pre.request { (serde_json::to_string_pretty(r).unwrap_or_default()) },
                    None => p { "The request body was pruned with the task's details (retention)." },
                }
            }
        }
    };
    Ok(page::page(
        &session,
        &format!("Task {id}"),
        "/console/tasks",
        body,
    ))
}

/// A waiting task's place: 1 starts next.
fn queue_place(spot: &crate::store::QueueSpot, position: i64) -> Markup {
    html! {
        section.queue-place aria-labelledby="queue-title" {
            h2 #queue-title { "Waiting for room" }
            dl.facts {
                dt { "Queue position" } dd { strong { (position) } " (1 starts next; across every key, in fair-share order)" }
                dt { "Waiting since (UTC)" } dd { (time_ms(spot.waiting_since)) }
                dt { "Gives up at (UTC)" } dd { (time_ms(spot.max_wait_until)) " (then failed with queue_timeout, nothing charged)" }
            }
        }
    }
}

/// The stored request with inline images elided; None once retention pruned it to `{}`.
fn stored_request(body: &str) -> Option<Value> {
    serde_json::from_str::<Value>(body)
        .ok()
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .map(elide_base64)
}

fn facts(t: &TaskRecord) -> Markup {
    html! {
        dl.facts {
            dt { "Status" } dd { (status_badge(t.state.public().as_str())) " " (t.progress) "%" }
            dt { "Model" } dd { (t.model.as_str()) }
            dt { "Provider" } dd { (t.provider.as_deref().unwrap_or("—")) " " small { (t.routing_reason.as_deref().unwrap_or("")) } }
            dt { "Provider's task id" } dd { code { (t.provider_task_id.as_deref().unwrap_or("—")) } }
            dt { "Key" } dd { code { (t.api_key_id) } }
            dt { "Cost" } dd { "estimated " (usd_opt(t.cost_estimated_usd)) ", final " (usd_opt(t.cost_final_usd))
                @if t.cost_final_usd.is_none() { " (settled when the task completes; failed tasks cost nothing)" } }
            dt { "Created (UTC)" } dd { (time_ms(t.created_at)) }
            @if t.sandbox { dt { "Sandbox" } dd { "yes: this video is not real" } }
        }
        @if let Some(err) = &t.error {
            p.error role="alert" { strong { (err.code) } ": " (err.message)
                @if let Some(pm) = &err.provider_message { " (provider: " (pm) ")" } }
        }
    }
}

/// The video once there is one; until the task finishes, a note that the page follows it.
fn result(t: &TaskRecord, finished: bool) -> Markup {
    let video = format!("/console/tasks/{}/video", t.id);
    html! {
        @if t.state.public() == TaskStatus::Completed && !t.videos.is_empty() {
            section aria-labelledby="video-title" {
                h2 #video-title { "Result" }
                video #result controls preload="metadata" src=(video) {
                    "Your browser cannot play this video; " a href=(video) { "download it" } "."
                }
            }
        } @else if !finished {
            p.live aria-live="polite" { "This page follows the task as it changes, until it finishes. " a href="" { "Refresh now" } }
        }
    }
}

fn attempts(attempts: &[Attempt]) -> Markup {
    html! {
        section aria-labelledby="attempts-title" {
            h2 #attempts-title { "Submit attempts" }
            @if attempts.is_empty() { p { "None yet." } } @else {
                table {
                    thead { tr { th scope="col" { "At (UTC)" } th scope="col" { "Provider" } th scope="col" { "Outcome" }
                                 th scope="col" { "Latency" } th scope="col" { "Error" } } }
                    tbody { @for a in attempts { tr {
                        td { (time_ms(a.at)) } td { (a.provider) } td { (a.outcome) }
                        td.num { (a.latency_ms) " ms" }
                        td { (a.error_code.as_deref().unwrap_or("")) " " (a.message.as_deref().unwrap_or("")) }
                    } } }
                }
            }
        }
    }
}

fn webhook_events(
    session: &Session,
    task_id: &str,
    events: &[(WebhookEvent, Vec<WebhookAttempt>)],
) -> Markup {
    html! {
        section aria-labelledby="events-title" {
            h2 #events-title { "Webhook events" }
            @if events.is_empty() { p { "No callback URL was given, so no events." } }
            @for (event, attempts) in events {
                article.event {
                    h3 { code { (event.kind) } " → " (event.url) " " (status_badge(&event.state)) }
                    @if attempts.is_empty() { p { "No delivery attempt yet." } } @else {
                        table {
                            thead { tr { th scope="col" { "At (UTC)" } th scope="col" { "Answer" } th scope="col" { "Latency" } th scope="col" { "Error" } } }
                            tbody { @for a in attempts { tr {
                                td { (time_ms(a.at)) }
                                td { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "no answer".into())) }
                                td.num { (a.latency_ms) " ms" }
                                td { (a.error.as_deref().unwrap_or("")) }
                            } } }
                        }
                    }
                    form method="post" action={"/console/tasks/" (task_id) "/events/" (event.id) "/redeliver"} {
                        (csrf_field(session))
                        button type="submit" { "Redeliver " code { (event.kind) } }
                    }
                }
            }
        }
    }
}

/// Inline images (base64 or data URLs) are replaced by their size: the page stays readable
/// and light.
fn elide_base64(v: Value) -> Value {
    match v {
        Value::String(s) if looks_like_base64(&s) => {
            Value::String(format!("<base64, {} characters elided>", s.len()))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(elide_base64).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, elide_base64(v))).collect())
        }
        other => other,
    }
}

fn looks_like_base64(s: &str) -> bool {
    s.starts_with("data:")
        || (s.len() > 256
            && !s.starts_with("http")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')))
}

type QueryRejection = axum::extract::rejection::QueryRejection;

/// `GET /console/tasks/{id}/video[?video=i]`: the stored copy, or a redirect to the
/// provider's URL.
pub async fn video(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Path(id): Path<String>,
    which: Result<axum::extract::Query<crate::api::WhichVideo>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let task = visible_task(&gw, &session, &id).await?;
    let index = which.map_err(crate::api::ApiError::from)?.index();
    Ok(crate::api::content_of(&gw, &task.api_key_id, &id, index, &headers).await?)
}

/// `POST /console/tasks/{id}/events/{event_id}/redeliver`
pub async fn redeliver(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Path((id, event_id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, ConsoleError> {
    session.check_csrf(form.csrf.as_deref())?;
    visible_task(&gw, &session, &id).await?;
    match gw.store.redeliver_webhook_event(&id, &event_id).await? {
        Redelivery::Queued(_) => Ok(Redirect::to(&format!("/console/tasks/{id}"))),
        Redelivery::NotFound => Err(ConsoleError::NotFound),
        Redelivery::InFlight => Err(ConsoleError::Invalid {
            field: "event",
            message: "it is being delivered right now; try again once its attempt is listed".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inline_images_are_elided_and_urls_kept() {
        let big = "A".repeat(300);
        let v = elide_base64(json!({"image_list": [
            {"image_url": format!("data:image/png;base64,{big}")},
            {"image_url": big.clone()},
            {"image_url": "https://example.com/a.png"}]}));
        let list = v["image_list"].as_array().unwrap();
        assert!(list[0]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("<base64, 322"));
        assert!(list[1]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("<base64, 300"));
        assert_eq!(list[2]["image_url"], "https://example.com/a.png");
    }

    #[test]
    fn a_bad_date_or_cursor_names_its_field() {
        assert!(matches!(
            parse_day("from", "26/11/2026"),
            Err(ConsoleError::Invalid { field: "from", .. })
        ));
        assert_eq!(parse_day("from", "1970-01-02").unwrap(), Some(86_400_000));
        assert!(matches!(
            parse_cursor("x"),
            Err(ConsoleError::Invalid { field: "after", .. })
        ));
        assert_eq!(parse_cursor("5.vgt_a").unwrap(), Some((5, "vgt_a".into())));
    }
}
