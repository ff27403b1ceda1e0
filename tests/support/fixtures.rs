//! Request bodies, provider line-ups and waits that many test files share.

use std::future::Future;
use std::time::{Duration, Instant};

use omnigate::config::ProviderConfig;
use omnigate::domain::Model;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::app::TestApp;
use super::sim::{Outcome, Script, Sim, SimDialect};

/// Both Kling models: what a simulator offers unless a test narrows it.
pub const BOTH: &[Model] = &[Model::KlingVideoO1, Model::KlingV3Omni];

/// A plain five-second text-to-video request (at $0.10/s: $0.50).
pub fn plain() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9", "duration": 5})
}

/// `body` with the fields of `extra` set over it.
pub fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("extra is an object") {
        body[k] = v.clone();
    }
    body
}

/// Tasks that run until the test ends them (`Sim::finish_oldest_running`).
pub fn until_finished() -> Script {
    Script {
        queued_polls: 1_000_000,
        processing_polls: 0,
        outcome: Outcome::Succeed,
    }
}

/// Providers named as given, each simulator offering `BOTH` at its price per second.
pub fn priced(line_up: &[(&str, &Sim, f64)]) -> Vec<(String, ProviderConfig)> {
    line_up
        .iter()
        .map(|(name, sim, usd_per_second)| {
            (name.to_string(), sim.provider_config(BOTH, *usd_per_second))
        })
        .collect()
}

/// Waits until `probe` answers true, panicking after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /admin/keys/{id}` with the admin token: a key's limits, spend and counts.
pub async fn key_info(app: &TestApp, admin_token: &str, id: &str) -> Value {
    let resp = app
        .client
        .get(format!("{}/admin/keys/{id}", app.base))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// The models a simulator of `dialect` sells: Anyfast only kling-v3-omni, the others `BOTH`.
pub fn models_of(dialect: SimDialect) -> &'static [Model] {
    if dialect == SimDialect::Anyfast {
        &BOTH[1..]
    } else {
        BOTH
    }
}

/// A simulator script: `queued_polls` polls queued, `processing_polls` processing, then
/// the task succeeds.
pub fn succeeds_after(queued_polls: u32, processing_polls: u32) -> Script {
    Script {
        queued_polls,
        processing_polls,
        outcome: Outcome::Succeed,
    }
}
