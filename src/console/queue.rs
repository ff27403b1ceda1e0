//! The queue page: what waits in the admission queue and where it could go. The operator
//! sees every provider (its cap, the cap in force, tasks in flight, and the waiting tasks
//! whose model it serves) and every key with waiting tasks (its weight, bound and oldest
//! wait); a key sees only its own row. Read from the store, so any replica shows the same.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::{html, Markup};

use super::page::{self, time_ms, ConsoleError};
use super::session::Session;
use crate::domain::Model;
use crate::gateway::Gateway;
use crate::store::{now_ms, KeyInfo, ProviderCapacity, WaitingGroup};

/// One key's waiting tasks, with what the key's admin settings say about its share.
struct KeyRow {
    id: String,
    info: Option<KeyInfo>,
    waiting: i64,
    oldest_since: i64,
    by_model: Vec<(String, i64)>,
}

/// `GET /console/queue`
pub async fn page(
    State(gw): State<Arc<Gateway>>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    let groups = gw.store.waiting_groups(session.owner()).await?;
    let keys = key_rows(&gw, &groups).await?;
    let now = now_ms();
    let waiting: i64 = groups.iter().map(|g| g.waiting).sum();
    let body = html! {
        div data-refresh-while-unfinished=[(waiting > 0).then_some("5000")] {
            p.note {
                (waiting) " tasks waiting. They start in fair-share order across keys (each key's "
                "weight), first in first out within a key, as providers and keys get room."
                @if waiting > 0 { " This page refreshes every 5 seconds while tasks wait." }
            }
            @if session.is_operator() {
                (providers_table(&gw, &gw.store.capacity().await?, &groups, now))
            }
            (keys_table(&keys, default_max_queued(&gw), now))
        }
    };
    Ok(page::page(&session, "Queue", "/console/queue", body))
}

fn default_max_queued(gw: &Gateway) -> i64 {
    i64::try_from(gw.config.queue.default_max_queued).unwrap_or(i64::MAX)
}

async fn key_rows(gw: &Gateway, groups: &[WaitingGroup]) -> anyhow::Result<Vec<KeyRow>> {
    let mut rows: Vec<KeyRow> = Vec::new();
    for g in groups {
        match rows.iter_mut().find(|r| r.id == g.api_key_id) {
            Some(r) => {
                r.waiting += g.waiting;
                r.oldest_since = r.oldest_since.min(g.oldest_since);
                r.by_model.push((g.model.clone(), g.waiting));
            }
            None => rows.push(KeyRow {
                id: g.api_key_id.clone(),
                info: None,
                waiting: g.waiting,
                oldest_since: g.oldest_since,
                by_model: vec![(g.model.clone(), g.waiting)],
            }),
        }
    }
    for r in &mut rows {
        r.info = gw.store.key_info_by_id(&r.id).await?;
    }
    // The longest wait first: that is the key an operator looks for.
    rows.sort_by_key(|r| r.oldest_since);
    Ok(rows)
}

/// Per provider: its caps, what runs there, and the waiting tasks it could take (those
/// of a model it serves).
fn providers_table(
    gw: &Gateway,
    capacity: &[ProviderCapacity],
    groups: &[WaitingGroup],
    now: i64,
) -> Markup {
    html! {
        h2 { "Providers" }
        table.queue-providers {
            thead { tr {
                th scope="col" { "Provider" } th scope="col" { "Cap" } th scope="col" { "Cap in force" }
                th scope="col" { "In flight" } th scope="col" { "Waiting that could go there" }
            } }
            tbody { @for name in gw.router.names() {
                @let c = capacity.iter().find(|c| c.provider == name);
                @let could_go = gw.router.get(name).map_or(0, |u| groups.iter()
                    .filter(|g| Model::parse(&g.model).is_some_and(|m| u.config.serves(m)))
                    .map(|g| g.waiting).sum::<i64>());
                tr {
                    th scope="row" { (name) }
                    td.num { (c.and_then(|c| c.configured_cap).map_or("none".to_string(), |v| v.to_string())) }
                    td.num { (cap_in_force(c, now)) }
                    td.num { (c.map_or("not counted".to_string(), |c| if c.configured_cap.is_some() { c.in_flight.to_string() } else { "not counted".to_string() })) }
                    td.num { (could_go) }
                }
            } }
        }
    }
}

/// The cap a provider takes tasks under now: lowered after a capacity refusal, or none
/// while an uncapped provider cools down after one.
fn cap_in_force(c: Option<&ProviderCapacity>, now: i64) -> String {
    let Some(c) = c else {
        return "none".into();
    };
    match c.configured_cap {
        Some(cap) => {
            let e = c.effective_cap.map_or(cap, |e| e.min(cap));
            if e < cap {
                format!("{e} (lowered after a refusal)")
            } else {
                e.to_string()
            }
        }
        None if c.cooldown_until > now => {
            format!("full until {}", time_ms(c.cooldown_until))
        }
        None => "none".into(),
    }
}

fn keys_table(keys: &[KeyRow], default_max_queued: i64, now: i64) -> Markup {
    html! {
        h2 { "Keys" }
        @if keys.is_empty() {
            p.empty { "Nothing waits." }
        } @else {
            table.queue-keys {
                thead { tr {
                    th scope="col" { "Key" } th scope="col" { "Waiting" } th scope="col" { "By model" }
                    th scope="col" { "Weight" } th scope="col" { "Max queued" } th scope="col" { "Oldest wait" }
                } }
                tbody { @for k in keys { tr {
                    th scope="row" {
                        (k.info.as_ref().map_or("(deleted key)", |i| i.name.as_str())) " "
                        code { (k.id) }
                    }
                    td.num { (k.waiting) }
                    td { @for (i, (model, n)) in k.by_model.iter().enumerate() {
                        @if i > 0 { ", " } (model) ": " (n)
                    } }
                    td.num { (k.info.as_ref().map_or(1, |i| i.weight)) }
                    td.num {
                        @match k.info.as_ref().and_then(|i| i.max_queued) {
                            Some(m) => (m),
                            None => { (default_max_queued) " (default)" },
                        }
                    }
                    td.num { (wait_text(now - k.oldest_since)) " (since " (time_ms(k.oldest_since)) ")" }
                } } }
            }
        }
    }
}

/// A wait as people say it: "42 s", "7 min", "2 h 05 min".
fn wait_text(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::wait_text;

    #[test]
    fn waits_read_in_the_unit_that_fits() {
        assert_eq!(wait_text(42_000), "42 s");
        assert_eq!(wait_text(7 * 60_000 + 5_000), "7 min");
        assert_eq!(wait_text(2 * 3_600_000 + 5 * 60_000), "2 h 05 min");
        assert_eq!(wait_text(-5), "0 s");
    }
}
