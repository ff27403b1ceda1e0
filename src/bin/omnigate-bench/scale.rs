//! `omnigate-bench --scale`: what one machine's omnigate follows and delivers, rather than
//! how fast it answers. Three measurements, each on its own PostgreSQL database:
//!
//! - **poller**: `--scale-tasks` unfinished tasks written straight into the store, all due
//!   at once (a gateway coming back after downtime), then omnigate polling them against the
//!   fake upstream for `--scale-secs`. The fake upstream counts every status query and
//!   every query that came sooner than one poll interval after the task's previous one; the
//!   oldest due task's lag is sampled from the store once a second.
//! - **webhooks**: `--scale-events` pending client webhook events of finished tasks, then
//!   omnigate delivering them to a receiver in the fake upstream.
//! - **replicas**: creates at saturation against one gateway, then against two gateway
//!   processes sharing the database and Redis, each driven by its own load tool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use super::{
    free_port, machine, oha, print_rows, serve_omnigate, Database, Omnigate, RunArgs, StoreKind,
    Target, CREATE_BODY, UPSTREAM_KEY_ENV,
};

// ---------------------------------------------------------------------------------------
// What the fake upstream counts.

/// Status queries and client webhook deliveries the fake upstream saw.
#[derive(Default)]
pub struct Counts {
    queries: AtomicU64,
    too_soon: AtomicU64,
    deliveries: AtomicU64,
    /// When each task was last queried (ms), to find a second query within one interval.
    last_query: Mutex<std::collections::HashMap<String, i64>>,
}

impl Counts {
    /// Counts a status query of `task` at `now_ms`; `min_gap_ms` 0 checks no spacing.
    pub fn query(&self, task: &str, now_ms: i64, min_gap_ms: i64) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if min_gap_ms == 0 {
            return;
        }
        let mut last = self.last_query.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = last.insert(task.to_string(), now_ms) {
            if now_ms - before < min_gap_ms {
                self.too_soon.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn delivered(&self) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn json(&self) -> Value {
        let tasks = self
            .last_query
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        json!({
            "queries": self.queries.load(Ordering::Relaxed),
            "too_soon": self.too_soon.load(Ordering::Relaxed),
            "tasks": tasks,
            "deliveries": self.deliveries.load(Ordering::Relaxed),
        })
    }
}

async fn upstream_counts(upstream: u16) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("http://127.0.0.1:{upstream}/_counts"))
        .await?
        .json()
        .await?)
}

fn count(v: &Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// omnigate configured for one scale measurement.

/// Writes the config of omnigate `name` on `db`: the fake provider's table given
/// `provider_keys`, and `tables` appended.
pub(super) fn write_config(
    args: &RunArgs,
    db: &Database,
    dir: &Path,
    name: &str,
    upstream: u16,
    provider_keys: &str,
    tables: &str,
) -> anyhow::Result<PathBuf> {
    let port = free_port()?;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"{url}\"\nmax_connections = {pool}\n\n\
         [sandbox]\nenabled = \"never\"\n\n\
         [webhooks]\nallow_private_targets = true\n\n\
         [providers.fake]\ndialect = \"apimodels\"\nbase_url = \"http://127.0.0.1:{upstream}\"\n\
         api_key_env = \"{UPSTREAM_KEY_ENV}\"\nmodels = [\"kling-v3-omni\"]\n{provider_keys}\n\
         [providers.fake.prices.kling-v3-omni]\nstd = 0.0633\npro = 0.0853\n\n{tables}",
        url = db.url,
        pool = args.pool,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Starts omnigate `name` on the config `write_config` wrote.
pub(super) async fn serve(args: &RunArgs, dir: &Path, name: &str) -> anyhow::Result<Omnigate> {
    let config_path = dir.join(format!("{name}.toml"));
    let config = std::fs::read_to_string(&config_path)?;
    let listen = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .context("listen address in the config")?
        .to_string();
    let base = format!("http://{listen}");
    let proc = serve_omnigate(args, dir, name, &config_path, &base).await?;
    Ok(Omnigate {
        proc,
        base,
        key: String::new(),
    })
}

/// Creates the schema and a key with `omnigate keys create` on `config`; returns the key.
pub(super) async fn create_key(args: &RunArgs, config: &Path) -> anyhow::Result<String> {
    super::gateway::create_key(args, config, "bench").await
}

async fn key_id(conn: &mut sqlx::AnyConnection) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT id FROM api_keys LIMIT 1")
        .fetch_one(conn)
        .await?)
}

// ---------------------------------------------------------------------------------------
// The poller at scale.

pub struct PollerFigures {
    tasks: u64,
    interval_secs: f64,
    secs: f64,
    polls_per_sec: f64,
    /// Polls per task per interval, over the run (at most 1 by design).
    polls_per_task_interval: f64,
    too_soon: u64,
    tasks_polled: u64,
    max_lag_secs: f64,
    last_interval_max_lag_secs: f64,
    rss_mib: Option<f64>,
}

async fn measure_poller(
    args: &RunArgs,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<PollerFigures> {
    let db = Database::create(args, StoreKind::Postgres, dir, "scalepoll").await?;
    let result = async {
        let name = "omnigate-scale-poller";
        let extra = format!("poll_interval_secs = {}", args.scale_interval_secs);
        let config = write_config(args, &db, dir, name, upstream, &extra, "")?;
        create_key(args, &config).await?;
        let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
        let key = key_id(&mut conn).await?;
        let now = omnigate::store::now_ms();
        let started = Instant::now();
        sqlx::query(
            "INSERT INTO tasks (id, api_key_id, model, request, state, progress, provider, \
             provider_task_id, cost_estimated_micros, routing_reason, created_at, updated_at, next_poll_at) \
             SELECT 'vgt_scale_' || n, $2, 'kling-v3-omni', $3, 'in_progress', 10, 'fake', \
             'fake_scale_' || n, 316500, 'scale', $4, $4, $4 FROM generate_series(1, $1) AS s(n)",
        )
        .bind(args.scale_tasks as i64)
        .bind(&key)
        .bind(CREATE_BODY)
        .bind(now)
        .execute(&mut conn)
        .await
        .context("writing the unfinished tasks")?;
        conn.execute("VACUUM (ANALYZE) tasks").await?;
        eprintln!(
            "  poller: {} unfinished tasks written in {:.1} s, all due now",
            args.scale_tasks,
            started.elapsed().as_secs_f64()
        );
        let before = upstream_counts(upstream).await?;
        let og = serve(args, dir, name).await?;
        let started = Instant::now();
        let interval = Duration::from_secs_f64(args.scale_interval_secs);
        let mut lags: Vec<(Duration, f64)> = Vec::new();
        while started.elapsed() < Duration::from_secs(args.scale_secs) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let oldest: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(next_poll_at) FROM tasks WHERE state IN ('queued', 'in_progress')",
            )
            .fetch_one(&mut conn)
            .await?;
            let lag = oldest.map_or(0.0, |t| {
                ((omnigate::store::now_ms() - t) as f64 / 1000.0).max(0.0)
            });
            lags.push((started.elapsed(), lag));
        }
        let secs = started.elapsed().as_secs_f64();
        let after = upstream_counts(upstream).await?;
        let rss_mib = og.proc.peak_rss_mib();
        og.proc.stop().await;
        let queries = count(&after, "queries") - count(&before, "queries");
        let last_from = started.elapsed().saturating_sub(interval);
        let max = |from: Duration| {
            lags.iter()
                .filter(|(at, _)| *at >= from)
                .map(|(_, l)| *l)
                .fold(0.0, f64::max)
        };
        eprintln!(
            "    lag (s) each second: {:.1?}",
            lags.iter().map(|l| l.1).collect::<Vec<_>>()
        );
        Ok(PollerFigures {
            tasks: args.scale_tasks,
            interval_secs: args.scale_interval_secs,
            secs,
            polls_per_sec: queries as f64 / secs,
            polls_per_task_interval: queries as f64
                / (args.scale_tasks as f64 * secs / args.scale_interval_secs),
            too_soon: count(&after, "too_soon") - count(&before, "too_soon"),
            tasks_polled: count(&after, "tasks"),
            max_lag_secs: max(Duration::ZERO),
            last_interval_max_lag_secs: max(last_from),
            rss_mib,
        })
    }
    .await;
    db.drop_it(args).await;
    result
}

// ---------------------------------------------------------------------------------------
// Client webhook deliveries.

pub struct WebhookFigures {
    events: u64,
    delivered: u64,
    secs: f64,
    per_sec: f64,
}

async fn measure_webhooks(
    args: &RunArgs,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<WebhookFigures> {
    let db = Database::create(args, StoreKind::Postgres, dir, "scalehooks").await?;
    let result = async {
        // Tasks are finished: nothing is polled.
        let name = "omnigate-scale-webhooks";
        let config = write_config(args, &db, dir, name, upstream, "", "")?;
        create_key(args, &config).await?;
        let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
        let key = key_id(&mut conn).await?;
        let now = omnigate::store::now_ms();
        let url = format!("http://127.0.0.1:{upstream}/_receiver");
        sqlx::query(
            "INSERT INTO tasks (id, api_key_id, model, request, state, progress, provider, \
             provider_task_id, result, cost_estimated_micros, cost_final_micros, routing_reason, \
             created_at, updated_at, completed_at, next_poll_at, callback_url) \
             SELECT 'vgt_hook_' || n, $2, 'kling-v3-omni', $3, 'completed', 100, 'fake', \
             'fake_hook_' || n, '[{\"url\":\"https://example.invalid/v.mp4\"}]', 316500, 316500, \
             'scale', $4, $4, $4, $4, $5 FROM generate_series(1, $1) AS s(n)",
        )
        .bind(args.scale_events as i64)
        .bind(&key)
        .bind(CREATE_BODY)
        .bind(now)
        .bind(&url)
        .execute(&mut conn)
        .await
        .context("writing the finished tasks")?;
        sqlx::query(
            "INSERT INTO webhook_events (id, task_id, api_key_id, seq, type, url, progress, created_at, \
             state, next_attempt_at) \
             SELECT 'msg_scale_' || n, 'vgt_hook_' || n, $2, 0, 'video.generation.completed', $3, 100, \
             $4, 'pending', $4 FROM generate_series(1, $1) AS s(n)",
        )
        .bind(args.scale_events as i64)
        .bind(&key)
        .bind(&url)
        .bind(now)
        .execute(&mut conn)
        .await
        .context("writing the pending events")?;
        conn.execute("VACUUM (ANALYZE)").await?;
        eprintln!("  webhooks: {} pending events written", args.scale_events);
        let before = count(&upstream_counts(upstream).await?, "deliveries");
        let og = serve(args, dir, name).await?;
        let started = Instant::now();
        let deadline = Duration::from_secs(args.scale_secs.max(10) * 3);
        let mut delivered = 0;
        while delivered < args.scale_events && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            delivered = count(&upstream_counts(upstream).await?, "deliveries") - before;
        }
        let secs = started.elapsed().as_secs_f64();
        og.proc.stop().await;
        let recorded: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events WHERE state = 'delivered'")
                .fetch_one(&mut conn)
                .await?;
        if delivered < args.scale_events {
            eprintln!(
                "    only {delivered} of {} events delivered within {deadline:?}",
                args.scale_events
            );
        }
        eprintln!("    {recorded} events recorded delivered");
        Ok(WebhookFigures {
            events: args.scale_events,
            delivered,
            secs,
            per_sec: delivered as f64 / secs,
        })
    }
    .await;
    db.drop_it(args).await;
    result
}

// ---------------------------------------------------------------------------------------
// One gateway process against two sharing PostgreSQL and Redis.

pub struct ReplicaFigures {
    /// The machine's CPU busy (all cores, 0-100%) during each run.
    busy: (f64, f64),
    one: f64,
    two: (f64, f64),
    errors: u64,
    rss_mib: (Option<f64>, Option<f64>),
}

async fn measure_replicas(
    args: &RunArgs,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<ReplicaFigures> {
    let db = Database::create(args, StoreKind::Postgres, dir, "scalereplicas").await?;
    let result = async {
        // Shared rate limiting through Redis, at a limit no run reaches: each create pays
        // for the Redis round trip that several replicas need.
        let limits = format!(
            "[limits]\nredis_url = \"{}\"\ndefault_rpm = 100000000\nredis_prefix = \"omnigate-bench:{}:\"\n",
            args.redis_url,
            uuid::Uuid::new_v4().simple()
        );
        let polls = "poll_interval_secs = 3600.0";
        let names = ["omnigate-replica-a", "omnigate-replica-b"];
        for name in names {
            write_config(args, &db, dir, name, upstream, polls, &limits)?;
        }
        let key = create_key(args, &dir.join(format!("{}.toml", names[0]))).await?;
        let a = serve(args, dir, names[0]).await?;
        let target = |og: &Omnigate| Target {
            url: format!("{}/v1/video/generations", og.base),
            key: Some(&key),
            expect: 202,
            post: true,
        };
        let half = RunArgs {
            connections: (args.connections / 2).max(1),
            ..args.clone()
        };
        eprintln!("  replicas: one gateway, {} s at saturation", args.sat_secs);
        oha(args, &target(&a), 1, Some(50)).await?;
        let cpu = CpuTicks::now();
        let one = oha(args, &target(&a), args.sat_secs, None).await?;
        let busy_one = cpu.busy_percent_since();
        let b = serve(args, dir, names[1]).await?;
        oha(args, &target(&b), 1, Some(50)).await?;
        eprintln!(
            "  replicas: two gateways, {} s at saturation, {} connections each",
            args.sat_secs, half.connections
        );
        let (ta, tb) = (target(&a), target(&b));
        let cpu = CpuTicks::now();
        let (la, lb) = tokio::join!(
            oha(&half, &ta, args.sat_secs, None),
            oha(&half, &tb, args.sat_secs, None)
        );
        let busy_two = cpu.busy_percent_since();
        let (la, lb) = (la?, lb?);
        let rss_mib = (a.proc.peak_rss_mib(), b.proc.peak_rss_mib());
        a.proc.stop().await;
        b.proc.stop().await;
        Ok(ReplicaFigures {
            busy: (busy_one, busy_two),
            one: one.ok_per_sec,
            two: (la.ok_per_sec, lb.ok_per_sec),
            errors: one.errors + la.errors + lb.errors,
            rss_mib,
        })
    }
    .await;
    db.drop_it(args).await;
    result
}

/// The machine's CPU time so far (/proc/stat, all cores): busy and total ticks.
struct CpuTicks {
    busy: u64,
    total: u64,
}

impl CpuTicks {
    fn now() -> CpuTicks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        CpuTicks {
            busy: total - idle,
            total,
        }
    }

    fn busy_percent_since(&self) -> f64 {
        let now = CpuTicks::now();
        let total = now.total.saturating_sub(self.total).max(1);
        100.0 * now.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

// ---------------------------------------------------------------------------------------

pub async fn run(args: &RunArgs, dir: &Path, upstream: u16) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let poller = measure_poller(args, dir, upstream).await?;
    let hooks = measure_webhooks(args, dir, upstream).await?;
    let replicas = measure_replicas(args, dir, upstream).await?;
    print_scale(args, &poller, &hooks, &replicas);
    // Speed is for the reader to judge; a task polled twice within its interval is wrong
    // at any speed, and so is an event not delivered at all.
    if poller.too_soon > 0 {
        bail!(
            "{} status queries came sooner than one poll interval after the task's last",
            poller.too_soon
        );
    }
    if hooks.delivered < hooks.events {
        bail!(
            "{} of {} webhook events were delivered",
            hooks.delivered,
            hooks.events
        );
    }
    Ok(())
}

fn print_scale(args: &RunArgs, p: &PollerFigures, w: &WebhookFigures, r: &ReplicaFigures) {
    println!(
        "\nomnigate-bench --scale, {}; PostgreSQL, pool {}, {} connections",
        machine(),
        args.pool,
        args.connections
    );
    let two = r.two.0 + r.two.1;
    let mib = |m: Option<f64>| m.map_or("-".into(), |m| format!("{m:.1}"));
    let rows = vec![
        (
            format!(
                "poller: {} unfinished tasks, {} s interval, {:.0} s run",
                p.tasks, p.interval_secs, p.secs
            ),
            vec!["".into(), "".into()],
        ),
        (
            // One poll per task per interval at most, and the jitter makes the average
            // interval a little longer: keeping up is the lag's row, not this one.
            "  upstream polls/s (tasks / interval at most)".into(),
            vec![
                format!("{:.0}", p.polls_per_sec),
                format!("{:.0}", p.tasks as f64 / p.interval_secs),
            ],
        ),
        (
            "  polls per task per interval".into(),
            vec![format!("{:.2}", p.polls_per_task_interval), "<= 1".into()],
        ),
        (
            "  polls sooner than one interval".into(),
            vec![p.too_soon.to_string(), "0".into()],
        ),
        (
            "  tasks polled at least once".into(),
            vec![p.tasks_polled.to_string(), p.tasks.to_string()],
        ),
        (
            "  oldest task's lag, worst (s)".into(),
            vec![
                format!("{:.1}", p.max_lag_secs),
                format!("< {:.0}", 2.0 * p.interval_secs),
            ],
        ),
        (
            "  oldest task's lag, last interval (s)".into(),
            vec![
                format!("{:.1}", p.last_interval_max_lag_secs),
                format!("< {:.0}", 2.0 * p.interval_secs),
            ],
        ),
        (
            "  peak RSS (MiB)".into(),
            vec![mib(p.rss_mib), "< 300".into()],
        ),
        (
            format!("webhooks: {} pending events", w.events),
            vec!["".into(), "".into()],
        ),
        (
            "  deliveries/s".into(),
            vec![format!("{:.0}", w.per_sec), ">= 2000".into()],
        ),
        (
            "  delivered (time, s)".into(),
            vec![
                format!("{} ({:.1})", w.delivered, w.secs),
                w.events.to_string(),
            ],
        ),
        (
            format!("replicas: creates/s at saturation, {} s", args.sat_secs),
            vec!["".into(), "".into()],
        ),
        (
            "  one gateway".into(),
            vec![format!("{:.0}", r.one), "".into()],
        ),
        (
            "  two gateways, sharing PG and Redis".into(),
            vec![
                format!("{two:.0} ({:.0} + {:.0})", r.two.0, r.two.1),
                "".into(),
            ],
        ),
        (
            "  two / one".into(),
            vec![format!("{:.2}x", two / r.one), ">= 1.6x".into()],
        ),
        (
            "  machine CPU busy, one / two gateways (%)".into(),
            vec![format!("{:.0} / {:.0}", r.busy.0, r.busy.1), "".into()],
        ),
        (
            "  peak RSS per gateway (MiB)".into(),
            vec![
                format!("{} / {}", mib(r.rss_mib.0), mib(r.rss_mib.1)),
                "".into(),
            ],
        ),
        (
            "  errors (non-2xx, failed requests)".into(),
            vec![r.errors.to_string(), "0".into()],
        ),
    ];
    print_rows("", &["measured".into(), "target".into()], &rows);
}
