//! `--prefill`: create and read figures of a store holding many finished tasks and provider
//! outcomes, next to the same store empty; and the bulk load that fills it.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use sqlx::{Connection, Executor};

use super::children::Proc;
use super::disk::Fsyncs;
use super::gateway::{start_omnigate, Database, CREATE_BODY};
use super::latency::reads;
use super::oha::{oha, Load, Target};
use super::table::{cell, machine, print_rows};
use super::{RunArgs, StoreKind};

/// `--prefill`: each store empty and pre-filled, create latency and reads/s compared.
pub(crate) async fn run(
    args: &RunArgs,
    dir: &Path,
    upstream_proc: Proc,
    upstream: u16,
    fsyncs: &Fsyncs,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &kind in &args.stores {
        rows.extend(measure_prefill(args, kind, dir, upstream).await?);
    }
    print_prefill(args, &rows);
    println!("{fsyncs}");
    upstream_proc.stop().await;
    Ok(())
}

/// Writes `prefill_tasks` finished tasks of the bench key and `prefill_outcomes` provider
/// outcomes inside the health window, straight into the store.
pub(crate) async fn fill(args: &RunArgs, db: &Database) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let started = Instant::now();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
    let key_id: String = sqlx::query_scalar("SELECT id FROM api_keys LIMIT 1")
        .fetch_one(&mut conn)
        .await?;
    let now = omnigate::store::now_ms();
    let (series, n) = match db.kind {
        StoreKind::Postgres => ("generate_series(1, $1) AS s(n)", "n"),
        StoreKind::Sqlite => ("s", "n"),
    };
    let with = match db.kind {
        StoreKind::Postgres => "",
        StoreKind::Sqlite => {
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $1) "
        }
    };
    let request = CREATE_BODY.replace('\'', "''");
    let tasks = format!(
        "{with}INSERT INTO tasks (id, api_key_id, model, request, state, progress, provider, \
         provider_task_id, result, cost_estimated_micros, cost_final_micros, routing_reason, \
         created_at, updated_at, completed_at, next_poll_at) \
         SELECT 'vgt_prefill_' || {n}, $2, 'kling-v3-omni', '{request}', 'completed', 100, 'fake', \
         'fake_prefill_' || {n}, '{{\"videos\":[{{\"url\":\"https://example.invalid/v.mp4\"}}]}}', 316500, 316500, \
         'prefill', $3 - {n}, $3 - {n}, $3 - {n}, $3 - {n} FROM {series}"
    );
    sqlx::query(&tasks)
        .bind(args.prefill_tasks as i64)
        .bind(&key_id)
        .bind(now)
        .execute(&mut conn)
        .await
        .context("pre-filling tasks")?;
    let tables: Vec<String> = match db.kind {
        StoreKind::Postgres => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        ),
        StoreKind::Sqlite => {
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    }
    .fetch_all(&mut conn)
    .await?;
    // Outcomes spread over the last 200 s (inside the default 300 s window), one in ten a
    // failure, in whichever shape this version of omnigate stores them.
    if tables.iter().any(|t| t == "provider_outcomes") {
        let sql = format!(
            "{with}INSERT INTO provider_outcomes (provider, phase, ok, error_code, latency_ms, at) \
             SELECT 'fake', CASE WHEN {n} % 2 = 0 THEN 'submit' ELSE 'poll' END, \
             CASE WHEN {n} % 10 = 0 THEN 0 ELSE 1 END, NULL, 1, $2 - ({n} * 200000 / $1) FROM {series}"
        );
        sqlx::query(&sql)
            .bind(args.prefill_outcomes as i64)
            .bind(now)
            .execute(&mut conn)
            .await
            .context("pre-filling outcomes")?;
    }
    if tables.iter().any(|t| t == "provider_health_buckets") {
        // One-second buckets of both phases over the last 200 s holding the same outcomes.
        let per_bucket = (args.prefill_outcomes / 400).max(1) as i64;
        let fails = per_bucket / 10;
        let sql = format!(
            "{with}INSERT INTO provider_health_buckets (provider, phase, bucket_start, instance, \
             ok, failed, latency_sum_ms, latency_hist) \
             SELECT 'fake', CASE WHEN {n} % 2 = 0 THEN 'submit' ELSE 'poll' END, \
             ($2 / 1000 - ({n} + 1) / 2) * 1000, 'prefill', $3, $4, $3 + $4, '' FROM {series}"
        );
        sqlx::query(&sql)
            .bind(400i64)
            .bind(now)
            .bind(per_bucket - fails)
            .bind(fails)
            .execute(&mut conn)
            .await
            .context("pre-filling outcome buckets")?;
    }
    // A store that grew to this size over months has been vacuumed and checkpointed; one
    // bulk-loaded a second ago would spend the measurement setting hint bits and flushing
    // the load's WAL, which is the bulk load's cost, not the size's.
    match db.kind {
        StoreKind::Postgres => {
            conn.execute("VACUUM (ANALYZE)").await?;
            conn.execute("CHECKPOINT").await?;
        }
        StoreKind::Sqlite => {
            conn.execute("ANALYZE").await?;
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
        }
    }
    eprintln!(
        "  pre-filled {} tasks and {} outcomes in {:.0} s",
        args.prefill_tasks,
        args.prefill_outcomes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Windows each store is measured in by `--prefill`. One commit that waits on a stalled
/// disk (hundreds of ms, see `disk.rs`) sets the p99 of a 10 s window at 100/s, so
/// the window with the median p99 (and the median reads/s) is reported.
pub(crate) const PREFILL_WINDOWS: usize = 3;

/// The run whose `key` is the median of `runs` (not empty).
pub(crate) fn median_by(mut runs: Vec<Load>, key: impl Fn(&Load) -> f64) -> Load {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Empty against pre-filled store: create latency at the first rate and reads/s.
pub(crate) async fn measure_prefill(
    args: &RunArgs,
    kind: StoreKind,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<Vec<(String, Load, Load, Option<f64>)>> {
    let mut rows = Vec::new();
    for (label, prefill) in [("empty", false), ("pre-filled", true)] {
        let db = Database::create(args, kind, dir, if prefill { "full" } else { "empty" }).await?;
        let result = async {
            eprintln!("  {} {label}", kind.label());
            let og = start_omnigate(args, &db, dir, upstream, prefill).await?;
            let create = Target {
                url: format!("{}/v1/video/generations", og.base),
                key: Some(&og.key),
                expect: 202,
                post: true,
            };
            oha(args, &create, 1, Some(50)).await?;
            let rate = args.rates.first().copied().unwrap_or(100);
            let mut creates = Vec::new();
            let mut reads_runs = Vec::new();
            for _ in 0..PREFILL_WINDOWS {
                creates.push(oha(args, &create, args.rate_secs, Some(rate)).await?);
                reads_runs.push(reads(args, &og, &db).await?);
            }
            let errors = creates.iter().chain(&reads_runs).map(|l| l.errors).sum();
            let c = Load {
                errors,
                ..median_by(creates, |l| l.p99_ms)
            };
            let r = Load {
                errors: 0,
                ..median_by(reads_runs, |l| l.ok_per_sec)
            };
            let rss = og.proc.peak_rss_mib();
            og.proc.stop().await;
            anyhow::Ok((format!("{} {label}", kind.label()), c, r, rss))
        }
        .await;
        db.drop_it(args).await;
        rows.push(result?);
    }
    Ok(rows)
}

pub(crate) fn print_prefill(args: &RunArgs, rows: &[(String, Load, Load, Option<f64>)]) {
    let rate = args.rates.first().copied().unwrap_or(100);
    println!(
        "\nomnigate-bench --prefill, {}; {} tasks + {} outcomes vs empty; {} s at {rate}/s; \
         each store measured in {PREFILL_WINDOWS} windows, the median shown",
        machine(),
        args.prefill_tasks,
        args.prefill_outcomes,
        args.rate_secs
    );
    let header: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let table = vec![
        (
            format!("create p50 @{rate}/s (ms)"),
            rows.iter().map(|r| cell(Some(r.1.p50_ms), 2)).collect(),
        ),
        (
            format!("create p99 @{rate}/s (ms)"),
            rows.iter().map(|r| cell(Some(r.1.p99_ms), 2)).collect(),
        ),
        (
            "status reads/s".into(),
            rows.iter().map(|r| cell(Some(r.2.ok_per_sec), 0)).collect(),
        ),
        (
            "status read p50 (ms)".into(),
            rows.iter().map(|r| cell(Some(r.2.p50_ms), 2)).collect(),
        ),
        (
            "peak RSS (MiB)".into(),
            rows.iter().map(|r| cell(r.3, 1)).collect(),
        ),
        (
            "errors".into(),
            rows.iter()
                .map(|r| (r.1.errors + r.2.errors).to_string())
                .collect(),
        ),
    ];
    print_rows("", &header, &table);
    for pair in rows.chunks(2) {
        if let [empty, full] = pair {
            println!(
                "{}: pre-filled/empty create p50 {:.2}x, p99 {:.2}x, reads/s {:.2}x",
                full.0,
                full.1.p50_ms / empty.1.p50_ms,
                full.1.p99_ms / empty.1.p99_ms,
                full.2.ok_per_sec / empty.2.ok_per_sec
            );
        }
    }
}
