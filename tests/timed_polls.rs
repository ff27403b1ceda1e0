//! Polls timed by experience and health from outcomes (issue 21, items 5 and 6), against
//! simulators whose tasks take a known wall-clock time: without history every task is
//! polled at its provider's interval; once earlier tasks of the same model, mode and
//! duration have finished, the first poll comes near their p10 and the task is found
//! finished in a few queries, with an `eta` on its reads. The figures are shared through
//! the database, so a second gateway times its polls by them too. A provider whose
//! accepted tasks fail loses, at equal price, to one whose tasks complete.

mod support;

use std::time::Duration;

use omnigate::config::{Config, Secret};
use omnigate::domain::Model;
use omnigate::gateway::Gateway;
use omnigate::store::now_ms;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::sim::{Fault, Outcome, Script, Sim, SimDialect, SimError};

/// How long the simulator's tasks run, in turn: p10 1.6 s, p50 2 s, p90 2.4 s.
const TASK_MILLIS: [u64; 5] = [1_600, 1_800, 2_000, 2_200, 2_400];
/// The provider's poll interval: a 2 s task polled blind costs about eight queries.
const INTERVAL_SECS: f64 = 0.25;
const GROUP: &str = "kling-v3-omni|std|5";
const ADMIN: &str = "timed-polls-admin-token-0123456789abcdef";

fn body() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk", "duration": 5, "mode": "std", "aspect_ratio": "16:9"})
}

fn timed_config(db: &TestDb, providers: Vec<(String, omnigate::config::ProviderConfig)>) -> Config {
    let mut cfg = config(db, providers);
    for p in cfg.providers.values_mut() {
        p.poll_interval_secs = INTERVAL_SECS;
    }
    cfg.poller.poll_jitter = 0.0;
    cfg.poller.min_poll_gap_secs = 0.1;
    cfg.poller.timing_min_samples = 5;
    cfg.poller.timing_refresh_secs = 1;
    cfg.admin.token = Some(Secret::new(ADMIN));
    cfg
}

async fn timed_sim() -> Sim {
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(Script {
        queued_polls: 0,
        processing_polls: 1,
        outcome: Outcome::Succeed,
    });
    sim.set_task_millis(TASK_MILLIS.to_vec());
    sim
}

/// Creates `n` tasks one after another (so the simulator holds them in this order) and
/// waits for all of them to end; returns their final objects.
async fn run_tasks(app: &TestApp, body: &Value, n: usize) -> Vec<Value> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(app.create(body).await["id"].as_str().unwrap().to_string());
    }
    let mut done = Vec::new();
    for id in ids {
        done.push(app.wait_terminal(&id, Duration::from_secs(30)).await);
    }
    done
}

/// Status queries of the simulator's tasks `from..`, and how long after its creation each
/// task was first queried (ms).
fn queries_since(sim: &Sim, from: usize) -> (Vec<usize>, Vec<u64>) {
    let finished = sim.finish_times();
    let queried = sim.query_times();
    let mut counts = Vec::new();
    let mut first_after = Vec::new();
    for (i, ((_, times), (_, finish_at))) in queried.iter().zip(&finished).enumerate().skip(from) {
        counts.push(times.len());
        let created = finish_at.expect("a timed task") - TASK_MILLIS[i % TASK_MILLIS.len()];
        first_after.push(times[0] - created);
    }
    (counts, first_after)
}

fn median(v: &[usize]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Recomputes the shared figures now (as the refresh worker would at its turn) and reads
/// them into this process's copy.
async fn refresh(gw: &Gateway) {
    omnigate::workers::timing::recompute(gw, now_ms())
        .await
        .unwrap();
    gw.timings.load(&gw.store).await.unwrap();
}

async fn polls_follow_the_completion_times_of_earlier_tasks(db: Db) {
    let db = TestDb::new(db).await;
    let sim = timed_sim().await;
    let cfg = timed_config(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    let app = TestApp::start(cfg).await;
    let gw = app.gateway();

    // No history: the provider's interval from acceptance on, and no eta.
    let blind = run_tasks(&app, &body(), 10).await;
    assert!(
        blind.iter().all(|t| t["status"] == "completed"),
        "{blind:?}"
    );
    let (blind_queries, blind_first) = queries_since(&sim, 0);
    assert!(
        median(&blind_queries) >= 5,
        "about duration / interval: {blind_queries:?}"
    );
    assert!(
        blind_first.iter().all(|ms| *ms < 1_000),
        "first polls one interval in: {blind_first:?}"
    );

    refresh(gw).await;
    let dist = gw
        .timings
        .distribution("up", GROUP)
        .expect("ten finished tasks of one group");
    assert!((1_500..=2_000).contains(&dist.p10_ms), "{dist:?}");
    assert!((1_900..=2_400).contains(&dist.p50_ms), "{dist:?}");
    assert!((2_300..=2_900).contains(&dist.p90_ms), "{dist:?}");
    assert_eq!(
        gw.timings.distribution("up", "kling-v3-omni|pro|5"),
        None,
        "another group has none"
    );

    // With history: the first poll near the p10, few queries, and an eta while running.
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, running) = app.get(&format!("/v1/video/generations/{id}")).await;
    let eta = running["eta"].as_str().expect("an eta while running");
    assert!(eta.ends_with('Z') && eta.len() == 20, "RFC 3339: {eta}");
    let (_, openai) = app.get(&format!("/v1/videos/{id}")).await;
    assert!(openai["progress"].as_i64().unwrap() < 100, "{openai}");
    let finished = app.wait_terminal(&id, Duration::from_secs(30)).await;
    assert!(
        finished.get("eta").is_none(),
        "no eta once final: {finished}"
    );
    let timed = run_tasks(&app, &body(), 9).await;
    assert!(
        timed.iter().all(|t| t["status"] == "completed"),
        "{timed:?}"
    );
    let (timed_queries, timed_first) = queries_since(&sim, 10);
    assert!(median(&timed_queries) <= 4, "{timed_queries:?}");
    assert!(
        median(&timed_queries) < median(&blind_queries),
        "{timed_queries:?} vs {blind_queries:?}"
    );
    let p10 = dist.p10_ms as u64;
    assert!(
        timed_first.iter().all(|ms| *ms + 200 >= p10),
        "no poll before the p10 ({p10} ms): {timed_first:?}"
    );
}

async fn with_timed_polls_off_history_changes_nothing(db: Db) {
    let db = TestDb::new(db).await;
    let sim = timed_sim().await;
    let mut cfg = timed_config(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    cfg.poller.adaptive_polls = false;
    let app = TestApp::start(cfg).await;
    run_tasks(&app, &body(), 10).await;
    refresh(app.gateway()).await;
    assert!(app.gateway().timings.distribution("up", GROUP).is_some());
    run_tasks(&app, &body(), 5).await;
    let (queries, first) = queries_since(&sim, 10);
    assert!(median(&queries) >= 5, "still the interval: {queries:?}");
    assert!(first.iter().all(|ms| *ms < 1_000), "{first:?}");
}

async fn a_second_gateway_times_its_polls_by_the_shared_history(db: Db) {
    let db = TestDb::new(db).await;
    let sim = timed_sim().await;
    let cfg = timed_config(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    let one = TestApp::start(cfg.clone()).await;
    run_tasks(&one, &body(), 10).await;
    omnigate::workers::timing::recompute(one.gateway(), now_ms())
        .await
        .unwrap();
    let two = TestApp::restart_with(cfg, one.key.clone()).await;
    // Its own refresh worker reads the shared table within a tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while two.gateway().timings.distribution("up", GROUP).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the second gateway never saw the history"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(one);
    let id = two.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, running) = two.get(&format!("/v1/video/generations/{id}")).await;
    assert!(running["eta"].is_string(), "{running}");
    two.wait_terminal(&id, Duration::from_secs(30)).await;
    let (queries, first) = queries_since(&sim, 10);
    assert!(queries[0] <= 4, "{queries:?}");
    assert!(first[0] >= 1_300, "first poll near the p10: {first:?}");
}

async fn routing_prefers_the_provider_whose_accepted_tasks_complete(db: Db) {
    let db = TestDb::new(db).await;
    // Kling's dialect tells a content-policy refusal apart from other bad requests.
    let (a, b) = (
        Sim::start(SimDialect::Anyfast).await,
        Sim::start(SimDialect::Anyfast).await,
    );
    a.set_script(Script {
        queued_polls: 0,
        processing_polls: 0,
        outcome: Outcome::Fail("the generation failed".into()),
    });
    b.set_script(Script {
        queued_polls: 0,
        processing_polls: 0,
        outcome: Outcome::Succeed,
    });
    let mut cfg = timed_config(
        &db,
        vec![
            ("a".into(), a.provider_config(&[Model::KlingV3Omni], 0.1)),
            ("b".into(), b.provider_config(&[Model::KlingV3Omni], 0.1)),
        ],
    );
    cfg.routing.outcome_min_tasks = 4;
    let app = TestApp::start(cfg).await;
    // Same price: "a" goes first by name until outcomes say otherwise.
    let first = app.create(&body()).await;
    assert_eq!(first["provider"], "a", "{first}");
    let on = |p: &str| {
        let mut b = body();
        b["routing"] = json!({"providers": [p]});
        b
    };
    run_tasks(&app, &on("a"), 4).await;
    run_tasks(&app, &on("b"), 4).await;
    a.push_submit_fault(Fault::Error(SimError::ContentPolicy));
    let (status, refused) = app.post("/v1/video/generations", &on("a")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "content_policy", "{refused}");
    app.wait_terminal(first["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    refresh(app.gateway()).await;

    let (status, providers) = app.get_as(ADMIN, "/admin/providers").await;
    assert_eq!(status, StatusCode::OK, "{providers}");
    let row = |name: &str| {
        providers["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == name)
            .unwrap()["task_outcomes"]
            .clone()
    };
    let (oa, ob) = (row("a"), row("b"));
    assert_eq!(oa["failed_after_accept"], 5, "{oa}");
    assert_eq!(oa["completed"], 0, "{oa}");
    assert_eq!(oa["moderated"], 1, "{oa}");
    assert_eq!(oa["completed_rate"], 0.0, "{oa}");
    assert_eq!(ob["completed"], 4, "{ob}");
    assert_eq!(ob["completed_rate"], 1.0, "{ob}");

    let mut operator = support::console::Console::sign_in(&app, ADMIN).await;
    let (status, page) = operator.get("/console/providers").await;
    assert_eq!(status, StatusCode::OK);
    let outcomes = page
        .split_once("Outcomes after acceptance")
        .expect("the providers page shows outcomes")
        .1;
    assert!(
        outcomes.contains("0.0%") && outcomes.contains("100.0%"),
        "{outcomes}"
    );

    let chosen = app.create(&body()).await;
    assert_eq!(chosen["provider"], "b", "{chosen}");
    let reason = chosen["routing"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("better completed-task rate (100% against 0% for a)"),
        "{reason}"
    );
}

on_both_stores!(
    polls_follow_the_completion_times_of_earlier_tasks,
    with_timed_polls_off_history_changes_nothing,
    a_second_gateway_times_its_polls_by_the_shared_history,
    routing_prefers_the_provider_whose_accepted_tasks_complete,
);
