//! Provider choice: which configured providers can carry a request, what each would
//! charge, and in what order to try them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::ProviderConfig;
use crate::domain::{FrameType, Model, ReferType, VideoRequest, DEFAULT_DURATION};
use crate::health::{Circuit, ProviderHealth};
use crate::providers::{Capabilities, Provider};

pub mod outcomes;

/// Input videos are 3-10 s; until a base video's length is known its edit is estimated
/// at the longest, so a budget check never under-counts.
pub const ASSUMED_BASE_VIDEO_SECONDS: u32 = 10;

/// A configured provider: its settings and its adapter.
pub struct Upstream {
    pub name: String,
    pub config: ProviderConfig,
    pub adapter: Arc<dyn Provider>,
}

#[derive(Clone)]
pub struct Candidate {
    pub upstream: Arc<Upstream>,
    pub estimate_usd: f64,
    /// Its circuit is half-open: the submit is the probe and must claim the probe slot.
    pub probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassReason {
    NotInRouting,
    UnsupportedFeature,
    NotPriced,
    OverMaxCost,
    CircuitOpen,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassedOver {
    pub provider: String,
    pub why: PassReason,
    /// The request field behind the reason, when there is one.
    pub param: Option<String>,
    pub reason: String,
    pub estimate_usd: Option<f64>,
}

pub struct Plan {
    /// Cheapest first, then by configured priority, then by name.
    pub candidates: Vec<Candidate>,
    pub passed_over: Vec<PassedOver>,
    /// Why the first candidate goes first when it is not the cheapest: its better
    /// completed-task rate within the price margin (`outcomes`).
    pub preferred: Option<String>,
}

impl Plan {
    /// Why the first candidate was chosen, in words for the task record.
    pub fn reason_for(&self, index: usize) -> String {
        if let (0, Some(why)) = (index, &self.preferred) {
            return why.clone();
        }
        let c = &self.candidates[index];
        let mut reason = format!(
            "cheapest capable provider at ${:.4} estimated",
            c.estimate_usd
        );
        if index > 0 {
            reason = format!("failover #{index}: {reason}");
        }
        reason
    }
}

#[derive(Default)]
pub struct Router {
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl Router {
    pub fn new(upstreams: Vec<Upstream>) -> Router {
        Router {
            upstreams: upstreams
                .into_iter()
                .map(|u| (u.name.clone(), Arc::new(u)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// Ranks every provider for `req` (already validated), given each one's health.
    pub fn plan(&self, req: &VideoRequest, health: &HashMap<String, ProviderHealth>) -> Plan {
        let mut candidates = Vec::new();
        let mut passed_over = Vec::new();
        for up in self.upstreams.values() {
            match assess(up, req, health.get(&up.name)) {
                Ok(c) => candidates.push(c),
                Err(p) => passed_over.push(p),
            }
        }
        let rate = |c: &Candidate| {
            health
                .get(&c.upstream.name)
                .and_then(|h| h.success_rate)
                .unwrap_or(1.0)
        };
        candidates.sort_by(|a, b| {
            a.estimate_usd
                .total_cmp(&b.estimate_usd)
                .then(a.upstream.config.priority.cmp(&b.upstream.config.priority))
                .then(rate(b).total_cmp(&rate(a)))
                .then(a.upstream.name.cmp(&b.upstream.name))
        });
        Plan {
            candidates,
            passed_over,
            preferred: None,
        }
    }
}

/// Whether one provider can take the request, and at what price; or why not.
fn assess(
    up: &Arc<Upstream>,
    req: &VideoRequest,
    health: Option<&ProviderHealth>,
) -> Result<Candidate, PassedOver> {
    let pass = |why, param: Option<&str>, reason: String, estimate_usd| PassedOver {
        provider: up.name.clone(),
        why,
        param: param.map(str::to_string),
        reason,
        estimate_usd,
    };
    let allowed = req.routing.as_ref().and_then(|r| r.providers.as_ref());
    if allowed.is_some_and(|a| !a.iter().any(|n| n == &up.name)) {
        let why = "not in routing.providers".into();
        return Err(pass(
            PassReason::NotInRouting,
            Some("routing.providers"),
            why,
            None,
        ));
    }
    if let Some((param, why)) = unsupported(&up.config, up.adapter.capabilities(), req) {
        return Err(pass(PassReason::UnsupportedFeature, Some(param), why, None));
    }
    let Some(estimate_usd) = estimate(&up.config, req) else {
        let why = format!(
            "sells no {} mode with sound {}",
            req.mode().as_str(),
            req.sound().as_str()
        );
        return Err(pass(PassReason::NotPriced, Some("mode"), why, None));
    };
    if let Some(max) = req.routing.as_ref().and_then(|r| r.max_cost_usd) {
        if estimate_usd > max {
            let why = format!("estimate ${estimate_usd:.4} is over routing.max_cost_usd ${max}");
            return Err(pass(
                PassReason::OverMaxCost,
                Some("routing.max_cost_usd"),
                why,
                Some(estimate_usd),
            ));
        }
    }
    let circuit = health.map(|h| h.circuit).unwrap_or(Circuit::Closed);
    if circuit == Circuit::Open {
        let why = "circuit open after recent failures".into();
        return Err(pass(PassReason::CircuitOpen, None, why, Some(estimate_usd)));
    }
    Ok(Candidate {
        upstream: up.clone(),
        estimate_usd,
        probe: circuit == Circuit::HalfOpen,
    })
}

/// Seconds billed: the requested output, or for a base-video edit the input's length
/// rounded to the nearest second (as the providers bill it), the longest if undeclared.
pub fn billed_seconds(req: &VideoRequest) -> u32 {
    req.output_seconds().unwrap_or_else(|| {
        req.base_video()
            .and_then(|v| v.duration)
            .map(|d| d.round() as u32)
            .unwrap_or(ASSUMED_BASE_VIDEO_SECONDS)
    })
}

/// Price x seconds on `cfg`, or None if it sells no such combination.
pub fn estimate(cfg: &ProviderConfig, req: &VideoRequest) -> Option<f64> {
    price_per_second(cfg, req).map(|p| round_usd(p * f64::from(billed_seconds(req))))
}

/// Seconds a task reserves of its key's budget: the requested output, or for a base-video
/// edit always the longest input (`ASSUMED_BASE_VIDEO_SECONDS`). The length a client
/// declares is only a claim; the provider bills the input's real length, which the
/// result reveals, so reserving less could let a key spend past its budget.
pub fn reserved_seconds(req: &VideoRequest) -> u32 {
    req.output_seconds().unwrap_or(ASSUMED_BASE_VIDEO_SECONDS)
}

/// What a task on `cfg` reserves of its key's budget (see `reserved_seconds`).
pub fn reservation(cfg: &ProviderConfig, req: &VideoRequest) -> Option<f64> {
    price_per_second(cfg, req).map(|p| round_usd(p * f64::from(reserved_seconds(req))))
}

pub fn price_per_second(cfg: &ProviderConfig, req: &VideoRequest) -> Option<f64> {
    cfg.price_table(req.model)?
        .per_second(req.mode(), req.sound(), req.keeps_original_sound())
}

pub fn round_usd(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The first thing in `req` that this provider cannot carry, as (param, reason).
fn unsupported(
    cfg: &ProviderConfig,
    caps: &Capabilities,
    req: &VideoRequest,
) -> Option<(&'static str, String)> {
    let o1_reference_duration = req.model == Model::KlingVideoO1
        && req.video_list.is_empty()
        && !req.is_o1_five_or_ten()
        && !matches!(req.duration.unwrap_or(DEFAULT_DURATION), 5 | 10);
    let checks: [(bool, &'static str, &str); 10] = [
        (!cfg.serves(req.model), "model", "does not serve this model"),
        (
            req.multi_shot == Some(true) && caps.shot_types.is_empty(),
            "multi_shot",
            "cannot carry multi_shot",
        ),
        (
            o1_reference_duration && !caps.o1_free_duration_from_references,
            "duration",
            "allows kling-video-o1 only 5 or 10 s without a video",
        ),
        (
            !req.element_list.is_empty() && !caps.element_list,
            "element_list",
            "cannot carry element_list",
        ),
        (
            req.negative_prompt().is_some() && !caps.negative_prompt,
            "negative_prompt",
            "cannot carry negative_prompt",
        ),
        (
            req.watermark.is_some() && !caps.watermark,
            "watermark",
            "cannot carry watermark",
        ),
        (
            (req.has_frame(FrameType::FirstFrame) || req.has_frame(FrameType::EndFrame))
                && !caps.frame_images,
            "image_list",
            "cannot mark images as first_frame/end_frame",
        ),
        (
            req.video_list
                .iter()
                .any(|v| v.refer_type() == ReferType::Feature)
                && !caps.feature_video,
            "video_list",
            "cannot carry a feature-reference video (refer_type: feature)",
        ),
        (
            req.video_list
                .iter()
                .any(|v| v.keep_original_sound.is_some())
                && !caps.keep_original_sound,
            "video_list",
            "cannot carry keep_original_sound",
        ),
        (
            req.shot_type.is_some_and(|s| !caps.shot_types.contains(&s)),
            "shot_type",
            "does not offer this shot_type",
        ),
    ];
    let configured = cfg
        .unsupported_features
        .iter()
        .find(|f| f.used_by(req))
        .map(|f| {
            (
                f.param(),
                format!("is configured as unable to carry {}", f.param()),
            )
        });
    checks
        .into_iter()
        .find(|(fails, _, _)| *fails)
        .map(|(_, param, why)| (param, why.to_string()))
        .or(configured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn example_router() -> Router {
        let toml = concat!(
            include_str!("../../config/omnigate.example.toml"),
            "\n",
            include_str!("../../config/providers.example.toml")
        );
        // Every credential variable set; the secrets key (checked as a 32-byte key) not.
        let env = |v: &str| (v != "OMNIGATE_SECRETS_KEY").then(|| format!("value-of-{v}"));
        let cfg = Config::from_toml_str(toml, env).unwrap();
        let upstreams = cfg
            .providers
            .iter()
            .map(|(name, c)| Upstream {
                name: name.clone(),
                config: c.clone(),
                adapter: crate::providers::build(name, c).unwrap(),
            })
            .collect();
        Router::new(upstreams)
    }

    /// The worked quote example in docs/routing-and-prices.md.
    #[test]
    fn the_readme_quote_example_ranks_as_documented() {
        let req: VideoRequest = serde_json::from_value(serde_json::json!({
            "model": "kling-v3-omni", "prompt": "hero <<<element_1>>> crosses the bridge",
            "aspect_ratio": "16:9", "duration": 8, "mode": "std",
            "element_list": [{"element_id": 835266081714884677u64}], "routing": {"max_cost_usd": 1.0}
        }))
        .unwrap();
        let plan = example_router().plan(&req, &HashMap::new());
        let ranked: Vec<(&str, f64)> = plan
            .candidates
            .iter()
            .map(|c| (c.upstream.name.as_str(), c.estimate_usd))
            .collect();
        assert_eq!(
            ranked,
            vec![
                ("anyfast", 0.5064),
                ("apimodels", 0.5064),
                ("kkiai", 0.5064)
            ]
        );
        assert_eq!(plan.passed_over.len(), 1);
        assert_eq!(plan.passed_over[0].provider, "modellix");
        assert_eq!(plan.passed_over[0].param.as_deref(), Some("element_list"));
    }

    #[test]
    fn an_empty_negative_prompt_does_not_pass_over_providers_without_the_feature() {
        let with = |negative: &str| -> Vec<String> {
            let req: VideoRequest = serde_json::from_value(serde_json::json!({
                "model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9",
                "negative_prompt": negative
            }))
            .unwrap();
            let plan = example_router().plan(&req, &HashMap::new());
            plan.candidates
                .iter()
                .map(|c| c.upstream.name.clone())
                .collect()
        };
        assert!(with("").contains(&"apimodels".to_string()));
        assert!(with("  ").contains(&"apimodels".to_string()));
        assert!(!with("blurry").contains(&"apimodels".to_string()));
    }

    #[test]
    fn an_open_circuit_is_passed_over_and_a_half_open_one_is_a_probe() {
        let req: VideoRequest = serde_json::from_value(serde_json::json!({
            "model": "kling-video-o1", "prompt": "p", "aspect_ratio": "1:1"
        }))
        .unwrap();
        let health = HashMap::from([
            (
                "apimodels".to_string(),
                ProviderHealth {
                    circuit: Circuit::Open,
                    success_rate: Some(0.1),
                },
            ),
            (
                "kkiai".to_string(),
                ProviderHealth {
                    circuit: Circuit::HalfOpen,
                    success_rate: None,
                },
            ),
        ]);
        let plan = example_router().plan(&req, &health);
        let names: Vec<&str> = plan
            .candidates
            .iter()
            .map(|c| c.upstream.name.as_str())
            .collect();
        assert_eq!(names, vec!["kkiai", "modellix"]);
        assert!(plan.candidates[0].probe);
        assert!(plan
            .passed_over
            .iter()
            .any(|p| p.provider == "apimodels" && p.why == PassReason::CircuitOpen));
    }

    #[test]
    fn a_better_success_rate_breaks_a_price_tie() {
        let req: VideoRequest = serde_json::from_value(serde_json::json!({
            "model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1"
        }))
        .unwrap();
        let health = HashMap::from([
            (
                "anyfast".to_string(),
                ProviderHealth {
                    circuit: Circuit::Closed,
                    success_rate: Some(0.7),
                },
            ),
            (
                "apimodels".to_string(),
                ProviderHealth {
                    circuit: Circuit::Closed,
                    success_rate: Some(0.99),
                },
            ),
        ]);
        let plan = example_router().plan(&req, &health);
        let names: Vec<&str> = plan
            .candidates
            .iter()
            .map(|c| c.upstream.name.as_str())
            .collect();
        assert_eq!(&names[..3], &["kkiai", "apimodels", "anyfast"]);
    }

    #[test]
    fn a_better_completed_rate_within_the_margin_goes_first_and_says_so() {
        let req: VideoRequest = serde_json::from_value(serde_json::json!({
            "model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1"
        }))
        .unwrap();
        let base = example_router().plan(&req, &HashMap::new());
        let (a, b) = (&base.candidates[0], &base.candidates[1]);
        let (a_name, b_name) = (a.upstream.name.clone(), b.upstream.name.clone());
        let gap = b.estimate_usd / a.estimate_usd - 1.0;
        let rates = HashMap::from([(a_name.clone(), 0.6), (b_name.clone(), 0.95)]);
        let first = |margin: f64, rates: &HashMap<String, f64>| {
            let mut plan = example_router().plan(&req, &HashMap::new());
            outcomes::prefer_completed(&mut plan, |p| rates.get(p).copied(), margin);
            (plan.candidates[0].upstream.name.clone(), plan.reason_for(0))
        };
        let (name, reason) = first(gap + 0.01, &rates);
        assert_eq!(name, b_name);
        assert!(
            reason.contains("better completed-task rate (95% against 60%"),
            "{reason}"
        );
        assert!(reason.contains(&a_name), "{reason}");
        if gap > 0.0 {
            assert_eq!(
                first(gap / 2.0, &rates).0,
                a_name,
                "outside the margin price rules"
            );
        }
        let unknown_leader = HashMap::from([(b_name.clone(), 0.95)]);
        let (name, reason) = first(gap + 0.01, &unknown_leader);
        assert_eq!(
            name, a_name,
            "a provider without enough history is never moved"
        );
        assert!(reason.starts_with("cheapest capable provider"), "{reason}");
    }
}
