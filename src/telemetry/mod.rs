//! Observability: logs (text or JSON), request ids, Prometheus metrics, and the optional
//! OpenTelemetry span export. `init` sets up the process-wide subscriber once, at start.

pub mod config;
pub mod http;
pub mod metrics;
pub mod propagation;
pub mod request_id;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use config::{LogConfig, LogFormat, MetricsConfig, OtelConfig};

/// What must outlive the gateway: the span exporter, flushed by [`Telemetry::shutdown`].
#[must_use = "spans still buffered are lost unless shutdown() is called"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The filter of `RUST_LOG` when set, else `log.filter`.
fn filter(log: &LogConfig) -> anyhow::Result<EnvFilter> {
    match EnvFilter::try_from_default_env() {
        Ok(f) => Ok(f),
        Err(_) => EnvFilter::try_new(&log.filter).context("log.filter"),
    }
}

/// Installs the global subscriber: log lines in `log.format`, and span export when
/// `otel.enabled` (with no OpenTelemetry layer at all when it is not, so it costs nothing).
pub fn init(log: &LogConfig, otel: &OtelConfig) -> anyhow::Result<Telemetry> {
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let fmt: BoxedLayer = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_filter(filter(log)?)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter(log)?)
            .boxed(),
    };
    layers.push(fmt);
    let tracer = if otel.enabled {
        let provider = tracer_provider(otel)?;
        let tracer = provider.tracer("omnigate");
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter(log)?)
                .boxed(),
        );
        propagation::enable();
        Some(provider)
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("a tracing subscriber is already installed")?;
    if otel.enabled {
        tracing::info!(endpoint = %otel.traces_url(), "exporting spans over OTLP/HTTP");
    }
    Ok(Telemetry { tracer })
}

/// What every call to a provider carries on behalf of the work it serves: the request's
/// `x-request-id` (when it serves a client request) and, with span export on, the W3C
/// `traceparent` of the current span.
pub fn outgoing(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let req = match request_id::current() {
        Some(id) => req.header(request_id::X_REQUEST_ID, id),
        None => req,
    };
    propagation::inject(req)
}

fn tracer_provider(cfg: &OtelConfig) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::Sampler;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(cfg.traces_url())
        .with_timeout(cfg.timeout())
        .build()
        .context("otel: building the OTLP exporter")?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// No exporter: logs only (tests, embedders with their own subscriber).
    pub fn none() -> Telemetry {
        Telemetry { tracer: None }
    }

    /// Sends the spans still buffered and stops the exporter. The export blocks, so it
    /// runs off the async threads.
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer else { return };
        let done = tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.force_flush() {
                tracing::warn!(error = %e, "otel: flushing spans at shutdown failed");
            }
            provider.shutdown()
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "otel: exporter shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "otel: exporter shutdown panicked"),
        }
    }
}
