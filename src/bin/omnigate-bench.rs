//! `omnigate-bench`: measures omnigate's create and read path on one machine against a fast
//! fake upstream (apimodels dialect), next to the same upstream called directly and
//! through nginx, and prints one table. `bench/run.sh` installs what it needs and runs it.
//!
//! Everything it starts (fake upstream, nginx, omnigate per store) is a child process that
//! is stopped when the run ends, fails or is interrupted; the PostgreSQL database and the
//! SQLite file it makes are removed unless `--keep` is given.
//!
//! This file holds the flags and the dispatch to the modes; each mode and the helpers the
//! modes share have their own file under `omnigate-bench/`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

// The modes and the disk probe.
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
// The default latency table, its pre-filled variant, and the helpers every mode shares.
#[path = "omnigate-bench/children.rs"]
mod children;
#[path = "omnigate-bench/gateway.rs"]
mod gateway;
#[path = "omnigate-bench/latency.rs"]
mod latency;
#[path = "omnigate-bench/oha.rs"]
mod oha;
#[path = "omnigate-bench/prefill.rs"]
mod prefill;
#[path = "omnigate-bench/table.rs"]
mod table;
#[path = "omnigate-bench/upstream.rs"]
mod upstream;

// The modes reach the shared helpers through `super::`.
use children::{free_port, signal, Proc};
use gateway::{
    create_key, omnigate_bin, serve_omnigate, Database, Omnigate, CREATE_BODY, UPSTREAM_KEY_ENV,
};
use oha::{oha, Target};
use table::{machine, print_rows};
use upstream::{serve_upstream, start_upstream};

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
        return prefill::run(&args, &dir, upstream_proc, upstream, &fsyncs).await;
    }
    latency::run(&args, &dir, upstream_proc, upstream, &fsyncs).await
}

fn chrono_like_stamp() -> String {
    let secs = omnigate::store::now_ms() / 1000;
    format!("run-{secs}")
}
