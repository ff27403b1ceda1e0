//! Routing by capability and price, failover that never submits twice, idempotency keys,
//! quotes and circuit breakers, with three simulated providers at different prices.

mod support;

use std::time::Duration;

use omnigate::config::{Config, UnknownSubmit};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::{plain, priced, with, BOTH};
use support::sim::{Fault, Sim, SimDialect, SimError};

const WAIT: Duration = Duration::from_secs(15);

/// `kling` (kkiai dialect) at $0.08/s, `apimodels` at $0.10/s, `modellix` at $0.12/s.
struct Three {
    kling: Sim,
    apimodels: Sim,
    modellix: Sim,
    cfg: Config,
}

impl Three {
    async fn start(db: &TestDb) -> Three {
        let kling = Sim::start(SimDialect::Kkiai).await;
        let apimodels = Sim::start(SimDialect::Apimodels).await;
        let modellix = Sim::start(SimDialect::Modellix).await;
        let cfg = config(
            db,
            priced(&[
                ("kling", &kling, 0.08),
                ("apimodels", &apimodels, 0.10),
                ("modellix", &modellix, 0.12),
            ]),
        );
        Three {
            kling,
            apimodels,
            modellix,
            cfg,
        }
    }

    fn submits(&self) -> [usize; 3] {
        [
            self.kling.submit_count(),
            self.apimodels.submit_count(),
            self.modellix.submit_count(),
        ]
    }

    fn created(&self) -> usize {
        self.kling.created_count() + self.apimodels.created_count() + self.modellix.created_count()
    }
}

async fn the_cheapest_capable_provider_wins(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    let task = app.create(&plain()).await;
    assert_eq!(task["provider"], "kling");
    assert_eq!(task["cost"]["estimated_usd"], 0.4);
    assert!(task["routing"]["reason"]
        .as_str()
        .unwrap()
        .contains("cheapest"));
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["cost"]["final_usd"], 0.4);
    assert_eq!(three.submits(), [1, 0, 0]);
}
on_both_stores!(the_cheapest_capable_provider_wins);

async fn a_feature_the_cheapest_lacks_sends_the_task_to_the_next(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    // Make modellix the cheapest; it cannot carry element_list.
    three.cfg.providers.get_mut("modellix").unwrap().prices =
        three.modellix.provider_config(BOTH, 0.01).prices;
    let app = TestApp::start(three.cfg.clone()).await;
    assert_eq!(app.create(&plain()).await["provider"], "modellix");
    let body = with(
        plain(),
        json!({"element_list": [{"element_id": 42}], "prompt": "hero <<<element_1>>> runs"}),
    );
    let (status, quote) = app.post("/v1/video/quotes", &body).await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    let modellix = quote["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["provider"] == "modellix")
        .unwrap();
    assert_eq!(modellix["status"], "passed_over");
    assert_eq!(modellix["why"], "unsupported_feature");
    assert_eq!(modellix["param"], "element_list");
    assert_eq!(app.create(&body).await["provider"], "kling");
}
on_both_stores!(a_feature_the_cheapest_lacks_sends_the_task_to_the_next);

async fn routing_providers_and_max_cost_narrow_the_choice(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    let only_modellix = with(plain(), json!({"routing": {"providers": ["modellix"]}}));
    assert_eq!(app.create(&only_modellix).await["provider"], "modellix");
    // 5 s: kling $0.40, apimodels $0.50, modellix $0.60.
    let capped = with(
        plain(),
        json!({"routing": {"providers": ["apimodels", "modellix"], "max_cost_usd": 0.55}}),
    );
    assert_eq!(app.create(&capped).await["provider"], "apimodels");
    let too_cheap = with(plain(), json!({"routing": {"max_cost_usd": 0.3}}));
    let (status, err) = app.post("/v1/video/generations", &too_cheap).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "no_capable_provider");
    assert_eq!(err["error"]["param"], "routing.max_cost_usd");
    let unknown = with(plain(), json!({"routing": {"providers": ["nope"]}}));
    let (status, err) = app.post("/v1/video/generations", &unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["param"], "routing.providers");
    assert_eq!(three.submits(), [0, 1, 1]);
}
on_both_stores!(routing_providers_and_max_cost_narrow_the_choice);

async fn refusals_before_acceptance_fail_over_to_the_next_cheapest(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    for fault in [
        SimError::Server,
        SimError::RateLimited,
        SimError::TooManyParallel,
        SimError::Billing,
    ] {
        three.kling.push_submit_fault(Fault::Error(fault));
        let task = app.create(&plain()).await;
        assert_eq!(task["provider"], "apimodels", "{fault:?}: {task}");
        let (_, full) = app
            .get(&format!(
                "/v1/video/generations/{}",
                task["id"].as_str().unwrap()
            ))
            .await;
        let attempts = full["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{full}");
        assert_eq!(attempts[0]["provider"], "kling");
        assert_eq!(attempts[0]["outcome"], "refused");
        assert!(attempts[0]["latency_ms"].as_i64().is_some());
        assert_eq!(attempts[1]["provider"], "apimodels");
        assert_eq!(attempts[1]["outcome"], "accepted");
        assert!(full["routing"]["reason"]
            .as_str()
            .unwrap()
            .contains("failover"));
    }
    assert_eq!(three.kling.created_count(), 0);
    assert_eq!(three.apimodels.created_count(), 4);
}
on_both_stores!(refusals_before_acceptance_fail_over_to_the_next_cheapest);

async fn a_content_policy_refusal_is_final(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    three
        .kling
        .push_submit_fault(Fault::Error(SimError::ContentPolicy));
    let (status, err) = app.post("/v1/video/generations", &plain()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "content_policy");
    assert!(err["error"]["provider_message"].as_str().is_some());
    assert_eq!(
        three.submits(),
        [1, 0, 0],
        "no failover on a content-policy refusal"
    );
}
on_both_stores!(a_content_policy_refusal_is_final);

async fn a_timeout_after_sending_creates_exactly_one_upstream_task(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    // The provider creates the task but answers after our 2 s timeout.
    three
        .kling
        .push_submit_fault(Fault::Slow(Duration::from_secs(4)));
    let task = app.create(&plain()).await;
    assert_eq!(task["status"], "queued");
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["provider"], "kling");
    let history = support::app::history(&done);
    assert!(history.iter().any(|s| s == "submit_unknown"), "{history:?}");
    assert_eq!(three.created(), 1, "exactly one upstream task");
    assert_eq!(three.submits(), [1, 0, 0], "never submitted elsewhere");
}
on_both_stores!(a_timeout_after_sending_creates_exactly_one_upstream_task);

async fn unknown_submits_without_lookup_follow_the_configured_policy(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    three.cfg.providers.remove("kling");
    three
        .cfg
        .providers
        .get_mut("modellix")
        .unwrap()
        .unknown_submit = UnknownSubmit::Resubmit;
    let app = TestApp::start(three.cfg.clone()).await;
    // apimodels (cheapest now) never answers: held, then failed without a resubmit.
    three.apimodels.push_submit_fault(Fault::Hang);
    let task = app.create(&plain()).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["error"]["code"], "submit_outcome_unknown", "{done}");
    assert_eq!(three.submits(), [0, 1, 0]);
    // modellix is configured to resubmit: the task completes there.
    three.modellix.push_submit_fault(Fault::Hang);
    let task = app
        .create(&with(
            plain(),
            json!({"routing": {"providers": ["modellix"]}}),
        ))
        .await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(three.submits(), [0, 1, 2]);
    assert_eq!(three.modellix.created_count(), 1);
}
on_both_stores!(unknown_submits_without_lookup_follow_the_configured_policy);

async fn racing_requests_with_one_idempotency_key_make_one_task(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    let send = |key: &'static str, body: Value| {
        let (client, base, api_key) = (app.client.clone(), app.base.clone(), app.key.clone());
        async move {
            let resp = client
                .post(format!("{base}/v1/video/generations"))
                .bearer_auth(api_key)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = resp.headers().get("idempotent-replayed").is_some();
            (resp.status(), replayed, resp.json::<Value>().await.unwrap())
        }
    };
    let racers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(send("order-17", plain())))
        .collect();
    let mut ids = Vec::new();
    let mut replays = 0;
    for r in racers {
        let (status, replayed, task) = r.await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        replays += replayed as usize;
        ids.push(task["id"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one task for one key");
    assert_eq!(replays, 3);
    assert_eq!(three.created(), 1, "one upstream task");
    let (status, _, err) = send("order-17", with(plain(), json!({"duration": 10}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "idempotency_conflict");
    let (status, _, other) = send("order-18", plain()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(other["id"].as_str().unwrap(), ids[0]);
    assert_eq!(three.created(), 2);
}
on_both_stores!(racing_requests_with_one_idempotency_key_make_one_task);

async fn idempotency_keys_expire_after_their_window(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    three.cfg.idempotency.ttl_secs = 1;
    let app = TestApp::start(three.cfg.clone()).await;
    let post = |app: &TestApp| {
        app.client
            .post(format!("{}/v1/video/generations", app.base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "k1")
            .json(&plain())
            .send()
    };
    let first: Value = post(&app).await.unwrap().json().await.unwrap();
    let again: Value = post(&app).await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later: Value = post(&app).await.unwrap().json().await.unwrap();
    assert_ne!(first["id"], later["id"], "an expired key starts a new task");
}
on_both_stores!(idempotency_keys_expire_after_their_window);

async fn the_circuit_opens_on_failures_and_a_probe_closes_it(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    three.cfg.health.consecutive_failures = 2;
    three.cfg.health.cooldown_secs = 0.5;
    let app = TestApp::start(three.cfg.clone()).await;
    for _ in 0..2 {
        three
            .kling
            .push_submit_fault(Fault::Error(SimError::Server));
        assert_eq!(app.create(&plain()).await["provider"], "apimodels");
    }
    let (_, quote) = app.post("/v1/video/quotes", &plain()).await;
    assert_eq!(quote["provider"], "apimodels", "{quote}");
    let kling = quote["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["provider"] == "kling")
        .unwrap();
    assert_eq!(kling["why"], "circuit_open");
    assert_eq!(app.create(&plain()).await["provider"], "apimodels");
    assert_eq!(
        three.kling.submit_count(),
        2,
        "an open circuit gets no traffic"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Half-open: the next request is the probe; it succeeds and closes the circuit.
    assert_eq!(app.create(&plain()).await["provider"], "kling");
    assert_eq!(app.create(&plain()).await["provider"], "kling");
    assert_eq!(three.kling.created_count(), 2);
}
on_both_stores!(the_circuit_opens_on_failures_and_a_probe_closes_it);

async fn a_quote_matches_what_a_create_then_does(db: Db) {
    let db = TestDb::new(db).await;
    let three = Three::start(&db).await;
    let app = TestApp::start(three.cfg.clone()).await;
    let body = json!({"model": "kling-v3-omni", "prompt": "re-light <<<video_1>>>",
                      "video_list": [{"video_url": "https://example.com/in.mp4", "refer_type": "base", "duration": 7.4}]});
    let (status, quote) = app.post("/v1/video/quotes", &body).await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(
        quote["billed_seconds"], 7,
        "a base edit bills the input's rounded length"
    );
    assert_eq!(quote["estimated_usd"], 0.56);
    let ranked: Vec<&str> = quote["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    assert_eq!(ranked, vec!["apimodels", "modellix"]);
    assert_eq!(three.created(), 0, "a quote submits nothing");
    let task = app.create(&body).await;
    assert_eq!(task["provider"], quote["provider"]);
    assert_eq!(task["cost"]["estimated_usd"], quote["estimated_usd"]);
}
on_both_stores!(a_quote_matches_what_a_create_then_does);

async fn a_key_whose_task_no_provider_took_can_be_retried(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    three.cfg.providers.retain(|name, _| name == "kling");
    let app = TestApp::start(three.cfg.clone()).await;
    let post = || {
        app.client
            .post(format!("{}/v1/video/generations", app.base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "retry-me")
            .json(&plain())
            .send()
    };
    // Refused in both rounds.
    three
        .kling
        .push_submit_fault(Fault::Error(SimError::Server));
    three
        .kling
        .push_submit_fault(Fault::Error(SimError::Server));
    let first = post().await.unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let second = post().await.unwrap();
    assert_eq!(
        second.status(),
        StatusCode::ACCEPTED,
        "the key was released, so a retry creates the task"
    );
    assert!(second.headers().get("idempotent-replayed").is_none());
    let task: Value = second.json().await.unwrap();
    // A replay answers with the task even when routing would now refuse the request.
    three
        .kling
        .push_submit_fault(Fault::Error(SimError::Server));
    let replay: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(replay["id"], task["id"]);
    assert_eq!(three.kling.created_count(), 1);
}
on_both_stores!(a_key_whose_task_no_provider_took_can_be_retried);

/// Provider-specific limits: modellix allows o1 only 5 or 10 s without a video, apimodels
/// carries no multi-shot, and a configured unsupported feature excludes a provider.
async fn provider_specific_limits_route_around_a_provider(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    // modellix cheapest, then apimodels, then kling.
    three.cfg.providers.get_mut("modellix").unwrap().prices =
        three.modellix.provider_config(BOTH, 0.01).prices;
    three.cfg.providers.get_mut("apimodels").unwrap().prices =
        three.apimodels.provider_config(BOTH, 0.02).prices;
    three
        .cfg
        .providers
        .get_mut("apimodels")
        .unwrap()
        .unsupported_features = vec![omnigate::domain::Feature::Watermark];
    let app = TestApp::start(three.cfg.clone()).await;
    let references_7s = json!({"model": "kling-video-o1", "prompt": "<<<image_1>>> at sea", "aspect_ratio": "16:9",
                               "duration": 7, "image_list": [{"image_url": "https://example.com/ship.png"}]});
    assert_eq!(app.create(&references_7s).await["provider"], "apimodels");
    let storyboard = json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "duration": 6, "multi_shot": true,
        "shot_type": "customize", "multi_prompt": [{"index": 1, "prompt": "dawn", "duration": 3}, {"index": 2, "prompt": "dusk", "duration": 3}]});
    assert_eq!(app.create(&storyboard).await["provider"], "kling");
    let watermarked = with(plain(), json!({"watermark": true}));
    let (_, quote) = app.post("/v1/video/quotes", &watermarked).await;
    assert_eq!(quote["provider"], "kling", "{quote}");
    let apimodels = quote["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["provider"] == "apimodels")
        .unwrap();
    assert_eq!(apimodels["param"], "watermark");
    assert!(three.kling.rejections().is_empty() && three.apimodels.rejections().is_empty());
}
on_both_stores!(provider_specific_limits_route_around_a_provider);

/// A provider that cannot even be reached (nothing listens) refused before anything was
/// sent: the next one takes the task.
async fn an_unreachable_provider_fails_over(db: Db) {
    let db = TestDb::new(db).await;
    let mut three = Three::start(&db).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut dead = three.kling.provider_config(BOTH, 0.01);
    dead.base_url = dead_url;
    three.cfg.providers.insert("dead".into(), dead);
    let app = TestApp::start(three.cfg.clone()).await;
    let task = app.create(&plain()).await;
    assert_eq!(task["provider"], "kling");
    let (_, full) = app
        .get(&format!(
            "/v1/video/generations/{}",
            task["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(full["attempts"][0]["provider"], "dead");
    assert_eq!(full["attempts"][0]["outcome"], "refused");
    assert_eq!(full["attempts"][0]["error_code"], "upstream_unavailable");
}
on_both_stores!(an_unreachable_provider_fails_over);
