//! `[database]`: which store (PostgreSQL or the embedded SQLite) and its pool.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...` for production, `sqlite://path` for the embedded single-machine store.
    pub url: String,
    pub max_connections: u32,
    /// Seconds a request waits for a pooled connection (or a new one) before it is answered
    /// 503 `store_unavailable`: a database outage fails requests fast instead of piling them up.
    pub acquire_timeout_secs: f64,
    /// Longest one statement may run, in seconds: PostgreSQL's `statement_timeout`; on
    /// SQLite the `busy_timeout`, how long a write waits for the database lock.
    pub statement_timeout_secs: f64,
    /// SQLite only: MiB of the database file each connection maps into memory
    /// (`PRAGMA mmap_size`; 0 turns mapping off). Pages past the mapping are read through
    /// the kernel, which slows writes once the file outgrows it. Mapped pages count in the
    /// process's RSS once per connection that touched them, though the OS holds one copy.
    pub sqlite_mmap_mib: u64,
}

/// Past this a mapping is a typo, not a choice (SQLite caps it at its compile-time
/// maximum anyway, silently).
const MAX_SQLITE_MMAP_MIB: u64 = 1 << 20;

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://omnigate.db".into(),
            max_connections: 10,
            acquire_timeout_secs: 5.0,
            statement_timeout_secs: 15.0,
            sqlite_mmap_mib: 256,
        }
    }
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.acquire_timeout_secs)
    }
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.statement_timeout_secs)
    }
}

impl DatabaseConfig {
    pub(super) fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 {
            bail!("database.max_connections: must be at least 1");
        }
        if self.sqlite_mmap_mib > MAX_SQLITE_MMAP_MIB {
            bail!("database.sqlite_mmap_mib: must be at most {MAX_SQLITE_MMAP_MIB} (1 TiB)");
        }
        if !(self.url.starts_with("postgres://")
            || self.url.starts_with("postgresql://")
            || self.url.starts_with("sqlite:"))
        {
            bail!("database.url: must start with postgres://, postgresql:// or sqlite:");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::{env_with_all_keys, EXAMPLE};
    use crate::config::Config;

    #[test]
    fn the_sqlite_mapping_is_read_and_bounded() {
        let base = EXAMPLE;
        let cfg = Config::from_toml_str(base, env_with_all_keys).unwrap();
        assert_eq!(cfg.database.sqlite_mmap_mib, 256);
        let huge = base.replace("sqlite_mmap_mib = 256", "sqlite_mmap_mib = 2000000");
        let err = Config::from_toml_str(&huge, env_with_all_keys).unwrap_err();
        assert!(
            format!("{err:#}").contains("database.sqlite_mmap_mib"),
            "{err:#}"
        );
    }
}
