//! Keys and their limits: the admin API, tasks in flight per key, spend budgets (race-free
//! on both stores), and slots that are never leaked, also across a crash.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use omnigate::config::Secret;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::{plain, BOTH};
use support::sim::{Outcome, Script, Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(15);
const ADMIN: &str = "key-limits-admin-token-0123456789abcdef";

/// A gateway with one simulated provider at $0.10/s (a plain task: $0.50) and the admin API on.
async fn gateway(db: &TestDb) -> (TestApp, Sim) {
    let sim = Sim::start(SimDialect::Apimodels).await;
    let mut cfg = config(db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.admin.token = Some(Secret::new(ADMIN));
    (TestApp::start(cfg).await, sim)
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn new_key(app: &TestApp, limits: Value) -> Value {
    let mut body = json!({"name": "team-key"});
    body.as_object_mut()
        .unwrap()
        .extend(limits.as_object().unwrap().clone());
    let (status, key) = admin(app, reqwest::Method::POST, "/admin/keys", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key
}

async fn wait(app: &TestApp, key: &Value, task: &Value) -> Value {
    let (key, id) = (key["key"].as_str().unwrap(), task["id"].as_str().unwrap());
    app.wait_terminal_as(key, id, WAIT).await
}

/// The key as `GET /admin/keys/{id}` shows it.
async fn key_info(app: &TestApp, id: &str) -> Value {
    let (status, info) = admin(
        app,
        reqwest::Method::GET,
        &format!("/admin/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    info
}

async fn create_as(app: &TestApp, key: &Value) -> (StatusCode, Value) {
    app.post_as(
        key["key"].as_str().unwrap(),
        "/v1/video/generations",
        &plain(),
    )
    .await
}

async fn keys_are_managed_through_the_admin_api(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = gateway(&db).await;
    let key = new_key(&app, json!({"team": "video", "rpm": 60, "max_in_flight": 3, "budget_usd": 12.5, "budget_period": "day"})).await;
    assert!(key["key"].as_str().unwrap().starts_with("og_"));
    let whsec = key["webhook_secret"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(whsec.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert!(raw.len() >= 24, "{whsec}");
    assert_eq!(key["team"], "video");
    assert_eq!(key["budget_period"], "day");
    assert_eq!(key["max_in_flight"], 3);
    let id = key["id"].as_str().unwrap();
    let (status, list) = admin(&app, reqwest::Method::GET, "/admin/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list["data"].as_array().unwrap();
    assert!(listed.iter().any(|k| k["id"] == id));
    assert!(
        listed
            .iter()
            .all(|k| k.get("key").is_none() && k.get("key_hash").is_none()),
        "{list}"
    );
    // null removes a limit; an absent field stays.
    let (status, changed) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{id}"),
        Some(json!({"rpm": null, "burst": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["rpm"], Value::Null);
    assert_eq!(changed["burst"], 5);
    assert_eq!(changed["max_in_flight"], 3);
    let (status, err) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{id}"),
        Some(json!({"max_in_flight": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["param"], "max_in_flight");
    // Over HTTP a limit is removed with JSON's null, and the refusal says so.
    let (status, err) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{id}"),
        Some(json!({"budget_usd": -1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "budget_usd");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("positive number") && message.contains("or null to remove it"),
        "{message}"
    );
    assert!(!message.contains("none"), "{message}");
    // Without the admin token there is nothing to see.
    let (status, _) = app
        .get_as(key["key"].as_str().unwrap(), "/admin/keys")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
on_both_stores!(keys_are_managed_through_the_admin_api);

async fn revoked_keys_are_refused_and_rotated_keys_have_a_grace_period(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = gateway(&db).await;
    let key = new_key(&app, json!({})).await;
    let id = key["id"].as_str().unwrap();
    let old = key["key"].as_str().unwrap().to_string();
    let (status, rotated) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/keys/{id}/rotate"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_ne!(
        rotated["webhook_secret"], key["webhook_secret"],
        "rotation issues a new signing secret (the previous one signs too during the grace period)"
    );
    assert!(rotated["webhook_secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    for secret in [&old, &new] {
        let (status, _) = app.get_as(secret, "/v1/video/generations").await;
        assert_eq!(status, StatusCode::OK, "both work within the grace period");
    }
    let (status, _) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/keys/{id}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Revocation reaches every cache within a second.
    let deadline = Instant::now() + Duration::from_millis(1_500);
    loop {
        let (status, _) = app.get_as(&new, "/v1/video/generations").await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "a revoked key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
on_both_stores!(revoked_keys_are_refused_and_rotated_keys_have_a_grace_period);

async fn tasks_in_flight_are_limited_and_every_ending_frees_a_slot(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = gateway(&db).await;
    let key = new_key(&app, json!({"max_in_flight": 2})).await;
    // The first task fails at the provider soon; the second runs for a long time.
    sim.set_script(Script {
        queued_polls: 2,
        processing_polls: 0,
        outcome: Outcome::Fail("boom".into()),
    });
    let (status, first) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    sim.set_script(Script {
        queued_polls: 100_000,
        ..Script::default()
    });
    let (status, _) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, refused) = create_as(&app, &key).await;
    // The first may already have failed and freed its slot; if not, the third is refused.
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(refused["error"]["code"], "concurrency_limited");
        assert!(refused["error"]["message"].as_str().is_some());
        assert!(
            refused["error"]["message"].as_str().unwrap().contains('2'),
            "{refused}"
        );
        let failed = wait(&app, &key, &first).await;
        assert_eq!(failed["status"], "failed");
        let (status, third) = create_as(&app, &key).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "the failed task freed its slot: {third}"
        );
    } else {
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, fourth) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{fourth}");
    let id = key["id"].as_str().unwrap();
    let info = key_info(&app, id).await;
    assert_eq!(info["in_flight"], 2, "{info}");
}
on_both_stores!(tasks_in_flight_are_limited_and_every_ending_frees_a_slot);

async fn fifty_concurrent_creates_against_a_budget_for_ten_accept_exactly_ten(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = gateway(&db).await;
    sim.set_script(Script {
        queued_polls: 100_000,
        ..Script::default()
    });
    let key = new_key(&app, json!({"budget_usd": 5.0})).await;
    let creates = (0..50).map(|_| create_as(&app, &key));
    let answers = futures::future::join_all(creates).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::PAYMENT_REQUIRED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted, 10, "{answers:?}");
    assert_eq!(refused.len(), 40, "{answers:?}");
    assert!(refused
        .iter()
        .all(|b| b["error"]["code"] == "budget_exceeded"));
    assert_eq!(sim.created_count(), 10);
    let id = key["id"].as_str().unwrap();
    let info = key_info(&app, id).await;
    assert_eq!(info["reserved_usd"], 5.0, "{info}");
}
on_both_stores!(fifty_concurrent_creates_against_a_budget_for_ten_accept_exactly_ten);

async fn a_budget_is_settled_on_completion_and_released_on_failure(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = gateway(&db).await;
    let key = new_key(&app, json!({"budget_usd": 1.0})).await;
    let id = key["id"].as_str().unwrap().to_string();
    sim.set_script(Script {
        queued_polls: 0,
        processing_polls: 0,
        outcome: Outcome::Fail("no".into()),
    });
    let (_, failed) = create_as(&app, &key).await;
    wait(&app, &key, &failed).await;
    let info = key_info(&app, &id).await;
    assert_eq!(
        (info["spent_usd"].as_f64(), info["reserved_usd"].as_f64()),
        (Some(0.0), Some(0.0)),
        "{info}"
    );
    sim.set_script(Script::default());
    let (_, done) = create_as(&app, &key).await;
    let done = wait(&app, &key, &done).await;
    assert_eq!(done["status"], "completed");
    let info = key_info(&app, &id).await;
    assert_eq!(
        (info["spent_usd"].as_f64(), info["reserved_usd"].as_f64()),
        (Some(0.5), Some(0.0)),
        "{info}"
    );
    // $0.50 spent of $1.00: one more fits, a third does not.
    sim.set_script(Script {
        queued_polls: 100_000,
        ..Script::default()
    });
    assert_eq!(create_as(&app, &key).await.0, StatusCode::ACCEPTED);
    let (status, err) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per month"),
        "{err}"
    );
}
on_both_stores!(a_budget_is_settled_on_completion_and_released_on_failure);

async fn a_slot_is_not_leaked_by_a_crash_and_restart_mid_flight(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(Script {
        queued_polls: 20,
        ..Script::default()
    });
    let mut cfg = config(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.admin.token = Some(Secret::new(ADMIN));
    let mut app = TestApp::start(cfg.clone()).await;
    let key = new_key(&app, json!({"max_in_flight": 1, "budget_usd": 1.0})).await;
    let (status, task) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    app.kill();
    let app = TestApp::restart_with(cfg, app.key.clone()).await;
    let (status, _) = create_as(&app, &key).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the slot survived the crash"
    );
    let done = wait(&app, &key, &task).await;
    assert_eq!(done["status"], "completed");
    let id = key["id"].as_str().unwrap();
    let info = key_info(&app, id).await;
    assert_eq!(info["in_flight"], 0, "{info}");
    assert_eq!(info["reserved_usd"].as_f64(), Some(0.0), "{info}");
    assert_eq!(info["spent_usd"].as_f64(), Some(0.5), "{info}");
}
on_both_stores!(a_slot_is_not_leaked_by_a_crash_and_restart_mid_flight);

/// Sums straight from the tasks table, to hold the report against.
async fn table_sums(app: &TestApp, key_id: &str) -> (i64, i64, i64, i64) {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(billed_seconds), 0) AS BIGINT) AS s, \
         CAST(COALESCE(SUM(cost_estimated_micros), 0) AS BIGINT) AS e, \
         CAST(COALESCE(SUM(CASE WHEN state = 'completed' THEN cost_final_micros END), 0) AS BIGINT) AS f \
         FROM tasks WHERE api_key_id = $1",
    )
    .bind(key_id)
    .fetch_one(app.gateway().store.pool())
    .await
    .unwrap();
    (row.get("n"), row.get("s"), row.get("e"), row.get("f"))
}

async fn usage_sums_match_the_tasks_table_for_every_grouping(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = gateway(&db).await;
    let key = new_key(&app, json!({"team": "studio"})).await;
    let secret = key["key"].as_str().unwrap();
    let mut ids = Vec::new();
    for (i, duration) in [5, 10, 7].into_iter().enumerate() {
        sim.set_script(match i {
            1 => Script {
                queued_polls: 0,
                processing_polls: 0,
                outcome: Outcome::Fail("no".into()),
            },
            _ => Script::default(),
        });
        let body = json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "duration": duration});
        let (status, task) = app.post_as(secret, "/v1/video/generations", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        ids.push(task);
    }
    for task in &ids {
        wait(&app, &key, task).await;
    }
    let (n, seconds, estimated, settled) = table_sums(&app, key["id"].as_str().unwrap()).await;
    assert_eq!((n, seconds), (3, 22));
    for group_by in ["day", "model", "provider", "status"] {
        let (status, usage) = app
            .get_as(
                secret,
                &format!("/v1/usage?group_by={group_by}&from=2020-01-01"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{usage}");
        let total = &usage["total"];
        assert_eq!(total["tasks"], n, "{group_by}: {usage}");
        assert_eq!(total["seconds"], seconds, "{group_by}: {usage}");
        assert_eq!(
            total["estimated_usd"].as_f64(),
            Some(estimated as f64 / 1e6),
            "{usage}"
        );
        assert_eq!(
            total["final_usd"].as_f64(),
            Some(settled as f64 / 1e6),
            "{usage}"
        );
    }
    let (_, by_status) = app.get_as(secret, "/v1/usage?group_by=status&from=0").await;
    let groups: Vec<(&str, i64)> = by_status["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["group"].as_str().unwrap(), r["tasks"].as_i64().unwrap()))
        .collect();
    assert_eq!(groups, [("completed", 2), ("failed", 1)], "{by_status}");
    assert_eq!(
        settled, 1_200_000,
        "5 s + 7 s at $0.10/s, the failed 10 s task not settled"
    );
    // The operator sees every key, with its name and team.
    let (status, all) = admin(
        &app,
        reqwest::Method::GET,
        "/admin/usage?group_by=model&from=0",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mine = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key["id"])
        .unwrap();
    assert_eq!(mine["team"], "studio");
    assert_eq!(mine["tasks"], 3);
    let (status, err) = app.get_as(secret, "/v1/usage?group_by=week").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["param"], "group_by");
}
on_both_stores!(usage_sums_match_the_tasks_table_for_every_grouping);

async fn two_gateway_processes_enforce_one_concurrency_limit(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(Script {
        queued_polls: 100_000,
        ..Script::default()
    });
    let mut cfg = config(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.admin.token = Some(Secret::new(ADMIN));
    let a = TestApp::start(cfg.clone()).await;
    let b = TestApp::restart_with(cfg, a.key.clone()).await;
    let key = new_key(&a, json!({"max_in_flight": 3})).await;
    for app in [&a, &b, &a] {
        assert_eq!(create_as(app, &key).await.0, StatusCode::ACCEPTED);
    }
    for app in [&b, &a] {
        let (status, err) = create_as(app, &key).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err}");
        assert_eq!(err["error"]["code"], "concurrency_limited");
    }
    assert_eq!(sim.created_count(), 3);
}
on_both_stores!(two_gateway_processes_enforce_one_concurrency_limit);

/// A gateway whose one provider (a Kling flavour, which reports the length of the video it
/// made) charges `usd_per_second`, with every base video lasting `input_seconds`.
async fn edit_gateway(db: &TestDb, usd_per_second: f64, input_seconds: u32) -> (TestApp, Sim) {
    let sim = Sim::start(SimDialect::Anyfast).await;
    sim.set_base_video_seconds(input_seconds);
    let mut cfg = config(
        db,
        vec![("up".into(), sim.provider_config(BOTH, usd_per_second))],
    );
    cfg.admin.token = Some(Secret::new(ADMIN));
    (TestApp::start(cfg).await, sim)
}

/// A base-video edit whose client declares a 3 s input.
fn edit_declaring_3_s() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "edit <<<video_1>>> into clay",
           "video_list": [{"video_url": "https://example.com/in.mp4", "refer_type": "base", "duration": 3}]})
}

/// (cost_final_micros, provider_reported_micros) as stored.
async fn stored_costs(app: &TestApp, task_id: &str) -> (Option<i64>, Option<i64>) {
    use sqlx::Row;
    let row =
        sqlx::query("SELECT cost_final_micros, provider_reported_micros FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_one(app.gateway().store.pool())
            .await
            .unwrap();
    (row.get(0), row.get(1))
}

async fn an_edit_declaring_a_short_input_cannot_spend_past_the_budget(db: Db) {
    let db = TestDb::new(db).await;
    // $0.09/s: declared 3 s would reserve $0.27; the provider bills the real 10 s, $0.90.
    let (app, _sim) = edit_gateway(&db, 0.09, 10).await;
    let key = new_key(&app, json!({"budget_usd": 1.0})).await;
    let id = key["id"].as_str().unwrap().to_string();
    // Four creates back to back, as the review measured: 202, 202, 202, 402 and $2.70
    // spent when each reserved its declared 3 s.
    let mut statuses = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..4 {
        let (status, task) = app
            .post_as(
                key["key"].as_str().unwrap(),
                "/v1/video/generations",
                &edit_declaring_3_s(),
            )
            .await;
        statuses.push(status);
        if status == StatusCode::ACCEPTED {
            accepted.push(task);
        }
    }
    let mut done = Vec::new();
    for task in &accepted {
        done.push(wait(&app, &key, task).await);
    }
    let info = key_info(&app, &id).await;
    let spent = info["spent_usd"].as_f64().unwrap();
    assert!(spent <= 1.0, "spent ${spent} of a $1.00 budget: {info}");
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::PAYMENT_REQUIRED,
            StatusCode::PAYMENT_REQUIRED,
            StatusCode::PAYMENT_REQUIRED
        ],
        "an edit reserves its longest input, $0.90: a second does not fit"
    );
    assert_eq!(done[0]["status"], "completed", "{}", done[0]);
    assert_eq!(
        done[0]["cost"]["final_usd"].as_f64(),
        Some(0.9),
        "{}",
        done[0]
    );
    assert_eq!(key_info(&app, &id).await["spent_usd"].as_f64(), Some(0.9));
    // The provider's own figure is kept beside the charge.
    let task_id = done[0]["id"].as_str().unwrap();
    assert_eq!(
        stored_costs(&app, task_id).await,
        (Some(900_000), Some(900_000))
    );
}
on_both_stores!(an_edit_declaring_a_short_input_cannot_spend_past_the_budget);

async fn a_provider_billing_past_the_reservation_is_charged_the_reservation_and_shown(db: Db) {
    let db = TestDb::new(db).await;
    // Longer than the documents allow (3-10 s): the provider bills 12 s, $1.08.
    let (app, _sim) = edit_gateway(&db, 0.09, 12).await;
    let key = new_key(&app, json!({"budget_usd": 1.0})).await;
    let (status, task) = app
        .post_as(
            key["key"].as_str().unwrap(),
            "/v1/video/generations",
            &edit_declaring_3_s(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let done = wait(&app, &key, &task).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["cost"]["final_usd"].as_f64(), Some(0.9), "{done}");
    assert_eq!(
        done["cost"]["provider_reported_usd"].as_f64(),
        Some(1.08),
        "{done}"
    );
    let info = key_info(&app, key["id"].as_str().unwrap()).await;
    assert_eq!(info["spent_usd"].as_f64(), Some(0.9), "{info}");
    assert_eq!(
        stored_costs(&app, done["id"].as_str().unwrap()).await,
        (Some(900_000), Some(1_080_000))
    );
    // The operator's usage report shows the under-estimate beside the charge.
    let (status, all) = admin(&app, reqwest::Method::GET, "/admin/usage?from=0", None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mine = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key["id"])
        .unwrap();
    assert_eq!(mine["final_usd"].as_f64(), Some(0.9), "{all}");
    assert_eq!(mine["provider_reported_usd"].as_f64(), Some(1.08), "{all}");
}
on_both_stores!(a_provider_billing_past_the_reservation_is_charged_the_reservation_and_shown);

/// `final_usd` of `/v1/usage` over every task of the key.
async fn usage_final_usd(app: &TestApp, secret: &str) -> f64 {
    let (status, usage) = app.get_as(secret, "/v1/usage?group_by=day&from=0").await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    usage["total"]["final_usd"].as_f64().unwrap()
}

async fn spend_counts_without_a_budget_and_a_budget_set_later_counts_it(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = gateway(&db).await;
    let key = new_key(&app, json!({})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    for _ in 0..2 {
        let (status, task) = create_as(&app, &key).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        assert_eq!(wait(&app, &key, &task).await["status"], "completed");
    }
    // One source of truth: the key's spend is the usage report's sum, on every view.
    let info = key_info(&app, id).await;
    assert_eq!(info["spent_usd"].as_f64(), Some(1.0), "{info}");
    assert_eq!(usage_final_usd(&app, secret).await, 1.0);
    let (_, list) = admin(&app, reqwest::Method::GET, "/admin/keys", None).await;
    let listed = list["data"].as_array().unwrap();
    let mine = listed.iter().find(|k| k["id"] == id).unwrap();
    assert_eq!(mine["spent_usd"].as_f64(), Some(1.0), "{list}");
    // A budget set mid-period counts what was already spent: $1.00 + $0.50 > $1.20.
    let path = format!("/admin/keys/{id}");
    let patch = |body: Value| admin(&app, reqwest::Method::PATCH, &path, Some(body));
    let (status, changed) = patch(json!({"budget_usd": 1.2})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["spent_usd"].as_f64(), Some(1.0), "{changed}");
    let (status, err) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
    // So does a change of period: today's spend is the same $1.00.
    let (status, changed) = patch(json!({"budget_period": "day"})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["spent_usd"].as_f64(), Some(1.0), "{changed}");
    assert_eq!(create_as(&app, &key).await.0, StatusCode::PAYMENT_REQUIRED);
    // Removing the budget lets it create again, still counting.
    let (status, _) = patch(json!({"budget_usd": null})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, task) = create_as(&app, &key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    wait(&app, &key, &task).await;
    assert_eq!(key_info(&app, id).await["spent_usd"].as_f64(), Some(1.5));
    assert_eq!(usage_final_usd(&app, secret).await, 1.5);
}
on_both_stores!(spend_counts_without_a_budget_and_a_budget_set_later_counts_it);
