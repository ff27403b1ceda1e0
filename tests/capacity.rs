//! Capacity (issue 20): provider caps held in the store across gateway processes,
//! capacity refusals that lower a provider's cap instead of opening its circuit, and the
//! admission queue: waiting tasks start in fair order, spill to the next-cheapest provider
//! within `max_cost_usd`, time out, can be cancelled, and survive a restart.

mod support;

use std::time::Duration;

use futures::future::join_all;
use omnigate::config::{ProviderConfig, Secret};
use omnigate::store::ProviderCapacity;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, with_queue, Db, TestApp, TestDb};
use support::fixtures::{eventually, key_info, plain, succeeds_after, until_finished, with, BOTH};
use support::receiver::Receiver;
use support::sim::{Fault, Sim, SimDialect, SimError};

const WAIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "capacity-admin-token-0123456789abcdef";

/// A provider at `usd_per_second` capped at `cap` tasks in flight.
fn capped(sim: &Sim, usd_per_second: f64, cap: u32) -> ProviderConfig {
    let mut p = sim.provider_config(BOTH, usd_per_second);
    p.max_in_flight = Some(cap);
    p
}

/// A gateway with the queue on over `providers`, the admin API open with `ADMIN`.
async fn queueing(db: &TestDb, providers: Vec<(&str, ProviderConfig)>) -> TestApp {
    TestApp::start(queue_config(db, providers)).await
}

fn queue_config(db: &TestDb, providers: Vec<(&str, ProviderConfig)>) -> omnigate::config::Config {
    let providers = providers
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect();
    let mut cfg = with_queue(config(db, providers));
    cfg.admin.token = Some(Secret::new(ADMIN));
    cfg
}

fn id(task: &Value) -> String {
    task["id"].as_str().unwrap().to_string()
}

async fn capacity_of(app: &TestApp, provider: &str) -> ProviderCapacity {
    app.gateway()
        .store
        .capacity()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.provider == provider)
        .expect("a capacity row per configured provider")
}

/// Ends the running tasks one at a time, each once the next has started, until the
/// simulator has created `total` tasks and finished them all.
async fn finish_one_by_one(sim: &Sim, total: usize) {
    for started in 1..=total {
        eventually(
            WAIT,
            &format!("task {started} of {total} to start"),
            || async { sim.created_count() >= started },
        )
        .await;
        assert!(sim.finish_oldest_running().await, "a task runs");
    }
}

/// The gateway's task ids in the order the provider received them.
async fn start_order(app: &TestApp, sim: &Sim, ids: &[String]) -> Vec<String> {
    let mut by_upstream = std::collections::HashMap::new();
    for id in ids {
        // The provider may have a task a moment before its acceptance is recorded.
        let accepted = || async {
            let task = app.gateway().store.task(id).await.unwrap().unwrap();
            task.provider_task_id
        };
        eventually(WAIT, &format!("{id}'s acceptance"), || async {
            accepted().await.is_some()
        })
        .await;
        by_upstream.insert(accepted().await.unwrap(), id.clone());
    }
    sim.created_ids()
        .iter()
        .map(|u| by_upstream[u].clone())
        .collect()
}

async fn the_cap_holds_with_concurrent_creates_and_every_task_completes(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(2, 2));
    let app = queueing(&db, vec![("up", capped(&sim, 0.1, 2))]).await;
    let body = plain();
    let tasks = join_all((0..10).map(|_| app.create(&body))).await;
    let waited = tasks.iter().filter(|t| t["queue"].is_object()).count();
    assert!(waited >= 5, "most of them wait: {tasks:?}");
    for t in &tasks {
        let done = app.wait_terminal(&id(t), WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert!(sim.peak_running() <= 2, "peak {}", sim.peak_running());
    assert_eq!(sim.created_count(), 10);
    assert_eq!(capacity_of(&app, "up").await.in_flight, 0);
}
on_both_stores!(the_cap_holds_with_concurrent_creates_and_every_task_completes);

/// Two gateway processes on one PostgreSQL database share each provider's cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_database_never_exceed_the_cap_together() {
    let db = TestDb::new(Db::Postgres).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(2, 2));
    let cfg = queue_config(&db, vec![("up", capped(&sim, 0.1, 3))]);
    let one = TestApp::start(cfg.clone()).await;
    let two = TestApp::start(cfg).await;
    let body = plain();
    let creates = (0..14).map(|i| if i % 2 == 0 { &one } else { &two }.create(&body));
    let tasks = join_all(creates).await;
    for (i, t) in tasks.iter().enumerate() {
        let app = if i % 2 == 0 { &one } else { &two };
        let done = app.wait_terminal(&id(t), WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert!(sim.peak_running() <= 3, "peak {}", sim.peak_running());
    assert_eq!(sim.created_count(), 14);
    assert_eq!(capacity_of(&one, "up").await.in_flight, 0);
}

async fn max_submits_per_minute_holds_past_finished_tasks(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(0, 0));
    let mut p = sim.provider_config(BOTH, 0.1);
    p.max_submits_per_minute = Some(2);
    let app = queueing(&db, vec![("up", p)]).await;
    for _ in 0..2 {
        let done = app
            .wait_terminal(&id(&app.create(&plain()).await), WAIT)
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    // Nothing runs, but the minute's two submits are used: the third waits.
    let third = app.create(&plain()).await;
    assert_eq!(third["queue"]["position"], 1, "{third}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.created_count(), 2);
    let (status, _) = app
        .post(
            &format!("/v1/video/generations/{}/cancel", id(&third)),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
on_both_stores!(max_submits_per_minute_holds_past_finished_tasks);

async fn a_capacity_refusal_lowers_the_effective_cap_without_opening_the_circuit(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    sim.set_script(until_finished());
    let mut cfg = queue_config(&db, vec![("up", capped(&sim, 0.1, 3))]);
    // One failure that counted against the provider would open its circuit.
    cfg.health.consecutive_failures = 1;
    cfg.queue.refusal_cooldown_secs = 1;
    let app = TestApp::start(cfg).await;
    let first = app.create(&plain()).await;
    assert!(first["queue"].is_null(), "{first}");
    sim.push_submit_fault(Fault::Error(SimError::TooManyParallel));
    let second = app.create(&plain()).await;
    assert_eq!(second["status"], "queued", "{second}");
    assert_eq!(second["queue"]["position"], 1, "{second}");
    let cap = capacity_of(&app, "up").await;
    assert_eq!(
        (cap.effective_cap, cap.refusals, cap.in_flight),
        (Some(1), 1, 1),
        "{cap:?}"
    );
    let report = app.gateway().health.report(&["up".into()]).await.unwrap();
    assert_eq!(report[0].circuit, "closed");
    // Past the cool-down, the lowered cap still holds while the first task runs.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(sim.created_count(), 1);
    // Each task that finishes after the cool-down raises the cap by one, back to 3.
    finish_one_by_one(&sim, 2).await;
    for t in [&first, &second] {
        let done = app.wait_terminal(&id(t), WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let cap = capacity_of(&app, "up").await;
    assert_eq!((cap.effective_cap, cap.in_flight), (None, 0), "{cap:?}");
}
on_both_stores!(a_capacity_refusal_lowers_the_effective_cap_without_opening_the_circuit);

async fn a_full_provider_spills_to_the_next_cheapest_unless_max_cost_excludes_it(db: Db) {
    let db = TestDb::new(db).await;
    let cheap = Sim::start(SimDialect::Apimodels).await;
    let dear = Sim::start(SimDialect::Kkiai).await;
    cheap.set_script(until_finished());
    let app = queueing(
        &db,
        vec![
            ("cheap", capped(&cheap, 0.10, 1)),
            ("dear", dear.provider_config(BOTH, 0.12)),
        ],
    )
    .await;
    let first = app.create(&plain()).await;
    assert_eq!(first["provider"], "cheap", "{first}");
    let spilled = app.create(&plain()).await;
    assert_eq!(spilled["provider"], "dear", "{spilled}");
    let reason = spilled["routing"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cheapest provider full; next at +20%"),
        "{reason}"
    );
    // $0.55 allows the cheap provider ($0.50) only: the task waits for it.
    let bounded = app
        .create(&with(plain(), json!({"routing": {"max_cost_usd": 0.55}})))
        .await;
    assert_eq!(bounded["status"], "queued", "{bounded}");
    assert!(bounded["queue"]["max_wait_until"].as_i64().is_some());
    finish_one_by_one(&cheap, 2).await;
    let done = app.wait_terminal(&id(&bounded), WAIT).await;
    assert_eq!(
        (done["status"].as_str(), done["provider"].as_str()),
        (Some("completed"), Some("cheap")),
        "{done}"
    );
    assert_eq!(dear.created_count(), 1);
}
on_both_stores!(a_full_provider_spills_to_the_next_cheapest_unless_max_cost_excludes_it);

async fn when_full_wait_waits_for_the_cheapest_provider(db: Db) {
    let db = TestDb::new(db).await;
    let cheap = Sim::start(SimDialect::Apimodels).await;
    let dear = Sim::start(SimDialect::Kkiai).await;
    cheap.set_script(until_finished());
    let mut cfg = queue_config(
        &db,
        vec![
            ("cheap", capped(&cheap, 0.10, 1)),
            ("dear", dear.provider_config(BOTH, 0.12)),
        ],
    );
    cfg.routing.when_full = omnigate::queue::WhenFull::Wait;
    let app = TestApp::start(cfg).await;
    app.create(&plain()).await;
    let waiting = app.create(&plain()).await;
    assert_eq!(waiting["queue"]["position"], 1, "{waiting}");
    finish_one_by_one(&cheap, 2).await;
    let done = app.wait_terminal(&id(&waiting), WAIT).await;
    assert_eq!(done["provider"], "cheap", "{done}");
    assert_eq!(dear.created_count(), 0);
}
on_both_stores!(when_full_wait_waits_for_the_cheapest_provider);

async fn a_small_key_does_not_wait_behind_a_burst_of_another(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let app = queueing(&db, vec![("up", capped(&sim, 0.1, 1))]).await;
    let small = app.gateway().store.create_api_key("small").await.unwrap();
    let mut burst = Vec::new();
    for _ in 0..13 {
        burst.push(id(&app.create(&plain()).await));
    }
    let mut few = Vec::new();
    for _ in 0..3 {
        let (status, task) = app
            .post_as(&small.secret, "/v1/video/generations", &plain())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        few.push(id(&task));
    }
    finish_one_by_one(&sim, 16).await;
    let all: Vec<String> = burst.iter().chain(&few).cloned().collect();
    let order = start_order(&app, &sim, &all).await;
    let last_small = few
        .iter()
        .map(|f| order.iter().position(|o| o == f).unwrap())
        .max()
        .unwrap();
    // The burst's first task had the slot; the queue then alternates the two keys.
    assert!(
        last_small <= 6,
        "small key's last start #{last_small}: {order:?}"
    );
    assert_eq!(order.last(), burst.last(), "{order:?}");
}
on_both_stores!(a_small_key_does_not_wait_behind_a_burst_of_another);

async fn priority_orders_a_keys_own_waiting_tasks(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let app = queueing(&db, vec![("up", capped(&sim, 0.1, 1))]).await;
    let running = id(&app.create(&plain()).await);
    let low = |_| with(plain(), json!({"priority": "low"}));
    let first_low = id(&app.create(&low(())).await);
    let second_low = id(&app.create(&low(())).await);
    let high = id(&app
        .create(&with(plain(), json!({"priority": "high"})))
        .await);
    finish_one_by_one(&sim, 4).await;
    let all = [
        running.clone(),
        first_low.clone(),
        second_low.clone(),
        high.clone(),
    ];
    let order = start_order(&app, &sim, &all).await;
    assert_eq!(order, [running, high, first_low, second_low]);
}
on_both_stores!(priority_orders_a_keys_own_waiting_tasks);

async fn a_keys_weight_and_max_queued_come_from_the_admin_api(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let app = queueing(&db, vec![("up", capped(&sim, 0.1, 1))]).await;
    let heavy = admin_new_key(&app, json!({"weight": 3})).await;
    let light = admin_new_key(&app, json!({"max_queued": 6})).await;
    assert_eq!(
        (heavy["weight"].as_i64(), light["weight"].as_i64()),
        (Some(3), Some(1))
    );
    let running = id(&app.create(&plain()).await);
    let mut ids = vec![running];
    let mut heavy_ids = Vec::new();
    for key in [&heavy, &light] {
        for _ in 0..6 {
            let (status, task) = app
                .post_as(
                    key["key"].as_str().unwrap(),
                    "/v1/video/generations",
                    &plain(),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{task}");
            ids.push(id(&task));
            if key == &heavy {
                heavy_ids.push(id(&task));
            }
        }
    }
    let (status, err) = app
        .post_as(
            light["key"].as_str().unwrap(),
            "/v1/video/generations",
            &plain(),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert_eq!(err["error"]["code"], "queue_full");
    let info = key_info(&app, ADMIN, light["id"].as_str().unwrap()).await;
    assert_eq!(
        (info["queued"].as_i64(), info["max_queued"].as_i64()),
        (Some(6), Some(6))
    );
    finish_one_by_one(&sim, 13).await;
    let order = start_order(&app, &sim, &ids).await;
    // Weight 3 against 1: of the first eight started from the queue, about six are heavy's.
    let heavy_first = order[1..9].iter().filter(|o| heavy_ids.contains(o)).count();
    assert!(heavy_first >= 5, "{heavy_first} of 8: {order:?}");
}
on_both_stores!(a_keys_weight_and_max_queued_come_from_the_admin_api);

async fn a_budget_race_with_the_queue_on_still_accepts_exactly_what_fits(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(1, 1));
    let app = queueing(&db, vec![("up", capped(&sim, 0.1, 2))]).await;
    // $5.00 holds ten tasks of $0.50; two run at once, the rest wait holding their share.
    let key = admin_new_key(&app, json!({"budget_usd": 5.0})).await;
    let secret = key["key"].as_str().unwrap();
    let body = plain();
    let answers =
        join_all((0..50).map(|_| app.post_as(secret, "/v1/video/generations", &body))).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(accepted.len(), 10, "{answers:?}");
    assert!(answers
        .iter()
        .filter(|(s, _)| *s != StatusCode::ACCEPTED)
        .all(|(_, e)| e["error"]["code"] == "budget_exceeded"));
    for t in accepted {
        let done = app.wait_terminal_as(secret, &id(t), WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert!(sim.peak_running() <= 2);
    let info = key_info(&app, ADMIN, key["id"].as_str().unwrap()).await;
    assert_eq!(
        (info["spent_usd"].as_f64(), info["reserved_usd"].as_f64()),
        (Some(5.0), Some(0.0)),
        "{info}"
    );
}
on_both_stores!(a_budget_race_with_the_queue_on_still_accepts_exactly_what_fits);

async fn a_task_waiting_past_its_deadline_fails_with_nothing_charged(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let mut cfg = queue_config(&db, vec![("up", capped(&sim, 0.1, 1))]);
    cfg.webhooks.allow_private_targets = true;
    let app = TestApp::start(cfg).await;
    let key = admin_new_key(&app, json!({"budget_usd": 5.0})).await;
    let secret = key["key"].as_str().unwrap();
    let receiver = Receiver::start().await;
    let body = with(plain(), json!({"callback_url": receiver.url()}));
    let (status, running) = app.post_as(secret, "/v1/video/generations", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{running}");
    let body = with(body, json!({"max_wait_secs": 1}));
    let (status, waiting) = app.post_as(secret, "/v1/video/generations", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
    assert_eq!(waiting["queue"]["position"], 1, "{waiting}");
    let info = key_info(&app, ADMIN, key["id"].as_str().unwrap()).await;
    assert_eq!(
        info["reserved_usd"].as_f64(),
        Some(1.0),
        "both reserve: {info}"
    );
    let done = app.wait_terminal_as(secret, &id(&waiting), WAIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "queue_timeout", "{done}");
    let info = key_info(&app, ADMIN, key["id"].as_str().unwrap()).await;
    assert_eq!(
        (info["spent_usd"].as_f64(), info["reserved_usd"].as_f64()),
        (Some(0.0), Some(0.5)),
        "only the running task's reservation is left: {info}"
    );
    let types = event_types(&app, secret, &id(&waiting)).await;
    assert_eq!(types, ["video.generation.failed"]);
    assert_eq!(sim.created_count(), 1);
}
on_both_stores!(a_task_waiting_past_its_deadline_fails_with_nothing_charged);

async fn a_waiting_task_can_be_cancelled_and_an_accepted_one_cannot(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let mut cfg = queue_config(&db, vec![("up", capped(&sim, 0.1, 1))]);
    cfg.webhooks.allow_private_targets = true;
    let app = TestApp::start(cfg).await;
    let receiver = Receiver::start().await;
    let body = with(plain(), json!({"callback_url": receiver.url()}));
    let running = app.create(&body).await;
    let waiting = app.create(&body).await;
    let cancel = |t: &Value| format!("/v1/video/generations/{}/cancel", id(t));
    for _ in 0..2 {
        let (status, task) = app.post(&cancel(&waiting), &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        assert_eq!(task["status"], "cancelled", "{task}");
    }
    let (status, err) = app.post(&cancel(&running), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "not_cancellable");
    let types = event_types(&app, &app.key, &id(&waiting)).await;
    assert_eq!(types, ["video.generation.cancelled"]);
    // The OpenAI facade's delete of a waiting video cancels it too.
    let other = app.create(&body).await;
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{}", app.base, id(&other)))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let task = app
        .gateway()
        .store
        .task(&id(&other))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.state.as_str(), "cancelled");
    assert_eq!(sim.created_count(), 1, "neither reached the provider");
}
on_both_stores!(a_waiting_task_can_be_cancelled_and_an_accepted_one_cannot);

async fn waiting_tasks_survive_a_restart_and_complete(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let cfg = queue_config(&db, vec![("up", capped(&sim, 0.1, 1))]);
    let mut app = TestApp::start(cfg.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(id(&app.create(&plain()).await));
    }
    app.kill();
    let app = TestApp::restart_with(cfg, app.key.clone()).await;
    finish_one_by_one(&sim, 4).await;
    for id in &ids {
        let done = app.wait_terminal(id, WAIT).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(sim.created_count(), 4, "each submitted once");
    // The killed gateway's slot came back with its task's end: none leaked.
    assert_eq!(capacity_of(&app, "up").await.in_flight, 0);
}
on_both_stores!(waiting_tasks_survive_a_restart_and_complete);

async fn no_wait_keeps_the_503_and_max_queued_bounds_a_keys_queue(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(until_finished());
    let mut cfg = queue_config(&db, vec![("up", capped(&sim, 0.1, 1))]);
    cfg.queue.default_max_queued = 2;
    let app = TestApp::start(cfg).await;
    app.create(&plain()).await;
    let (status, err) = app
        .post(
            "/v1/video/generations",
            &with(plain(), json!({"max_wait_secs": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "no_provider_available");
    for _ in 0..2 {
        assert_eq!(app.create(&plain()).await["status"], "queued");
    }
    let (status, err) = app.post("/v1/video/generations", &plain()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert_eq!(err["error"]["code"], "queue_full");
    let (status, err) = app
        .post(
            "/v1/video/generations",
            &with(plain(), json!({"max_wait_secs": 86_401})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "max_wait_secs");
}
on_both_stores!(no_wait_keeps_the_503_and_max_queued_bounds_a_keys_queue);

async fn admin_new_key(app: &TestApp, limits: Value) -> Value {
    let body = with(json!({"name": "team"}), limits);
    let resp = app
        .client
        .post(format!("{}/admin/keys", app.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

async fn event_types(app: &TestApp, key: &str, id: &str) -> Vec<String> {
    let (status, list) = app
        .get_as(key, &format!("/v1/video/generations/{id}/events"))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}
