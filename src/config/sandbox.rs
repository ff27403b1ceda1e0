//! `[sandbox]`: the built-in simulated upstream, and when it runs.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::Config;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// `auto` (the default) runs the sandbox only with the embedded SQLite store and no
    /// provider configured; `always` runs it on any store, but only with no provider (the
    /// sandbox is never mixed with real providers); `never` never.
    pub enabled: SandboxMode,
    /// Seconds a sandbox task spends queued, then processing, before it completes.
    pub task_seconds: f64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            enabled: SandboxMode::Auto,
            task_seconds: 6.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    Auto,
    Always,
    Never,
}

impl Config {
    pub fn sandbox_wanted(&self) -> bool {
        match self.sandbox.enabled {
            SandboxMode::Always => true,
            SandboxMode::Never => false,
            SandboxMode::Auto => self.providers.is_empty() && self.database.is_sqlite(),
        }
    }

    /// The sandbox runs only where nothing else could serve a task, and never beside real
    /// providers.
    pub(super) fn validate_sandbox(&self) -> anyhow::Result<()> {
        if self.providers.is_empty() && self.sandbox.enabled == SandboxMode::Never {
            bail!("providers: none configured and sandbox.enabled = \"never\"; nothing could serve a task");
        }
        match self.sandbox.enabled {
            SandboxMode::Always if !self.providers.is_empty() => bail!(
                "sandbox.enabled: \"always\" with real providers configured; the sandbox is never mixed into routing with real providers (remove [providers] or set it to \"auto\" or \"never\")"
            ),
            SandboxMode::Auto if self.providers.is_empty() && !self.database.is_sqlite() => bail!(
                "sandbox.enabled: \"auto\" runs the sandbox only on the embedded SQLite store and this database is PostgreSQL; configure [providers], or set sandbox.enabled = \"always\" to run the sandbox on it deliberately"
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_copy_of_the_example_config_runs_the_sandbox_and_needs_no_credential() {
        let toml = include_str!("../../config/omnigate.example.toml");
        let cfg = Config::from_toml_str(toml, |_| None).expect("loads with no env at all");
        assert!(cfg.providers.is_empty());
        assert!(cfg.sandbox_wanted());
    }

    #[test]
    fn no_providers_means_sandbox() {
        let cfg = Config::from_toml_str("", |_| None).unwrap();
        assert!(cfg.sandbox_wanted());
        assert_eq!(cfg.database.url, "sqlite://omnigate.db");
    }
}
