//! Routing by outcomes: among providers priced within `routing.outcome_margin` of the
//! cheapest capable one, the one whose accepted tasks complete most often goes first.
//! Price still rules outside the margin, and a provider without enough ended tasks in the
//! health window (`routing.outcome_min_tasks`) is never moved.

use super::Plan;

/// Moves the best-rated candidate within `margin` of the cheapest to the front when its
/// completed-task rate (`rate_of`, 0-1, None when not known) beats the cheapest's, and
/// records why on the plan.
pub fn prefer_completed(plan: &mut Plan, rate_of: impl Fn(&str) -> Option<f64>, margin: f64) {
    let Some(first) = plan.candidates.first() else {
        return;
    };
    let Some(leader_rate) = rate_of(&first.upstream.name) else {
        return;
    };
    let ceiling = first.estimate_usd * (1.0 + margin) + 1e-9;
    let best = plan
        .candidates
        .iter()
        .enumerate()
        .skip(1)
        .take_while(|(_, c)| c.estimate_usd <= ceiling)
        .filter_map(|(i, c)| rate_of(&c.upstream.name).map(|r| (i, r)))
        .filter(|(_, r)| *r > leader_rate)
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
    let Some((index, rate)) = best else {
        return;
    };
    let moved = plan.candidates.remove(index);
    plan.preferred = Some(format!(
        "better completed-task rate ({:.0}% against {:.0}% for {}) within {:.0}% of the cheapest price, at ${:.4} estimated",
        rate * 100.0,
        leader_rate * 100.0,
        first_name(plan),
        margin * 100.0,
        moved.estimate_usd
    ));
    plan.candidates.insert(0, moved);
}

fn first_name(plan: &Plan) -> &str {
    plan.candidates
        .first()
        .map_or("", |c| c.upstream.name.as_str())
}
