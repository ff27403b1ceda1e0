//! One submit to one provider, and recording what came of it: the acceptance first (it
//! must not be lost), the attempt and health statistics after it, best-effort.

use std::time::{Duration, Instant};

use crate::domain::{TaskStatus, VideoRequest};
use crate::gateway::Gateway;
use crate::health::Phase;
use crate::providers::{ErrorKind, ProviderError, Submitted};
use crate::routing::Candidate;
use crate::store::{now_ms, Acceptance, Attempt, TaskError, TaskState};

/// Extra time on top of an upstream call's timeout before another claim may decide the
/// submitter died. The lease is pushed ahead while a call is in flight.
const SUBMIT_LEASE_MARGIN_MS: i64 = 30_000;
/// Pauses before each retry of recording an acceptance (the provider has the task, and
/// will bill it: its id must not be lost to a blip of the database).
const RECORD_RETRY_DELAYS_MS: [u64; 4] = [50, 200, 500, 1_000];

/// Seconds between polls of a task at `upstream`: its own interval, or the backstop pace
/// (never faster than its own) when it was given an upstream callback.
pub(crate) fn poll_interval(
    gw: &Gateway,
    upstream: &crate::routing::Upstream,
    with_callback: bool,
) -> Duration {
    let own = upstream.config.poll_interval();
    if with_callback && upstream.adapter.capabilities().upstream_callback {
        own.max(gw.config.webhooks.callback_poll_interval())
    } else {
        own
    }
}

/// The URL `provider` is to call back on for task `id`, if callbacks are on and its
/// dialect takes one. A failed read of the token means no callback (the task is then
/// polled at its provider's pace), never a failed submit.
async fn upstream_callback_url(gw: &Gateway, id: &str, candidate: &Candidate) -> Option<String> {
    let webhooks = &gw.config.webhooks;
    if webhooks.public_base_url.is_none()
        || !candidate.upstream.adapter.capabilities().upstream_callback
    {
        return None;
    }
    match gw.store.callback_token(id).await {
        Ok(token) => webhooks.upstream_callback_url(&token?),
        Err(e) => {
            tracing::warn!(task_id = %id, error = ?e, "could not read the upstream callback token; submitting without one");
            None
        }
    }
}

/// How long a submit to this provider may hold its task before the lease is pushed ahead.
pub(super) fn submit_lease_ms(candidate: &Candidate) -> i64 {
    candidate.upstream.config.request_timeout().as_millis() as i64 + SUBMIT_LEASE_MARGIN_MS
}

/// What one submit to one provider came to.
pub(crate) enum Attempted {
    /// Its record is written, or still being retried in the background.
    Accepted {
        state: TaskState,
        upstream_id: String,
    },
    Refused(ProviderError),
    /// Another claim holds the task now: the provider was not called.
    LeaseLost,
}

/// One submit to one provider by the holder of `token`: the acceptance is recorded first
/// (retried briefly, then in the background), the attempt and health statistics after it
/// and only best-effort.
pub(crate) async fn attempt_submit(
    gw: &Gateway,
    id: &str,
    token: &str,
    candidate: &Candidate,
    req: &VideoRequest,
    lease_is_fresh: bool,
) -> anyhow::Result<Attempted> {
    let up = &candidate.upstream;
    // Durable before the call: after a crash, a task without the mark is known never to
    // have been sent (the reconciler submits it again safely), and only one with it may
    // be at the provider (issue 19.16). A dialect that can look a task up by our id needs
    // no mark (the reconciler asks the provider), so it pays no extra write.
    if !up.adapter.capabilities().external_task_id
        && !gw.store.mark_submit_started(id, token).await?
    {
        return Ok(Attempted::LeaseLost);
    }
    let started = Instant::now();
    let lease_ms = submit_lease_ms(candidate);
    let callback_url = upstream_callback_url(gw, id, candidate).await;
    let submit = up
        .adapter
        .submit_with_callback(id, req, callback_url.as_deref());
    let result = if lease_is_fresh {
        gw.store.keep_leased(id, token, lease_ms, submit).await
    } else {
        let Some(result) = gw.store.while_leased(id, token, lease_ms, submit).await? else {
            return Ok(Attempted::LeaseLost);
        };
        result
    };
    let latency = started.elapsed();
    let mut attempt = Attempt {
        provider: up.name.clone(),
        outcome: "accepted".into(),
        provider_task_id: None,
        error_code: None,
        message: None,
        latency_ms: latency.as_millis() as i64,
        at: now_ms(),
    };
    let attempted = match result {
        Ok(submitted) => {
            attempt.provider_task_id = Some(submitted.upstream_id.clone());
            let given = callback_url.is_some();
            let recorded =
                record_acceptance(gw, id, token, candidate, &submitted, &attempt, req, given).await;
            match recorded {
                Recorded::Yes | Recorded::Pending => Attempted::Accepted {
                    state: first_state(&submitted),
                    upstream_id: submitted.upstream_id,
                },
                Recorded::ByAnotherClaim => Attempted::LeaseLost,
            }
        }
        Err(e) => {
            attempt.outcome = if e.ambiguous { "unknown" } else { "refused" }.into();
            attempt.error_code = Some(e.kind.code().to_string());
            attempt.message = Some(e.message.clone());
            if let Err(err) = gw.store.record_attempt(id, &attempt).await {
                tracing::warn!(task_id = %id, error = ?err, "could not record a submit attempt");
            }
            Attempted::Refused(e)
        }
    };
    let outcome = match &attempted {
        Attempted::Refused(e) => Err(e),
        _ => Ok(()),
    };
    record_health(gw, &up.name, Phase::Submit, outcome, latency).await;
    Ok(attempted)
}

/// Statistics are never worth failing a task over.
pub(crate) async fn record_health(
    gw: &Gateway,
    provider: &str,
    phase: Phase,
    outcome: Result<(), &ProviderError>,
    latency: Duration,
) {
    let recorded = gw
        .health
        .record(
            provider,
            phase,
            outcome.map_err(|e| e.kind),
            outcome.err().map(|e| e.message.as_str()),
            latency,
        )
        .await;
    if let Err(e) = recorded {
        tracing::warn!(provider, error = ?e, "could not record a provider outcome");
    }
}

/// Whether a provider's acceptance made it into the store.
enum Recorded {
    Yes,
    /// Still being retried in the background.
    Pending,
    /// Another claim holds the task: it answers for it (the attempt row keeps the id).
    ByAnotherClaim,
}

/// Records a provider's acceptance, retrying a failed write briefly and then in the
/// background for as long as the lease lasts.
// Each argument is a distinct part of the one record; a struct for them would only be
// unpacked again at once.
#[allow(clippy::too_many_arguments)]
async fn record_acceptance(
    gw: &Gateway,
    id: &str,
    token: &str,
    candidate: &Candidate,
    submitted: &Submitted,
    attempt: &Attempt,
    req: &VideoRequest,
    callback_given: bool,
) -> Recorded {
    let slim_request = slim_request(req);
    let timed = AcceptTiming::of(gw, &candidate.upstream, req, callback_given);
    let acceptance = Acceptance {
        upstream_id: &submitted.upstream_id,
        state: first_state(submitted),
        first_poll_at: timed.first_poll_at,
        attempt: Some(attempt),
        slim_request: slim_request.as_deref(),
        callback_given,
        timing_key: Some(&timed.key),
        eta_at: timed.eta_at,
    };
    for delay in RECORD_RETRY_DELAYS_MS {
        match gw.store.mark_accepted(id, token, &acceptance).await {
            Ok(true) => return Recorded::Yes,
            Ok(false) => {
                // Another claim holds the task (it found our submit late): it answers for it,
                // and the attempt row just written lets it recover the provider's id.
                tracing::warn!(task_id = %id, upstream_id = %submitted.upstream_id, "accepted after another claim took the task over");
                return Recorded::ByAnotherClaim;
            }
            Err(e) => {
                tracing::warn!(task_id = %id, upstream_id = %submitted.upstream_id, error = ?e, "recording the acceptance failed; retrying");
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
    tracing::error!(task_id = %id, provider = %candidate.upstream.name, upstream_id = %submitted.upstream_id,
        "could not record the provider's acceptance; retrying in the background");
    let (store, id, token) = (gw.store.clone(), id.to_string(), token.to_string());
    let (upstream_id, attempt) = (submitted.upstream_id.clone(), attempt.clone());
    let (state, first_poll_at, eta_at) = (
        acceptance.state,
        acceptance.first_poll_at,
        acceptance.eta_at,
    );
    let deadline = Instant::now() + Duration::from_millis(submit_lease_ms(candidate) as u64);
    gw.submits.spawn(crate::telemetry::request_id::carry(async move {
        let acceptance = Acceptance {
            upstream_id: &upstream_id,
            state,
            first_poll_at,
            attempt: Some(&attempt),
            slim_request: slim_request.as_deref(),
            callback_given,
            timing_key: Some(&timed.key),
            eta_at,
        };
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if store.mark_accepted(&id, &token, &acceptance).await.is_ok() {
                tracing::info!(task_id = %id, %upstream_id, "acceptance recorded after retries");
                return;
            }
        }
        tracing::error!(task_id = %id, %upstream_id, "acceptance never recorded; the reconciler will look the task up");
    }));
    Recorded::Pending
}

/// What an acceptance records of the provider's completion times (`timing/`).
struct AcceptTiming {
    first_poll_at: i64,
    key: String,
    eta_at: Option<i64>,
}

impl AcceptTiming {
    /// The first poll at the p10 of `upstream`'s tasks like `req` (one interval without
    /// history, or when an upstream callback is expected: polls are then the backstop),
    /// and the expected completion at their p50.
    fn of(
        gw: &Gateway,
        upstream: &crate::routing::Upstream,
        req: &VideoRequest,
        callback_given: bool,
    ) -> AcceptTiming {
        let now = now_ms();
        let key = crate::timing::timing_key(req);
        let dist = gw.timings.distribution(&upstream.name, &key);
        let interval = poll_interval(gw, upstream, callback_given);
        let timed = dist.filter(|_| gw.config.poller.adaptive_polls && !callback_given);
        let first = crate::timing::schedule::first_poll_after(
            timed.as_ref(),
            interval,
            gw.config.poller.min_poll_gap(),
        );
        AcceptTiming {
            first_poll_at: now + first.as_millis() as i64,
            key,
            eta_at: dist.map(|d| now + d.p50_ms),
        }
    }
}

/// The request to keep once a provider has the task: without its base64 images (None when
/// it has none, so the stored one stays).
fn slim_request(req: &VideoRequest) -> Option<String> {
    req.without_inline_images()
        .and_then(|r| serde_json::to_string(&r).ok())
}

fn first_state(submitted: &Submitted) -> TaskState {
    match submitted.status {
        TaskStatus::InProgress => TaskState::InProgress,
        _ => TaskState::Queued,
    }
}

/// Records a task the reconciler found at its provider (no submit attempt of ours got it).
pub(crate) async fn accept_found(
    gw: &Gateway,
    id: &str,
    token: &str,
    candidate: &Candidate,
    submitted: &Submitted,
) -> anyhow::Result<()> {
    let request = gw.store.task_request(id).await?;
    let slim = slim_request(&request);
    // Found after an interrupted submit to this same provider: its URL went with that
    // submit when the dialect takes one (and the task has a token).
    let callback_given = candidate.upstream.adapter.capabilities().upstream_callback
        && gw.config.webhooks.public_base_url.is_some();
    let timed = AcceptTiming::of(gw, &candidate.upstream, &request, callback_given);
    let acceptance = Acceptance {
        upstream_id: &submitted.upstream_id,
        state: first_state(submitted),
        first_poll_at: timed.first_poll_at,
        attempt: None,
        slim_request: slim.as_deref(),
        callback_given,
        timing_key: Some(&timed.key),
        eta_at: timed.eta_at,
    };
    gw.store.mark_accepted(id, token, &acceptance).await?;
    Ok(())
}

pub fn task_error(e: &ProviderError, provider: &str) -> TaskError {
    TaskError {
        code: e.kind.code().to_string(),
        message: format!("{provider}: {}", describe(e.kind)),
        provider_message: Some(e.message.clone()).filter(|m| !m.is_empty()),
    }
}

pub fn describe(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Retryable => "the provider is unavailable (server error or connection refused)",
        ErrorKind::RateLimited => "the provider is rate limiting us",
        ErrorKind::ConcurrencyLimited => "the provider's limit on parallel tasks is reached",
        ErrorKind::Billing => "the provider account is out of balance or credits",
        ErrorKind::BadRequest => "the provider rejected the parameters",
        ErrorKind::ContentPolicy => "the provider refused the content (content policy)",
        ErrorKind::Auth => "the provider refused our credentials",
        ErrorKind::NotFound => "the provider does not know the task or model",
        ErrorKind::Timeout => "the provider did not answer in time",
        ErrorKind::Malformed => "the provider's answer could not be read",
        ErrorKind::Unreadable => "the provider's answer could not be interpreted",
    }
}
