//! W3C trace context across the gateway's edges while OpenTelemetry export is on: a
//! caller's `traceparent` makes the request's span a child of the caller's, and provider
//! calls carry ours, so a collector shows one trace from client to provider. Off, nothing
//! is read or written.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Set once when span export starts; its absence is the "off" switch.
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

pub(super) fn enable() {
    let _ = PROPAGATOR.set(TraceContextPropagator::new());
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the caller's trace when the request carries a `traceparent`.
pub fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
    let Some(propagator) = PROPAGATOR.get() else {
        return;
    };
    if headers.contains_key("traceparent") {
        // A malformed traceparent yields an empty context: the span stays a root.
        let _ = span.set_parent(propagator.extract(&Headers(headers)));
    }
}

/// Adds the current span's `traceparent` (and `tracestate`) to an outgoing request.
pub fn inject(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let Some(propagator) = PROPAGATOR.get() else {
        return req;
    };
    let mut fields = HashMap::new();
    propagator.inject_context(&tracing::Span::current().context(), &mut fields);
    fields
        .into_iter()
        .fold(req, |req, (name, value)| req.header(name, value))
}
