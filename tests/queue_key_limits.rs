//! Key limits in the admission queue (issue 20, item 6): a key at its `max_in_flight` has
//! its new tasks wait in the queue and start as its own tasks finish; the dispatcher goes
//! past such a key's tasks to other keys'; `max_wait_secs = 0` keeps the 429; and the
//! budget race still accepts exactly what fits.

mod support;

use std::time::Duration;

use futures::future::join_all;
use omnigate::config::{ProviderConfig, Secret};
use omnigate::store::TaskState;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, with_queue, Db, TestApp, TestDb};
use support::fixtures::{eventually, key_info, plain, succeeds_after, until_finished, BOTH};
use support::sim::{Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "queue-limits-admin-token-0123456789ab";

/// A gateway with the queue on over one simulated provider at $0.10/s (a plain task:
/// $0.50), capped at `cap` tasks in flight if given, the admin API open with `ADMIN`.
async fn gateway(db: &TestDb, sim: &Sim, cap: Option<u32>) -> TestApp {
    let mut provider: ProviderConfig = sim.provider_config(BOTH, 0.1);
    provider.max_in_flight = cap;
    let mut cfg = with_queue(config(db, vec![("up".into(), provider)]));
    cfg.admin.token = Some(Secret::new(ADMIN));
    TestApp::start(cfg).await
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn new_key(app: &TestApp, limits: Value) -> (String, String) {
    let mut body = json!({"name": "team"});
    body.as_object_mut()
        .unwrap()
        .extend(limits.as_object().unwrap().clone());
    let key = admin(app, reqwest::Method::POST, "/admin/keys", body).await;
    (
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    )
}

async fn create_as(app: &TestApp, secret: &str, body: &Value) -> (StatusCode, Value) {
    app.post_as(secret, "/v1/video/generations", body).await
}

/// Creates a task that must be accepted; returns its id.
async fn accepted(app: &TestApp, secret: &str) -> String {
    let (status, task) = create_as(app, secret, &plain()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    task["id"].as_str().unwrap().to_string()
}

async fn state(app: &TestApp, id: &str) -> TaskState {
    app.gateway().store.task(id).await.unwrap().unwrap().state
}

/// Several dispatcher ticks (50 ms in tests): long enough for a task that could start to
/// have started.
async fn a_few_ticks() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

/// The waiting ones of `ids` in the order they joined the queue: by age, then by tag (two
/// tasks of a key that joined in the same millisecond are told apart by their tags).
async fn in_joining_order(app: &TestApp, ids: &[String]) -> Vec<String> {
    let mut waiting = Vec::new();
    for id in ids {
        let task = app.gateway().store.task(id).await.unwrap().unwrap();
        if let Some(spot) = task.queue {
            waiting.push((spot.waiting_since, spot.tag, id.clone()));
        }
    }
    waiting.sort();
    waiting.into_iter().map(|(_, _, id)| id).collect()
}

async fn a_key_at_its_max_in_flight_waits_in_the_queue_and_starts_as_its_tasks_finish(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let app = gateway(&db, &sim, None).await;
    let (key_id, secret) = new_key(&app, json!({"max_in_flight": 2})).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(accepted(&app, &secret).await);
    }
    eventually(WAIT, "two tasks at the provider", || async {
        sim.created_count() == 2
    })
    .await;
    let (status, third) = app
        .get_as(&secret, &format!("/v1/video/generations/{}", ids[2]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third["status"], "queued", "{third}");
    assert!(third["queue"]["position"].as_i64().unwrap() >= 1, "{third}");
    // Not queued: today's answer.
    let mut no_wait = plain();
    no_wait["max_wait_secs"] = json!(0);
    let (status, refused) = create_as(&app, &secret, &no_wait).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["error"]["code"], "concurrency_limited");
    a_few_ticks().await;
    assert_eq!(
        sim.created_count(),
        2,
        "the key's limit holds while it waits"
    );
    let info = key_info(&app, ADMIN, &key_id).await;
    assert_eq!(
        (info["in_flight"].as_i64(), info["queued"].as_i64()),
        (Some(2), Some(3)),
        "{info}"
    );
    // Each end of the key's own task starts the next of its waiting ones.
    for started in 3..=5 {
        assert!(sim.finish_oldest_running().await);
        eventually(WAIT, &format!("task {started} to start"), || async {
            sim.created_count() == started
        })
        .await;
    }
    while sim.finish_oldest_running().await {}
    for id in &ids {
        let done = app.wait_terminal_as(&secret, id, WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(sim.peak_running(), 2);
    let info = key_info(&app, ADMIN, &key_id).await;
    assert_eq!(
        (info["in_flight"].as_i64(), info["queued"].as_i64()),
        (Some(0), Some(0)),
        "{info}"
    );
}
on_both_stores!(a_key_at_its_max_in_flight_waits_in_the_queue_and_starts_as_its_tasks_finish);

async fn the_dispatcher_goes_past_a_key_at_its_limit_to_other_keys_tasks(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let app = gateway(&db, &sim, Some(2)).await;
    let (busy_id, busy) = new_key(&app, json!({})).await;
    let (_, other) = new_key(&app, json!({})).await;
    // Two of busy's run (the provider is full); two more of it and two of other's wait.
    let a: Vec<String> = join_all((0..4).map(|_| accepted(&app, &busy))).await;
    eventually(WAIT, "the provider full", || async {
        sim.created_count() == 2
    })
    .await;
    let b = [accepted(&app, &other).await, accepted(&app, &other).await];
    // Busy's waiting tasks in the order they joined the queue (the order they start in).
    let waiting_a = in_joining_order(&app, &a).await;
    assert_eq!(waiting_a.len(), 2);
    // Busy's limit now counts its two running tasks: its waiting ones must wait for them.
    admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{busy_id}"),
        json!({"max_in_flight": 1}),
    )
    .await;
    assert!(sim.finish_oldest_running().await);
    // The provider has room, busy has none: other's first task starts past busy's.
    eventually(WAIT, "other's first task to start", || async {
        state(&app, &b[0]).await != TaskState::Waiting
    })
    .await;
    a_few_ticks().await;
    for id in &waiting_a {
        assert_eq!(state(&app, id).await, TaskState::Waiting, "{id}");
    }
    // Busy's second running task ends: its slot goes to busy's oldest waiting task.
    assert!(sim.finish_oldest_running().await);
    eventually(WAIT, "busy's waiting task to start", || async {
        state(&app, &waiting_a[0]).await != TaskState::Waiting
    })
    .await;
    assert_eq!(state(&app, &b[1]).await, TaskState::Waiting);
    // Other's first ends: room at the provider, none for busy: other's second starts.
    assert!(sim.finish_oldest_running().await);
    eventually(WAIT, "other's second task to start", || async {
        state(&app, &b[1]).await != TaskState::Waiting
    })
    .await;
    assert_eq!(state(&app, &waiting_a[1]).await, TaskState::Waiting);
    while sim.running() > 0 || sim.created_count() < 6 {
        sim.finish_oldest_running().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in a.iter().chain(&b) {
        let key = if a.contains(id) { &busy } else { &other };
        let done = app.wait_terminal_as(key, id, WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(sim.peak_running(), 2);
}
on_both_stores!(the_dispatcher_goes_past_a_key_at_its_limit_to_other_keys_tasks);

async fn a_budget_race_against_a_key_limit_with_queueing_accepts_exactly_what_fits(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(1, 1));
    let app = gateway(&db, &sim, None).await;
    // $5.00 holds ten tasks of $0.50; two run at once, the rest wait holding their share.
    let (key_id, secret) = new_key(&app, json!({"budget_usd": 5.0, "max_in_flight": 2})).await;
    let body = plain();
    let answers = join_all((0..50).map(|_| create_as(&app, &secret, &body))).await;
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(ok.len(), 10, "{answers:?}");
    assert!(answers
        .iter()
        .filter(|(s, _)| *s != StatusCode::ACCEPTED)
        .all(|(_, e)| e["error"]["code"] == "budget_exceeded"));
    for t in ok {
        let done = app
            .wait_terminal_as(&secret, t["id"].as_str().unwrap(), WAIT)
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert!(sim.peak_running() <= 2, "peak {}", sim.peak_running());
    let info = key_info(&app, ADMIN, &key_id).await;
    assert_eq!(
        (
            info["spent_usd"].as_f64(),
            info["reserved_usd"].as_f64(),
            info["in_flight"].as_i64()
        ),
        (Some(5.0), Some(0.0), Some(0)),
        "{info}"
    );
}
on_both_stores!(a_budget_race_against_a_key_limit_with_queueing_accepts_exactly_what_fits);

/// Many tasks of a key at its `max_in_flight` join the queue at once (several in the same
/// millisecond): each end of the key's running task starts its oldest waiting one, never a
/// later joiner, whether the dispatcher parked them or not. Repeated, as the order the
/// concurrent creates reach the store varies from run to run.
async fn a_keys_concurrent_joiners_start_in_the_order_they_joined(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let app = gateway(&db, &sim, None).await;
    for round in 0..3 {
        let (_, secret) = new_key(&app, json!({"max_in_flight": 1})).await;
        let running = accepted(&app, &secret).await;
        eventually(WAIT, "the key's first task at the provider", || async {
            sim.running() == 1
        })
        .await;
        let ids: Vec<String> = join_all((0..8).map(|_| accepted(&app, &secret))).await;
        let order = in_joining_order(&app, &ids).await;
        assert_eq!(order.len(), 8, "round {round}: all wait behind {running}");
        for (i, next) in order.iter().enumerate() {
            assert!(sim.finish_oldest_running().await, "round {round}");
            eventually(
                WAIT,
                &format!("round {round}: joiner {i} to start"),
                || async { state(&app, next).await != TaskState::Waiting },
            )
            .await;
            for later in &order[i + 1..] {
                assert_eq!(
                    state(&app, later).await,
                    TaskState::Waiting,
                    "round {round}: {later} started before joiner {i}"
                );
            }
            eventually(
                WAIT,
                &format!("round {round}: joiner {i} at the provider"),
                || async { sim.running() == 1 },
            )
            .await;
        }
        assert!(sim.finish_oldest_running().await);
        let done = app.wait_terminal_as(&secret, &order[7], WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
}
on_both_stores!(a_keys_concurrent_joiners_start_in_the_order_they_joined);
