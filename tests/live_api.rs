//! The live task API (issue 21, items 1-4) against a real gateway and a simulated
//! provider: status streams (with `Last-Event-ID`, across two gateways on one database,
//! `live.max_streams`), `Prefer: wait`, `ETag`/304 with the finished-task cache and its
//! invalidation, and the `webhook_events` filter.

mod support;

use std::time::{Duration, Instant};

use omnigate::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::console::Console;
use support::fixtures::{succeeds_after, BOTH};
use support::python::run_script;
use support::receiver::{Received, Receiver};
use support::sim::{Script, Sim, SimDialect};

fn live_config(db: &TestDb, sim: &Sim) -> Config {
    let mut cfg = config(db, vec![("up".into(), sim.provider_config(BOTH, 0.1))]);
    cfg.webhooks.allow_private_targets = true;
    cfg.webhooks.tick_ms = 50;
    cfg.webhooks.retry_schedule_secs = vec![0.0];
    cfg
}

fn body() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a cat in the garden",
           "aspect_ratio": "16:9", "duration": 5})
}

/// A task that takes about `polls` polls of 50 ms in progress.
fn script(polls: u32) -> Script {
    succeeds_after(1, polls)
}

fn task_path(id: &str) -> String {
    format!("/v1/video/generations/{id}")
}

/// One server-sent event as read off the wire.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: String,
    data: Value,
}

/// Reads a status stream to its end (or `within`): its events, and whether it closed.
async fn read_stream(resp: reqwest::Response, within: Duration) -> (Vec<Sse>, bool) {
    let mut resp = resp;
    let deadline = Instant::now() + within;
    let mut text = String::new();
    let mut closed = false;
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), resp.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => {
                closed = true;
                break;
            }
            _ => break,
        }
    }
    (parse_events(&text), closed)
}

fn parse_events(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some(Sse {
                event: event?,
                id: id?,
                data: serde_json::from_str(&data).ok()?,
            })
        })
        .collect()
}

async fn open_stream(app: &TestApp, id: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}{}/stream", app.base, task_path(id)))
        .bearer_auth(&app.key);
    if let Some(last) = last_event_id {
        req = req.header("last-event-id", last);
    }
    req.send().await.unwrap()
}

async fn a_stream_sends_the_current_state_then_each_change_and_closes_after_the_final(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(6));
    let app = TestApp::start(live_config(&db, &sim)).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = open_stream(&app, &id, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (events, closed) = read_stream(resp, Duration::from_secs(10)).await;
    assert!(
        closed,
        "the stream closes after the final state: {events:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last.event, "video.generation.completed", "{events:?}");
    assert_eq!(last.data["status"], "completed");
    assert_eq!(last.data["id"], id.as_str());
    for e in &events {
        assert_eq!(
            e.event,
            format!("video.generation.{}", e.data["status"].as_str().unwrap())
        );
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no event repeats the one before");
    assert!(
        events.iter().any(|e| e.data["status"] == "in_progress"),
        "a change in between was sent: {events:?}"
    );
    // Accept: text/event-stream on the task read gives the same stream.
    let resp = app
        .client
        .get(format!("{}{}", app.base, task_path(&id)))
        .bearer_auth(&app.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let (again, closed) = read_stream(resp, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(again.len(), 1, "a final task: its state, then the end");
    assert_eq!(again[0].id, last.id);
}

/// The stock `sseclient-py` client follows a stream to its end, and resumes it from its
/// first event's id without that event again (`tests/sse_client.py`).
async fn a_stock_python_sse_client_follows_and_resumes_a_stream(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(6));
    let app = TestApp::start(live_config(&db, &sim)).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let args = vec![app.base.clone(), app.key.clone(), id.clone()];
    let report = run_script("sse_client.py", args, "sseclient-py requests").await;
    let first = report["first"].as_array().unwrap();
    let last = first.last().expect("events");
    assert_eq!(last["status"], "completed", "{report}");
    assert_eq!(last["event"], "video.generation.completed");
    assert!(first.iter().all(|e| e["task"] == id.as_str()));
    let resumed = report["resumed"].as_array().unwrap();
    assert!(
        resumed.iter().all(|e| e["id"] != first[0]["id"]),
        "the event resumed from came again: {report}"
    );
    assert_eq!(resumed.last().unwrap()["status"], "completed", "{report}");
}

async fn a_stream_resumed_with_last_event_id_does_not_repeat_that_event(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(10));
    let app = TestApp::start(live_config(&db, &sim)).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (first, _) = read_stream(
        open_stream(&app, &id, None).await,
        Duration::from_millis(300),
    )
    .await;
    let seen = first.last().expect("the current state comes first").clone();
    let (rest, closed) = read_stream(
        open_stream(&app, &id, Some(&seen.id)).await,
        Duration::from_secs(10),
    )
    .await;
    assert!(closed, "{rest:?}");
    assert!(
        rest.iter().all(|e| e.id != seen.id),
        "{} was sent again: {rest:?}",
        seen.id
    );
    assert_eq!(rest.last().unwrap().data["status"], "completed");
    // Resuming from the final event: nothing more to say, the stream closes at once.
    let done = rest.last().unwrap().id.clone();
    let (none, closed) = read_stream(
        open_stream(&app, &id, Some(&done)).await,
        Duration::from_secs(3),
    )
    .await;
    assert!(closed);
    assert!(none.is_empty(), "{none:?}");
}

/// Gateway B never polls (its poller's tick is an hour); gateway A finishes the task. B's
/// stream hears of it through the shared PostgreSQL database within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_by_one_gateway_reaches_a_stream_on_another() {
    let db = TestDb::new(Db::Postgres).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(10_000));
    let a = TestApp::start(live_config(&db, &sim)).await;
    let mut quiet = live_config(&db, &sim);
    quiet.poller.tick_ms = 3_600_000;
    let b = TestApp::restart_with(quiet, a.key.clone()).await;
    let task = b.create(&body()).await;
    let id = task["id"].as_str().unwrap().to_string();
    // Wait until A has polled it into in_progress, so its upstream id is known.
    let deadline = Instant::now() + Duration::from_secs(5);
    let upstream = loop {
        let t = a.gateway().store.task(&id).await.unwrap().unwrap();
        if let (Some(u), "in_progress") = (t.provider_task_id.clone(), t.state.as_str()) {
            break u;
        }
        assert!(Instant::now() < deadline, "never in progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stream = open_stream(&b, &id, None).await;
    let reading = tokio::spawn(read_stream(stream, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.finish_now(&upstream).await;
    // A's poller writes the completion; B's stream must carry it within a second of that.
    let (events, closed) = reading.await.unwrap();
    let closed_at = omnigate::store::now_ms();
    assert!(closed, "{events:?}");
    assert_eq!(events.last().unwrap().data["status"], "completed");
    let written = a
        .gateway()
        .store
        .task(&id)
        .await
        .unwrap()
        .unwrap()
        .updated_at;
    assert!(
        closed_at - written < 1000,
        "B's stream closed {} ms after A wrote the completion",
        closed_at - written
    );
}

async fn an_idle_stream_gets_comment_heartbeats(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(10_000));
    let mut cfg = live_config(&db, &sim);
    cfg.live.heartbeat_secs = 1;
    // Polled once a minute: nothing changes while the stream is read.
    cfg.providers.get_mut("up").unwrap().poll_interval_secs = 60.0;
    let app = TestApp::start(cfg).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut resp = open_stream(&app, &id, None).await;
    let deadline = Instant::now() + Duration::from_millis(2600);
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline.into(), resp.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let beats = text.lines().filter(|l| *l == ": heartbeat").count();
    assert!(
        (2..=3).contains(&beats),
        "{beats} heartbeats in 2.6 s: {text}"
    );
}

async fn streams_past_max_streams_are_refused_with_429(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(10_000));
    let mut cfg = live_config(&db, &sim);
    cfg.live.max_streams = 2;
    let app = TestApp::start(cfg).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let one = open_stream(&app, &id, None).await;
    let two = open_stream(&app, &id, None).await;
    assert_eq!(
        (one.status(), two.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let three = open_stream(&app, &id, None).await;
    assert_eq!(three.status(), StatusCode::TOO_MANY_REQUESTS);
    let err: Value = three.json().await.unwrap();
    assert_eq!(err["error"]["code"], "too_many_streams", "{err}");
    drop(one);
    // The closed stream's place is given back once its producer sees the hang-up.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let again = open_stream(&app, &id, None).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("omnigate_open_streams"), "{text}");
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(&app.key);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn prefer_wait_answers_at_the_change_and_at_the_limit(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(10_000));
    let app = TestApp::start(live_config(&db, &sim)).await;
    // At the limit: a task that will not finish is answered after wait=1, unfinished.
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let resp = get_with(&app, &task_path(&id), &[("prefer", "wait=1")]).await;
    let held = started.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["preference-applied"], "wait=1");
    let t: Value = resp.json().await.unwrap();
    assert!(
        matches!(t["status"].as_str(), Some("queued" | "in_progress")),
        "{t}"
    );
    assert!(
        held >= Duration::from_millis(950),
        "answered after {held:?}"
    );
    assert!(held < Duration::from_secs(3), "answered after {held:?}");
    // Without the header: answered at once, no Preference-Applied.
    let resp = get_with(&app, &task_path(&id), &[]).await;
    assert!(resp.headers().get("preference-applied").is_none());
    // At the change: a create held by wait=30 answers when the task completes.
    sim.set_script(script(8));
    let started = Instant::now();
    let resp = app
        .client
        .post(format!("{}/v1/video/generations", app.base))
        .bearer_auth(&app.key)
        .header("prefer", "wait=30")
        .json(&body())
        .send()
        .await
        .unwrap();
    let held = started.elapsed();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["preference-applied"], "wait=30");
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert!(held < Duration::from_secs(10), "held {held:?}");
    // A read held the same way answers at the change too.
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = get_with(&app, &task_path(&id), &[("prefer", "wait=30")]).await;
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    // A bad wait names the header.
    let resp = get_with(&app, &task_path(&id), &[("prefer", "wait=soon")]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "Prefer", "{err}");
}

/// Reads held by `Prefer: wait` give back their `max_in_flight_requests` slots: with two
/// slots and two held reads, a create still gets in.
async fn held_reads_do_not_take_the_slots_creates_need(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(10_000));
    let mut cfg = live_config(&db, &sim);
    cfg.server.max_in_flight_requests = 2;
    let app = TestApp::start(cfg).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, key) = (
                app.client.clone(),
                format!("{}{}", app.base, task_path(&id)),
                app.key.clone(),
            );
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(key)
                    .header("prefer", "wait=3")
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, task) = app.post("/v1/video/generations", &body()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
}

async fn a_read_with_the_current_etag_answers_304_and_a_deleted_task_leaves_the_cache(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(1));
    let app = TestApp::start(live_config(&db, &sim)).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_terminal(&id, Duration::from_secs(10)).await;
    let resp = get_with(&app, &task_path(&id), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let resp = get_with(&app, &task_path(&id), &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = get_with(&app, &task_path(&id), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        app.gateway()
            .live
            .finished
            .get(&id, &owner(&app, &id).await)
            .is_some(),
        "the finished task's read is cached"
    );
    // Another key does not get it from the cache either.
    let other = app.issue_key("other").await;
    let (status, _) = app.get_as(&other, &task_path(&id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A deletion (through the OpenAI facade) drops it within a second.
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{id}", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let deleted = Instant::now();
    loop {
        let (status, _) = app.get(&task_path(&id)).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "still read after deletion"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_changed_task_answers_200_with_a_new_etag_to_its_old_one(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(4));
    let app = TestApp::start(live_config(&db, &sim)).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = get_with(&app, &task_path(&id), &[]).await;
    let old = first.headers()["etag"].to_str().unwrap().to_string();
    let unchanged = get_with(&app, &task_path(&id), &[("if-none-match", &old)]).await;
    let status = unchanged.status();
    app.wait_terminal(&id, Duration::from_secs(10)).await;
    let resp = get_with(&app, &task_path(&id), &[("if-none-match", &old)]).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the task changed since {old}"
    );
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), old);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["status"], "completed");
    // Read at once, the unfinished task had not changed (or, rarely, just had).
    assert!(matches!(status, StatusCode::NOT_MODIFIED | StatusCode::OK));
}

async fn owner(app: &TestApp, id: &str) -> String {
    app.gateway()
        .store
        .task(id)
        .await
        .unwrap()
        .unwrap()
        .api_key_id
}

/// A deletion made through gateway A reaches gateway B's cache within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_on_one_gateway_drops_the_cached_read_on_another() {
    let db = TestDb::new(Db::Postgres).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(1));
    let a = TestApp::start(live_config(&db, &sim)).await;
    let b = TestApp::restart_with(live_config(&db, &sim), a.key.clone()).await;
    let id = a.create(&body()).await["id"].as_str().unwrap().to_string();
    a.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(b.get(&task_path(&id)).await.0, StatusCode::OK);
    assert!(b
        .gateway()
        .live
        .finished
        .get(&id, &owner(&b, &id).await)
        .is_some());
    let resp = a
        .client
        .delete(format!("{}/v1/videos/{id}", a.base))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let deleted = Instant::now();
    while b.get(&task_path(&id)).await.0 != StatusCode::NOT_FOUND {
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "B still reads it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn webhook_events_deliver_only_the_named_types_and_the_events_api_lists_all(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(2));
    let receiver = Receiver::start().await;
    let app = TestApp::start(live_config(&db, &sim)).await;
    let mut b = body();
    b["callback_url"] = json!(receiver.url());
    b["callback_events"] = json!(["in_progress"]);
    b["webhook_events"] = json!(["completed"]);
    let id = app.create(&b).await["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, Duration::from_secs(10)).await;
    let got = receiver.wait_for(1, Duration::from_secs(8)).await;
    let types: Vec<String> = got
        .iter()
        .map(|r: &Received| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, vec!["video.generation.completed"]);
    // Nothing else arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
    let (status, list) = app.get(&format!("{}/events", task_path(&id))).await;
    assert_eq!(status, StatusCode::OK);
    let states: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("video.generation.in_progress".into(), "filtered".into()),
            ("video.generation.completed".into(), "delivered".into()),
        ]
    );
}

async fn bad_webhook_events_are_refused_naming_the_field(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::start(live_config(&db, &sim)).await;
    let cases = [
        (json!(["completed", "finished"]), "webhook_events[1]"),
        (json!(["failed", "failed"]), "webhook_events[1]"),
        (json!([]), "webhook_events"),
    ];
    for (events, param) in cases {
        let mut b = body();
        b["callback_url"] = json!("https://example.com/hook");
        b["webhook_events"] = events.clone();
        let (status, err) = app.post("/v1/video/generations", &b).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{events}: {err}");
        assert_eq!(err["error"]["param"], param, "{events}: {err}");
    }
    let mut b = body();
    b["webhook_events"] = json!(["completed"]);
    let (status, err) = app.post("/v1/video/generations", &b).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "webhook_events");
}

/// The console's task page follows its task by the stream: its script (served as the
/// console's other assets, nothing inline) and the session-signed stream it reads.
async fn the_console_task_page_follows_its_task_by_the_stream(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(script(6));
    let app = TestApp::start(live_config(&db, &sim)).await;
    let id = app.create(&body()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut console = Console::sign_in(&app, &app.key).await;
    let (status, page) = console.get(&format!("/console/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"src="/console/assets/task-follow.js""#),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"data-follow="/console/tasks/{id}/stream""#)),
        "{page}"
    );
    let script = console.get_raw("/console/assets/task-follow.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.text().await.unwrap().contains("EventSource"));
    let stream = console
        .get_raw(&format!("/console/tasks/{id}/stream"))
        .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let (events, closed) = read_stream(stream, Duration::from_secs(10)).await;
    assert!(closed, "{events:?}");
    assert_eq!(events.last().unwrap().data["status"], "completed");
    // Once finished, the page has nothing to follow.
    let (_, page) = console.get(&format!("/console/tasks/{id}")).await;
    assert!(!page.contains("data-follow"), "{page}");
    assert!(!page.contains("task-follow.js"));
    // Another key's session finds no such task, and no stream of it.
    let other = app.issue_key("other").await;
    let stranger = Console::sign_in(&app, &other).await;
    let refused = stranger
        .get_raw(&format!("/console/tasks/{id}/stream"))
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
}

on_both_stores!(
    the_console_task_page_follows_its_task_by_the_stream,
    a_stream_sends_the_current_state_then_each_change_and_closes_after_the_final,
    a_stream_resumed_with_last_event_id_does_not_repeat_that_event,
    a_stock_python_sse_client_follows_and_resumes_a_stream,
    streams_past_max_streams_are_refused_with_429,
    an_idle_stream_gets_comment_heartbeats,
    prefer_wait_answers_at_the_change_and_at_the_limit,
    held_reads_do_not_take_the_slots_creates_need,
    a_read_with_the_current_etag_answers_304_and_a_deleted_task_leaves_the_cache,
    a_changed_task_answers_200_with_a_new_etag_to_its_old_one,
    webhook_events_deliver_only_the_named_types_and_the_events_api_lists_all,
    bad_webhook_events_are_refused_naming_the_field,
);
