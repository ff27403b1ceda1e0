//! Hardening of the task path: an accepted task is never lost or paid for twice, leases
//! belong to one claim, a resubmit happens at most once, refusals fail over or go round
//! again, odd status answers surface, and stored rows stay light.

mod support;

use std::time::Duration;

use omnigate::config::UnknownSubmit;
use omnigate::domain::{Model, VideoRequest};
use omnigate::store::{
    lease_token, Acceptance, Attempt, ClaimKind, Inserted, NewTask, Store, TaskDetail, TaskState,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use support::app::{config, Db, TestApp, TestDb};
use support::sim::{Fault, Script, Sim, SimDialect, SimError};

const BOTH: &[Model] = &[Model::KlingVideoO1, Model::KlingV3Omni];
const WAIT: Duration = Duration::from_secs(15);

fn plain() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a cat in the garden", "aspect_ratio": "16:9", "duration": 5})
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let (status, task) = app.get(&format!("/v1/video/generations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    task
}

async fn acceptance_writes_that_fail_briefly_are_retried_and_the_id_kept(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]).await;
    app.gateway().store.fail_next_acceptance_writes(2);
    let task = app.create(&plain()).await;
    let id = task["id"].as_str().unwrap();
    let full = detail(&app, id).await;
    let accepted = &full["attempts"][0];
    assert_eq!(accepted["outcome"], "accepted", "{full}");
    assert!(accepted["provider_task_id"].as_str().is_some(), "{full}");
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.created_count(), 1, "exactly one upstream task");
}
on_both_stores!(acceptance_writes_that_fail_briefly_are_retried_and_the_id_kept);

async fn a_longer_store_failure_after_acceptance_still_answers_202_and_completes(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]).await;
    // More failures than the inline retries: the record is finished in the background.
    app.gateway().store.fail_next_acceptance_writes(6);
    let (status, task) = app.post("/v1/video/generations", &plain()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["status"], "queued");
    assert_eq!(task["provider"], "up");
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        sim.created_count(),
        1,
        "the client was never made to pay twice"
    );
}
on_both_stores!(a_longer_store_failure_after_acceptance_still_answers_202_and_completes);

async fn insert_submitting(store: &Store, id: &str, token: &str, lease_until: i64) {
    let key = store.create_api_key("k").await.unwrap();
    store
        .insert_task(&new_task(id, &key.id, token, lease_until), None)
        .await
        .unwrap();
}

fn new_task(id: &str, owner: &str, token: &str, lease_until: i64) -> NewTask {
    NewTask {
        id: id.into(),
        api_key_id: owner.into(),
        request: serde_json::from_value::<VideoRequest>(plain()).unwrap(),
        provider: "up".into(),
        sandbox: false,
        cost_estimated_usd: Some(0.5),
        routing_reason: "test".into(),
        lease_owner: token.into(),
        lease_until,
        holds: Default::default(),
        billed_seconds: Some(5),
        upstream_callback_token: None,
    }
}

fn attempt(upstream_id: &str) -> Attempt {
    Attempt {
        provider: "up".into(),
        outcome: "accepted".into(),
        provider_task_id: Some(upstream_id.into()),
        error_code: None,
        message: None,
        latency_ms: 3,
        at: omnigate::store::now_ms(),
    }
}

/// Concurrent creates share statements and commits (group commit): each caller still gets
/// its own answer, and a row the database refuses fails only its own caller.
async fn concurrent_creates_are_written_together_and_a_bad_row_fails_alone(db: Db) {
    let db = TestDb::new(db).await;
    let store = std::sync::Arc::new(Store::connect(&db.url, 8).await.unwrap());
    let key = store.create_api_key("k").await.unwrap();
    let token = lease_token("batch");
    let far = omnigate::store::now_ms() + 60_000;
    let inserts = (0..40).map(|i| {
        let (store, token) = (store.clone(), token.clone());
        // Task 7 names a key that does not exist: the foreign key refuses its row.
        let owner = if i == 7 {
            "key_missing".to_string()
        } else {
            key.id.clone()
        };
        tokio::spawn(async move {
            let t = new_task(&format!("vgt_batch_{i}"), &owner, &token, far);
            store.insert_task(&t, None).await
        })
    });
    let inserted = futures::future::join_all(inserts).await;
    for (i, r) in inserted.into_iter().enumerate() {
        match (i, r.unwrap()) {
            (7, r) => assert!(r.is_err(), "a row for a missing key was written"),
            (_, r) => assert!(matches!(r, Ok(Inserted::New { .. })), "task {i}: {r:?}"),
        }
    }
    let accepts = (0..40).filter(|&i| i != 7).map(|i| {
        let store = store.clone();
        // Task 9's acceptance comes from a claim that does not hold it.
        let token = if i == 9 {
            lease_token("other")
        } else {
            token.clone()
        };
        tokio::spawn(async move {
            let a = attempt(&format!("up_{i}"));
            let acceptance = Acceptance {
                upstream_id: &format!("up_{i}"),
                state: TaskState::Queued,
                first_poll_at: 0,
                attempt: Some(&a),
                slim_request: None,
                callback_given: false,
                timing_key: None,
                eta_at: None,
            };
            (
                i,
                store
                    .mark_accepted(&format!("vgt_batch_{i}"), &token, &acceptance)
                    .await
                    .unwrap(),
            )
        })
    });
    for accepted in futures::future::join_all(accepts).await {
        let (i, accepted) = accepted.unwrap();
        assert_eq!(accepted, i != 9, "task {i}");
    }
    for i in (0..40).filter(|&i| i != 7) {
        let id = format!("vgt_batch_{i}");
        let d = store
            .task_detail_for_owner(&key.id, &id)
            .await
            .unwrap()
            .unwrap();
        let statuses: Vec<&str> = d.history.iter().map(|c| c.status.as_str()).collect();
        let (want_state, want_history) = match i {
            9 => (TaskState::Submitting, vec!["submitting"]),
            _ => (TaskState::Queued, vec!["submitting", "queued"]),
        };
        assert_eq!(d.task.state, want_state, "{id}");
        assert_eq!(statuses, want_history, "{id}");
        // The attempt is recorded even where the claim had lost the task.
        assert_eq!(d.attempts.len(), 1, "{id}");
        assert_eq!(
            d.attempts[0].provider_task_id.as_deref(),
            Some(format!("up_{i}").as_str())
        );
        assert_same_as_tables(&store, &id, &d).await;
    }
    assert!(store.task("vgt_batch_7").await.unwrap().is_none());
}
on_both_stores!(concurrent_creates_are_written_together_and_a_bad_row_fails_alone);

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The task read's copy of history and attempts (migration 0013) says what the tables say.
async fn assert_same_as_tables(store: &Store, id: &str, d: &TaskDetail) {
    let history: Vec<(String, i64)> =
        sqlx::query("SELECT status, at FROM task_status_changes WHERE task_id = $1")
            .bind(id)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("status"), r.get("at")))
            .collect();
    // The copy keeps the order of writing; the tables have only times (which can tie).
    let copied: Vec<(String, i64)> = d.history.iter().map(|c| (c.status.clone(), c.at)).collect();
    assert_eq!(sorted(copied), sorted(history), "{id}: history");
    let attempts: Vec<(String, Option<String>)> =
        sqlx::query("SELECT outcome, provider_task_id FROM task_attempts WHERE task_id = $1")
            .bind(id)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("outcome"), r.get("provider_task_id")))
            .collect();
    let copied: Vec<(String, Option<String>)> = d
        .attempts
        .iter()
        .map(|a| (a.outcome.clone(), a.provider_task_id.clone()))
        .collect();
    assert_eq!(sorted(copied), sorted(attempts), "{id}: attempts");
}

/// A task that failed over and then completed reads the same from its copy as from the
/// tables, and a task written before the copy existed (its columns NULL) reads the tables.
async fn the_read_copy_matches_the_tables_through_a_task_life(db: Db) {
    let db = TestDb::new(db).await;
    let refusing = Sim::start(SimDialect::Apimodels).await;
    refusing.push_submit_fault(Fault::Error(SimError::BadRequest));
    let good = Sim::start(SimDialect::Modellix).await;
    let app = TestApp::spawn(
        &db,
        vec![
            ("cheap".into(), refusing.provider_config(BOTH, 0.01)),
            ("dear".into(), good.provider_config(BOTH, 0.5)),
        ],
    )
    .await;
    let task = app.create(&plain()).await;
    let id = task["id"].as_str().unwrap();
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    let store = &app.gateway().store;
    let owner = store.task(id).await.unwrap().unwrap().api_key_id;
    let d = store
        .task_detail_for_owner(&owner, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.attempts.len(), 2, "a refusal, then the acceptance");
    assert!(d.history.len() >= 3, "submitting, queued, ..., completed");
    assert_same_as_tables(store, id, &d).await;
    let via_copy = detail(&app, id).await;
    sqlx::query("UPDATE tasks SET history_json = NULL, attempts_json = NULL WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    let via_tables = detail(&app, id).await;
    assert_eq!(via_copy["attempts"], via_tables["attempts"]);
    assert_eq!(via_copy["status_history"], via_tables["status_history"]);
}
on_both_stores!(the_read_copy_matches_the_tables_through_a_task_life);

async fn two_claims_in_one_process_cannot_both_write(db: Db) {
    let db = TestDb::new(db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let submitter = lease_token("same-process");
    let reconciler = lease_token("same-process");
    assert_ne!(submitter, reconciler);
    // The submit's lease has run out (a very slow provider): the reconciler takes over.
    insert_submitting(&store, "vgt_claims", &submitter, 0).await;
    let far = omnigate::store::now_ms() + 60_000;
    let claimed = store
        .claim_due(ClaimKind::Reconcile, &reconciler, far, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let accepted = |upstream_id| Acceptance {
        upstream_id,
        state: TaskState::Queued,
        first_poll_at: 0,
        attempt: None,
        slim_request: None,
        callback_given: false,
        timing_key: None,
        eta_at: None,
    };
    assert!(!store
        .set_submit_target("vgt_claims", &submitter, "other", false, None, "r")
        .await
        .unwrap());
    assert!(!store
        .extend_lease("vgt_claims", &submitter, far)
        .await
        .unwrap());
    let late_call = store
        .while_leased("vgt_claims", &submitter, 1_000, async { "called" })
        .await
        .unwrap();
    assert_eq!(late_call, None, "a lost claim never calls the provider");
    assert!(!store
        .mark_accepted("vgt_claims", &submitter, &accepted("late"))
        .await
        .unwrap());
    assert!(store
        .mark_accepted("vgt_claims", &reconciler, &accepted("found"))
        .await
        .unwrap());
    let task = store.task("vgt_claims").await.unwrap().unwrap();
    assert_eq!(task.provider_task_id.as_deref(), Some("found"));
    assert_eq!(task.provider.as_deref(), Some("up"));
}
on_both_stores!(two_claims_in_one_process_cannot_both_write);

async fn a_lease_is_extended_while_a_slow_call_is_in_flight(db: Db) {
    let db = TestDb::new(db).await;
    let store = Store::connect(&db.url, 4).await.unwrap();
    let token = lease_token("p");
    let now = omnigate::store::now_ms();
    insert_submitting(&store, "vgt_slow", &token, now + 300).await;
    let slow_call = tokio::time::sleep(Duration::from_millis(1_000));
    let called = store
        .while_leased("vgt_slow", &token, 300, slow_call)
        .await
        .unwrap();
    assert!(called.is_some(), "the holder's call runs");
    let other = lease_token("p");
    let claimed = store
        .claim_due(ClaimKind::Reconcile, &other, now + 60_000, 10)
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "the lease ran out while the call was in flight"
    );
}
on_both_stores!(a_lease_is_extended_while_a_slow_call_is_in_flight);

async fn an_ambiguous_resubmit_is_not_resubmitted_again(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let mut provider = sim.provider_config(BOTH, 0.1);
    provider.unknown_submit = UnknownSubmit::Resubmit;
    let app = TestApp::spawn(&db, vec![("up".into(), provider)]).await;
    for _ in 0..5 {
        sim.push_submit_fault(Fault::Hang);
    }
    let task = app.create(&plain()).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["error"]["code"], "submit_outcome_unknown", "{done}");
    assert_eq!(sim.submit_count(), 2, "the submit and one resubmit");
    let attempts = done["attempts"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["unknown", "unknown"], "{done}");
}
on_both_stores!(an_ambiguous_resubmit_is_not_resubmitted_again);

async fn a_parameter_refusal_fails_over_and_all_refusals_are_422(db: Db) {
    let db = TestDb::new(db).await;
    let cheap = Sim::start(SimDialect::Kkiai).await;
    let dear = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(
        &db,
        vec![
            ("cheap".into(), cheap.provider_config(BOTH, 0.08)),
            ("dear".into(), dear.provider_config(BOTH, 0.10)),
        ],
    )
    .await;
    cheap.push_submit_fault(Fault::Error(SimError::BadRequest));
    let task = app.create(&plain()).await;
    assert_eq!(task["provider"], "dear", "{task}");
    cheap.push_submit_fault(Fault::Error(SimError::BadRequest));
    dear.push_submit_fault(Fault::Error(SimError::BadRequest));
    let (status, err) = app.post("/v1/video/generations", &plain()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "upstream_bad_request");
    let message = err["error"]["provider_message"].as_str().unwrap();
    assert!(
        message.contains("cheap:") && message.contains("dear:"),
        "{message}"
    );
    assert_eq!(cheap.created_count() + dear.created_count(), 1);
}
on_both_stores!(a_parameter_refusal_fails_over_and_all_refusals_are_422);

async fn a_concurrency_refusal_of_the_only_provider_is_retried_there(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let app = TestApp::spawn(&db, vec![("only".into(), sim.provider_config(BOTH, 0.1))]).await;
    sim.push_submit_fault(Fault::Error(SimError::TooManyParallel));
    let task = app.create(&plain()).await;
    assert_eq!(task["provider"], "only");
    assert_eq!(
        sim.submit_count(),
        2,
        "refused once, accepted on the second round"
    );
    assert_eq!(sim.created_count(), 1);
    // Two refusals in a row use up the default two rounds: a clean 503.
    sim.push_submit_fault(Fault::Error(SimError::TooManyParallel));
    sim.push_submit_fault(Fault::Error(SimError::TooManyParallel));
    let (status, err) = app.post("/v1/video/generations", &plain()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "no_provider_available");
    assert_eq!(sim.created_count(), 1);
}
on_both_stores!(a_concurrency_refusal_of_the_only_provider_is_retried_there);

async fn a_task_that_finished_past_the_age_limit_is_not_reported_failed(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(Script {
        queued_polls: 0,
        processing_polls: 0,
        ..Script::default()
    });
    let mut provider = sim.provider_config(BOTH, 0.1);
    // The first poll comes after the age limit, as after a long outage.
    provider.poll_interval_secs = 2.0;
    let mut cfg = config(&db, vec![("up".into(), provider)]);
    cfg.poller.max_task_age_secs = 1;
    let app = TestApp::start(cfg).await;
    let task = app.create(&plain()).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
}
on_both_stores!(a_task_that_finished_past_the_age_limit_is_not_reported_failed);

async fn an_unknown_modellix_state_fails_the_task_with_the_answer_kept(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Modellix).await;
    let mut cfg = config(&db, vec![("mx".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.poller.max_unreadable_answers = 3;
    let app = TestApp::start(cfg).await;
    let task = app.create(&plain()).await;
    let id = task["id"].as_str().unwrap();
    let odd = json!({"code": 0, "message": "success", "data": {"status": "frobnicating", "task_id": "x"}});
    for _ in 0..3 {
        sim.push_query_fault(Fault::Status(200, odd.clone()));
    }
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "upstream_unreadable", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 times"), "{message}");
    let kept = done["error"]["provider_message"].as_str().unwrap();
    assert!(kept.contains("frobnicating"), "{kept}");
}
on_both_stores!(an_unknown_modellix_state_fails_the_task_with_the_answer_kept);

async fn base64_images_leave_the_stored_request_once_accepted_and_reads_stay_light(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]).await;
    let image = "iVBORw0KGgo".repeat(3_000);
    let body = json!({"model": "kling-v3-omni", "prompt": "<<<image_1>>> at sea", "aspect_ratio": "16:9",
                      "duration": 5, "image_list": [{"image_url": image}]});
    let task = app.create(&body).await;
    let id = task["id"].as_str().unwrap();
    let received = &sim.created_bodies()[0];
    assert!(
        received.to_string().contains(&image),
        "the provider got the image"
    );
    let store = &app.gateway().store;
    let stored: String = sqlx::query("SELECT request FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get("request");
    assert!(!stored.contains(&image), "base64 kept after acceptance");
    assert!(stored.contains("omitted:base64 image"), "{stored}");
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["model"], "kling-v3-omni");
}
on_both_stores!(base64_images_leave_the_stored_request_once_accepted_and_reads_stay_light);

async fn retention_deletes_old_finished_details_but_keeps_the_task(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]).await;
    let task = app.create(&plain()).await;
    let id = task["id"].as_str().unwrap();
    app.wait_terminal(id, WAIT).await;
    sim.set_script(Script {
        queued_polls: 100_000,
        ..Script::default()
    });
    let unfinished = app.create(&plain()).await;
    let store = &app.gateway().store;
    let later = omnigate::store::now_ms() + 1;
    let pruned = store.prune_finished_details(later, 100).await.unwrap();
    assert!(pruned >= 1);
    // A finished task's read may come from the process's cache of finished reads, which
    // a prune reaches through the change log within a second (docs/live-task-api.md).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut kept = detail(&app, id).await;
    while kept["status_history"] != json!([]) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        kept = detail(&app, id).await;
    }
    assert_eq!(kept["status"], "completed");
    assert!(kept["result"]["videos"][0]["url"].as_str().is_some());
    assert_eq!(kept["status_history"], json!([]));
    assert_eq!(kept["attempts"], json!([]));
    // An unfinished task's details are never pruned.
    let still = detail(&app, unfinished["id"].as_str().unwrap()).await;
    assert!(!still["attempts"].as_array().unwrap().is_empty(), "{still}");
}
on_both_stores!(retention_deletes_old_finished_details_but_keeps_the_task);

/// `database.sqlite_mmap_mib` reaches every connection, the writer's among them.
#[tokio::test]
async fn the_sqlite_mapping_setting_reaches_every_connection() {
    let db = TestDb::new(Db::Sqlite).await;
    for mib in [0u64, 64] {
        let store = Store::connect_with(&omnigate::config::DatabaseConfig {
            url: db.url.clone(),
            max_connections: 2,
            sqlite_mmap_mib: mib,
            ..Default::default()
        })
        .await
        .unwrap();
        for pool in [store.pool(), store.writer()] {
            let mapped: i64 = sqlx::query_scalar("PRAGMA mmap_size")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(mapped as u64, mib << 20);
        }
    }
}
