//! `omnigate-bench --polls`: the status queries omnigate spends per finished task and how
//! late it notices a task's end, against a fake provider whose tasks take a known, varied
//! time: four groups (model, mode, duration) of 60, 100, 120 and 180 s, each task within
//! 10% of its group's time, all scaled by `--polls-scale` (and the provider's 10 s poll
//! interval with them). Three runs on one PostgreSQL database: timed polls off (every
//! poll one interval after the last, as before issue 21), then on twice, with the
//! completion times the run before left. The gateway runs in this process, with its own poller and refresh
//! worker; lateness is omnigate's `completed_at` minus the moment the fake task finished.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::{Query, State};
use axum::Json;
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::Row;

use super::{Database, RunArgs, StoreKind};

/// (mode, seconds, unscaled task time in seconds): one group each.
const GROUPS: [(&str, u32, f64); 4] = [
    ("std", 5, 60.0),
    ("std", 10, 100.0),
    ("pro", 5, 120.0),
    ("pro", 10, 180.0),
];
/// Each task takes its group's time times 1 ± up to this.
const SPREAD: f64 = 0.1;
/// The provider's poll interval before scaling.
const INTERVAL_SECS: f64 = 10.0;
/// Creates in flight at once.
const CREATE_CONCURRENCY: usize = 16;

/// The fake provider's tasks: when each finishes and how often it was queried.
#[derive(Default)]
struct Upstream {
    scale: f64,
    next: AtomicU64,
    tasks: Mutex<HashMap<String, FakeTask>>,
}

#[derive(Clone, Copy)]
struct FakeTask {
    finish_at: i64,
    queries: u32,
}

fn now_ms() -> i64 {
    omnigate::store::now_ms()
}

impl Upstream {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeTask>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn create(State(up): State<Arc<Upstream>>, Json(body): Json<Value>) -> Json<Value> {
    let mode = body["mode"].as_str().unwrap_or("std");
    let seconds: u32 = body["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(5);
    let base = GROUPS
        .iter()
        .find(|(m, s, _)| *m == mode && *s == seconds)
        .map_or(60.0, |g| g.2);
    let factor = 1.0 + rand::thread_rng().gen_range(-SPREAD..=SPREAD);
    let took_ms = (base * factor * up.scale * 1000.0) as i64;
    let id = format!("poll_{}", up.next.fetch_add(1, Ordering::Relaxed));
    up.tasks().insert(
        id.clone(),
        FakeTask {
            finish_at: now_ms() + took_ms,
            queries: 0,
        },
    );
    Json(json!({"code": 200, "msg": "success", "data": {"taskId": id, "state": "pending"}}))
}

async fn query(
    State(up): State<Arc<Upstream>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let id = q.get("task_id").cloned().unwrap_or_default();
    let done = {
        let mut tasks = up.tasks();
        let Some(t) = tasks.get_mut(&id) else {
            return Json(json!({"code": 404, "msg": "task not found"}));
        };
        t.queries += 1;
        now_ms() >= t.finish_at
    };
    let data = if done {
        json!({"taskId": id, "state": "completed", "resultUrls": [format!("https://cdn.bench.test/{id}.mp4")]})
    } else {
        json!({"taskId": id, "state": "processing", "progress": 50})
    };
    Json(json!({"code": 200, "msg": "success", "data": data}))
}

async fn serve_upstream(scale: f64) -> anyhow::Result<(u16, Arc<Upstream>)> {
    let up = Arc::new(Upstream {
        scale,
        ..Default::default()
    });
    let app = axum::Router::new()
        .route(
            "/api/v1/video/generations",
            axum::routing::post(create).get(query),
        )
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, up))
}

fn gateway_config(
    args: &RunArgs,
    db: &Database,
    upstream: u16,
    adaptive: bool,
) -> anyhow::Result<omnigate::config::Config> {
    let interval = INTERVAL_SECS * args.polls_scale;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = \"{url}\"\nmax_connections = {pool}\n\n\
         [sandbox]\nenabled = \"never\"\n\n\
         [poller]\nadaptive_polls = {adaptive}\ntiming_refresh_secs = 1\nmin_poll_gap_secs = {gap}\n\
         timing_samples = {samples}\n\n\
         [providers.fake]\ndialect = \"apimodels\"\nbase_url = \"http://127.0.0.1:{upstream}\"\n\
         api_key_env = \"BENCH_POLLS_UPSTREAM_KEY\"\nmodels = [\"kling-v3-omni\"]\npoll_interval_secs = {interval}\n\n\
         [providers.fake.prices.kling-v3-omni]\nstd = 0.0633\npro = 0.0853\n",
        url = db.url,
        pool = args.pool,
        gap = (interval / 10.0).max(0.1),
        // Every task of a run starts at once, so the newest completions of a group are its
        // longest tasks: the percentiles take the whole previous run (see the docs' limits).
        samples = (args.polls_tasks as usize / GROUPS.len()).clamp(100, 10_000),
    );
    omnigate::config::Config::from_toml_str(&toml, |name| {
        (name == "BENCH_POLLS_UPSTREAM_KEY").then(|| "bench".to_string())
    })
}

/// One run's figures.
struct Figures {
    label: &'static str,
    tasks: usize,
    queries: Vec<u32>,
    /// ms between the fake task's end and omnigate's `completed_at`.
    late_ms: Vec<i64>,
}

fn pct<T: Copy + Ord>(v: &[T], p: f64) -> Option<T> {
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = (p * s.len() as f64).ceil() as usize;
    s.get(rank.clamp(1, s.len().max(1)) - 1).copied()
}

/// Starts a gateway, creates `args.polls_tasks` tasks across the groups, waits until each
/// has ended and reads what it cost.
async fn one_run(
    args: &RunArgs,
    db: &Database,
    upstream: (u16, &Arc<Upstream>),
    adaptive: bool,
    label: &'static str,
) -> anyhow::Result<Figures> {
    let cfg = gateway_config(args, db, upstream.0, adaptive)?;
    let app = omnigate::app::start(cfg).await?;
    let gw = app.gateway.clone();
    if adaptive {
        // The history of the run before, as the refresh worker would have it at its turn.
        omnigate::workers::timing::recompute(&gw, now_ms()).await?;
        gw.timings.load(&gw.store).await?;
    }
    let key = gw.store.create_api_key(label).await?.secret;
    let base = format!("http://{}", app.addr);
    let client = reqwest::Client::new();
    let started = now_ms();
    let n = args.polls_tasks as usize;
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (mode, seconds, _) = GROUPS[i % GROUPS.len()];
            let body = json!({"model": "kling-v3-omni", "prompt": "bench", "aspect_ratio": "16:9",
                              "mode": mode, "duration": seconds});
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                let r = client
                    .post(format!("{base}/v1/video/generations"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?;
                if r.status() != reqwest::StatusCode::ACCEPTED {
                    bail!("create answered {}: {}", r.status(), r.text().await?);
                }
                Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let longest =
        GROUPS.iter().map(|g| g.2).fold(0.0, f64::max) * (1.0 + SPREAD) * args.polls_scale;
    let deadline = Instant::now() + Duration::from_secs_f64(longest * 3.0 + 60.0);
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE created_at >= $1 AND state NOT IN ('completed', 'failed')",
        )
        .bind(started)
        .fetch_one(gw.store.pool())
        .await?;
        if unfinished == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{unfinished} tasks still unfinished after {longest:.0} s x 3 + 60 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows = sqlx::query(
        "SELECT provider_task_id, completed_at FROM tasks WHERE created_at >= $1 AND state = 'completed'",
    )
    .bind(started)
    .fetch_all(gw.store.pool())
    .await?;
    let tasks = upstream.1.tasks().clone();
    let mut figures = Figures {
        label,
        tasks: rows.len(),
        queries: Vec::new(),
        late_ms: Vec::new(),
    };
    for row in rows {
        let id: String = row.try_get("provider_task_id")?;
        let completed_at: i64 = row.try_get("completed_at")?;
        let t = tasks
            .get(&id)
            .context("a completed task the fake upstream never made")?;
        figures.queries.push(t.queries);
        figures.late_ms.push(completed_at - t.finish_at);
    }
    if figures.tasks < n {
        bail!("{label}: only {} of {n} tasks completed", figures.tasks);
    }
    app.shutdown().await;
    Ok(figures)
}

pub async fn run(args: &RunArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let scale = args.polls_scale;
    if !(scale.is_finite() && scale > 0.0 && scale <= 1.0) {
        bail!("--polls-scale: a fraction above 0 and at most 1");
    }
    eprintln!(
        "polls: {} tasks per run, task times 60-180 s x {scale} ({:.1}-{:.1} s), poll interval {:.2} s",
        args.polls_tasks,
        60.0 * scale * (1.0 - SPREAD),
        180.0 * scale * (1.0 + SPREAD),
        INTERVAL_SECS * scale
    );
    let db = Database::create(args, StoreKind::Postgres, dir, "polls").await?;
    let (port, upstream) = serve_upstream(scale).await?;
    let mut all = Vec::new();
    // The second run's history was measured by blind polls (each end noticed up to an
    // interval late); the third's by the second run's timed polls, as in steady use.
    let runs = [
        (false, "timed polls off"),
        (true, "timed polls on, history from blind polls"),
        (true, "timed polls on, history from timed polls"),
    ];
    for (adaptive, label) in runs {
        eprintln!("  {label}");
        match one_run(args, &db, (port, &upstream), adaptive, label).await {
            Ok(f) => all.push(f),
            Err(e) => {
                db.drop_it(args).await;
                return Err(e);
            }
        }
    }
    db.drop_it(args).await;
    print_figures(&all, scale);
    Ok(())
}

fn print_figures(all: &[Figures], scale: f64) {
    let interval = INTERVAL_SECS * scale;
    println!(
        "\n| run | tasks | status queries per task: p50 | p90 | mean | noticed late: p50 | p95 | max | poll interval |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let mean =
            f.queries.iter().map(|q| f64::from(*q)).sum::<f64>() / f.queries.len().max(1) as f64;
        let late = |p: f64| pct(&f.late_ms, p).unwrap_or(0) as f64 / 1000.0;
        println!(
            "| {} | {} | {} | {} | {mean:.1} | {:.2} s | {:.2} s | {:.2} s | {interval:.1} s |",
            f.label,
            f.tasks,
            pct(&f.queries, 0.5).unwrap_or(0),
            pct(&f.queries, 0.9).unwrap_or(0),
            late(0.5),
            late(0.95),
            late(1.0),
        );
    }
    println!(
        "\n(task times 60-180 s x {scale}; lateness as measured, including the poller's fixed 0.5 s tick, which is not scaled)"
    );
}
