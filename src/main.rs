//! The `omnigate` binary: `omnigate` (or `omnigate serve`) runs the gateway;
//! `omnigate keys create --name NAME` issues an API key.

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
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once; only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let path = cli.config.or_else(|| {
        let default = PathBuf::from("config/omnigate.toml");
        default.exists().then_some(default)
    });
    let config = Config::load(path.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => omnigate::app::start(config).await?.run_until_signal().await,
        Command::Keys {
            command: KeysCommand::Create { name },
        } => {
            let store = omnigate::store::Store::connect(&config.database.url, 1).await?;
            let key = store.create_api_key(&name).await?;
            println!("{}", key.secret);
            eprintln!(
                "created key {} ({}); it is shown only this once",
                key.id, key.name
            );
        }
    }
    Ok(())
}
