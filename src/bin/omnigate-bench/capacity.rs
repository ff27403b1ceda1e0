//! `omnigate-bench --capacity`: issue 20's measurements of the admission queue, against
//! fake providers that enforce a real cap (`capacity_fake.rs`): a cheaper Kling-dialect
//! reseller capped at 20 running tasks and a pricier modellix one capped at 10 (the
//! spill). Three keys of equal weight burst 1,000, 100 and 10 tasks (`a` first, then `b`
//! and `c` together while `a`'s wait). Four runs, each on its own PostgreSQL database:
//!
//! - **one gateway**: cap violations, utilization while tasks wait, dispatch latency,
//!   fairness, and the picture of the burst;
//! - **two gateways** sharing the database, the creates split between them: violations;
//! - **kill -9**: one gateway and the reseller alone; the gateway is killed with SIGKILL
//!   mid-burst and started again; every task must finish, none accepted twice;
//! - **a long queue**: `--capacity-waiting` tasks written straight into the queue, then
//!   the cost of a create that waits and of a dispatch, against the same with the queue
//!   empty.
//!
//! "A slot frees" when omnigate learns that a task ended, which the fake sees as the first
//! status answer showing it finished: the reseller calls omnigate back when a task ends
//! (omnigate re-reads the task at its next poller tick, `poller.tick_ms = 50` here), and
//! modellix, which has no callbacks, is polled every 100 ms. Dispatch latency is from that
//! answer to the next create arriving at the same provider.

#[path = "capacity_fake.rs"]
mod fake;
#[path = "capacity_figures.rs"]
mod figures;
#[path = "capacity_report.rs"]
mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use super::{
    create_key, free_port, serve_omnigate, signal, Database, Proc, RunArgs, StoreKind,
    UPSTREAM_KEY_ENV,
};
use fake::{Dialect, Fake, Seen};
use figures::{accepted_twice, dispatch_latencies, first_full, starts, utilization};

const RESELLER_CAP: usize = 20;
const SPILL_CAP: usize = 10;
const KEYS: [&str; 3] = ["a", "b", "c"];
/// Creates each key has in flight at once during a burst.
const CREATE_CONCURRENCY: usize = 8;
/// The store's virtual time per task of a weight-1 key (`store/queue.rs`), for the tasks
/// the long-queue run writes straight into the queue.
const QUEUE_TAG_STEP: i64 = 1_000_000;

/// The sizes of one run of this mode.
struct Params {
    task_secs: f64,
    bursts: [usize; 3],
    waiting: u64,
    /// Creates that wait, and dispatches, measured in each long-queue phase.
    flat_creates: usize,
    flat_dispatches: usize,
}

impl Params {
    fn new(args: &RunArgs) -> Params {
        let smoke = args.smoke;
        Params {
            task_secs: args.capacity_task_secs,
            bursts: if smoke {
                [100, 30, 10]
            } else {
                [1000, 100, 10]
            },
            waiting: args.capacity_waiting,
            flat_creates: if smoke { 40 } else { 200 },
            flat_dispatches: if smoke { 20 } else { 100 },
        }
    }

    fn total(&self) -> usize {
        self.bursts.iter().sum()
    }

    /// Long enough for the whole burst on the reseller alone, three times over, plus the
    /// dispatch lease a killed gateway leaves behind.
    fn burst_timeout(&self) -> Duration {
        let rounds = self.total().div_ceil(RESELLER_CAP) as f64;
        Duration::from_secs_f64(rounds * self.task_secs * 3.0 + 90.0)
    }
}

// ---------------------------------------------------------------------------------------
// Gateways on the fakes.

struct Gateway {
    proc: Proc,
    base: String,
    name: String,
    config: PathBuf,
}

/// Writes gateway `name`'s config on `db` against the fakes at `fake_port` (with the
/// spill provider when `spill`); returns its path and base URL.
fn write_config(
    args: &RunArgs,
    db: &Database,
    dir: &Path,
    name: &str,
    fake_port: u16,
    spill: bool,
) -> anyhow::Result<(PathBuf, String)> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let fake = format!("http://127.0.0.1:{fake_port}");
    let spill = if spill {
        format!(
            "[providers.spill]\ndialect = \"modellix\"\nbase_url = \"{fake}\"\napi_key_env = \"{UPSTREAM_KEY_ENV}\"\n\
             models = [\"kling-v3-omni\"]\npoll_interval_secs = 0.1\nmax_in_flight = {SPILL_CAP}\n\
             [providers.spill.prices.kling-v3-omni]\nstd = 0.0700\npro = 0.0950\n"
        )
    } else {
        String::new()
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"{url}\"\nmax_connections = {pool}\n\n\
         [sandbox]\nenabled = \"never\"\n\n\
         # The reseller calls back when a task ends; omnigate re-reads it at its next poller tick.\n\
         [webhooks]\nallow_private_targets = true\npublic_base_url = \"{base}\"\ncallback_poll_interval_secs = 1.0\n\n\
         [poller]\ntick_ms = 50\n\n[queue]\ndefault_max_queued = 1000000\n\n[routing]\nwhen_full = \"spill\"\n\n\
         [providers.reseller]\ndialect = \"kling\"\nbase_url = \"{fake}\"\napi_key_env = \"{UPSTREAM_KEY_ENV}\"\n\
         models = [\"kling-v3-omni\"]\npath_prefix = \"/kling\"\npoll_interval_secs = 1.0\nmax_in_flight = {RESELLER_CAP}\n\
         [providers.reseller.prices.kling-v3-omni]\nstd = 0.0633\npro = 0.0853\n\n{spill}",
        url = db.url,
        pool = args.pool,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    Ok((path, base))
}

async fn start_gateway(
    args: &RunArgs,
    dir: &Path,
    name: &str,
    config: PathBuf,
    base: String,
) -> anyhow::Result<Gateway> {
    let proc = serve_omnigate(args, dir, name, &config, &base).await?;
    Ok(Gateway {
        proc,
        base,
        name: name.to_string(),
        config,
    })
}

// ---------------------------------------------------------------------------------------
// Creates.

/// One create the bench sent, on the fake's clock.
#[derive(Debug, Clone)]
struct Created {
    label: String,
    /// When the answer came.
    at: f64,
    latency_ms: f64,
    /// Answered 202 with a `queue` object: it waits in omnigate.
    waited: bool,
    ok: bool,
}

/// to the next of `bases` in turn.
async fn send_creates(
    client: &reqwest::Client,
    bases: &[String],
    key: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
    fake: &Fake,
) -> Vec<Created> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let label = format!("{prefix}-{i}");
            let body = json!({"model": "kling-v3-omni", "prompt": format!("capbench {label}"),
                "aspect_ratio": "16:9", "duration": 5, "mode": "std"});
            let sent = fake.now();
            let answer = client
                .post(format!("{}/v1/video/generations", bases[i % bases.len()]))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await;
            let (ok, waited) = match answer {
                Ok(r) if r.status().as_u16() == 202 => {
                    let v: Value = r.json().await.unwrap_or_default();
                    (true, v["queue"].is_object())
                }
                Ok(r) => {
                    eprintln!(
                        "    create {label}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    (false, false)
                }
                Err(e) => {
                    eprintln!("    create {label}: {e}");
                    (false, false)
                }
            };
            let at = fake.now();
            Created {
                label,
                at,
                latency_ms: (at - sent) * 1000.0,
                waited,
                ok,
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The burst: all of `a`'s creates, then `b`'s and `c`'s together (while `a`'s wait).
async fn burst(p: &Params, bases: &[String], keys: &[String], fake: &Fake) -> Vec<Created> {
    let client = reqwest::Client::new();
    let mut all = send_creates(
        &client,
        bases,
        &keys[0],
        KEYS[0],
        p.bursts[0],
        CREATE_CONCURRENCY,
        fake,
    )
    .await;
    let (b, c) = tokio::join!(
        send_creates(
            &client,
            bases,
            &keys[1],
            KEYS[1],
            p.bursts[1],
            CREATE_CONCURRENCY,
            fake
        ),
        send_creates(
            &client,
            bases,
            &keys[2],
            KEYS[2],
            p.bursts[2],
            CREATE_CONCURRENCY,
            fake
        ),
    );
    all.extend(b);
    all.extend(c);
    all
}

/// Waits until every task of the store has ended (or `within` passes); returns the
/// count of each state.
async fn wait_all_ended(db: &Database, within: Duration) -> anyhow::Result<Vec<(String, i64)>> {
    let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
    let deadline = Instant::now() + within;
    loop {
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state")
                .fetch_all(&mut conn)
                .await?;
        let open = states
            .iter()
            .any(|(s, _)| !matches!(s.as_str(), "completed" | "failed" | "cancelled"));
        if !open || Instant::now() > deadline {
            return Ok(states);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count_state(states: &[(String, i64)], state: &str) -> i64 {
    states
        .iter()
        .find(|(s, _)| s == state)
        .map_or(0, |(_, n)| *n)
}

// The burst, on one or two gateways.

struct BurstFigures {
    gateways: usize,
    created: Vec<Created>,
    states: Vec<(String, i64)>,
    reseller: Seen,
    spill: Seen,
    /// When the first create was sent, on the fakes' clock.
    started: f64,
    secs: f64,
}

impl BurstFigures {
    fn violations(&self) -> u64 {
        self.reseller.over_cap + self.spill.over_cap
    }

    fn started(&self) -> HashMap<String, f64> {
        starts(&[&self.reseller, &self.spill])
    }

    /// When the last waiting task started: until then tasks wait.
    fn queue_drained(&self) -> f64 {
        self.reseller
            .tasks
            .iter()
            .chain(&self.spill.tasks)
            .map(|t| t.start)
            .fold(0.0, f64::max)
    }

    fn utilization(&self, seen: &Seen) -> f64 {
        match first_full(seen) {
            Some(from) => utilization(seen, from, self.queue_drained()),
            None => f64::NAN,
        }
    }

    fn dispatch_latencies(&self) -> Vec<f64> {
        let until = self.queue_drained();
        let mut all = dispatch_latencies(&self.reseller, 0.0, until);
        all.extend(dispatch_latencies(&self.spill, 0.0, until));
        all
    }

    fn lost(&self) -> i64 {
        let created = self.created.iter().filter(|c| c.ok).count() as i64;
        created - count_state(&self.states, "completed")
    }
}

async fn measure_burst(
    args: &RunArgs,
    dir: &Path,
    p: &Params,
    gateways: usize,
) -> anyhow::Result<BurstFigures> {
    let tag = format!("capburst{gateways}");
    let db = Database::create(args, StoreKind::Postgres, dir, &tag).await?;
    let result = async {
        let fake = Fake::new(Instant::now(), p.task_secs, RESELLER_CAP, SPILL_CAP);
        let fake_port = fake.serve().await?;
        let mut gws = Vec::new();
        let mut keys = Vec::new();
        for g in 0..gateways {
            let name = format!("omnigate-capacity-{gateways}gw-{g}");
            let (config, base) = write_config(args, &db, dir, &name, fake_port, true)?;
            if g == 0 {
                for key in KEYS {
                    keys.push(create_key(args, &config, key).await?);
                }
            }
            gws.push(start_gateway(args, dir, &name, config, base).await?);
        }
        let bases: Vec<String> = gws.iter().map(|g| g.base.clone()).collect();
        eprintln!(
            "  capacity, {gateways} gateway(s): bursts {:?}, {} s per task",
            p.bursts, p.task_secs
        );
        let started = fake.now();
        let created = burst(p, &bases, &keys, &fake).await;
        let states = wait_all_ended(&db, p.burst_timeout()).await?;
        let secs = fake.now() - started;
        for g in gws {
            g.proc.stop().await;
        }
        Ok(BurstFigures {
            gateways,
            created,
            states,
            reseller: fake.seen(Dialect::Kling),
            spill: fake.seen(Dialect::Modellix),
            started,
            secs,
        })
    }
    .await;
    db.drop_it(args).await;
    result
}

// ---------------------------------------------------------------------------------------
// kill -9 mid-burst.

struct CrashFigures {
    created: usize,
    killed_after: usize,
    restart_secs: f64,
    states: Vec<(String, i64)>,
    lost: i64,
    twice: usize,
    never_seen: usize,
    duplicate_ids: u64,
    violations: u64,
    secs: f64,
}

async fn measure_crash(args: &RunArgs, dir: &Path, p: &Params) -> anyhow::Result<CrashFigures> {
    let db = Database::create(args, StoreKind::Postgres, dir, "capcrash").await?;
    let result = async {
        let fake = Fake::new(Instant::now(), p.task_secs, RESELLER_CAP, SPILL_CAP);
        let fake_port = fake.serve().await?;
        let name = "omnigate-capacity-crash";
        let (config, base) = write_config(args, &db, dir, name, fake_port, false)?;
        let mut keys = Vec::new();
        for key in KEYS {
            keys.push(create_key(args, &config, key).await?);
        }
        let gw = start_gateway(args, dir, name, config, base).await?;
        eprintln!(
            "  capacity, kill -9: bursts {:?} on the reseller alone",
            p.bursts
        );
        let started = fake.now();
        let created = burst(p, std::slice::from_ref(&gw.base), &keys, &fake).await;
        let total = created.iter().filter(|c| c.ok).count();
        // Mid-burst: with about 40% of the tasks started and the rest waiting.
        let deadline = Instant::now() + p.burst_timeout();
        while fake.accepted() < total * 2 / 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let killed_after = fake.accepted();
        let Gateway {
            mut proc,
            base,
            name,
            config,
        } = gw;
        if let Some(pid) = proc.pid() {
            signal(pid, "KILL");
        }
        let _ = proc.child.wait().await;
        let killed = Instant::now();
        let restarted =
            start_gateway(args, dir, &format!("{name}-restarted"), config, base).await?;
        let restart_secs = killed.elapsed().as_secs_f64();
        eprintln!(
            "    killed with {killed_after} of {total} tasks started; restarted in {restart_secs:.1} s"
        );
        let states = wait_all_ended(&db, p.burst_timeout()).await?;
        let secs = fake.now() - started;
        restarted.proc.stop().await;
        let seen = fake.seen(Dialect::Kling);
        let at_fake = starts(&[&seen]);
        Ok(CrashFigures {
            created: total,
            killed_after,
            restart_secs,
            lost: total as i64 - count_state(&states, "completed"),
            states,
            twice: accepted_twice(&[&seen]),
            never_seen: created
                .iter()
                .filter(|c| c.ok && !at_fake.contains_key(&c.label))
                .count(),
            duplicate_ids: seen.duplicate_ids,
            violations: seen.over_cap,
            secs,
        })
    }
    .await;
    db.drop_it(args).await;
    result
}

// ---------------------------------------------------------------------------------------
// A long queue against an empty one.

struct FlatFigures {
    waiting: u64,
    create_ms: Vec<f64>,
    dispatch_ms: Vec<f64>,
}

/// Writes `n` waiting tasks of key `x` straight into the queue (as the scale mode fills
/// the poller's table), spaced in fair-share time as `n` creates of one key would be.
async fn fill_queue(db: &Database, n: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
    let key: String = sqlx::query_scalar("SELECT id FROM api_keys WHERE name = 'x'")
        .fetch_one(&mut conn)
        .await?;
    let now = omnigate::store::now_ms();
    let body = r#"{"model":"kling-v3-omni","prompt":"capbench x-@N","aspect_ratio":"16:9","duration":5,"mode":"std"}"#;
    sqlx::query(
        "INSERT INTO tasks (id, api_key_id, model, request, state, progress, cost_estimated_micros, \
         routing_reason, created_at, updated_at, next_poll_at, queue_tag, queue_priority, \
         waiting_since, max_wait_until) \
         SELECT 'vgt_capwait_' || n, $2, 'kling-v3-omni', replace($3, '@N', n::text), 'waiting', 0, \
         316500, 'bench', $4, $4, $4, n * $5, 1, $4, $4 + 86400000 FROM generate_series(1, $1) AS s(n)",
    )
    .bind(n as i64)
    .bind(&key)
    .bind(body)
    .bind(now)
    .bind(QUEUE_TAG_STEP)
    .execute(&mut conn)
    .await
    .context("writing the waiting tasks")?;
    sqlx::query("UPDATE api_keys SET queued = $1, queue_tag = $1 * $2 WHERE id = $3")
        .bind(n as i64)
        .bind(QUEUE_TAG_STEP)
        .bind(&key)
        .execute(&mut conn)
        .await?;
    conn.execute("VACUUM (ANALYZE) tasks").await?;
    conn.execute("CHECKPOINT").await?;
    eprintln!(
        "    {n} waiting tasks written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn measure_flat(
    args: &RunArgs,
    dir: &Path,
    p: &Params,
    waiting: u64,
) -> anyhow::Result<FlatFigures> {
    let db = Database::create(args, StoreKind::Postgres, dir, &format!("capflat{waiting}")).await?;
    let result = async {
        let fake = Fake::new(Instant::now(), p.task_secs, RESELLER_CAP, SPILL_CAP);
        let fake_port = fake.serve().await?;
        let name = format!("omnigate-capacity-queue{waiting}");
        let (config, base) = write_config(args, &db, dir, &name, fake_port, false)?;
        let key = create_key(args, &config, "a").await?;
        create_key(args, &config, "x").await?;
        eprintln!("  capacity, {waiting} tasks waiting");
        if waiting > 0 {
            fill_queue(&db, waiting).await?;
        }
        let gw = start_gateway(args, dir, &name, config, base).await?;
        if waiting > 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while fake.running(Dialect::Kling) < RESELLER_CAP && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let client = reqwest::Client::new();
        let created = send_creates(
            &client,
            std::slice::from_ref(&gw.base),
            &key,
            "a",
            p.flat_creates,
            4,
            &fake,
        )
        .await;
        let mark = fake.now();
        let deadline = Instant::now() + p.burst_timeout();
        let dispatched = |fake: &Fake| {
            let seen = fake.seen(Dialect::Kling);
            seen.tasks.iter().filter(|t| t.start > mark).count()
        };
        // Only tasks that waited are dispatched after the creates (a slow build may have
        // started most of them on the create path).
        let wanted = p
            .flat_dispatches
            .min(created.iter().filter(|c| c.waited).count() + waiting as usize);
        while dispatched(&fake) < wanted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw.proc.stop().await;
        let seen = fake.seen(Dialect::Kling);
        let last_start = seen.tasks.iter().map(|t| t.start).fold(0.0, f64::max);
        Ok(FlatFigures {
            waiting,
            create_ms: created
                .iter()
                .filter(|c| c.waited)
                .map(|c| c.latency_ms)
                .collect(),
            dispatch_ms: dispatch_latencies(&seen, mark, last_start),
        })
    }
    .await;
    db.drop_it(args).await;
    result
}

// ---------------------------------------------------------------------------------------

pub async fn run(args: &RunArgs, dir: &Path) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let p = Params::new(args);
    let one = measure_burst(args, dir, &p, 1).await?;
    let two = measure_burst(args, dir, &p, 2).await?;
    let crash = measure_crash(args, dir, &p).await?;
    let empty = measure_flat(args, dir, &p, 0).await?;
    let full = measure_flat(args, dir, &p, p.waiting).await?;
    report::print_capacity(args, &p, &one, &two, &crash, &[empty, full]);
    report::print_picture(&one, p.task_secs);
    // Speed is for the reader to judge; these are wrong at any speed.
    for b in [&one, &two] {
        if b.violations() > 0 {
            bail!(
                "{} creates reached a fake provider at its cap ({} gateway(s))",
                b.violations(),
                b.gateways
            );
        }
        if b.lost() != 0 {
            bail!(
                "{} of the burst's tasks did not complete ({} gateway(s)): {:?}",
                b.lost(),
                b.gateways,
                b.states
            );
        }
    }
    if crash.violations > 0 || crash.lost != 0 || crash.twice > 0 || crash.never_seen > 0 {
        bail!(
            "after kill -9: {} over the cap, {} not completed, {} accepted twice, {} never submitted ({:?})",
            crash.violations,
            crash.lost,
            crash.twice,
            crash.never_seen,
            crash.states
        );
    }
    Ok(())
}
