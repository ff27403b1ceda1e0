//! One wrapper around every adapter: each provider call runs in an `upstream_call` span
//! and is timed and counted by provider, operation (`submit`, `status`, `lookup`) and
//! outcome (`ok` or the error class), so no adapter has to remember to.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::{Capabilities, Lookup, Provider, ProviderError, Submitted, UpstreamTask};
use crate::domain::VideoRequest;
use crate::telemetry::metrics;

pub(super) struct Instrumented(pub Arc<dyn Provider>);

/// Which task a call is about: by our id (submit, lookup) or the provider's (status).
enum Id<'a> {
    Ours(&'a str),
    Theirs(&'a str),
}

impl Instrumented {
    async fn observe<T>(
        &self,
        operation: &'static str,
        id: Id<'_>,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let provider = self.0.name();
        let span = tracing::info_span!(
            "upstream_call",
            provider,
            operation,
            task_id = tracing::field::Empty,
            upstream_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.kind = "client",
            otel.name = format_args!("{provider} {operation}"),
        );
        match id {
            Id::Ours(id) => span.record("task_id", id),
            Id::Theirs(id) => span.record("upstream_id", id),
        };
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind.code(),
        };
        span.record("outcome", outcome);
        metrics::upstream_call(provider, operation, outcome, started.elapsed());
        result
    }
}

#[async_trait]
impl Provider for Instrumented {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn capabilities(&self) -> &Capabilities {
        self.0.capabilities()
    }

    async fn submit_with_callback(
        &self,
        task_id: &str,
        req: &VideoRequest,
        callback_url: Option<&str>,
    ) -> Result<Submitted, ProviderError> {
        let call = self.0.submit_with_callback(task_id, req, callback_url);
        self.observe("submit", Id::Ours(task_id), call).await
    }

    fn parse_callback(&self, body: &[u8]) -> Result<UpstreamTask, ProviderError> {
        self.0.parse_callback(body)
    }

    async fn query(&self, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
        self.observe("status", Id::Theirs(upstream_id), self.0.query(upstream_id))
            .await
    }

    async fn find_by_external_id(&self, task_id: &str) -> Result<Lookup, ProviderError> {
        self.observe(
            "lookup",
            Id::Ours(task_id),
            self.0.find_by_external_id(task_id),
        )
        .await
    }
}
