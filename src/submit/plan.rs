//! Planning a create: the providers a request may go to, in the order they are tried.

use crate::domain::VideoRequest;
use crate::gateway::Gateway;
use crate::routing::{PassReason, Plan};
use crate::validation;

use super::SubmitError;

/// Checks a request against the rules and the configured providers (and their health)
/// without writing anything: the plan is what a create would try, in order.
pub async fn plan_request(gw: &Gateway, req: &VideoRequest) -> Result<Plan, SubmitError> {
    let allow_private = gw.config.webhooks.allow_private_targets;
    validation::validate_for_gateway(req, allow_private).map_err(|e| SubmitError::Invalid {
        param: Some(e.param),
        message: e.message,
    })?;
    if let Some(names) = req.routing.as_ref().and_then(|r| r.providers.as_ref()) {
        if let Some(unknown) = names.iter().find(|n| gw.router.get(n).is_none()) {
            return Err(SubmitError::Invalid {
                param: Some("routing.providers".into()),
                message: format!(
                    "unknown provider {unknown:?}; configured: {}",
                    gw.router.names().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let health = gw.health.snapshot().await?;
    let mut plan = gw.router.plan(req, &health);
    let routing = &gw.config.routing;
    let timings = gw.timings.snapshot();
    let rate_of = |p: &str| timings.completed_rate(p, routing.outcome_min_tasks);
    crate::routing::outcomes::prefer_completed(&mut plan, rate_of, routing.outcome_margin);
    if plan.candidates.is_empty() {
        return Err(nobody_can_take(&plan));
    }
    Ok(plan)
}

fn nobody_can_take(plan: &Plan) -> SubmitError {
    let reasons: Vec<String> = plan
        .passed_over
        .iter()
        .map(|p| format!("{}: {}", p.provider, p.reason))
        .collect();
    // Capable providers exist but are all failing: that is the providers' trouble (503),
    // not the request's (422).
    if plan
        .passed_over
        .iter()
        .any(|p| p.why == PassReason::CircuitOpen)
    {
        return SubmitError::Unavailable {
            code: "no_provider_available",
            message: format!(
                "every capable provider is unavailable ({})",
                reasons.join("; ")
            ),
            provider_message: None,
            timed_out: false,
        };
    }
    SubmitError::NoCapableProvider {
        param: plan.passed_over.iter().find_map(|p| p.param.clone()),
        message: format!(
            "no configured provider can serve this request ({})",
            reasons.join("; ")
        ),
    }
}
