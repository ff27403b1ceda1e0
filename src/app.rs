//! Builds the gateway from its config: store, providers (or the sandbox), HTTP server and
//! background workers, and stops them in order on a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::routing::{Router, Upstream};
use crate::store::Store;
use crate::{api, console, providers, sandbox, server, workers};

pub struct RunningApp {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop_server: CancellationToken,
    stop_workers: CancellationToken,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    sandbox: Option<sandbox::Sandbox>,
}

/// Workers get at least this long to end their current step, even past the drain deadline.
const WORKER_STOP_GRACE: Duration = Duration::from_secs(5);

impl RunningApp {
    /// A graceful shutdown (SIGTERM), bounded by `server.drain_timeout_secs`:
    /// 1. creates are refused from now on (503 `shutting_down`); reads are still served;
    /// 2. submits already started run to their end, so none is cut in half;
    /// 3. the server stops accepting and finishes the requests in flight;
    /// 4. the workers stop between steps.
    pub async fn shutdown(mut self) {
        let gw = self.gateway.clone();
        let deadline = Instant::now() + gw.config.server.drain_timeout();
        gw.draining.cancel();
        gw.submits.close();
        if timeout_at(deadline, gw.submits.wait()).await.is_err() {
            tracing::warn!(
                in_flight = gw.submits.len(),
                "drain deadline passed with submits still running"
            );
        }
        self.stop_server.cancel();
        if timeout_at(deadline, &mut self.server).await.is_err() {
            tracing::warn!("drain deadline passed with requests in flight; closing them");
            self.server.abort();
        }
        self.stop_workers.cancel();
        let workers_deadline = deadline.max(Instant::now() + WORKER_STOP_GRACE);
        for mut w in self.workers {
            if timeout_at(workers_deadline, &mut w).await.is_err() {
                tracing::warn!("a worker did not stop in time");
                w.abort();
            }
        }
        // Outcomes of the requests that drained after the health sync task stopped.
        if let Err(e) = self.gateway.health.flush().await {
            tracing::warn!(error = ?e, "flushing provider health at shutdown failed");
        }
        if let Some(sb) = self.sandbox {
            sb.server.abort();
        }
    }

    /// Stops everything at once, mid-request, as a crash would (tests).
    pub fn kill(self) {
        self.server.abort();
        for w in &self.workers {
            w.abort();
        }
        if let Some(sb) = &self.sandbox {
            sb.server.abort();
        }
    }

    /// Runs until ctrl-c / SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

pub async fn build_gateway(
    config: Config,
) -> anyhow::Result<(Arc<Gateway>, Option<sandbox::Sandbox>)> {
    let db = &config.database;
    let mut store = Store::connect_with(db).await?;
    store.copy_results = config.results.enabled;
    let results = crate::results::Results::build(&config.results)?;
    let mut upstreams = Vec::new();
    for (name, cfg) in &config.providers {
        upstreams.push(upstream(name, cfg.clone())?);
    }
    let mut sb = None;
    if config.sandbox_wanted() {
        let started = sandbox::start(config.sandbox.task_seconds).await?;
        for (name, cfg) in sandbox::provider_configs(started.addr) {
            upstreams.push(upstream(&name, cfg)?);
        }
        tracing::warn!(
            addr = %started.addr,
            "SANDBOX MODE: no provider is configured, so tasks go to the built-in sandbox upstream; \
             their videos are not real. Configure [providers] to use real ones, or set \
             sandbox.enabled = \"never\"."
        );
        sb = Some(started);
    }
    let limits = crate::limits::Limits::build(&config.limits).await?;
    // What each provider's configuration asks of the store.
    let caps: Vec<_> = upstreams
        .iter()
        .map(|u| crate::store::ConfiguredCap {
            provider: u.name.clone(),
            max_in_flight: u.config.max_in_flight,
            max_submits_per_minute: u.config.max_submits_per_minute,
        })
        .collect();
    store.register_capacity(&caps).await?;
    let gw = Arc::new(Gateway {
        live: crate::live::Live::new(&config.live),
        queue: crate::queue::Queue::new(&caps, &config.queue),
        health: crate::health::Health::new(store.clone(), config.health.clone()),
        store,
        router: Router::new(upstreams),
        config,
        instance_id: format!(
            "{}-{}",
            hostname(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        submits: tokio_util::task::TaskTracker::new(),
        draining: CancellationToken::new(),
        heartbeats: Default::default(),
        limits,
        results,
        timings: crate::timing::Timings::default(),
    });
    if sb.is_some() {
        bootstrap_sandbox_key(&gw).await?;
    }
    Ok((gw, sb))
}

fn upstream(name: &str, config: crate::config::ProviderConfig) -> anyhow::Result<Upstream> {
    let adapter = providers::build(name, &config).with_context(|| format!("providers.{name}"))?;
    Ok(Upstream {
        name: name.to_string(),
        config,
        adapter,
    })
}

/// A newcomer on the sandbox needs a key to try the API: the first start makes one.
async fn bootstrap_sandbox_key(gw: &Gateway) -> anyhow::Result<()> {
    if gw.store.count_api_keys().await? == 0 {
        let key = gw.store.create_api_key("sandbox-bootstrap").await?;
        // The webhook secret too, so a newcomer can verify a signed event without
        // rotating the key first.
        tracing::warn!(
            "SANDBOX MODE: created a first API key (shown once): {}  webhook signing secret: {}",
            key.secret,
            key.webhook_secret
        );
    }
    Ok(())
}

/// Starts the gateway: binds `config.server.listen` (port 0 picks a free one), serves the
/// API and runs the workers.
pub async fn start(config: Config) -> anyhow::Result<RunningApp> {
    // A config built in code (tests, embedders) meets the same rules as a loaded one.
    config.validate()?;
    if config.metrics.enabled {
        crate::telemetry::metrics::install();
    }
    let listen = config.server.listen;
    let (gateway, sandbox) = build_gateway(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen: cannot bind {listen}"))?;
    let addr = listener.local_addr()?;
    let app = api::router(gateway.clone(), console::routes());
    let stop_server = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        app,
        gateway.config.server.header_read_timeout(),
        stop_server.clone(),
    ));
    let stop_workers = CancellationToken::new();
    let mut workers = workers::spawn_all(gateway.clone(), stop_workers.clone());
    workers.push(gateway.health.spawn_sync(stop_workers.clone()));
    tracing::info!(%addr, instance = %gateway.instance_id, "omnigate listening");
    Ok(RunningApp {
        addr,
        gateway,
        stop_server,
        stop_workers,
        server,
        workers,
        sandbox,
    })
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "omnigate".into())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
