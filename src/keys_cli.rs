//! `omnigate keys ...`: key management from the command line, the same operations as
//! `/admin/keys`, straight against the store.

use std::str::FromStr;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::secrets::{issue_kling_credentials, KlingCredentials, SecretBox};
use crate::store::{BudgetPeriod, IssuedKey, KeyChange, KeyInfo, Store};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret once; only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print one JSON object (id, name, key, webhook_secret, limits) instead of text.
        #[arg(long)]
        json: bool,
        /// Also issue a Kling-style access key and secret key (for the Kling facade's JWTs),
        /// printed once; needs server.secrets_key (OMNIGATE_SECRETS_KEY).
        #[arg(long)]
        kling_credentials: bool,
    },
    /// List every key with its limits and current use.
    List,
    /// Show one key.
    Show { id: String },
    /// Change a key's limits; `none` removes a limit.
    Update {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Issue the key a new Kling access key and secret key (printed once), replacing
        /// the pair it had.
        #[arg(long)]
        kling_credentials: bool,
    },
    /// Refuse the key from now on, on every replica.
    Revoke { id: String },
    /// Issue a new secret; the old one keeps working for admin.key_rotation_grace_secs.
    Rotate { id: String },
}

/// A limit given on the command line: a value, or `none` to remove it.
#[derive(Debug, Clone, Copy)]
pub enum Setting<T> {
    Set(T),
    Remove,
}

impl<T: FromStr> FromStr for Setting<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Setting::Remove);
        }
        s.parse()
            .map(Setting::Set)
            .map_err(|_| format!("{s:?} is not a valid value (or none)"))
    }
}

fn change<T: Copy>(s: Option<Setting<T>>) -> Option<Option<T>> {
    s.map(|s| match s {
        Setting::Set(v) => Some(v),
        Setting::Remove => None,
    })
}

#[derive(Args, Debug, Default)]
pub struct LimitArgs {
    #[arg(long)]
    team: Option<Setting<TeamName>>,
    /// Creates per minute.
    #[arg(long)]
    rpm: Option<Setting<u32>>,
    /// Creates that may come at once.
    #[arg(long)]
    burst: Option<Setting<u32>>,
    /// Reads (every other /v1 call) per minute.
    #[arg(long)]
    read_rpm: Option<Setting<u32>>,
    /// Tasks accepted and not yet finished.
    #[arg(long)]
    max_in_flight: Option<Setting<u32>>,
    /// USD per budget period.
    #[arg(long)]
    budget_usd: Option<Setting<f64>>,
    /// month or day (UTC calendar).
    #[arg(long, value_parser = ["month", "day"])]
    budget_period: Option<String>,
    /// Share of the admission queue against other keys (1-1000; none: 1).
    #[arg(long)]
    weight: Option<Setting<u32>>,
    /// Tasks that may wait in the queue (none: queue.default_max_queued).
    #[arg(long)]
    max_queued: Option<Setting<u32>>,
}

/// A team name (any text); a newtype so that `none` can mean "no team".
#[derive(Debug, Clone)]
pub struct TeamName(String);

impl FromStr for TeamName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(TeamName(s.to_string()))
    }
}

impl LimitArgs {
    fn change(self) -> anyhow::Result<KeyChange> {
        let change = KeyChange {
            team: self.team.map(|t| match t {
                Setting::Set(TeamName(name)) => Some(name),
                Setting::Remove => None,
            }),
            rpm: change(self.rpm),
            burst: change(self.burst),
            read_rpm: change(self.read_rpm),
            max_in_flight: change(self.max_in_flight),
            budget_usd: change(self.budget_usd),
            budget_period: self.budget_period.as_deref().and_then(BudgetPeriod::parse),
            weight: change(self.weight),
            max_queued: change(self.max_queued),
        };
        change.validate().map_err(|(field, message)| {
            anyhow::anyhow!("--{}: {message}", field.replace('_', "-"))
        })?;
        Ok(change)
    }
}

pub async fn run(command: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.database.url, 1).await?;
    match command {
        KeysCommand::Create {
            name,
            limits,
            json,
            kling_credentials,
        } => {
            let change = limits.change()?;
            if kling_credentials {
                // Refused before the key exists, rather than a key without its pair.
                require_secrets_key(config)?;
            }
            let issued = store.issue_key(&name, &change).await?;
            let kling = match kling_credentials {
                true => {
                    Some(issue_kling_credentials(&store, &config.server, &issued.info.id).await?)
                }
                false => None,
            };
            if json {
                let mut out = serde_json::to_value(&issued)?;
                if let Some(k) = &kling {
                    out["kling_credentials"] = serde_json::to_value(k)?;
                }
                println!("{out}");
            } else {
                print_issued(&issued);
                if let Some(k) = &kling {
                    print_kling(k);
                }
            }
        }
        KeysCommand::List => {
            for key in store.list_keys().await? {
                print_info(&key);
            }
        }
        KeysCommand::Show { id } => print_info(&found(store.key_info_by_id(&id).await?, &id)?),
        KeysCommand::Update {
            id,
            limits,
            kling_credentials,
        } => {
            if kling_credentials {
                require_secrets_key(config)?;
            }
            let info = store.change_key(&id, &limits.change()?).await?;
            print_info(&found(info, &id)?);
            if kling_credentials {
                print_kling(&issue_kling_credentials(&store, &config.server, &id).await?);
            }
        }
        KeysCommand::Revoke { id } => {
            anyhow::ensure!(store.revoke_key(&id).await?, "no active key {id}");
            eprintln!("revoked {id}");
        }
        KeysCommand::Rotate { id } => {
            let grace_ms = (config.admin.key_rotation_grace_secs as i64).saturating_mul(1000);
            print_issued(&found(store.rotate_key(&id, grace_ms).await?, &id)?);
        }
    }
    Ok(())
}

fn require_secrets_key(config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        SecretBox::from_config(&config.server)?.is_some(),
        "--kling-credentials: the secret key is stored sealed under server.secrets_key; set \
         {} to 32 bytes of base64 (openssl rand -base64 32) first",
        config.server.secrets_key_env
    );
    Ok(())
}

/// The pair on stderr, apart from the key's secret (stdout).
fn print_kling(k: &KlingCredentials) {
    eprintln!(
        "Kling credentials (shown only this once): access key {}  secret key {}",
        k.access_key, k.secret_key
    );
}

fn found<T>(value: Option<T>, id: &str) -> anyhow::Result<T> {
    value.ok_or_else(|| anyhow::anyhow!("no key {id}"))
}

/// The secret alone on stdout (for scripts), the rest on stderr.
fn print_issued(issued: &IssuedKey) {
    println!("{}", issued.key);
    eprintln!(
        "key {} ({}); the secret above is shown only this once. Webhook signing secret: {}",
        issued.info.id, issued.info.name, issued.webhook_secret
    );
    if let Some(until) = issued.previous_valid_until {
        eprintln!("the previous secret keeps working until unix time {until}");
    }
}

fn print_info(k: &KeyInfo) {
    let show = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{}\t{}\tteam={}\trpm={}\tburst={}\tread_rpm={}\tmax_in_flight={} (now {})\tbudget={} per {} (spent {:.4}, reserved {:.4})\tweight={}\tmax_queued={} (now {}){}",
        k.id,
        k.name,
        k.team.as_deref().unwrap_or("-"),
        show(k.rpm),
        show(k.burst),
        show(k.read_rpm),
        show(k.max_in_flight),
        k.in_flight,
        k.budget_usd.map_or("-".to_string(), |b| format!("${b:.2}")),
        k.budget_period,
        k.spent_usd,
        k.reserved_usd,
        k.weight,
        k.max_queued.map_or("-".to_string(), |v| v.to_string()),
        k.queued,
        if k.revoked_at.is_some() { "\tREVOKED" } else { "" },
    );
}
