//! Typed configuration: built-in defaults, then a TOML file, then `OMNIGATE_*` environment
//! variables (`OMNIGATE_DATABASE__URL` sets `database.url`). Unknown keys, bad values and
//! missing credentials stop start-up with a message naming the key.
//!
//! This module holds the root (`Config`), the loading and the checks entry point; each
//! section's type, defaults and own checks live in a file of its own. Sections that belong
//! to a subsystem stay beside it (`queue/config.rs`, `telemetry/config.rs`, `results/`,
//! `live/`).

mod admin;
pub mod database;
mod health;
mod limits;
mod poller;
mod providers;
mod sandbox;
pub mod secret;
pub mod server;
mod submit;
mod webhooks;

pub use admin::{AdminConfig, ConsoleConfig, SecureCookies, MIN_ADMIN_TOKEN_CHARS};
pub use database::DatabaseConfig;
pub use health::HealthConfig;
pub use limits::{LimitsConfig, RedisErrorPolicy};
pub use poller::{PollerConfig, WorkersConfig, MAX_POLL_BATCH};
pub use providers::{Credential, Dialect, PriceTable, ProviderConfig, UnknownSubmit};
pub use sandbox::{SandboxConfig, SandboxMode};
pub use secret::Secret;
pub use server::ServerConfig;
pub use submit::{IdempotencyConfig, RetentionConfig, SubmitConfig};
pub use webhooks::WebhooksConfig;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub poller: PollerConfig,
    pub sandbox: SandboxConfig,
    pub idempotency: IdempotencyConfig,
    pub submit: SubmitConfig,
    pub retention: RetentionConfig,
    pub health: HealthConfig,
    pub admin: AdminConfig,
    /// The operator console at `/console`.
    pub console: ConsoleConfig,
    pub workers: WorkersConfig,
    pub limits: LimitsConfig,
    pub webhooks: WebhooksConfig,
    /// Waiting for provider capacity: the admission queue (`queue/`).
    pub queue: crate::queue::config::QueueConfig,
    /// `when_full`: spill to a dearer provider with room, or wait for the cheapest.
    pub routing: crate::queue::config::RoutingConfig,
    /// Log format and filter.
    pub log: crate::telemetry::LogConfig,
    /// Prometheus metrics at `/metrics`.
    pub metrics: crate::telemetry::MetricsConfig,
    /// OpenTelemetry span export (off by default).
    pub otel: crate::telemetry::OtelConfig,
    /// Copies of finished videos in omnigate's own object storage (`results/`).
    pub results: crate::results::ResultsConfig,
    /// Status streams, `Prefer: wait` and the finished-task cache (`live/`).
    pub live: crate::live::config::LiveConfig,
    /// Upstream providers by name. Empty means: run the built-in sandbox upstream.
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// Ten years: longer than any sensible setting, far from where `Duration` overflows.
const MAX_SECS: f64 = 10.0 * 365.0 * 86400.0;

/// Environment overrides: `OMNIGATE_<SECTION>__<KEY>`.
const ENV_PREFIX: &str = "OMNIGATE_";
const ENV_SEPARATOR: &str = "__";

/// Every problem figment found, each naming the key as the user wrote it: `server.listn`
/// from a file (figment's own text says `default.server.listn`, its profile's name
/// first), `OMNIGATE_SERVER__LISTN` from the environment.
fn invalid_configuration(errors: figment::Error) -> anyhow::Error {
    let msgs: Vec<String> = errors.into_iter().map(|e| describe(&e)).collect();
    anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
}

fn describe(e: &figment::Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|md| md.name.contains(ENV_PREFIX));
    let key = if from_env {
        let upper: Vec<String> = e.path.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!("{ENV_PREFIX}{}", upper.join(ENV_SEPARATOR))
    } else {
        e.path.join(".")
    };
    let what = match &e.kind {
        figment::error::Kind::UnknownField(found, expected) => format!(
            "unknown key {found:?}; expected one of {}",
            expected.join(", ")
        ),
        kind => kind.to_string(),
    };
    let place = match e.metadata.as_ref() {
        Some(md) => match &md.source {
            Some(source) => format!(" (in {source} {})", md.name),
            None => format!(" (in {})", md.name),
        },
        None => String::new(),
    };
    match key.is_empty() {
        true => format!("{what}{place}"),
        false => format!("{key}: {what}{place}"),
    }
}

impl Config {
    /// Loads defaults, then `path` (if given), then `OMNIGATE_*` env vars; resolves
    /// credentials from the environment and validates across fields.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        // Every setting lives in a section, so only `OMNIGATE_<SECTION>__<KEY>` is config;
        // other OMNIGATE_* variables (OMNIGATE_CONFIG, a token named by admin.token_env)
        // are not.
        let env = Env::prefixed(ENV_PREFIX)
            .split(ENV_SEPARATOR)
            .filter(|k| k.as_str().contains('.'));
        fig = fig.merge(env);
        let mut cfg: Config = fig.extract().map_err(invalid_configuration)?;
        cfg.resolve_credentials(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency.ttl_secs)
    }

    /// Parses a TOML string without touching the environment for overrides (tests).
    pub fn from_toml_str(
        toml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let mut cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(invalid_configuration)?;
        cfg.resolve_credentials(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_credentials(&mut self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        // Read if set, required only where it is used (`require_admin_token`): `keys list`
        // or `healthcheck` on a host without the admin token still run.
        if let Some(var) = &self.admin.token_env {
            self.admin.token = env(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim()));
        }
        self.server.secrets_key = env(&self.server.secrets_key_env)
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim()));
        for (name, p) in &mut self.providers {
            let read = |field: &str, var: &Option<String>| -> anyhow::Result<Option<Secret>> {
                let Some(var) = var else { return Ok(None) };
                match env(var).filter(|v| !v.trim().is_empty()) {
                    Some(v) => Ok(Some(Secret::new(v.trim()))),
                    None => bail!(
                        "providers.{name}.{field}: environment variable {var} is not set (it holds this provider's credential)"
                    ),
                }
            };
            let api_key = read("api_key_env", &p.api_key_env)?;
            let access = read("access_key_env", &p.access_key_env)?;
            let secret = read("secret_key_env", &p.secret_key_env)?;
            p.credential = match (api_key, access, secret) {
                (Some(k), None, None) => Credential::Bearer(k),
                (None, Some(access_key), Some(secret_key)) if p.dialect == Dialect::Kling => {
                    Credential::KlingJwt { access_key, secret_key }
                }
                (None, None, None) => bail!(
                    "providers.{name}.api_key_env: no credential configured (set api_key_env, or access_key_env and secret_key_env for Kling's own host)"
                ),
                _ => bail!(
                    "providers.{name}: set either api_key_env, or both access_key_env and secret_key_env (kling dialect only)"
                ),
            };
        }
        Ok(())
    }

    /// For the commands that use the admin token (`serve`, which answers `/admin/*`): with
    /// `admin.token_env` set, its variable must hold the token. Other commands do not ask.
    pub fn require_admin_token(&self) -> anyhow::Result<()> {
        match (&self.admin.token_env, &self.admin.token) {
            (Some(var), None) => bail!("admin.token_env: environment variable {var} is not set"),
            _ => Ok(()),
        }
    }

    /// Checks values and their relations; `app::start` runs it too, so a config built in
    /// code is held to the same rules as one loaded from a file.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_durations()?;
        self.poller.validate_timing()?;
        self.routing.validate()?;
        crate::telemetry::config::validate(
            &self.log,
            &self.metrics,
            &self.otel,
            self.admin.token_env.is_some() || self.admin.token.is_some(),
        )?;
        self.results.validate(self.workers.stall_secs)?;
        self.live.validate()?;
        self.admin.validate()?;
        if let Err(e) = crate::secrets::SecretBox::from_config(&self.server) {
            bail!("server.secrets_key_env: {e:#}");
        }
        self.database.validate()?;
        self.server.validate()?;
        self.poller.validate()?;
        self.idempotency.validate()?;
        self.health.validate()?;
        for (name, p) in &self.providers {
            providers::validate_provider(name, p)?;
        }
        self.validate_provider_timeouts()?;
        self.limits.validate()?;
        self.webhooks.validate()?;
        self.queue.validate()?;
        self.validate_sandbox()?;
        Ok(())
    }

    /// The other sections' waits that a provider's `request_timeout_secs` must fit in.
    fn validate_provider_timeouts(&self) -> anyhow::Result<()> {
        // A poll must finish inside its lease, or another process could poll the same
        // task at the same moment.
        if let Some((name, p)) = self
            .providers
            .iter()
            .find(|(_, p)| p.request_timeout_secs >= self.poller.lease_secs as f64)
        {
            bail!(
                "poller.lease_secs: must be longer than providers.{name}.request_timeout_secs ({})",
                p.request_timeout_secs
            );
        }
        // A submit may fall over through every provider, each taking up to its timeout, in
        // each round; a drain shorter than that could cut one in half.
        let rounds = f64::from(self.submit.rounds.max(1));
        let submit_budget: f64 = self
            .providers
            .values()
            .map(|p| p.request_timeout_secs)
            .sum::<f64>()
            * rounds
            + (rounds - 1.0) * 1.5 * self.submit.round_backoff_ms as f64 / 1000.0;
        if self.server.drain_timeout_secs < submit_budget {
            bail!(
                "server.drain_timeout_secs: must be at least {submit_budget} (submit.rounds x the sum of the providers' request_timeout_secs, plus the pauses between rounds: the longest a submit can take)"
            );
        }
        if let Some((name, p)) = self
            .providers
            .iter()
            .find(|(_, p)| p.request_timeout_secs >= self.workers.stall_secs)
        {
            bail!(
                "workers.stall_secs: must be longer than providers.{name}.request_timeout_secs ({})",
                p.request_timeout_secs
            );
        }
        Ok(())
    }

    /// Every duration in seconds must be a finite positive number, small enough to be a
    /// `Duration` (a negative or NaN one would panic where it is used).
    fn validate_durations(&self) -> anyhow::Result<()> {
        let mut keys = vec![
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.drain_timeout_secs", self.server.drain_timeout_secs),
            (
                "database.acquire_timeout_secs",
                self.database.acquire_timeout_secs,
            ),
            (
                "database.statement_timeout_secs",
                self.database.statement_timeout_secs,
            ),
            ("poller.max_backoff_secs", self.poller.max_backoff_secs),
            ("health.cooldown_secs", self.health.cooldown_secs),
            ("sandbox.task_seconds", self.sandbox.task_seconds),
            ("workers.stall_secs", self.workers.stall_secs),
            (
                "webhooks.callback_poll_interval_secs",
                self.webhooks.callback_poll_interval_secs,
            ),
        ];
        let provider_keys: Vec<(String, f64)> = self
            .providers
            .iter()
            .flat_map(|(name, p)| {
                [
                    (
                        format!("providers.{name}.request_timeout_secs"),
                        p.request_timeout_secs,
                    ),
                    (
                        format!("providers.{name}.connect_timeout_secs"),
                        p.connect_timeout_secs,
                    ),
                    (
                        format!("providers.{name}.poll_interval_secs"),
                        p.poll_interval_secs,
                    ),
                ]
            })
            .collect();
        keys.extend(provider_keys.iter().map(|(k, v)| (k.as_str(), *v)));
        for (key, v) in keys {
            if !(v.is_finite() && v > 0.0 && v <= MAX_SECS) {
                bail!("{key}: must be a positive number of seconds (at most {MAX_SECS}), not {v}");
            }
        }
        for (key, v) in [
            ("poller.lease_secs", self.poller.lease_secs),
            ("poller.max_task_age_secs", self.poller.max_task_age_secs),
            ("idempotency.ttl_secs", self.idempotency.ttl_secs),
            ("health.window_secs", self.health.window_secs),
        ] {
            if v as f64 > MAX_SECS {
                bail!("{key}: at most {MAX_SECS} seconds");
            }
        }
        Ok(())
    }
}

/// What the sections' tests load.
#[cfg(test)]
mod fixtures {
    /// The example config with every provider of the providers example appended, as an
    /// operator who has all four accounts would write it.
    pub(super) const EXAMPLE: &str = concat!(
        include_str!("../../config/omnigate.example.toml"),
        "\n",
        include_str!("../../config/providers.example.toml")
    );

    /// Every provider credential variable set; the secrets key (a 32-byte key, checked
    /// as one) is not.
    pub(super) fn env_with_all_keys(var: &str) -> Option<String> {
        (var.ends_with("_KEY") && var != "OMNIGATE_SECRETS_KEY").then(|| format!("value-of-{var}"))
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{env_with_all_keys, EXAMPLE};
    use super::*;

    #[test]
    fn the_secrets_key_is_read_from_its_variable_and_a_bad_one_is_named() {
        let key = "ab".repeat(32);
        let with = |value: &'static str| {
            move |var: &str| (var == "OMNIGATE_SECRETS_KEY").then(|| value.to_string())
        };
        let cfg = Config::from_toml_str("", |var: &str| {
            (var == "OMNIGATE_SECRETS_KEY").then(|| key.clone())
        })
        .unwrap();
        assert_eq!(
            cfg.server.secrets_key.as_ref().map(Secret::expose),
            Some(key.as_str())
        );
        assert!(!format!("{cfg:?}").contains(&key), "the key never prints");
        let err = Config::from_toml_str("", with("too-short"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.secrets_key_env") && !err.contains("too-short"),
            "{err}"
        );
        assert!(Config::from_toml_str("", |_| None)
            .unwrap()
            .server
            .secrets_key
            .is_none());
    }

    #[test]
    fn unknown_keys_and_missing_credentials_name_the_key() {
        let base = EXAMPLE;
        let err = Config::from_toml_str(
            &format!("{base}\n[poller.extra]\nx = 1\n"),
            env_with_all_keys,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("extra"), "{err}");
        let err = Config::from_toml_str(base, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("providers.anyfast.api_key_env") && err.contains("ANYFAST_API_KEY"),
            "{err}"
        );
        let bad = base.replace("poll_interval_secs = 5.0", "poll_interval_secs = -1.0");
        let err = Config::from_toml_str(&bad, env_with_all_keys)
            .unwrap_err()
            .to_string();
        assert!(err.contains("poll_interval_secs"), "{err}");
        let bad = base.replace("dialect = \"modellix\"", "dialect = \"sora\"");
        let err = Config::from_toml_str(&bad, env_with_all_keys)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dialect") || err.contains("sora"), "{err}");
    }

    #[test]
    fn env_overrides_sections_and_ignores_other_omnigate_variables() {
        std::env::set_var("OMNIGATE_POLLER__TICK_MS", "123");
        std::env::set_var("OMNIGATE_ADMIN_TOKEN", "not-a-setting");
        let cfg = Config::load(None).expect("stray OMNIGATE_* variables are not settings");
        assert_eq!(cfg.poller.tick_ms, 123);
        std::env::set_var("OMNIGATE_POLLER__TICK_MSS", "1");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("tick_mss"), "{err}");
        std::env::remove_var("OMNIGATE_POLLER__TICK_MSS");
        std::env::remove_var("OMNIGATE_POLLER__TICK_MS");
        std::env::remove_var("OMNIGATE_ADMIN_TOKEN");
    }
}
