//! The core path end to end: the real gateway on port 0, a real database (PostgreSQL and
//! SQLite), and each provider dialect played by its simulator.

mod support;

use std::time::Duration;

use omnigate::domain::Model;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::{models_of, succeeds_after, BOTH};
use support::sim::{Fault, Outcome, Script, Sim, SimDialect, SimError};

const WAIT: Duration = Duration::from_secs(15);

fn text_to_video(model: &str) -> Value {
    json!({"model": model, "prompt": "a cat walking across a sunlit garden", "aspect_ratio": "16:9", "duration": 5})
}

async fn one_provider(db: &TestDb, dialect: SimDialect) -> (TestApp, Sim) {
    let sim = Sim::start(dialect).await;
    let models = models_of(dialect);
    // One name per dialect: scenarios that loop over dialects share a database, and with
    // it each provider's health.
    let name = format!("{dialect:?}").to_lowercase();
    let app = TestApp::spawn(db, vec![(name, sim.provider_config(models, 0.1))]).await;
    (app, sim)
}

async fn completes_with_url(db: Db, dialect: SimDialect) {
    let db = TestDb::new(db).await;
    let (app, sim) = one_provider(&db, dialect).await;
    let task = app.create(&text_to_video("kling-v3-omni")).await;
    assert_eq!(task["status"], "queued");
    assert_eq!(task["object"], "video.generation");
    assert_eq!(task["provider"], format!("{dialect:?}").to_lowercase());
    assert_eq!(task["cost"]["estimated_usd"], 0.5);
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    let url = done["result"]["videos"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://cdn.sim.test/"), "{url}");
    assert_eq!(done["progress"], 100);
    assert!(done["completed_at"].as_i64().is_some());
    let history = support::app::history(&done);
    assert_eq!(history.first().map(String::as_str), Some("submitting"));
    assert_eq!(history.last().map(String::as_str), Some("completed"));
    assert!(history.iter().any(|s| s == "in_progress"), "{history:?}");
    assert_eq!(sim.created_count(), 1);
    assert!(sim.rejections().is_empty(), "{:?}", sim.rejections());
}

async fn modellix_completes(db: Db) {
    completes_with_url(db, SimDialect::Modellix).await
}
async fn anyfast_completes(db: Db) {
    completes_with_url(db, SimDialect::Anyfast).await
}
async fn kkiai_completes(db: Db) {
    completes_with_url(db, SimDialect::Kkiai).await
}
async fn kling_official_completes_with_jwt(db: Db) {
    completes_with_url(db, SimDialect::KlingOfficial).await
}
async fn apimodels_completes(db: Db) {
    completes_with_url(db, SimDialect::Apimodels).await
}

on_both_stores!(
    modellix_completes,
    anyfast_completes,
    kkiai_completes,
    kling_official_completes_with_jwt,
    apimodels_completes
);

async fn upstream_failure_is_reported_with_the_providers_reason(db: Db) {
    let db = TestDb::new(db).await;
    for dialect in SimDialect::ALL {
        let (app, sim) = one_provider(&db, dialect).await;
        sim.set_script(Script {
            outcome: Outcome::Fail("Content policy violation".into()),
            ..Script::default()
        });
        let task = app.create(&text_to_video("kling-v3-omni")).await;
        let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
        assert_eq!(done["status"], "failed", "{dialect:?}: {done}");
        assert_eq!(done["error"]["code"], "generation_failed");
        assert_eq!(
            done["error"]["provider_message"], "Content policy violation",
            "{dialect:?}"
        );
        assert!(done.get("result").is_none());
    }
}
on_both_stores!(upstream_failure_is_reported_with_the_providers_reason);

/// The mapped bodies each simulator accepted carry the dialect's own spelling.
async fn each_dialect_receives_its_own_field_names(db: Db) {
    let db = TestDb::new(db).await;
    let body = json!({
        "model": "kling-v3-omni", "prompt": "edit <<<video_1>>> into clay", "mode": "std",
        "video_list": [{"video_url": "https://example.com/in.mp4", "refer_type": "base"}],
        "image_list": [{"image_url": "https://example.com/style.png"}]
    });
    for dialect in SimDialect::ALL {
        let (app, sim) = one_provider(&db, dialect).await;
        app.create(&body).await;
        let sent = &sim.created_bodies()[0];
        match dialect {
            SimDialect::Modellix => {
                assert_eq!(sent["videos"], json!(["https://example.com/in.mp4"]));
                assert_eq!(sent["images"], json!(["https://example.com/style.png"]));
                assert!(sent.get("duration").is_none());
            }
            SimDialect::Apimodels => {
                assert_eq!(sent["model"], "kling-v3-omni");
                assert_eq!(sent["video_list"][0]["refer_type"], "base");
                assert_eq!(sent["mode"], "std");
            }
            _ => {
                assert_eq!(sent["model_name"], "kling-v3-omni");
                assert_eq!(
                    sent["video_list"][0]["video_url"],
                    "https://example.com/in.mp4"
                );
                assert!(sent["external_task_id"]
                    .as_str()
                    .unwrap()
                    .starts_with("vgt_"));
            }
        }
    }
}
on_both_stores!(each_dialect_receives_its_own_field_names);

async fn keys_see_only_their_own_tasks(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = one_provider(&db, SimDialect::Kkiai).await;
    let task = app.create(&text_to_video("kling-v3-omni")).await;
    let id = task["id"].as_str().unwrap();
    let other = app.issue_key("other").await;
    let (status, body) = app
        .get_as(&other, &format!("/v1/video/generations/{id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, list) = app.get_as(&other, "/v1/video/generations").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (status, _) = app.get_as("og_not-a-key", "/v1/video/generations").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, mine) = app
        .get(&format!("/v1/video/generations?task_id={id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["id"], id);
}
on_both_stores!(keys_see_only_their_own_tasks);

async fn listing_is_newest_first_and_paginates(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = one_provider(&db, SimDialect::Apimodels).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.create(&text_to_video("kling-video-o1")).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, page1) = app.get("/v1/video/generations?limit=2").await;
    let got: Vec<&str> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(page1["has_more"], true);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!("/v1/video/generations?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["data"][0]["id"], ids[0].as_str());
    assert_eq!(page2["has_more"], false);
    let (status, bad) = app.get("/v1/video/generations?status=done").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["param"], "status");
}
on_both_stores!(listing_is_newest_first_and_paginates);

/// Upstream trouble on submit gives a clear error, never a hang or a raw pass-through.
async fn upstream_refusals_give_clear_errors(db: Db) {
    let db = TestDb::new(db).await;
    let cases = [
        (
            Fault::Error(SimError::Server),
            StatusCode::SERVICE_UNAVAILABLE,
            "no_provider_available",
        ),
        (
            Fault::Error(SimError::RateLimited),
            StatusCode::SERVICE_UNAVAILABLE,
            "no_provider_available",
        ),
        (
            Fault::Error(SimError::Billing),
            StatusCode::SERVICE_UNAVAILABLE,
            "no_provider_available",
        ),
        (
            Fault::Error(SimError::ContentPolicy),
            StatusCode::UNPROCESSABLE_ENTITY,
            "content_policy",
        ),
        (
            Fault::Error(SimError::BadRequest),
            StatusCode::UNPROCESSABLE_ENTITY,
            "upstream_bad_request",
        ),
    ];
    for dialect in SimDialect::ALL {
        let sim = Sim::start(dialect).await;
        let name = format!("{dialect:?}").to_lowercase();
        let mut cfg = config(&db, vec![(name, sim.provider_config(BOTH, 0.1))]);
        // Seven refusals in a row must not open the circuit half-way through the cases.
        cfg.health.consecutive_failures = 100;
        let app = TestApp::start(cfg).await;
        for (fault, status, code) in cases.clone() {
            // Transient refusals go round twice: refuse both rounds.
            let transient = matches!(
                fault,
                Fault::Error(SimError::Server | SimError::RateLimited)
            );
            for _ in 0..if transient { 2 } else { 1 } {
                sim.push_submit_fault(fault.clone());
            }
            let (got, body) = app
                .post("/v1/video/generations", &text_to_video("kling-v3-omni"))
                .await;
            assert_eq!(got, status, "{dialect:?} {fault:?}: {body}");
            // Only Kling's dialect has a code of its own for content policy; the others
            // answer a plain 400, which is just as final.
            let got_code = body["error"]["code"].as_str().unwrap_or_default();
            let plain_400 = !dialect.is_kling()
                && code == "content_policy"
                && got_code == "upstream_bad_request";
            assert!(
                got_code == code || plain_400,
                "{dialect:?} {fault:?}: {body}"
            );
            assert!(
                body["error"]["provider_message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        assert_eq!(sim.created_count(), 0);
    }
}
on_both_stores!(upstream_refusals_give_clear_errors);

/// A submit answered with garbage or not at all may have been accepted: the task is kept
/// and settled by the reconciler, never resubmitted blindly.
async fn ambiguous_submit_on_a_dialect_without_lookup_fails_clearly(db: Db) {
    let db = TestDb::new(db).await;
    for (dialect, fault) in [
        (SimDialect::Modellix, Fault::Malformed),
        (SimDialect::Apimodels, Fault::Hang),
    ] {
        let (app, sim) = one_provider(&db, dialect).await;
        sim.push_submit_fault(fault);
        let task = app.create(&text_to_video("kling-v3-omni")).await;
        let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
        assert_eq!(done["status"], "failed");
        assert_eq!(done["error"]["code"], "submit_outcome_unknown", "{done}");
        assert_eq!(sim.submit_count(), 1, "never submitted twice");
    }
}
on_both_stores!(ambiguous_submit_on_a_dialect_without_lookup_fails_clearly);

async fn slow_kling_submit_is_found_by_external_task_id(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = one_provider(&db, SimDialect::Kkiai).await;
    sim.push_submit_fault(Fault::Slow(Duration::from_secs(4)));
    let task = app.create(&text_to_video("kling-v3-omni")).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.created_count(), 1, "exactly one upstream task");
    assert_eq!(done["attempts"][0]["outcome"], "unknown");
}
on_both_stores!(slow_kling_submit_is_found_by_external_task_id);

async fn poll_errors_back_off_and_the_task_still_completes(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = one_provider(&db, SimDialect::Modellix).await;
    sim.push_query_fault(Fault::Error(SimError::Server));
    sim.push_query_fault(Fault::Malformed);
    sim.push_query_fault(Fault::Error(SimError::RateLimited));
    let task = app.create(&text_to_video("kling-video-o1")).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        sim.query_count() >= 6,
        "three failed polls then queued, processing, done"
    );
}
on_both_stores!(poll_errors_back_off_and_the_task_still_completes);

async fn a_restart_mid_flight_still_completes_the_task(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(2, 2));
    let cfg = config(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    let mut app = TestApp::start(cfg.clone()).await;
    let task = app.create(&text_to_video("kling-video-o1")).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.kill();
    let polls_before = sim.query_count();
    let app = TestApp::restart_with(cfg, app.key.clone()).await;
    let done = app.wait_terminal(&id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(sim.query_count() > polls_before);
    assert_eq!(sim.created_count(), 1);
}
on_both_stores!(a_restart_mid_flight_still_completes_the_task);

/// The gateway dies while a Kling submit is in flight (after the provider created the task):
/// the restarted gateway finds the task by its external_task_id and finishes it.
async fn a_crash_during_submit_is_reconciled_without_a_second_upstream_task(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::KlingOfficial).await;
    sim.push_submit_fault(Fault::Slow(Duration::from_secs(30)));
    let mut cfg = config(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.providers.get_mut("up").unwrap().request_timeout_secs = 60.0;
    // A poll must fit in its lease (app::start checks the config).
    cfg.poller.lease_secs = 61;
    let mut app = TestApp::start(cfg.clone()).await;
    let (client, base, key) = (app.client.clone(), app.base.clone(), app.key.clone());
    let pending = tokio::spawn(async move {
        client
            .post(format!("{base}/v1/video/generations"))
            .bearer_auth(key)
            .json(&text_to_video("kling-v3-omni"))
            .send()
            .await
    });
    while sim.created_count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill();
    pending.abort();
    let store = omnigate::store::Store::connect(&db.url, 1).await.unwrap();
    let id: String = sqlx::query_scalar("SELECT id FROM tasks")
        .fetch_one(store.pool())
        .await
        .unwrap();
    // The dead process's claim runs out before the reconciler may act: expire it now.
    sqlx::query("UPDATE tasks SET lease_until = 0, next_poll_at = 0")
        .execute(store.pool())
        .await
        .unwrap();
    let app = TestApp::restart_with(cfg, app.key.clone()).await;
    let done = app.wait_terminal(&id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.created_count(), 1, "never submitted twice");
}
on_both_stores!(a_crash_during_submit_is_reconciled_without_a_second_upstream_task);

/// apimodels cannot be asked whether it has a task. The gateway dies while its submit
/// hangs; `started` says whether the task keeps the mark written before the call (else
/// it is left as a crash between writing the task and calling the provider leaves it).
/// Returns the restarted gateway's view of the task and the simulator.
async fn apimodels_submit_interrupted(db: Db, started: bool) -> (Value, Sim) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.push_submit_fault(Fault::Hang);
    let cfg = config(&db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    let mut app = TestApp::start(cfg.clone()).await;
    let (client, base, key) = (app.client.clone(), app.base.clone(), app.key.clone());
    let pending = tokio::spawn(async move {
        client
            .post(format!("{base}/v1/video/generations"))
            .bearer_auth(key)
            .json(&text_to_video("kling-v3-omni"))
            .send()
            .await
    });
    while sim.submit_count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill();
    pending.abort();
    assert_eq!(sim.created_count(), 0, "the hung submit created nothing");
    let store = omnigate::store::Store::connect(&db.url, 1).await.unwrap();
    let (id, mark): (String, Option<i64>) =
        sqlx::query_as("SELECT id, submit_started_at FROM tasks")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(
        mark.is_some(),
        "the mark is written before the provider call"
    );
    let clear = if started {
        ""
    } else {
        ", submit_started_at = NULL"
    };
    sqlx::query(&format!(
        "UPDATE tasks SET lease_until = 0, next_poll_at = 0{clear}"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let app = TestApp::restart_with(cfg, app.key.clone()).await;
    (app.wait_terminal(&id, WAIT).await, sim)
}

async fn a_task_written_but_never_sent_is_submitted_after_a_restart(db: Db) {
    let (done, sim) = apimodels_submit_interrupted(db, false).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.created_count(), 1, "one upstream task");
}
on_both_stores!(a_task_written_but_never_sent_is_submitted_after_a_restart);

async fn a_task_whose_submit_started_without_an_answer_stays_unknown(db: Db) {
    let (done, sim) = apimodels_submit_interrupted(db, true).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "submit_outcome_unknown", "{done}");
    assert_eq!(sim.submit_count(), 1, "never submitted again");
}
on_both_stores!(a_task_whose_submit_started_without_an_answer_stays_unknown);

async fn a_request_no_provider_can_carry_is_422_naming_why(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = one_provider(&db, SimDialect::Modellix).await;
    let body = json!({"model": "kling-v3-omni", "prompt": "a hero <<<element_1>>>", "aspect_ratio": "1:1",
                      "element_list": [{"element_id": 123}]});
    let (status, err) = app.post("/v1/video/generations", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "no_capable_provider");
    assert_eq!(err["error"]["param"], "element_list");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("modellix: cannot carry element_list"));
    assert_eq!(sim.submit_count(), 0);
}
on_both_stores!(a_request_no_provider_can_carry_is_422_naming_why);

/// anyfast answers queries only under `text2video`; a config that leaves `query_path` out
/// still reaches its tasks.
async fn anyfast_without_a_query_path_still_completes(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Anyfast).await;
    let mut cfg = sim.provider_config(&[Model::KlingV3Omni], 0.1);
    cfg.query_path = None;
    let app = TestApp::spawn(&db, vec![("anyfast".into(), cfg)]).await;
    let task = app.create(&text_to_video("kling-v3-omni")).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(sim.created_count(), 1);
}
on_both_stores!(anyfast_without_a_query_path_still_completes);

/// A Kling reseller without the list endpoint cannot confirm a lost submit: the task ends
/// by the provider's unknown_submit policy (fail) at once, not after hours of retries.
async fn a_lookup_the_provider_cannot_serve_ends_in_the_policy(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = one_provider(&db, SimDialect::Kkiai).await;
    sim.push_submit_fault(Fault::Slow(Duration::from_secs(4)));
    // Neither the direct query by our id nor the list is served.
    for _ in 0..2 {
        sim.push_query_fault(Fault::Status(
            404,
            json!({"code": 1202, "message": "no such method"}),
        ));
    }
    let task = app.create(&text_to_video("kling-v3-omni")).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "submit_outcome_unknown");
    assert_eq!(sim.submit_count(), 1);
}
on_both_stores!(a_lookup_the_provider_cannot_serve_ends_in_the_policy);

/// A submit that times out or is answered with garbage, on every dialect: the task always
/// ends (completed where a lookup by our id can settle it, a clear failure elsewhere) and
/// never becomes two upstream tasks.
async fn submit_timeouts_and_garbage_end_cleanly_on_every_dialect(db: Db) {
    let db = TestDb::new(db).await;
    for dialect in SimDialect::ALL {
        for fault in [Fault::Hang, Fault::Malformed] {
            let (app, sim) = one_provider(&db, dialect).await;
            sim.push_submit_fault(fault.clone());
            let task = app.create(&text_to_video("kling-v3-omni")).await;
            let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
            if dialect.is_kling() {
                assert_eq!(done["status"], "completed", "{dialect:?} {fault:?}: {done}");
            } else {
                assert_eq!(
                    done["error"]["code"], "submit_outcome_unknown",
                    "{dialect:?} {fault:?}: {done}"
                );
            }
            assert!(sim.created_count() <= 1, "{dialect:?} {fault:?}");
        }
    }
}
on_both_stores!(submit_timeouts_and_garbage_end_cleanly_on_every_dialect);

async fn a_poll_that_times_out_is_retried(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = one_provider(&db, SimDialect::Apimodels).await;
    sim.push_query_fault(Fault::Hang);
    let task = app.create(&text_to_video("kling-video-o1")).await;
    let done = app.wait_terminal(task["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
}
on_both_stores!(a_poll_that_times_out_is_retried);
