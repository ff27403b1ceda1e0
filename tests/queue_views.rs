//! What operators see of the admission queue (issue 20, item 7): waiting tasks by key and
//! model and the dispatch latency in `/metrics`, the console's queue page (the operator's
//! and a key's own), and a waiting task's position on its console page.

mod support;

use std::time::{Duration, Instant};

use omnigate::config::{Config, ProviderConfig, Secret};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, with_queue, Db, TestApp, TestDb};
use support::console::Console;
use support::fixtures::{succeeds_after, BOTH};
use support::sim::{Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "queue-views-admin-token-0123456789abcd";

fn task(model: &str) -> Value {
    json!({"model": model, "prompt": "a cat", "aspect_ratio": "16:9", "duration": 5})
}

/// A gateway with the queue on over one simulated provider capped at one task in flight
/// (tasks run until the test ends them), store gauges refreshed every 0.2 s.
async fn gateway(db: &TestDb, sim: &Sim) -> TestApp {
    sim.set_script(succeeds_after(1_000_000, 0));
    let mut provider: ProviderConfig = sim.provider_config(BOTH, 0.1);
    provider.max_in_flight = Some(1);
    let mut cfg: Config = with_queue(config(db, vec![("up".into(), provider)]));
    cfg.admin.token = Some(Secret::new(ADMIN));
    cfg.metrics.store_gauges_interval_secs = 0.2;
    TestApp::start(cfg).await
}

async fn create(app: &TestApp, secret: &str, model: &str) -> String {
    let (status, t) = app
        .post_as(secret, "/v1/video/generations", &task(model))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{t}");
    t["id"].as_str().unwrap().to_string()
}

/// The value of the one series `name{labels…}` in a scrape, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// Scrapes until `check` holds (the store gauges refresh on their own clock).
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(app).await;
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn waiting_tasks_by_key_and_model_and_the_dispatch_latency_show_in_metrics(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = gateway(&db, &sim).await;
    let key = app.gateway().store.create_api_key("metrics").await.unwrap();
    create(&app, &key.secret, "kling-v3-omni").await;
    for _ in 0..3 {
        create(&app, &key.secret, "kling-v3-omni").await;
    }
    create(&app, &key.secret, "kling-video-o1").await;
    let gauge = |text: &str, model: &str| {
        sample(
            text,
            "omnigate_queue_waiting_tasks",
            &[("key", key.id.as_str()), ("model", model)],
        )
    };
    scrape_until(&app, "3 + 1 waiting tasks of the key", |t| {
        gauge(t, "kling-v3-omni") == Some(3.0) && gauge(t, "kling-video-o1") == Some(1.0)
    })
    .await;
    // Other tests in this binary share the process's recorder: count from here.
    let before = scrape(&app).await;
    let count = |t: &str, name: &str| sample(t, name, &[]).unwrap_or(0.0);
    let dispatched_before = count(&before, "omnigate_queue_dispatch_latency_seconds_count");
    let waited_before = count(&before, "omnigate_queue_wait_seconds_count");
    for started in 2..=5 {
        assert!(sim.finish_oldest_running().await);
        let deadline = Instant::now() + WAIT;
        while sim.created_count() < started {
            assert!(Instant::now() < deadline, "task {started} never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = scrape_until(&app, "the queue empty and four dispatches", |t| {
        gauge(t, "kling-v3-omni") == Some(0.0)
            && gauge(t, "kling-video-o1") == Some(0.0)
            && count(t, "omnigate_queue_dispatch_latency_seconds_count") >= dispatched_before + 4.0
            // Recorded once the provider accepted, a moment after the submit began.
            && count(t, "omnigate_queue_wait_seconds_count") >= waited_before + 4.0
    })
    .await;
    // Each was woken by the end of the task before it, in this process: well under the
    // dispatcher's tick of 50 ms would be the rule, but a loaded machine gets 5 s.
    let bucket = |le| {
        sample(
            &after,
            "omnigate_queue_dispatch_latency_seconds_bucket",
            &[("le", le)],
        )
    };
    let le_5 = bucket("5").or_else(|| bucket("5.0")).expect("a 5 s bucket");
    assert!(le_5 >= dispatched_before + 4.0, "{le_5}");
}
on_both_stores!(waiting_tasks_by_key_and_model_and_the_dispatch_latency_show_in_metrics);

async fn the_queue_page_shows_providers_and_keys_to_the_operator_and_a_key_only_its_own(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = gateway(&db, &sim).await;
    let store = &app.gateway().store;
    let busy = store.create_api_key("busy-team").await.unwrap();
    let small = store.create_api_key("small-team").await.unwrap();
    create(&app, &busy.secret, "kling-v3-omni").await;
    create(&app, &busy.secret, "kling-v3-omni").await;
    create(&app, &busy.secret, "kling-video-o1").await;
    let small_task = create(&app, &small.secret, "kling-v3-omni").await;

    let mut operator = Console::sign_in(&app, ADMIN).await;
    let (status, tasks_page) = operator.get("/console/tasks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(tasks_page.contains("href=\"/console/queue\""), "in the nav");
    let (status, page) = operator.get("/console/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("3 tasks waiting"), "{page}");
    // up: cap 1, in force 1, one in flight, all three waiting tasks could go there.
    assert!(
        page.contains(
            "<th scope=\"row\">up</th><td class=\"num\">1</td><td class=\"num\">1</td>\
             <td class=\"num\">1</td><td class=\"num\">3</td>"
        ),
        "{page}"
    );
    assert!(
        page.contains(&busy.id) && page.contains(&small.id),
        "{page}"
    );
    assert!(
        page.contains("kling-v3-omni: 1, kling-video-o1: 1"),
        "busy's two waiting by model: {page}"
    );
    assert!(page.contains("1000 (default)"), "max_queued: {page}");

    let mut own = Console::sign_in(&app, &small.secret).await;
    let (status, page) = own.get("/console/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&small.id), "{page}");
    assert!(!page.contains(&busy.id), "another key's row: {page}");
    assert!(!page.contains("<h2>Providers</h2>"), "{page}");
    assert!(page.contains("1 tasks waiting"), "{page}");

    // Its task page says where it stands: behind busy's first waiting task.
    let (status, page) = own.get(&format!("/console/tasks/{small_task}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Queue position"), "{page}");
    let (_, api) = app
        .get_as(
            &small.secret,
            &format!("/v1/video/generations/{small_task}"),
        )
        .await;
    let position = api["queue"]["position"].as_i64().unwrap();
    assert!(
        page.contains(&format!("<strong>{position}</strong>")),
        "{position}: {page}"
    );
    // Once nothing waits, the page says so.
    while sim.created_count() < 4 || sim.running() > 0 {
        sim.finish_oldest_running().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, page) = operator.get("/console/queue").await;
        if page.contains("Nothing waits.") {
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
on_both_stores!(the_queue_page_shows_providers_and_keys_to_the_operator_and_a_key_only_its_own);
