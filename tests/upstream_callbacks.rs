//! Upstream callbacks: the providers whose documents take a `callback_url` (the Kling
//! dialect, apimodels) are given a per-task URL under `webhooks.public_base_url`, and what
//! they POST there finishes tasks long before the (slowed) backstop poll would, while
//! repeats, stale arrivals and unknown tokens change nothing.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use omnigate::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, history, Db, TestApp, TestDb};
use support::fixtures::priced;
use support::sim::{CallbackStyle, Script, Sim, SimDialect};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);
/// The backstop poll of a task given a callback: far longer than any test waits.
const SLOW_POLL_SECS: f64 = 30.0;

/// A TCP forwarder on a random port whose target is set later: the gateway's
/// `public_base_url` must be in its config before it starts, and it learns its own port
/// (port 0) only then.
struct Relay {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let target: Arc<OnceLock<SocketAddr>> = Arc::default();
        let relay = Relay {
            addr: listener.local_addr().expect("relay address"),
            target: target.clone(),
        };
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(to) = target.get().copied() else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        relay
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One simulator of each dialect with callbacks, and modellix, which has none.
struct Setup {
    kling: Sim,
    kkiai: Sim,
    apimodels: Sim,
    modellix: Sim,
    cfg: Config,
}

impl Setup {
    async fn new(db: &TestDb) -> Setup {
        let kling = Sim::start(SimDialect::KlingOfficial).await;
        let kkiai = Sim::start(SimDialect::Kkiai).await;
        let apimodels = Sim::start(SimDialect::Apimodels).await;
        let modellix = Sim::start(SimDialect::Modellix).await;
        let cfg = config(
            db,
            priced(&[
                ("kling", &kling, 0.08),
                ("kkiai", &kkiai, 0.08),
                ("apimodels", &apimodels, 0.08),
                ("modellix", &modellix, 0.08),
            ]),
        );
        Setup {
            kling,
            kkiai,
            apimodels,
            modellix,
            cfg,
        }
    }

    /// Starts the gateway with upstream callbacks on, reachable through a relay.
    async fn start_with_callbacks(mut self) -> (TestApp, Setup, Relay) {
        let relay = Relay::start().await;
        self.cfg.webhooks.public_base_url = Some(relay.base_url());
        self.cfg.webhooks.callback_poll_interval_secs = SLOW_POLL_SECS;
        let app = TestApp::start(self.cfg.clone()).await;
        let gateway_addr = app.app.as_ref().expect("running").addr;
        relay
            .target
            .set(gateway_addr)
            .expect("relay target set once");
        (app, self, relay)
    }

    fn all(&self) -> [&Sim; 4] {
        [&self.kling, &self.kkiai, &self.apimodels, &self.modellix]
    }

    /// Tasks never finish by being polled: only a callback (or `finish_now`) ends them.
    fn never_finish_by_polls(&self) {
        for sim in self.all() {
            sim.set_script(Script {
                queued_polls: 1_000,
                ..Script::default()
            });
        }
    }
}

fn request_for(provider: &str) -> Value {
    json!({
        "model": "kling-v3-omni",
        "prompt": "a cat walking across a sunlit garden",
        "aspect_ratio": "16:9",
        "routing": {"providers": [provider]},
    })
}

async fn upstream_id(app: &TestApp, task_id: &str) -> String {
    let task = app.gateway().store.task(task_id).await.unwrap().unwrap();
    task.provider_task_id.expect("accepted upstream")
}

async fn read_task(app: &TestApp, id: &str) -> Value {
    let (status, task) = app.get(&format!("/v1/video/generations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    task
}

async fn an_upstream_callback_completes_a_task_before_the_next_poll_would(db: Db) {
    let db = TestDb::new(db).await;
    let setup = Setup::new(&db).await;
    setup.never_finish_by_polls();
    setup.kkiai.set_callback_style(CallbackStyle::Enveloped);
    let (app, s, relay) = setup.start_with_callbacks().await;
    for (name, sim) in [
        ("kling", &s.kling),
        ("kkiai", &s.kkiai),
        ("apimodels", &s.apimodels),
    ] {
        let task = app.create(&request_for(name)).await;
        let id = task["id"].as_str().unwrap().to_string();
        let body = sim.created_bodies().last().cloned().unwrap();
        let url = body["callback_url"]
            .as_str()
            .expect("a callback_url is sent");
        let prefix = format!("{}/upstream/callbacks/", relay.base_url());
        assert!(url.starts_with(&prefix), "{name}: {url}");
        assert!(
            !url.contains(&id),
            "{name}: the URL must not carry the task id"
        );
        // Its provider's own pace (50 ms) would have polled several times by now.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let queries = sim.query_count();
        assert_eq!(
            queries, 0,
            "{name}: a task given a callback is polled slowly"
        );
        let upstream = upstream_id(&app, &id).await;
        let started = Instant::now();
        assert_eq!(sim.finish_now(&upstream).await, Some(200), "{name}");
        let done = app.wait_terminal(&id, WAIT).await;
        assert!(
            started.elapsed() < Duration::from_secs_f64(SLOW_POLL_SECS / 3.0),
            "{name}: finished only after {:?}",
            started.elapsed()
        );
        assert_eq!(done["status"], "completed", "{name}: {done}");
        assert_eq!(
            done["result"]["videos"][0]["url"],
            format!("https://cdn.sim.test/{upstream}.mp4"),
            "{name}: {done}"
        );
        // The body was only a hint: the result came from one re-read at the provider.
        assert_eq!(sim.query_count(), 1, "{name}");
    }
}

async fn duplicated_and_stale_callbacks_change_nothing(db: Db) {
    let db = TestDb::new(db).await;
    let setup = Setup::new(&db).await;
    setup.never_finish_by_polls();
    let (app, s, _relay) = setup.start_with_callbacks().await;
    let task = app.create(&request_for("kkiai")).await;
    let id = task["id"].as_str().unwrap();
    let upstream = upstream_id(&app, id).await;
    assert_eq!(s.kkiai.finish_now(&upstream).await, Some(200));
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    let before = history(&done);
    assert_eq!(before.last().map(String::as_str), Some("completed"));
    let queries = s.kkiai.query_count();

    assert_eq!(s.kkiai.repeat_callback(&upstream).await, Some(200));
    // Out of order: "processing" arrives after "succeed".
    assert_eq!(s.kkiai.stale_callback(&upstream).await, Some(200));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = read_task(&app, id).await;
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(history(&after), before, "{after}");
    assert_eq!(after["result"], done["result"]);
    assert_eq!(
        s.kkiai.query_count(),
        queries,
        "a finished task is not re-read"
    );

    // While the task runs: the first "processing" is ahead of queued and is re-read; its
    // repeats, and a "submitted" arriving late, are not.
    s.kling.set_script(Script {
        queued_polls: 0,
        processing_polls: 1_000,
        ..Script::default()
    });
    let task = app.create(&request_for("kling")).await;
    let id = task["id"].as_str().unwrap();
    let upstream = upstream_id(&app, id).await;
    assert_eq!(s.kling.stale_callback(&upstream).await, Some(200));
    let deadline = Instant::now() + WAIT;
    let running = loop {
        let now = read_task(&app, id).await;
        if now["status"] == "in_progress" {
            break now;
        }
        assert!(Instant::now() < deadline, "never in progress: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The re-read moved the simulator's task on, and it called back "processing" in turn:
    // if that landed while the poll was in flight, one more re-read is owed. Let it settle.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let queries = s.kling.query_count();
    assert!((1..=2).contains(&queries), "{queries} re-reads");
    let held = history(&running);
    assert_eq!(s.kling.stale_callback(&upstream).await, Some(200));
    assert_eq!(s.kling.repeat_callback(&upstream).await, Some(200));
    let late = json!({"task_id": upstream, "task_status": "submitted", "task_result": {}});
    let url = s.kling.created_bodies()[0]["callback_url"]
        .as_str()
        .unwrap()
        .to_string();
    let status = app
        .client
        .post(&url)
        .json(&late)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = read_task(&app, id).await;
    assert_eq!(now["status"], "in_progress", "{now}");
    assert_eq!(history(&now), held, "{now}");
    assert_eq!(
        s.kling.query_count(),
        queries,
        "no re-read for what omnigate already holds"
    );
}

async fn an_unknown_token_or_a_garbled_body_is_refused_and_changes_nothing(db: Db) {
    let db = TestDb::new(db).await;
    let setup = Setup::new(&db).await;
    setup.never_finish_by_polls();
    let (app, s, _relay) = setup.start_with_callbacks().await;
    let task = app.create(&request_for("kkiai")).await;
    let id = task["id"].as_str().unwrap();
    let upstream = upstream_id(&app, id).await;
    let url = s.kkiai.created_bodies()[0]["callback_url"]
        .as_str()
        .unwrap()
        .to_string();
    let token = url.rsplit('/').next().unwrap().to_string();
    assert_eq!(token.len(), 43, "32 random bytes in URL-safe base64");
    let held = history(&read_task(&app, id).await);
    let done = json!({"task_id": upstream, "task_status": "succeed",
        "task_result": {"videos": [{"id": "v", "url": "https://evil.example/v.mp4", "duration": "5"}]}});
    let post = |path: String, body: String| {
        let client = app.client.clone();
        let base = app.base.clone();
        async move {
            client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    for path in [
        format!("/upstream/callbacks/{wrong}"),
        format!("/upstream/callbacks/{id}"),
        format!("/upstream/callbacks/{upstream}"),
    ] {
        let status = post(path.clone(), done.to_string()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for garbage in ["not json", r#"{"hello": "world"}"#, "[]"] {
        let status = post(format!("/upstream/callbacks/{token}"), garbage.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = read_task(&app, id).await;
    assert_eq!(now["status"], "queued", "{now}");
    assert_eq!(history(&now), held, "{now}");
    assert_eq!(s.kkiai.query_count(), 0, "nothing asked for a re-read");
    // The right token with the same body: the task is re-read and finishes, with the
    // provider's own URL, never the body's.
    let status = post(format!("/upstream/callbacks/{token}"), done.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = read_task(&app, id).await;
    assert_eq!(now["status"], "queued", "the provider says queued: {now}");
    assert_eq!(s.kkiai.query_count(), 1, "one re-read");
}

async fn without_public_base_url_no_callback_is_requested(db: Db) {
    let db = TestDb::new(db).await;
    let setup = Setup::new(&db).await;
    let app = TestApp::start(setup.cfg.clone()).await;
    for (name, sim) in [("kkiai", &setup.kkiai), ("apimodels", &setup.apimodels)] {
        let task = app.create(&request_for(name)).await;
        let id = task["id"].as_str().unwrap();
        let body = &sim.created_bodies()[0];
        assert!(body.get("callback_url").is_none(), "{name}: {body}");
        // Polled at its provider's own pace: finished by polls alone.
        let done = app.wait_terminal(id, WAIT).await;
        assert_eq!(done["status"], "completed", "{name}: {done}");
        let row = app.gateway().store.task(id).await.unwrap().unwrap();
        assert!(!row.upstream_callback, "{name}");
    }
}

async fn modellix_gets_no_callback_and_keeps_its_poll_pace(db: Db) {
    let db = TestDb::new(db).await;
    let setup = Setup::new(&db).await;
    let (app, s, _relay) = setup.start_with_callbacks().await;
    let task = app.create(&request_for("modellix")).await;
    let id = task["id"].as_str().unwrap();
    let body = &s.modellix.created_bodies()[0];
    assert!(body.get("callback_url").is_none(), "{body}");
    assert!(
        s.modellix.rejections().is_empty(),
        "{:?}",
        s.modellix.rejections()
    );
    // Not slowed down: modellix was given no callback, so polls are all it has.
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    let row = app.gateway().store.task(id).await.unwrap().unwrap();
    assert!(!row.upstream_callback);
}

async fn a_failover_to_a_dialect_with_callbacks_still_gives_it_the_url(db: Db) {
    let db = TestDb::new(db).await;
    let mut setup = Setup::new(&db).await;
    setup.never_finish_by_polls();
    // modellix is tried first and refuses; kkiai takes the task.
    setup.cfg.providers.get_mut("modellix").unwrap().priority = -1;
    setup.modellix.push_submit_fault(support::sim::Fault::Error(
        support::sim::SimError::BadRequest,
    ));
    let (app, s, relay) = setup.start_with_callbacks().await;
    let task = app
        .create(&json!({
            "model": "kling-v3-omni",
            "prompt": "a cat walking across a sunlit garden",
            "aspect_ratio": "16:9",
            "routing": {"providers": ["modellix", "kkiai"]},
        }))
        .await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(task["provider"], "kkiai", "{task}");
    assert_eq!(s.modellix.submit_count(), 1, "modellix was tried first");
    let url = s.kkiai.created_bodies()[0]["callback_url"]
        .as_str()
        .expect("the URL goes to the provider that takes callbacks")
        .to_string();
    assert!(url.starts_with(&relay.base_url()), "{url}");
    let upstream = upstream_id(&app, id).await;
    assert_eq!(s.kkiai.finish_now(&upstream).await, Some(200));
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
}

async fn polling_stays_the_backstop_when_callbacks_never_arrive(db: Db) {
    let db = TestDb::new(db).await;
    let mut setup = Setup::new(&db).await;
    // A public_base_url nobody answers at: every callback is lost.
    let lost = Relay::start().await;
    setup.cfg.webhooks.public_base_url = Some(lost.base_url());
    setup.cfg.webhooks.callback_poll_interval_secs = 0.4;
    let app = TestApp::start(setup.cfg.clone()).await;
    let started = Instant::now();
    let task = app.create(&request_for("apimodels")).await;
    let id = task["id"].as_str().unwrap();
    assert!(setup.apimodels.created_bodies()[0]["callback_url"].is_string());
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    // Queued, processing, done: three polls at the backstop pace, not the provider's 50 ms.
    assert_eq!(setup.apimodels.query_count(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(1_200),
        "{:?}",
        started.elapsed()
    );
}

on_both_stores!(
    polling_stays_the_backstop_when_callbacks_never_arrive,
    a_failover_to_a_dialect_with_callbacks_still_gives_it_the_url,
    an_upstream_callback_completes_a_task_before_the_next_poll_would,
    duplicated_and_stale_callbacks_change_nothing,
    an_unknown_token_or_a_garbled_body_is_refused_and_changes_nothing,
    without_public_base_url_no_callback_is_requested,
    modellix_gets_no_callback_and_keeps_its_poll_pace,
);
