//! The `omnigate` binary: `omnigate` (or `omnigate serve`) runs the gateway;
//! `omnigate keys ...` manages API keys and their limits.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
        Command::Serve => omnigate::app::start(config).await?.run_until_signal().await,
        Command::Keys { command } => omnigate::keys_cli::run(command, &config).await?,
    }
    telemetry.shutdown().await;
    Ok(())
}
