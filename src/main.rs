//! The `omnigate` binary: `omnigate` (or `omnigate serve`) runs the gateway;
//! `omnigate keys ...` manages API keys and their limits; `omnigate healthcheck` asks a
//! running gateway whether it is ready.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// glibc's malloc was a quarter of omnigate's CPU time on a status read (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use omnigate::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "One normalized API in front of the Kling Omni-Video resellers"
)]
struct Cli {
    /// TOML config file; defaults to config/omnigate.toml when it exists.
    #[arg(long, env = "OMNIGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Ask a running gateway (at `server.listen`) whether it is ready; exit 1 if not.
    /// For container health checks, where there is no curl.
    Healthcheck {
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: omnigate::keys_cli::KeysCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let path = cli.config.or_else(|| {
        let default = PathBuf::from("config/omnigate.toml");
        default.exists().then_some(default)
    });
    let config = Config::load(path.as_deref())?;
    // Logs (and span export) as the config says, so they start after it is read.
    let telemetry = omnigate::telemetry::init(&config.log, &config.otel)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            config.require_admin_token()?;
            omnigate::app::start(config).await?.run_until_signal().await
        }
        Command::Keys { command } => omnigate::keys_cli::run(command, &config).await?,
        Command::Healthcheck { path } => healthcheck(&config, &path).await?,
    }
    telemetry.shutdown().await;
    Ok(())
}

async fn healthcheck(config: &Config, path: &str) -> anyhow::Result<()> {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let answer = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "{path} answered {}",
        answer.status()
    );
    Ok(())
}
