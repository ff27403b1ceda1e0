//! `omnigate-bench`: measures omnigate's create and read path on one machine against a fast
//! fake upstream (apimodels dialect), next to the same upstream called directly and
//! through nginx, and prints one table. `bench/run.sh` installs what it needs and runs it.
//!
//! Everything it starts (fake upstream, nginx, omnigate per store) is a child process that
//! is stopped when the run ends, fails or is interrupted; the PostgreSQL database and the
//! SQLite file it makes are removed unless `--keep` is given.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::Query;
use axum::routing::post;
use axum::Json;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tokio::process::{Child, Command};

// Their own files: the disk probe and the scale and capacity measurements share only the
// helpers above.
#[path = "omnigate-bench/capacity.rs"]
mod capacity;
#[path = "omnigate-bench/disk.rs"]
mod disk;
#[path = "omnigate-bench/live.rs"]
mod live;
#[path = "omnigate-bench/polls.rs"]
mod polls;
#[path = "omnigate-bench/scale.rs"]
mod scale;

#[derive(Parser)]
#[command(about = "Benchmark omnigate against a fake upstream, direct and through nginx")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Sub {
    /// Serve the fake apimodels upstream (what the benchmark starts as a child).
    #[command(hide = true)]
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Count a status query of a task sooner than this after its previous one.
        #[arg(long, default_value_t = 0)]
        min_gap_ms: i64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    fn label(self) -> &'static str {
        match self {
            StoreKind::Postgres => "omnigate PG",
            StoreKind::Sqlite => "omnigate SQLite",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
struct RunArgs {
    /// A quick pass over every measurement (about 30 s): checks the harness, not the numbers.
    #[arg(long, env = "BENCH_SMOKE")]
    smoke: bool,
    /// Pre-fill each store with `--prefill-tasks` tasks and `--prefill-outcomes` provider
    /// outcomes and compare create and read figures with the same store empty.
    #[arg(long, env = "BENCH_PREFILL")]
    prefill: bool,
    #[arg(long, env = "BENCH_PREFILL_TASKS", default_value_t = 1_000_000)]
    prefill_tasks: u64,
    #[arg(long, env = "BENCH_PREFILL_OUTCOMES", default_value_t = 100_000)]
    prefill_outcomes: u64,
    /// Instead of the latency table: the poller following `--scale-tasks` unfinished
    /// tasks, client webhook deliveries, and two gateway processes against one (PostgreSQL).
    #[arg(long, env = "BENCH_SCALE")]
    scale: bool,
    #[arg(long, env = "BENCH_SCALE_TASKS", default_value_t = 100_000)]
    scale_tasks: u64,
    /// The fake provider's poll interval in the poller measurement.
    #[arg(long, env = "BENCH_SCALE_INTERVAL_SECS", default_value_t = 10.0)]
    scale_interval_secs: f64,
    /// Seconds the poller is measured for.
    #[arg(long, env = "BENCH_SCALE_SECS", default_value_t = 60)]
    scale_secs: u64,
    #[arg(long, env = "BENCH_SCALE_EVENTS", default_value_t = 20_000)]
    scale_events: u64,
    /// Instead of the latency table: the admission queue against fake providers with a
    /// real cap (cap violations, utilization, dispatch latency, fairness, kill -9, a long
    /// queue); see `omnigate-bench/capacity.rs`.
    #[arg(long, env = "BENCH_CAPACITY")]
    capacity: bool,
    /// Seconds each task of the capacity fakes runs.
    #[arg(long, env = "BENCH_CAPACITY_TASK_SECS", default_value_t = 2.5)]
    capacity_task_secs: f64,
    /// Tasks waiting in the capacity mode's long-queue run.
    #[arg(long, env = "BENCH_CAPACITY_WAITING", default_value_t = 100_000)]
    capacity_waiting: u64,
    /// Instead of the latency table: how long a state change takes to reach a status
    /// stream and a held `Prefer: wait` read, on one gateway and across two.
    #[arg(long, env = "BENCH_LIVE")]
    live: bool,
    /// Tasks followed per live measurement.
    #[arg(long, env = "BENCH_LIVE_TASKS", default_value_t = 200)]
    live_tasks: u64,
    /// Instead of the latency table: status queries per finished task and how late omnigate
    /// notices the end, timed polls off then on (`omnigate-bench/polls.rs`).
    #[arg(long, env = "BENCH_POLLS")]
    polls: bool,
    #[arg(long, env = "BENCH_POLLS_TASKS", default_value_t = 2_000)]
    polls_tasks: u64,
    /// Task times (60-180 s) and the poll interval (10 s) are multiplied by this.
    #[arg(long, env = "BENCH_POLLS_SCALE", default_value_t = 1.0)]
    polls_scale: f64,
    /// Redis the two gateways of the replica measurement share.
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
    /// Seconds of each fixed-rate latency run.
    #[arg(long, env = "BENCH_RATE_SECS", default_value_t = 20)]
    rate_secs: u64,
    /// Seconds of the saturation run.
    #[arg(long, env = "BENCH_SAT_SECS", default_value_t = 20)]
    sat_secs: u64,
    /// Seconds of the sustained run per store (run as back-to-back slices).
    #[arg(long, env = "BENCH_SUSTAIN_SECS", default_value_t = 300)]
    sustain_secs: u64,
    /// Length of one slice of the sustained run; the first and last slices are reported.
    #[arg(long, env = "BENCH_SLICE_SECS", default_value_t = 60)]
    slice_secs: u64,
    /// Seconds of the status-read saturation run.
    #[arg(long, env = "BENCH_READ_SECS", default_value_t = 10)]
    read_secs: u64,
    /// Open connections of the load tool.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 32)]
    connections: u32,
    /// Fixed request rates of the latency runs.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500])]
    rates: Vec<u32>,
    /// Stores to measure omnigate on.
    #[arg(long, value_delimiter = ',', default_values_t = [StoreKind::Postgres, StoreKind::Sqlite], value_enum)]
    stores: Vec<StoreKind>,
    /// omnigate's database pool size.
    #[arg(long, env = "BENCH_POOL", default_value_t = 16)]
    pool: u32,
    /// The omnigate binary (default: next to this one).
    #[arg(long, env = "BENCH_OMNIGATE")]
    omnigate: Option<PathBuf>,
    #[arg(long, env = "BENCH_OHA", default_value = "oha")]
    oha: PathBuf,
    #[arg(long, env = "BENCH_NGINX", default_value = "nginx")]
    nginx: PathBuf,
    /// PostgreSQL to create the benchmark database in.
    #[arg(
        long,
        env = "BENCH_PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
    /// Where logs, configs and the SQLite file go (default: a new directory under target/bench).
    #[arg(long, env = "BENCH_DIR")]
    dir: Option<PathBuf>,
    /// omnigate's log filter during the run.
    #[arg(long, env = "BENCH_LOG", default_value = "warn")]
    log: String,
    /// Leave the databases behind.
    #[arg(long)]
    keep: bool,
}

impl RunArgs {
    fn apply_smoke(&mut self) {
        if self.smoke {
            self.rate_secs = 1;
            self.sat_secs = 1;
            self.sustain_secs = 2;
            self.slice_secs = 1;
            self.read_secs = 1;
            self.prefill_tasks = self.prefill_tasks.min(10_000);
            self.prefill_outcomes = self.prefill_outcomes.min(1_000);
            self.scale_tasks = self.scale_tasks.min(500);
            self.scale_interval_secs = self.scale_interval_secs.min(1.0);
            self.scale_secs = self.scale_secs.min(3);
            self.scale_events = self.scale_events.min(200);
            self.capacity_task_secs = self.capacity_task_secs.min(0.5);
            self.capacity_waiting = self.capacity_waiting.min(1_000);
            self.live_tasks = self.live_tasks.min(10);
            self.polls_tasks = self.polls_tasks.min(100);
            self.polls_scale = self.polls_scale.min(0.03);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // One worker thread: the upstream must stay out of omnigate's way on a small machine,
        // and one thread answers tens of thousands of these requests a second.
        Some(Sub::Upstream { listen, min_gap_ms }) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(serve_upstream(listen, min_gap_ms)),
        None => {
            let mut args = cli.run;
            args.apply_smoke();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?
                .block_on(async {
                    tokio::select! {
                        r = run(args) => r,
                        _ = tokio::signal::ctrl_c() => bail!("interrupted; children stopped"),
                    }
                })
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fake upstream: answers apimodels' create and status calls at once.

static NEXT_TASK: AtomicU64 = AtomicU64::new(1);
static COUNTS: std::sync::LazyLock<scale::Counts> = std::sync::LazyLock::new(Default::default);

async fn serve_upstream(listen: SocketAddr, min_gap_ms: i64) -> anyhow::Result<()> {
    let app = axum::Router::new()
        // What the scale measurements count: status queries and client webhook deliveries.
        .route(
            "/_counts",
            axum::routing::get(|| async { Json(COUNTS.json()) }),
        )
        .route(
            "/_receiver",
            post(|| async {
                COUNTS.delivered();
                "ok"
            }),
        )
        .route(
            "/api/v1/video/generations",
            post(|body: axum::body::Bytes| async move {
                let n = NEXT_TASK.fetch_add(1, Ordering::Relaxed);
                let id = format!("fake_{n}");
                live::note_create(&id, &body);
                Json(json!({"code": 200, "msg": "success",
                        "data": {"taskId": id, "state": "pending"}}))
            })
            .get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let id = q.get("task_id").cloned().unwrap_or_default();
                    let now = omnigate::store::now_ms();
                    COUNTS.query(&id, now, min_gap_ms);
                    if live::finished_by(&id, now) {
                        return Json(json!({"code": 200, "msg": "success", "data": {
                            "taskId": id, "state": "completed",
                            "resultUrls": [format!("https://example.invalid/{id}.mp4")]}}));
                    }
                    Json(json!({"code": 200, "msg": "success",
                            "data": {"taskId": id, "state": "processing", "progress": 50}}))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // The parent reads the port from this line.
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Children: stopped with SIGTERM (then SIGKILL) when dropped, so every exit path cleans up.

struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                eprintln!("{} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill().await;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.start_kill();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<Stdio> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?.into())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_http(url: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() < 500 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_upstream(dir: &Path, min_gap_ms: i64) -> anyhow::Result<(Proc, u16)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["upstream", "--listen", "127.0.0.1:0"])
        .arg(format!("--min-gap-ms={min_gap_ms}"))
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "upstream")?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the fake upstream")?;
    let stdout = child.stdout.take().context("upstream stdout")?;
    let proc = Proc {
        name: "fake upstream",
        child,
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("fake upstream did not start")??
        .context("fake upstream exited")?;
    let addr: SocketAddr = line
        .strip_prefix("listening ")
        .context("fake upstream's first line")?
        .parse()?;
    Ok((proc, addr.port()))
}

async fn start_nginx(args: &RunArgs, dir: &Path, upstream: u16) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    // One process (no master) so that stopping the child stops nginx; keep-alive to the
    // upstream as omnigate's HTTP client has.
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {p}/logs/error.log warn;\npid {p}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           upstream fake {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://fake;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        p = prefix.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(&args.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(log_file(dir, "nginx")?)
        .stderr(log_file(dir, "nginx-stderr")?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.nginx.display()))?;
    let proc = Proc {
        name: "nginx",
        child,
    };
    wait_http(
        &format!("http://127.0.0.1:{port}/api/v1/video/generations?task_id=x"),
        Duration::from_secs(10),
    )
    .await
    .context("nginx")?;
    Ok((proc, port))
}

// ---------------------------------------------------------------------------------------
// omnigate on one store.

const CREATE_BODY: &str = r#"{"model":"kling-v3-omni","prompt":"a lighthouse at dusk, waves","aspect_ratio":"16:9","duration":5,"mode":"std"}"#;
const UPSTREAM_KEY_ENV: &str = "OMNIGATE_BENCH_UPSTREAM_KEY";

struct Database {
    kind: StoreKind,
    url: String,
    pg_name: Option<String>,
}

impl Database {
    async fn create(
        args: &RunArgs,
        kind: StoreKind,
        dir: &Path,
        tag: &str,
    ) -> anyhow::Result<Self> {
        match kind {
            StoreKind::Postgres => {
                let name = format!(
                    "omnigate_bench_{tag}_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                let mut conn = sqlx::PgConnection::connect(&args.pg_admin_url)
                    .await
                    .with_context(|| format!("PostgreSQL at {}", args.pg_admin_url))?;
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await?;
                let base = args.pg_admin_url.rsplit_once('/').map_or("", |(b, _)| b);
                Ok(Database {
                    kind,
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                })
            }
            StoreKind::Sqlite => {
                let path = dir.join(format!("omnigate-{tag}.db"));
                Ok(Database {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    pg_name: None,
                })
            }
        }
    }

    async fn drop_it(self, args: &RunArgs) {
        if args.keep {
            eprintln!("kept database {}", self.url);
            return;
        }
        if let Some(name) = self.pg_name {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&args.pg_admin_url).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        } else if let Some(path) = self.url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

struct Omnigate {
    proc: Proc,
    base: String,
    key: String,
}

fn omnigate_bin(args: &RunArgs) -> anyhow::Result<PathBuf> {
    match &args.omnigate {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("bench binary directory")?
            .join("omnigate")),
    }
}

async fn start_omnigate(
    args: &RunArgs,
    db: &Database,
    dir: &Path,
    upstream: u16,
    prefill: bool,
) -> anyhow::Result<Omnigate> {
    let port = free_port()?;
    let name = format!("omnigate-{:?}", db.kind).to_lowercase();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"{url}\"\nmax_connections = {pool}\n\n\
         [sandbox]\nenabled = \"never\"\n\n\
         # The create path is measured: tasks are polled once an hour, so polls stay out of it.\n\
         [providers.fake]\ndialect = \"apimodels\"\nbase_url = \"http://127.0.0.1:{upstream}\"\n\
         api_key_env = \"{UPSTREAM_KEY_ENV}\"\nmodels = [\"kling-v3-omni\"]\npoll_interval_secs = 3600.0\n\
         [providers.fake.prices.kling-v3-omni]\nstd = 0.0633\npro = 0.0853\n",
        url = db.url,
        pool = args.pool,
    );
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config)?;
    let bin = omnigate_bin(args)?;
    let out = Command::new(&bin)
        .args(["keys", "create", "--name", "bench"])
        .env("OMNIGATE_CONFIG", &config_path)
        .env(UPSTREAM_KEY_ENV, "bench")
        .env("RUST_LOG", &args.log)
        .output()
        .await
        .with_context(|| format!("running {} keys create", bin.display()))?;
    if !out.status.success() {
        bail!(
            "omnigate keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = String::from_utf8(out.stdout)?.trim().to_string();
    if prefill {
        fill(args, db).await?;
    }
    let base = format!("http://127.0.0.1:{port}");
    let proc = serve_omnigate(args, dir, &name, &config_path, &base).await?;
    Ok(Omnigate { proc, base, key })
}

/// Runs `omnigate serve` on `config_path`, logging to `dir`, and waits until `base`
/// answers `/healthz`.
async fn serve_omnigate(
    args: &RunArgs,
    dir: &Path,
    name: &str,
    config_path: &Path,
    base: &str,
) -> anyhow::Result<Proc> {
    let child = Command::new(omnigate_bin(args)?)
        .arg("serve")
        .env("OMNIGATE_CONFIG", config_path)
        .env(UPSTREAM_KEY_ENV, "bench")
        .env("RUST_LOG", &args.log)
        .stdout(log_file(dir, name)?)
        .stderr(log_file(dir, &format!("{name}-stderr"))?)
        .kill_on_drop(true)
        .spawn()?;
    let proc = Proc {
        name: "omnigate",
        child,
    };
    wait_http(&format!("{base}/healthz"), Duration::from_secs(30))
        .await
        .with_context(|| format!("{name} (see {name}-stderr.log)"))?;
    Ok(proc)
}

/// Writes `prefill_tasks` finished tasks of the bench key and `prefill_outcomes` provider
/// outcomes inside the health window, straight into the store.
async fn fill(args: &RunArgs, db: &Database) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------
// Load, through oha.

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    p50_ms: f64,
    p99_ms: f64,
    /// Answers with the expected status per second of the run.
    ok_per_sec: f64,
    /// Answers with another status, and connection errors.
    errors: u64,
}

struct Target<'a> {
    url: String,
    key: Option<&'a str>,
    expect: u16,
    post: bool,
}

async fn oha(args: &RunArgs, t: &Target<'_>, secs: u64, rate: Option<u32>) -> anyhow::Result<Load> {
    let mut cmd = Command::new(&args.oha);
    cmd.args(["--no-tui", "--output-format", "json", "-z"])
        .arg(format!("{secs}s"))
        .arg("-c")
        .arg(args.connections.to_string());
    if let Some(q) = rate {
        // Latency from each request's scheduled start: a stalled server cannot hide the
        // requests it delayed (coordinated omission).
        cmd.arg("-q").arg(q.to_string()).arg("--latency-correction");
    }
    if t.post {
        cmd.args(["-m", "POST", "-T", "application/json", "-d", CREATE_BODY]);
    }
    if let Some(key) = t.key {
        cmd.arg("-H").arg(format!("Authorization: Bearer {key}"));
    }
    cmd.arg(&t.url).kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", args.oha.display()))?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON output")?;
    let pct = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let codes = v["statusCodeDistribution"].as_object();
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        codes.map_or(0, |m| {
            m.iter()
                .filter(|(k, _)| pred(k))
                .map(|(_, n)| n.as_u64().unwrap_or(0))
                .sum()
        })
    };
    let expect = t.expect.to_string();
    let ok = count(&|k| k == expect);
    let mut errors = count(&|k| k != expect);
    if let Some(m) = v["errorDistribution"].as_object() {
        // Requests cut off when the duration ends are not the server's errors.
        errors += m
            .iter()
            .filter(|(k, _)| !k.contains("aborted due to deadline"))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum::<u64>();
    }
    let elapsed = v["summary"]["total"].as_f64().unwrap_or(secs as f64);
    Ok(Load {
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        ok_per_sec: ok as f64 / elapsed.max(0.001),
        errors,
    })
}

/// One column of the table.
#[derive(Default)]
struct Column {
    name: String,
    at_rate: Vec<(u32, Load)>,
    saturation: Option<Load>,
    sustained: Option<(f64, f64)>,
    reads: Option<Load>,
    rss_mib: Option<f64>,
    errors: u64,
}

async fn measure_creates(args: &RunArgs, col: &mut Column, t: &Target<'_>) -> anyhow::Result<()> {
    // A short warm-up fills connection pools and caches, and shows the target answers.
    let warm = oha(args, t, 1, Some(50)).await?;
    if warm.ok_per_sec == 0.0 {
        bail!("{} answered no {} during the warm-up", t.url, t.expect);
    }
    for &rate in &args.rates {
        let l = oha(args, t, args.rate_secs, Some(rate)).await?;
        col.errors += l.errors;
        col.at_rate.push((rate, l));
    }
    let sat = oha(args, t, args.sat_secs, None).await?;
    col.errors += sat.errors;
    col.saturation = Some(sat);
    Ok(())
}

async fn measure_omnigate(
    args: &RunArgs,
    kind: StoreKind,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<Column> {
    let db = Database::create(args, kind, dir, "run").await?;
    let result = async {
        let og = start_omnigate(args, &db, dir, upstream, false).await?;
        let mut col = Column {
            name: kind.label().into(),
            ..Column::default()
        };
        let create = Target {
            url: format!("{}/v1/video/generations", og.base),
            key: Some(&og.key),
            expect: 202,
            post: true,
        };
        eprintln!("  {}: creates at fixed rates and saturation", col.name);
        measure_creates(args, &mut col, &create).await?;
        let read = reads(args, &og, &db).await?;
        col.errors += read.errors;
        col.reads = Some(read);
        eprintln!(
            "  {}: sustained run, {} s in {} s slices",
            col.name, args.sustain_secs, args.slice_secs
        );
        let slices = (args.sustain_secs / args.slice_secs.max(1)).max(2);
        let mut rates = Vec::new();
        for _ in 0..slices {
            let l = oha(args, &create, args.slice_secs, None).await?;
            col.errors += l.errors;
            rates.push(l.ok_per_sec);
        }
        col.sustained = Some((rates[0], *rates.last().unwrap_or(&0.0)));
        eprintln!("    slices (creates/s): {rates:.0?}");
        col.rss_mib = og.proc.peak_rss_mib();
        og.proc.stop().await;
        Ok(col)
    }
    .await;
    db.drop_it(args).await;
    result
}

/// Status reads of one finished task, as fast as they go: a client polling a task it has
/// not yet seen finish keeps reading it after. The fake upstream never finishes a task
/// (and polls are an hour apart), so the task created here is finished in the store as a
/// completion would (state, result, its status change).
async fn reads(args: &RunArgs, og: &Omnigate, db: &Database) -> anyhow::Result<Load> {
    let task: Value = reqwest::Client::new()
        .post(format!("{}/v1/video/generations", og.base))
        .bearer_auth(&og.key)
        .header("content-type", "application/json")
        .body(CREATE_BODY)
        .send()
        .await?
        .json()
        .await?;
    let id = task["id"]
        .as_str()
        .with_context(|| format!("create answered no id: {task}"))?;
    finish_in_store(db, id).await?;
    let read = Target {
        url: format!("{}/v1/video/generations/{id}", og.base),
        key: Some(&og.key),
        expect: 200,
        post: false,
    };
    oha(args, &read, args.read_secs, None).await
}

/// Completes task `id` in the store, as the poller's completion writes it.
async fn finish_in_store(db: &Database, id: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
    let now = omnigate::store::now_ms();
    sqlx::query(
        "UPDATE tasks SET state = 'completed', progress = 100, \
         result = '[{\"url\":\"https://example.invalid/v.mp4\"}]', \
         completed_at = $2, updated_at = $2, lease_owner = NULL, lease_until = 0, \
         history_json = COALESCE(history_json, '') || '{\"status\":\"completed\",\"at\":' || $2 || '},' \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut conn)
    .await
    .context("finishing the read task")?;
    sqlx::query(
        "INSERT INTO task_status_changes (task_id, status, at) VALUES ($1, 'completed', $2)",
    )
    .bind(id)
    .bind(now)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Windows each store is measured in by `--prefill`. One commit that waits on a stalled
/// disk (hundreds of ms, see `disk.rs`) sets the p99 of a 10 s window at 100/s, so
/// the window with the median p99 (and the median reads/s) is reported.
const PREFILL_WINDOWS: usize = 3;

/// The run whose `key` is the median of `runs` (not empty).
fn median_by(mut runs: Vec<Load>, key: impl Fn(&Load) -> f64) -> Load {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Empty against pre-filled store: create latency at the first rate and reads/s.
async fn measure_prefill(
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

// ---------------------------------------------------------------------------------------

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => PathBuf::from("target/bench").join(chrono_like_stamp()),
    };
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let bin = omnigate_bin(&args)?;
    if !bin.exists() {
        bail!(
            "no omnigate binary at {} (cargo build --release first, or --omnigate PATH)",
            bin.display()
        );
    }
    eprintln!("omnigate-bench: logs in {}", dir.display());
    if args.capacity {
        return capacity::run(&args, &dir).await;
    }
    if args.polls {
        return polls::run(&args, &dir).await;
    }
    // The scale run's upstream checks that no task is polled twice within an interval.
    let min_gap_ms = if args.scale {
        (args.scale_interval_secs * 1000.0) as i64
    } else {
        0
    };
    let (upstream_proc, upstream) = start_upstream(&dir, min_gap_ms).await?;
    let upstream_rss = || upstream_proc.peak_rss_mib();

    if args.scale {
        let result = scale::run(&args, &dir, upstream).await;
        upstream_proc.stop().await;
        return result;
    }
    if args.live {
        let result = live::run(&args, &dir, upstream).await;
        upstream_proc.stop().await;
        return result;
    }

    // Before the load, so that the probe neither slows the runs nor is slowed by them.
    eprintln!("  disk: fdatasync latency");
    let fsyncs = disk::probe(&dir, if args.smoke { 1 } else { 5 }).await?;

    if args.prefill {
        let mut rows = Vec::new();
        for &kind in &args.stores {
            rows.extend(measure_prefill(&args, kind, &dir, upstream).await?);
        }
        print_prefill(&args, &rows);
        println!("{fsyncs}");
        let _ = upstream_rss();
        upstream_proc.stop().await;
        return Ok(());
    }

    let (nginx_proc, nginx) = start_nginx(&args, &dir, upstream).await?;
    let mut columns = Vec::new();
    for (name, port) in [("direct", upstream), ("nginx", nginx)] {
        eprintln!("  {name}: creates at fixed rates and saturation");
        let mut col = Column {
            name: name.into(),
            ..Column::default()
        };
        let t = Target {
            url: format!("http://127.0.0.1:{port}/api/v1/video/generations"),
            key: None,
            expect: 200,
            post: true,
        };
        measure_creates(&args, &mut col, &t).await?;
        col.rss_mib = if name == "nginx" {
            nginx_proc.peak_rss_mib()
        } else {
            upstream_rss()
        };
        columns.push(col);
    }
    nginx_proc.stop().await;
    for &kind in &args.stores {
        columns.push(measure_omnigate(&args, kind, &dir, upstream).await?);
    }
    upstream_proc.stop().await;
    print_table(&args, &columns);
    println!("{fsyncs}");
    Ok(())
}

fn chrono_like_stamp() -> String {
    let secs = omnigate::store::now_ms() / 1000;
    format!("run-{secs}")
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{date}, {cpus} CPUs ({model})")
}

fn cell(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    }
}

fn print_table(args: &RunArgs, cols: &[Column]) {
    let nginx = cols.iter().find(|c| c.name == "nginx");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for (i, &rate) in args.rates.iter().enumerate() {
        let at = |c: &Column| c.at_rate.get(i).map(|(_, l)| *l);
        rows.push((
            format!("create p50 @{rate}/s (ms)"),
            cols.iter()
                .map(|c| cell(at(c).map(|l| l.p50_ms), 2))
                .collect(),
        ));
        rows.push((
            format!("create p99 @{rate}/s (ms)"),
            cols.iter()
                .map(|c| cell(at(c).map(|l| l.p99_ms), 2))
                .collect(),
        ));
        let base = nginx.and_then(at);
        rows.push((
            format!("p99 overhead over nginx @{rate}/s (ms)"),
            cols.iter()
                .map(|c| {
                    if !c.name.starts_with("omnigate") {
                        return "-".into();
                    }
                    cell(at(c).zip(base).map(|(l, b)| l.p99_ms - b.p99_ms), 2)
                })
                .collect(),
        ));
    }
    rows.push((
        "saturation creates/s".into(),
        cols.iter()
            .map(|c| cell(c.saturation.map(|l| l.ok_per_sec), 0))
            .collect(),
    ));
    rows.push((
        format!("sustained creates/s, first {} s", args.slice_secs),
        cols.iter()
            .map(|c| cell(c.sustained.map(|s| s.0), 0))
            .collect(),
    ));
    rows.push((
        format!("sustained creates/s, last {} s", args.slice_secs),
        cols.iter()
            .map(|c| {
                c.sustained.map_or("-".into(), |(first, last)| {
                    format!("{last:.0} ({:+.0}%)", (last / first - 1.0) * 100.0)
                })
            })
            .collect(),
    ));
    rows.push((
        "status reads/s".into(),
        cols.iter()
            .map(|c| cell(c.reads.map(|l| l.ok_per_sec), 0))
            .collect(),
    ));
    rows.push((
        "peak RSS (MiB)".into(),
        cols.iter().map(|c| cell(c.rss_mib, 1)).collect(),
    ));
    rows.push((
        "errors (non-2xx, failed requests)".into(),
        cols.iter().map(|c| c.errors.to_string()).collect(),
    ));
    println!(
        "\nomnigate-bench, {}; {} connections, {} s per rate, {} s saturation, {} s sustained, pool {}",
        machine(),
        args.connections,
        args.rate_secs,
        args.sat_secs,
        args.sustain_secs,
        args.pool
    );
    let header: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
    print_rows("", &header, &rows);
    if let (Some(n), Some(pg)) = (nginx, cols.iter().find(|c| c.name == "omnigate PG")) {
        let worst = pg
            .at_rate
            .iter()
            .zip(&n.at_rate)
            .map(|((r, l), (_, b))| format!("@{r}/s {:.1}x", l.p99_ms / b.p99_ms))
            .collect::<Vec<_>>()
            .join(", ");
        println!("omnigate PG p99 / nginx p99: {worst}");
    }
}

fn print_prefill(args: &RunArgs, rows: &[(String, Load, Load, Option<f64>)]) {
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

fn print_rows(corner: &str, header: &[String], rows: &[(String, Vec<String>)]) {
    let first = rows
        .iter()
        .map(|r| r.0.len())
        .chain([corner.len()])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.1[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |label: &str, cells: &[String]| {
        let mut s = format!("| {label:<first$} |");
        for (c, w) in cells.iter().zip(&widths) {
            s.push_str(&format!(" {c:>w$} |"));
        }
        println!("{s}");
    };
    line(corner, header);
    let mut sep = format!("|{}|", "-".repeat(first + 2));
    for w in &widths {
        sep.push_str(&format!("{}:|", "-".repeat(w + 1)));
    }
    println!("{sep}");
    for (label, cells) in rows {
        line(label, cells);
    }
}
