//! Client webhooks end to end: a real gateway, a simulated provider, and a receiver on a
//! random port. Signatures are checked by a verifier written here from the Standard
//! Webhooks text (not the gateway's own code) and by the stock `standardwebhooks` Python
//! library; deliveries retry on the configured schedule, survive a restart, stop on 410,
//! refuse internal addresses and redirects, and two gateways deliver each event once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use omnigate::config::Config;
use omnigate::store::KeyChange;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::{succeeds_after, BOTH};
use support::python::verify_with_python;
use support::receiver::{Received, Receiver, Reply};
use support::sim::{Outcome, Script, Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(8);

/// Checks a delivery against the Standard Webhooks specification, as its text says:
/// the signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the key is the
/// base64-decoded part of the secret after `whsec_`; the signature is the base64 of its
/// HMAC-SHA256; `webhook-signature` is a space-delimited list of `v1,<signature>`; the
/// timestamp must be recent. Returns how many of the listed signatures `secret` made.
fn verify(secret: &str, r: &Received) -> Result<usize, String> {
    let id = r.header("webhook-id");
    let ts = r.header("webhook-timestamp");
    if id.is_empty() || ts.is_empty() {
        return Err("webhook-id and webhook-timestamp are required".into());
    }
    let ts_num: i64 = ts.parse().map_err(|_| format!("timestamp {ts:?}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - ts_num).abs() > 300 {
        return Err(format!("timestamp {ts} is not within 5 minutes of now"));
    }
    let key = STANDARD
        .decode(
            secret
                .strip_prefix("whsec_")
                .ok_or("secret without whsec_")?,
        )
        .map_err(|e| e.to_string())?;
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(&r.body);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&content);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let matching = r
        .header("webhook-signature")
        .split(' ')
        .filter(|s| s.split_once(',') == Some(("v1", expected.as_str())))
        .count();
    if matching == 0 {
        return Err(format!(
            "no v1 signature matches in {:?}",
            r.header("webhook-signature")
        ));
    }
    Ok(matching)
}

/// A test config: private targets allowed (the receiver is on 127.0.0.1), quick ticks.
fn hooks_config(db: &TestDb, sim: &Sim, schedule: &[f64]) -> Config {
    let mut cfg = config(db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.webhooks.allow_private_targets = true;
    cfg.webhooks.retry_schedule_secs = schedule.to_vec();
    cfg.webhooks.tick_ms = 50;
    cfg.webhooks.request_timeout_secs = 1.0;
    cfg.webhooks.lease_secs = 3;
    cfg
}

/// A key with its webhook signing secret (the harness's own key's secret is not shown).
async fn key(app: &TestApp) -> (String, String) {
    let issued = app.issue_signing_key("hooks").await;
    (issued.key, issued.webhook_secret)
}

fn task_body(callback: &str, extra: Value) -> Value {
    let mut body = json!({"model": "kling-v3-omni", "prompt": "a cat in the garden",
                          "aspect_ratio": "16:9", "duration": 5, "callback_url": callback});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn create(app: &TestApp, key: &str, body: &Value) -> String {
    let (status, task) = app.post_as(key, "/v1/video/generations", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    task["id"].as_str().unwrap().to_string()
}

async fn events(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let (status, list) = app
        .get_as(key, &format!("/v1/video/generations/{id}/events"))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"].as_array().cloned().unwrap_or_default()
}

/// Reads the task's events until `done` holds for them (panics after `WAIT`).
async fn events_until(
    app: &TestApp,
    key: &str,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = events(app, key, id).await;
        if done(&list) {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events never got there: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn statuses(event: &Value) -> Vec<Option<i64>> {
    event["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64())
        .collect()
}

async fn in_progress_and_completed_events_arrive_in_order_signed_by_the_scheme(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(1, 2));
    let receiver = Receiver::start().await;
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0])).await;
    let (key, secret) = key(&app).await;
    let id = create(
        &app,
        &key,
        &task_body(&receiver.url(), json!({"callback_events": ["in_progress"]})),
    )
    .await;
    let got = receiver.wait_for(2, WAIT).await;
    let bodies: Vec<Value> = got.iter().map(Received::json).collect();
    assert_eq!(
        bodies[0]["type"], "video.generation.in_progress",
        "{bodies:?}"
    );
    assert_eq!(
        bodies[1]["type"], "video.generation.completed",
        "{bodies:?}"
    );
    for (r, b) in got.iter().zip(&bodies) {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), "application/json");
        assert!(r.header("webhook-id").starts_with("msg_"));
        assert_eq!(
            verify(&secret, r),
            Ok(1),
            "one signature, by the key's secret"
        );
        assert_eq!(b["data"]["id"], id.as_str());
        assert_eq!(b["data"]["object"], "video.generation");
        let ts = b["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts} is RFC 3339"
        );
    }
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let progress = &bodies[0]["data"];
    assert_eq!(progress["status"], "in_progress");
    assert!(progress.get("result").is_none(), "{progress}");
    assert!(progress["completed_at"].is_null(), "{progress}");
    let done = &bodies[1]["data"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["progress"], 100);
    assert!(
        done["result"]["videos"][0]["url"].as_str().is_some(),
        "{done}"
    );
    // Another secret does not verify it; a changed body does not either.
    assert!(verify(&omnigate::store::new_webhook_secret(), &got[1]).is_err());
    let mut tampered = got[1].clone();
    tampered.body = tampered.body.replace_first(b"completed", b"failed!!!");
    assert!(verify(&secret, &tampered).is_err());
    // The stock library agrees.
    assert_eq!(
        verify_with_python(&secret, &got[1]),
        "video.generation.completed"
    );
    let listed = events_until(&app, &key, &id, |e| {
        e.len() == 2 && e.iter().all(|e| e["state"] == "delivered")
    })
    .await;
    assert_eq!(listed[0]["id"], got[0].header("webhook-id"));
    assert_eq!(statuses(&listed[1]), vec![Some(200)]);
    assert_eq!(listed[1]["attempts"][0]["response_excerpt"], "answer 200");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "each event once");
}
on_both_stores!(in_progress_and_completed_events_arrive_in_order_signed_by_the_scheme);

trait ReplaceFirst {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("the text to replace");
        [&self[..at], to, &self[at + from.len()..]].concat()
    }
}

async fn a_task_s_later_event_waits_until_the_earlier_one_is_delivered(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    // The in_progress event is refused once; the task completes well within the wait.
    receiver.then([Reply::status(500)]);
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0, 1.0])).await;
    let (key, _) = key(&app).await;
    let id = create(
        &app,
        &key,
        &task_body(&receiver.url(), json!({"callback_events": ["in_progress"]})),
    )
    .await;
    let got = receiver.wait_for(3, WAIT).await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        vec![
            "video.generation.in_progress",
            "video.generation.in_progress",
            "video.generation.completed"
        ],
        "the completed event waited for the in_progress one"
    );
    let listed = events_until(&app, &key, &id, |e| {
        e.len() == 2 && e.iter().all(|e| e["state"] == "delivered")
    })
    .await;
    assert_eq!(statuses(&listed[0]), vec![Some(500), Some(200)]);
    assert_eq!(statuses(&listed[1]), vec![Some(200)]);
}
on_both_stores!(a_task_s_later_event_waits_until_the_earlier_one_is_delivered);

async fn a_failed_task_sends_one_failed_event_and_no_in_progress_unless_asked(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(Script {
        queued_polls: 1,
        processing_polls: 2,
        outcome: Outcome::Fail("the model refused".into()),
    });
    let receiver = Receiver::start().await;
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0])).await;
    let (key, secret) = key(&app).await;
    let id = create(&app, &key, &task_body(&receiver.url(), json!({}))).await;
    let got = receiver.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["type"], "video.generation.failed", "{body}");
    assert_eq!(body["data"]["status"], "failed");
    assert_eq!(body["data"]["error"]["code"], "generation_failed");
    assert_eq!(verify(&secret, &got[0]), Ok(1));
    app.wait_terminal_as(&key, &id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "in_progress was not asked for"
    );
    assert_eq!(events(&app, &key, &id).await.len(), 1);
}
on_both_stores!(a_failed_task_sends_one_failed_event_and_no_in_progress_unless_asked);

async fn deliveries_retry_on_the_schedule_until_a_2xx_honouring_retry_after(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    receiver.then([
        Reply::status(500),
        Reply::status(503).header("retry-after", "1"),
        Reply::status(429),
        Reply::ok(),
    ]);
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0, 0.2, 0.2, 0.2, 0.2])).await;
    let (key, secret) = key(&app).await;
    let id = create(&app, &key, &task_body(&receiver.url(), json!({}))).await;
    let got = receiver.wait_for(4, WAIT).await;
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one event, retried: {ids:?}"
    );
    for r in &got {
        assert_eq!(verify(&secret, r), Ok(1), "every attempt is signed afresh");
    }
    let gap = |i: usize| got[i].at.duration_since(got[i - 1].at);
    assert!(gap(1) >= Duration::from_millis(180), "{:?}", gap(1));
    assert!(
        gap(2) >= Duration::from_millis(950),
        "Retry-After: 1 was honoured: {:?}",
        gap(2)
    );
    let listed = events_until(&app, &key, &id, |e| e[0]["state"] == "delivered").await;
    assert_eq!(
        statuses(&listed[0]),
        vec![Some(500), Some(503), Some(429), Some(200)]
    );
    let first = &listed[0]["attempts"][0];
    assert!(first["error"].as_str().unwrap().contains("500"), "{first}");
    assert!(first["latency_ms"].as_i64().is_some() && first["at"].as_i64().is_some());
    // Redelivery queues it again: one more arrives, with the same id.
    let event_id = listed[0]["id"].as_str().unwrap();
    let (status, queued) = app
        .post_as(
            &key,
            &format!("/v1/video/generations/{id}/events/{event_id}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["state"], "pending");
    // The answer shows the attempts so far (the new one may already be among them).
    let so_far: Vec<_> = statuses(&queued).into_iter().take(4).collect();
    assert_eq!(
        so_far,
        [Some(500), Some(503), Some(429), Some(200)],
        "{queued}"
    );
    let got = receiver.wait_for(5, WAIT).await;
    assert_eq!(got[4].header("webhook-id"), event_id);
    let listed = events_until(&app, &key, &id, |e| {
        e[0]["state"] == "delivered" && e[0]["attempts"].as_array().unwrap().len() == 5
    })
    .await;
    assert_eq!(statuses(&listed[0])[4], Some(200));
    // Another key sees neither the events nor the redelivery.
    let (other, _) = self::key(&app).await;
    let (status, _) = app
        .get_as(&other, &format!("/v1/video/generations/{id}/events"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post_as(
            &other,
            &format!("/v1/video/generations/{id}/events/{event_id}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post_as(
            &key,
            &format!("/v1/video/generations/{id}/events/msg_nope/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_stores!(deliveries_retry_on_the_schedule_until_a_2xx_honouring_retry_after);

async fn a_used_up_schedule_fails_the_event_and_redirects_are_not_followed(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    let elsewhere = format!("{}/elsewhere", receiver.base);
    receiver.by_default(Reply::status(307).header("location", &elsewhere));
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0, 0.2, 0.2])).await;
    let (key, _) = key(&app).await;
    let id = create(&app, &key, &task_body(&receiver.url(), json!({}))).await;
    let listed = events_until(&app, &key, &id, |e| {
        e.first().is_some_and(|e| e["state"] == "failed")
    })
    .await;
    assert_eq!(
        statuses(&listed[0]),
        vec![Some(307), Some(307), Some(307)],
        "one attempt per entry of the schedule"
    );
    assert!(listed[0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .contains("redirect"));
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.path == "/hook"),
        "the redirect was never followed"
    );
}
on_both_stores!(a_used_up_schedule_fails_the_event_and_redirects_are_not_followed);

async fn a_410_turns_the_url_off_for_that_key(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    receiver.then([Reply::status(410)]);
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0, 0.2, 0.2])).await;
    let (key, _) = key(&app).await;
    let first = create(&app, &key, &task_body(&receiver.url(), json!({}))).await;
    let listed = events_until(&app, &key, &first, |e| {
        e.first().is_some_and(|e| e["state"] == "disabled")
    })
    .await;
    assert_eq!(statuses(&listed[0]), vec![Some(410)], "no retry after 410");
    // The key's next task gets nothing at that URL; another key's still does.
    let second = create(&app, &key, &task_body(&receiver.url(), json!({}))).await;
    let listed = events_until(&app, &key, &second, |e| {
        e.first().is_some_and(|e| e["state"] == "disabled")
    })
    .await;
    assert!(listed[0]["attempts"][0]["status_code"].is_null());
    assert!(listed[0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .contains("410"));
    let (other, _) = self::key(&app).await;
    let third = create(&app, &other, &task_body(&receiver.url(), json!({}))).await;
    events_until(&app, &other, &third, |e| {
        e.first().is_some_and(|e| e["state"] == "delivered")
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "the 410, then the other key's event");
    assert_eq!(got[1].json()["data"]["id"], third.as_str());
}
on_both_stores!(a_410_turns_the_url_off_for_that_key);

async fn private_targets_are_refused_without_the_flag(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    let mut cfg = hooks_config(&db, &sim, &[0.0, 0.2, 0.2]);
    cfg.webhooks.allow_private_targets = false;
    let app = TestApp::start(cfg).await;
    let (key, _) = key(&app).await;
    let port = receiver.base.rsplit(':').next().unwrap().to_string();
    // IP literals and plain http are refused when the task is created...
    for url in [
        receiver.url(),
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://[::1]:{port}/hook"),
        "https://169.254.169.254/latest/meta-data".to_string(),
        "https://10.1.2.3/hook".to_string(),
    ] {
        let (status, err) = app
            .post_as(&key, "/v1/video/generations", &task_body(&url, json!({})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {err}");
        assert_eq!(err["error"]["param"], "callback_url");
    }
    // ...and a name is resolved at delivery: one that points inside fails the event at
    // once, without a connection.
    let id = create(
        &app,
        &key,
        &task_body(&format!("https://localhost:{port}/hook"), json!({})),
    )
    .await;
    let listed = events_until(&app, &key, &id, |e| {
        e.first().is_some_and(|e| e["state"] == "failed")
    })
    .await;
    let attempts = listed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a refusal is not retried: {attempts:?}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains("internal address"), "{error}");
    assert!(receiver.received().is_empty());
}
on_both_stores!(private_targets_are_refused_without_the_flag);

async fn a_restart_in_the_middle_of_a_schedule_continues_it(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    receiver.then([Reply::status(500)]);
    let cfg = hooks_config(&db, &sim, &[0.0, 1.5, 0.2]);
    let mut app = TestApp::start(cfg.clone()).await;
    let (key, secret) = key(&app).await;
    let id = create(&app, &key, &task_body(&receiver.url(), json!({}))).await;
    events_until(&app, &key, &id, |e| {
        e.first()
            .is_some_and(|e| e["attempts"].as_array().unwrap().len() == 1)
    })
    .await;
    app.kill();
    let app = TestApp::restart_with(cfg, key.clone()).await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(
        got[1].at.duration_since(got[0].at) >= Duration::from_millis(1400),
        "the schedule's wait was kept across the restart"
    );
    assert_eq!(verify(&secret, &got[1]), Ok(1));
    let listed = events_until(&app, &key, &id, |e| e[0]["state"] == "delivered").await;
    assert_eq!(statuses(&listed[0]), vec![Some(500), Some(200)]);
}
on_both_stores!(a_restart_in_the_middle_of_a_schedule_continues_it);

async fn two_gateways_deliver_each_event_once(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(succeeds_after(1, 1));
    let receiver = Receiver::start().await;
    // A slow receiver keeps attempts in flight while the other gateway looks for work.
    receiver.by_default(Reply::ok().after(Duration::from_millis(100)));
    let mut cfg = hooks_config(&db, &sim, &[0.0, 0.2]);
    // Each claim holds its event well past any stall of a loaded machine: an event sent
    // again after its lease ran out is at-least-once delivery, not the double claim this
    // test looks for.
    cfg.webhooks.lease_secs = 30;
    let a = TestApp::start(cfg.clone()).await;
    let (key, _) = key(&a).await;
    let b = TestApp::restart_with(cfg, key.clone()).await;
    let body = task_body(&receiver.url(), json!({"callback_events": ["in_progress"]}));
    let mut ids = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { &b };
        ids.push(create(app, &key, &body).await);
    }
    // Returns once all twelve arrived; the long bound is for a machine under load.
    receiver.wait_for(12, 4 * WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = receiver.received();
    assert_eq!(got_all.len(), 12, "no event came twice");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got_all {
        *per_id
            .entry(r.header("webhook-id").to_string())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 12, "two events per task");
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    // Each task's events came in order.
    for id in &ids {
        let types: Vec<String> = got_all
            .iter()
            .map(Received::json)
            .filter(|b| b["data"]["id"] == id.as_str())
            .map(|b| b["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            types,
            vec!["video.generation.in_progress", "video.generation.completed"]
        );
    }
}
on_both_stores!(two_gateways_deliver_each_event_once);

async fn a_rotated_key_signs_with_its_new_and_previous_secret(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    let app = TestApp::start(hooks_config(&db, &sim, &[0.0])).await;
    let store = &app.gateway().store;
    let issued = store
        .issue_key("rotating", &KeyChange::default())
        .await
        .unwrap();
    let rotated = store
        .rotate_key(&issued.info.id, 60_000)
        .await
        .unwrap()
        .expect("an active key");
    assert_ne!(rotated.webhook_secret, issued.webhook_secret);
    create(&app, &rotated.key, &task_body(&receiver.url(), json!({}))).await;
    let got = receiver.wait_for(1, WAIT).await;
    let signatures = got[0].header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(verify(&rotated.webhook_secret, &got[0]), Ok(1));
    assert_eq!(verify(&issued.webhook_secret, &got[0]), Ok(1));
    assert_eq!(
        verify_with_python(&issued.webhook_secret, &got[0]),
        "video.generation.completed"
    );
    // Once the grace period is over, only the new secret signs.
    let again = store
        .rotate_key(&issued.info.id, 0)
        .await
        .unwrap()
        .expect("an active key");
    create(&app, &again.key, &task_body(&receiver.url(), json!({}))).await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].header("webhook-signature").split(' ').count(), 1);
    assert_eq!(verify(&again.webhook_secret, &got[1]), Ok(1));
    assert!(verify(&rotated.webhook_secret, &got[1]).is_err());
}
on_both_stores!(a_rotated_key_signs_with_its_new_and_previous_secret);
