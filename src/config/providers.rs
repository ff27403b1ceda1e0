//! `[providers.<name>]`: each upstream's dialect, credential, models, prices, timeouts
//! and caps.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::Secret;
use crate::domain::{Feature, Mode, Model, OnOff};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Modellix,
    /// Kling's own body; anyfast, kkiai and Kling's own host.
    Kling,
    Apimodels,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSubmit {
    #[default]
    Fail,
    Resubmit,
}

/// How omnigate authenticates to a provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Credential {
    #[default]
    Missing,
    /// `Authorization: Bearer <key>` (every reseller).
    Bearer(Secret),
    /// Kling's own host: an HS256 JWT signed with the secret key, issued by the access key.
    KlingJwt {
        access_key: Secret,
        secret_key: Secret,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub dialect: Dialect,
    /// Scheme and host, e.g. `https://www.anyfast.ai`.
    pub base_url: String,
    /// Env var holding a bearer API key (resellers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Env vars holding Kling's access key and secret key (Kling's own host only).
    #[serde(default)]
    pub access_key_env: Option<String>,
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Models this provider sells, in omnigate's spelling.
    pub models: Vec<Model>,
    /// USD per second of output video, per model (keyed by model name).
    #[serde(default)]
    pub prices: BTreeMap<String, PriceTable>,
    /// Whole-request timeout for one upstream call.
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout_secs: f64,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout_secs: f64,
    /// Interval between status polls of one task.
    #[serde(default = "defaults::poll_interval")]
    pub poll_interval_secs: f64,
    /// Lower wins among providers with the same price.
    #[serde(default)]
    pub priority: i32,
    /// Kling dialect: path prefix before `/v1/videos/...` (`/kling` for resellers, empty
    /// for Kling's own host).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Kling dialect: query path template, `{task_id}` replaced (anyfast answers queries
    /// at `/kling/v1/videos/text2video/{task_id}`).
    #[serde(default)]
    pub query_path: Option<String>,
    /// Request features this provider cannot carry although its dialect can; requests
    /// using them go elsewhere.
    #[serde(default)]
    pub unsupported_features: Vec<Feature>,
    /// Kling dialect: send `element_id` as a JSON string instead of a number (kkiai's
    /// parameter table types it as a string). Unset: on for kkiai (see `is_kkiai`).
    #[serde(default)]
    pub element_id_as_string: Option<bool>,
    /// Kling dialect: send `duration` even for a base-video edit, where the output lasts
    /// as long as the input and the value is ignored (kkiai's parameter table marks
    /// `duration` Required without exception; Kling and anyfast want it left out there).
    /// Unset: on for kkiai (see `is_kkiai`).
    #[serde(default)]
    pub always_send_duration: Option<bool>,
    /// What to do with a task whose submit may or may not have reached this provider when
    /// the provider cannot look tasks up by our id: `fail` it (never a double charge) or
    /// `resubmit` it (never a lost task, at the risk of a duplicate).
    #[serde(default)]
    pub unknown_submit: UnknownSubmit,
    /// Tasks submitted here and not yet finished, at most, across every gateway process
    /// sharing the database (held in the store). Unset: no cap, and no bookkeeping.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Submits here per minute (a fixed one-minute window), at most, across every process.
    #[serde(default)]
    pub max_submits_per_minute: Option<u32>,
    #[serde(skip)]
    pub credential: Credential,
    /// Set for the built-in sandbox upstream; shown on every task it serves.
    #[serde(skip)]
    pub sandbox: bool,
}

mod defaults {
    pub fn request_timeout() -> f64 {
        30.0
    }
    pub fn connect_timeout() -> f64 {
        5.0
    }
    pub fn poll_interval() -> f64 {
        10.0
    }
}

impl ProviderConfig {
    /// A provider named kkiai or on a kkiai host. Its dialect quirks (string element ids,
    /// a duration on every create) are then on unless the config says otherwise, so an
    /// operator who copies only the basics still sends what kkiai's table requires.
    pub fn is_kkiai(&self, name: &str) -> bool {
        let host = url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        name.to_ascii_lowercase().contains("kkiai")
            || host.is_some_and(|h| h == "kkiai.com" || h.ends_with(".kkiai.com"))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_secs)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_secs)
    }

    pub fn serves(&self, model: Model) -> bool {
        self.models.contains(&model)
    }

    pub fn price_table(&self, model: Model) -> Option<&PriceTable> {
        self.prices.get(model.as_str())
    }
}

/// USD per second of output for each mode and audio option. A missing entry means the
/// provider does not sell that combination; `*_keep_sound` falls back to the plain price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub std: Option<f64>,
    pub std_sound: Option<f64>,
    pub std_keep_sound: Option<f64>,
    pub pro: Option<f64>,
    pub pro_sound: Option<f64>,
    pub pro_keep_sound: Option<f64>,
}

impl PriceTable {
    pub fn per_second(&self, mode: Mode, sound: OnOff, keep_original_sound: bool) -> Option<f64> {
        let (plain, with_sound, keep) = match mode {
            Mode::Std => (self.std, self.std_sound, self.std_keep_sound),
            Mode::Pro => (self.pro, self.pro_sound, self.pro_keep_sound),
        };
        match (sound, keep_original_sound) {
            (OnOff::On, _) => with_sound,
            (OnOff::Off, true) => keep.or(plain),
            (OnOff::Off, false) => plain,
        }
    }

    /// Each (mode and audio option, price) in a fixed order.
    pub fn entries(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("std", self.std),
            ("std_sound", self.std_sound),
            ("std_keep_sound", self.std_keep_sound),
            ("pro", self.pro),
            ("pro_sound", self.pro_sound),
            ("pro_keep_sound", self.pro_keep_sound),
        ]
    }
}

pub(super) fn validate_provider(name: &str, p: &ProviderConfig) -> anyhow::Result<()> {
    let url = url::Url::parse(&p.base_url)
        .with_context(|| format!("providers.{name}.base_url: not a URL: {:?}", p.base_url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("providers.{name}.base_url: must be http or https");
    }
    if p.models.is_empty() {
        bail!("providers.{name}.models: list at least one model");
    }
    for (field, v) in [
        ("max_in_flight", p.max_in_flight),
        ("max_submits_per_minute", p.max_submits_per_minute),
    ] {
        if v == Some(0) {
            bail!("providers.{name}.{field}: must be at least 1 (leave it unset for no cap)");
        }
    }
    for (field, v) in [
        ("request_timeout_secs", p.request_timeout_secs),
        ("connect_timeout_secs", p.connect_timeout_secs),
        ("poll_interval_secs", p.poll_interval_secs),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("providers.{name}.{field}: must be a positive number of seconds");
        }
    }
    if p.dialect != Dialect::Kling
        && (p.path_prefix.is_some()
            || p.query_path.is_some()
            || p.element_id_as_string.is_some()
            || p.always_send_duration.is_some())
    {
        bail!("providers.{name}: path_prefix, query_path, element_id_as_string and always_send_duration are for the kling dialect only");
    }
    for (model, table) in &p.prices {
        let Some(m) = Model::parse(model) else {
            bail!("providers.{name}.prices.{model}: unknown model");
        };
        if !p.serves(m) {
            bail!("providers.{name}.prices.{model}: priced but not listed in models");
        }
        for (key, v) in table.entries() {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                bail!("providers.{name}.prices.{model}.{key}: must be a non-negative number");
            }
        }
    }
    for m in &p.models {
        if p.price_table(*m).is_none() {
            bail!(
                "providers.{name}.prices.{}: missing (every served model needs a price table)",
                m.as_str()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixtures::{env_with_all_keys, EXAMPLE};
    use crate::config::Config;

    #[test]
    fn the_example_config_is_valid_and_secrets_do_not_print() {
        let toml = EXAMPLE;
        let cfg = Config::from_toml_str(toml, env_with_all_keys).expect("example config loads");
        assert_eq!(cfg.providers.len(), 4);
        let anyfast = &cfg.providers["anyfast"];
        assert_eq!(anyfast.models, vec![Model::KlingV3Omni]);
        assert!(
            matches!(&anyfast.credential, Credential::Bearer(s) if s.expose() == "value-of-ANYFAST_API_KEY")
        );
        assert!(!format!("{cfg:?}").contains("value-of-"));
        let p = cfg.providers["apimodels"]
            .price_table(Model::KlingV3Omni)
            .unwrap();
        assert_eq!(p.per_second(Mode::Pro, OnOff::Off, true), Some(0.1059));
        assert_eq!(p.per_second(Mode::Std, OnOff::On, false), Some(0.0956));
    }

    #[test]
    fn provider_caps_and_the_queue_are_read_and_checked_naming_the_key() {
        let capped = EXAMPLE.replace("# max_in_flight = 20", "max_in_flight = 20");
        let cfg = Config::from_toml_str(&capped, env_with_all_keys).unwrap();
        assert_eq!(cfg.providers["anyfast"].max_in_flight, Some(20));
        assert_eq!(cfg.queue.default_max_wait_secs, 3600);
        for (bad, key) in [
            (
                EXAMPLE.replace("# max_in_flight = 20", "max_in_flight = 0"),
                "providers.anyfast.max_in_flight",
            ),
            (
                EXAMPLE.replace(
                    "default_max_wait_secs = 3600",
                    "default_max_wait_secs = 90000",
                ),
                "queue.default_max_wait_secs",
            ),
        ] {
            let err = Config::from_toml_str(&bad, env_with_all_keys).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
    }
}
