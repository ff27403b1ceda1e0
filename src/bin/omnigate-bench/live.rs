//! `omnigate-bench --live`: how long a task's state change takes to reach a client that
//! follows it, by a status stream and by a held `Prefer: wait` read: on the gateway that
//! made the change, and (PostgreSQL) on a second gateway whose poller never runs, so the
//! change can only reach it through the shared database.
//!
//! The fake upstream finishes a task created with `[done-later]` in its prompt at its first
//! status query one second or more after the create; omnigate polls every 200 ms. The
//! latency of one task is the time its client got the final state minus the completion's
//! `updated_at` in the store (one clock: everything runs on this machine).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use sqlx::Connection;

use super::gateway::create_task;
use super::scale::{create_key, serve, write_config};
use super::{machine, Database, Omnigate, RunArgs, StoreKind};

const MARKER: &[u8] = b"[done-later]";
const LATER_MS: i64 = 1_000;
const BODY: &str = r#"{"model":"kling-v3-omni","prompt":"a lighthouse at dusk [done-later]","aspect_ratio":"16:9","duration":5,"mode":"std"}"#;
/// Tasks followed at once.
const CONCURRENCY: usize = 20;

static DONE_LATER: LazyLock<Mutex<HashMap<String, i64>>> = LazyLock::new(Default::default);

/// The fake upstream saw a create: a `[done-later]` task finishes a second later.
pub fn note_create(id: &str, body: &[u8]) {
    if body.windows(MARKER.len()).any(|w| w == MARKER) {
        let mut done = DONE_LATER.lock().unwrap_or_else(|e| e.into_inner());
        done.insert(id.to_string(), omnigate::store::now_ms());
    }
}

/// Whether the fake upstream answers task `id` as completed at `now` (ms).
pub fn finished_by(id: &str, now: i64) -> bool {
    let done = DONE_LATER.lock().unwrap_or_else(|e| e.into_inner());
    done.get(id)
        .is_some_and(|created| now - created >= LATER_MS)
}

#[derive(Clone, Copy, Debug)]
enum Follow {
    Stream,
    Wait,
}

struct Figures {
    label: String,
    latencies_ms: Vec<i64>,
}

pub async fn run(args: &RunArgs, dir: &Path, upstream: u16) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut rows = Vec::new();
    for &kind in &args.stores {
        let db = Database::create(args, kind, dir, "live").await?;
        let result = measure_store(args, dir, upstream, &db, &mut rows).await;
        db.drop_it(args).await;
        result?;
    }
    println!(
        "\nomnigate-bench --live, {}; {} tasks per row, {CONCURRENCY} at once; \
         latency = client got the final state - the completion's write (ms)",
        machine(),
        args.live_tasks
    );
    println!("{:<44} {:>8} {:>8} {:>8}", "", "p50", "p95", "max");
    for f in &rows {
        let mut l = f.latencies_ms.clone();
        l.sort_unstable();
        println!(
            "{:<44} {:>8} {:>8} {:>8}",
            f.label,
            pct(&l, 0.50),
            pct(&l, 0.95),
            l.last().copied().unwrap_or_default()
        );
    }
    Ok(())
}

fn pct(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn measure_store(
    args: &RunArgs,
    dir: &Path,
    upstream: u16,
    db: &Database,
    rows: &mut Vec<Figures>,
) -> anyhow::Result<()> {
    let store = match db.kind {
        StoreKind::Postgres => "PG",
        StoreKind::Sqlite => "SQLite",
    };
    let polls = "poll_interval_secs = 0.2";
    let a_config = write_config(args, db, dir, "live-a", upstream, polls, "")?;
    let key = create_key(args, &a_config).await?;
    let mut a = serve(args, dir, "live-a").await?;
    a.key = key.clone();
    for how in [Follow::Stream, Follow::Wait] {
        let latencies_ms = follow_many(args, db, &a, &a, how).await?;
        rows.push(Figures {
            label: format!("{store}, one gateway, {how:?}"),
            latencies_ms,
        });
    }
    if db.kind == StoreKind::Postgres {
        // B never polls: what it tells its clients it learned from the database.
        write_config(
            args,
            db,
            dir,
            "live-b",
            upstream,
            polls,
            "[poller]\ntick_ms = 3600000\n",
        )?;
        let mut b = serve(args, dir, "live-b").await?;
        b.key = key;
        for how in [Follow::Stream, Follow::Wait] {
            let latencies_ms = follow_many(args, db, &a, &b, how).await?;
            rows.push(Figures {
                label: format!("{store}, changed on A, followed on B, {how:?}"),
                latencies_ms,
            });
        }
        b.proc.stop().await;
    }
    a.proc.stop().await;
    Ok(())
}

/// Creates `live_tasks` tasks on `maker`, each followed on `follower` until final.
async fn follow_many(
    args: &RunArgs,
    db: &Database,
    maker: &Omnigate,
    follower: &Omnigate,
    how: Follow,
) -> anyhow::Result<Vec<i64>> {
    let client = reqwest::Client::new();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
    let mut out = Vec::new();
    let mut left = args.live_tasks as usize;
    while left > 0 {
        let batch = left.min(CONCURRENCY);
        left -= batch;
        let runs = (0..batch).map(|_| follow_one(&client, maker, follower, how));
        for (id, got_at) in futures::future::try_join_all(runs).await? {
            let written: i64 = sqlx::query_scalar("SELECT updated_at FROM tasks WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut conn)
                .await?;
            out.push(got_at - written);
        }
    }
    Ok(out)
}

/// One task: created on `maker`, followed on `follower`; returns its id and when (ms) the
/// client had its final state.
async fn follow_one(
    client: &reqwest::Client,
    maker: &Omnigate,
    follower: &Omnigate,
    how: Follow,
) -> anyhow::Result<(String, i64)> {
    let id = create_task(client, maker, BODY).await?;
    let url = format!("{}/v1/video/generations/{id}", follower.base);
    let got_at = match how {
        Follow::Stream => {
            let mut resp = client
                .get(format!("{url}/stream"))
                .bearer_auth(&follower.key)
                .send()
                .await?;
            let mut seen = String::new();
            loop {
                let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
                    .await
                    .context("no event within 30 s")??;
                let Some(chunk) = chunk else {
                    bail!("stream of {id} closed before its final state: {seen}");
                };
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("video.generation.completed") {
                    break omnigate::store::now_ms();
                }
            }
        }
        Follow::Wait => loop {
            let t: Value = client
                .get(&url)
                .bearer_auth(&follower.key)
                .header("prefer", "wait=30")
                .send()
                .await?
                .json()
                .await?;
            if t["status"] == "completed" {
                break omnigate::store::now_ms();
            }
        },
    };
    Ok((id, got_at))
}
