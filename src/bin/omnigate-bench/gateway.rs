//! omnigate on one store: the database it is given, its config, its bench key, and the
//! `omnigate serve` child.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio::process::Command;

use super::children::{free_port, log_file, wait_http, Proc};
use super::prefill::fill;
use super::{RunArgs, StoreKind};

pub(crate) const CREATE_BODY: &str = r#"{"model":"kling-v3-omni","prompt":"a lighthouse at dusk, waves","aspect_ratio":"16:9","duration":5,"mode":"std"}"#;
pub(crate) const UPSTREAM_KEY_ENV: &str = "OMNIGATE_BENCH_UPSTREAM_KEY";

pub(crate) struct Database {
    pub(crate) kind: StoreKind,
    pub(crate) url: String,
    pub(crate) pg_name: Option<String>,
}

impl Database {
    pub(crate) async fn create(
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

    pub(crate) async fn drop_it(self, args: &RunArgs) {
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

pub(crate) struct Omnigate {
    pub(crate) proc: Proc,
    pub(crate) base: String,
    pub(crate) key: String,
}

pub(crate) fn omnigate_bin(args: &RunArgs) -> anyhow::Result<PathBuf> {
    match &args.omnigate {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("bench binary directory")?
            .join("omnigate")),
    }
}

pub(crate) async fn start_omnigate(
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
    let key = create_key(args, &config_path, "bench").await?;
    if prefill {
        fill(args, db).await?;
    }
    let base = format!("http://127.0.0.1:{port}");
    let proc = serve_omnigate(args, dir, &name, &config_path, &base).await?;
    Ok(Omnigate { proc, base, key })
}

/// Creates key `name` with `omnigate keys create` (which also migrates the store).
pub(crate) async fn create_key(
    args: &RunArgs,
    config: &Path,
    name: &str,
) -> anyhow::Result<String> {
    let bin = omnigate_bin(args)?;
    let out = Command::new(&bin)
        .args(["keys", "create", "--name", name])
        .env("OMNIGATE_CONFIG", config)
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
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Creates a task of `body` on `og` with its bench key; returns the task's id.
pub(crate) async fn create_task(
    client: &reqwest::Client,
    og: &Omnigate,
    body: &'static str,
) -> anyhow::Result<String> {
    let task: Value = client
        .post(format!("{}/v1/video/generations", og.base))
        .bearer_auth(&og.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    let id = task["id"]
        .as_str()
        .with_context(|| format!("create answered no id: {task}"))?;
    Ok(id.to_string())
}

/// Runs `omnigate serve` on `config_path`, logging to `dir`, and waits until `base`
/// answers `/healthz`.
pub(crate) async fn serve_omnigate(
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
