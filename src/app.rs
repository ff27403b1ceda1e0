//! Builds the gateway from its config: store, providers (or the sandbox), HTTP server and
//! background workers, all stopped through one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::routing::{Router, Upstream};
use crate::store::Store;
use crate::{api, providers, sandbox, workers};

pub struct RunningApp {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    sandbox: Option<sandbox::Sandbox>,
}

/// How long a graceful shutdown waits for in-flight requests and worker steps.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

impl RunningApp {
    /// Stops accepting requests, lets in-flight ones and the current worker steps finish
    /// (up to a limit), then returns.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let drain = async {
            let _ = self.server.await;
            for w in self.workers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("shutdown drain timed out");
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
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
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
             their videos are not real. Configure [providers] to use real ones."
        );
        sb = Some(started);
    }
    let gw = Arc::new(Gateway {
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
        tracing::warn!(
            "SANDBOX MODE: created a first API key (shown once): {}",
            key.secret
        );
    }
    Ok(())
}

/// Starts the gateway: binds `config.server.listen` (port 0 picks a free one), serves the
/// API and runs the workers.
pub async fn start(config: Config) -> anyhow::Result<RunningApp> {
    let listen = config.server.listen;
    let (gateway, sandbox) = build_gateway(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen: cannot bind {listen}"))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let app = api::router(gateway.clone());
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    let mut workers = workers::spawn_all(gateway.clone(), cancel.clone());
    workers.push(gateway.health.spawn_sync(cancel.clone()));
    tracing::info!(%addr, instance = %gateway.instance_id, "omnigate listening");
    Ok(RunningApp {
        addr,
        gateway,
        cancel,
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
