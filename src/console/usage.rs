//! Usage charts over the last days: money per day by provider and by team, tasks by
//! status, seconds of video. Settled money (what completed tasks cost) and money still
//! pending (estimates of unfinished tasks) are always shown apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::{html, Markup};

use super::charts::{bars, columns, Bar, Column};
use super::page::{self, usd, ConsoleError};
use super::session::Session;
use crate::gateway::Gateway;
use crate::store::{now_ms, TaskState, UsageCell};

const DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;

/// `GET /console/usage`
pub async fn page(
    State(gw): State<Arc<Gateway>>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    let today = now_ms() / DAY_MS;
    let first = today - DAYS + 1;
    let cells = gw
        .store
        .usage_cells(session.owner(), first * DAY_MS, (today + 1) * DAY_MS)
        .await?;
    let days: Vec<i64> = (first..=today).collect();
    let settled: i64 = cells.iter().map(|c| c.settled_micros).sum();
    let pending: i64 = cells.iter().map(|c| c.pending_micros).sum();
    let seconds: i64 = cells.iter().map(|c| c.seconds).sum();
    let tasks: i64 = cells.iter().map(|c| c.tasks).sum();
    let body = html! {
        p { "The last " (DAYS) " days (UTC), from the task records themselves. "
            "Settled money is what completed tasks cost; pending is the estimate of tasks not finished yet; failed tasks cost nothing." }
        dl.totals {
            div { dt { "Settled" } dd { (usd(micros(settled))) } }
            div { dt { "Pending (estimated)" } dd { (usd(micros(pending))) } }
            div { dt { "Tasks" } dd { (tasks) } }
            div { dt { "Seconds of video" } dd { (seconds) } }
        }
        h2 { "Settled spend per day, by provider" }
        div.charts { (per_day_by(&cells, &days, |c| &c.provider)) }
        h2 { "Settled spend per day, by team" }
        div.charts { (per_day_by(&cells, &days, |c| &c.team)) }
        h2 { "Tasks and video" }
        div.charts {
            (bars("Tasks by status", &by_status(&cells)))
            (columns("Seconds of video per day", &["seconds"], &days.iter().map(|d| {
                let s: i64 = cells.iter().filter(|c| c.day == *d).map(|c| c.seconds).sum();
                Column { label: day_label(*d), parts: vec![("seconds", s as f64)], shown: s.to_string() }
            }).collect::<Vec<_>>()))
        }
    };
    Ok(page::page(&session, "Usage", "/console/usage", body))
}

/// One small chart per group (provider or team), each titled with its name: no legend.
fn per_day_by(cells: &[UsageCell], days: &[i64], group: impl Fn(&UsageCell) -> &String) -> Markup {
    let mut groups: BTreeMap<String, Vec<&UsageCell>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.settled_micros > 0) {
        groups.entry(group(c).clone()).or_default().push(c);
    }
    html! {
        @if groups.is_empty() { p.empty { "No settled spend in this period." } }
        @for (name, cells) in &groups {
            @let cols: Vec<Column> = days.iter().map(|d| {
                let m: i64 = cells.iter().filter(|c| c.day == *d).map(|c| c.settled_micros).sum();
                Column { label: day_label(*d), parts: vec![("settled", micros(m))], shown: if m > 0 { usd(micros(m)) } else { String::new() } }
            }).collect();
            (columns(if name.is_empty() { "(no team)" } else { name }, &["settled"], &cols))
        }
    }
}

fn by_status(cells: &[UsageCell]) -> Vec<Bar> {
    let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
    for c in cells {
        let status = TaskState::parse(&c.state)
            .map(|s| s.public().as_str())
            .unwrap_or("unknown");
        *counts.entry(status).or_default() += c.tasks;
    }
    counts
        .into_iter()
        .map(|(label, n)| Bar {
            label: label.replace('_', " "),
            value: n as f64,
            shown: n.to_string(),
        })
        .collect()
}

fn micros(m: i64) -> f64 {
    m as f64 / 1e6
}

/// `11-26` for a day number (days since the Unix epoch).
fn day_label(day: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}-{:02}", u8::from(t.month()), t.day())
}
