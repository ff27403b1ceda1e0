//! The `[log]`, `[metrics]` and `[otel]` config sections and their start-up checks.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of every enclosing span (`request_id`,
    /// `route`, ...), for log shippers.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Which lines are written, in `RUST_LOG` syntax; `RUST_LOG`, when set, wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info,sqlx=warn,tower_http=info".into(),
        }
    }
}

/// Prometheus metrics at `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` and record metrics. Off: `/metrics` is a 404 and nothing is
    /// recorded (the recording calls are no-ops).
    pub enabled: bool,
    /// Require the admin bearer token (`admin.token_env`) on `/metrics`. Off by default,
    /// like most exporters: the metrics hold no secrets, ids or key names, only counts.
    pub require_admin_token: bool,
    /// Seconds between refreshes of the gauges read from the database (tasks by status,
    /// oldest unfinished task, poll lag): one cheap indexed query per refresh per process.
    pub store_gauges_interval_secs: f64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            require_admin_token: false,
            store_gauges_interval_secs: 5.0,
        }
    }
}

impl MetricsConfig {
    pub fn store_gauges_interval(&self) -> Duration {
        Duration::from_secs_f64(self.store_gauges_interval_secs)
    }
}

/// OpenTelemetry span export over OTLP/HTTP (protobuf). Off by default; when off no
/// exporter, thread or layer exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    pub enabled: bool,
    /// The collector's OTLP/HTTP base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`); spans are
    /// POSTed to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces sampled, 0.0-1.0, decided at each root span (a request, a task
    /// step); the spans inside it follow that decision.
    pub sample_ratio: f64,
    /// Seconds one export request may take.
    pub timeout_secs: f64,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            service_name: "omnigate".into(),
            sample_ratio: 1.0,
            timeout_secs: 10.0,
        }
    }
}

impl OtelConfig {
    /// Where spans are sent: the base URL with the OTLP traces path.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }
}

/// Checks the three sections; `admin_token` says whether an admin token is configured.
pub fn validate(
    log: &LogConfig,
    metrics: &MetricsConfig,
    otel: &OtelConfig,
    admin_token: bool,
) -> anyhow::Result<()> {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.filter) {
        bail!("log.filter: not a valid filter ({e})");
    }
    let secs = metrics.store_gauges_interval_secs;
    if !(secs.is_finite() && (0.1..=3600.0).contains(&secs)) {
        bail!("metrics.store_gauges_interval_secs: must be between 0.1 and 3600");
    }
    if metrics.require_admin_token && !admin_token {
        bail!(
            "metrics.require_admin_token: needs admin.token_env (the token /metrics would require)"
        );
    }
    if otel.enabled {
        match url::Url::parse(&otel.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => bail!("otel.endpoint: must be an http(s) URL, e.g. http://127.0.0.1:4318"),
        }
        if otel.service_name.trim().is_empty() {
            bail!("otel.service_name: must not be empty");
        }
    }
    if !(otel.sample_ratio.is_finite() && (0.0..=1.0).contains(&otel.sample_ratio)) {
        bail!("otel.sample_ratio: must be between 0.0 and 1.0");
    }
    if !(otel.timeout_secs.is_finite() && otel.timeout_secs > 0.0 && otel.timeout_secs <= 3600.0) {
        bail!("otel.timeout_secs: must be a positive number of seconds (at most 3600)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_value_is_named() {
        let (l, m, o) = (
            LogConfig::default(),
            MetricsConfig::default(),
            OtelConfig::default(),
        );
        validate(&l, &m, &o, false).unwrap();
        let err = |l: &LogConfig, m: &MetricsConfig, o: &OtelConfig| {
            validate(l, m, o, false).unwrap_err().to_string()
        };
        let bad_filter = LogConfig {
            filter: "info,[[".into(),
            ..l.clone()
        };
        assert!(err(&bad_filter, &m, &o).starts_with("log.filter"));
        let needs_token = MetricsConfig {
            require_admin_token: true,
            ..m.clone()
        };
        assert!(err(&l, &needs_token, &o).starts_with("metrics.require_admin_token"));
        let bad_endpoint = OtelConfig {
            enabled: true,
            endpoint: "127.0.0.1:4318".into(),
            ..o.clone()
        };
        assert!(err(&l, &m, &bad_endpoint).starts_with("otel.endpoint"));
        let bad_ratio = OtelConfig {
            sample_ratio: 1.5,
            ..o.clone()
        };
        assert!(err(&l, &m, &bad_ratio).starts_with("otel.sample_ratio"));
        assert_eq!(o.traces_url(), "http://127.0.0.1:4318/v1/traces");
    }
}
