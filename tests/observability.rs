//! Metrics, request ids and readiness against the real gateway on port 0: `/metrics`
//! scraped before and after real requests, provider calls and webhook deliveries, the
//! `x-request-id` followed to the simulated provider, and `/readyz` with the database,
//! the schema or Redis taken away.
//!
//! The Prometheus recorder is one per process, so gateways of tests running in parallel
//! in this binary share it: series labelled with a test's own provider name are exact,
//! process-wide ones (HTTP routes, webhook outcomes, limit kinds) are checked as "moved
//! by at least".

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use omnigate::config::Secret;
use omnigate::store::KeyChange;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;
use support::app::{config, Db, TestApp, TestDb, PG_ADMIN_URL};
use support::fixtures::{succeeds_after, BOTH};
use support::receiver::Receiver;
use support::sim::{Script, Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(15);

/// A provider name no other test uses, so its series are this test's alone.
fn unique_provider() -> String {
    format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn body() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk",
           "aspect_ratio": "16:9", "duration": 5})
}

/// One scrape of `/metrics`, parsed into samples.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    async fn take(app: &TestApp) -> Scrape {
        let resp = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Scrape::parse(&resp.text().await.unwrap())
    }

    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape(samples)
    }

    /// The sum of every series of `name` carrying all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .sum()
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.0.iter().any(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// `a="x",b="y"` with `\"` and `\\` escapes.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label values are quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// Scrapes until `check` holds (the store gauges refresh on their own clock).
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = Scrape::take(app).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_move_with_requests_provider_calls_deliveries_and_spend(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let receiver = Receiver::start().await;
    let provider = unique_provider();
    let mut cfg = config(
        &db,
        vec![(provider.clone(), sim.provider_config(BOTH, 0.1))],
    );
    cfg.webhooks.allow_private_targets = true;
    cfg.webhooks.tick_ms = 50;
    let app = TestApp::start(cfg).await;
    let issued = app.issue_signing_key("metrics").await;
    let p = provider.as_str();
    let create = [("method", "POST"), ("route", "/v1/video/generations")];
    let read = [("method", "GET"), ("route", "/v1/video/generations/{id}")];

    let before = Scrape::take(&app).await;
    let mut task_body = body();
    task_body["callback_url"] = json!(receiver.url());
    let (status, task) = app
        .post_as(&issued.key, "/v1/video/generations", &task_body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .get_as(&issued.key, "/v1/video/generations/vgt_nosuchtask")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let done = app.wait_terminal_as(&issued.key, &id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    receiver.wait_for(1, WAIT).await;
    let after = scrape_until(&app, "the webhook delivery", |s| {
        s.sum(
            "omnigate_webhook_deliveries_total",
            &[("outcome", "delivered")],
        ) > before.sum(
            "omnigate_webhook_deliveries_total",
            &[("outcome", "delivered")],
        )
    })
    .await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    // HTTP requests by route template and status, with their latency.
    let created = [create.as_slice(), &[("status", "202")]].concat();
    assert!(moved("omnigate_http_requests_total", &created) >= 1.0);
    let missing = [read.as_slice(), &[("status", "404")]].concat();
    assert!(moved("omnigate_http_requests_total", &missing) >= 1.0);
    assert!(
        moved(
            "omnigate_http_requests_total",
            &[read.as_slice(), &[("status", "200")]].concat()
        ) >= 1.0
    );
    assert!(moved("omnigate_http_request_duration_seconds_count", &create) >= 1.0);
    assert!(after.has(
        "omnigate_http_request_duration_seconds_bucket",
        &[create.as_slice(), &[("le", "+Inf")]].concat()
    ));
    // Never a raw path: no series carries a task id.
    let text = after
        .0
        .iter()
        .flat_map(|(_, l, _)| l.values())
        .any(|v| v.contains("vgt_"));
    assert!(!text, "a task id leaked into a label");

    // Provider calls by provider, operation and outcome: this provider is this test's.
    assert_eq!(
        after.sum(
            "omnigate_upstream_requests_total",
            &[("provider", p), ("operation", "submit"), ("outcome", "ok")]
        ),
        1.0
    );
    assert!(
        after.sum(
            "omnigate_upstream_requests_total",
            &[("provider", p), ("operation", "status"), ("outcome", "ok")]
        ) >= 2.0
    );
    assert_eq!(
        after.sum(
            "omnigate_upstream_request_duration_seconds_count",
            &[("provider", p), ("operation", "submit")]
        ),
        1.0
    );

    // Webhook deliveries by outcome, and spend by provider (5 s at $0.1/s).
    assert!(
        moved(
            "omnigate_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ) >= 1.0
    );
    assert!(after.has("omnigate_webhook_delivery_duration_seconds_count", &[]));
    assert_eq!(
        after.sum("omnigate_spend_microdollars_total", &[("provider", p)]),
        500_000.0
    );
}

async fn task_gauges_follow_the_store_and_drop_to_zero_when_tasks_finish(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Modellix).await;
    // Long enough in flight to be seen by a few gauge refreshes.
    sim.set_script(succeeds_after(1, 40));
    let provider = unique_provider();
    let mut cfg = config(
        &db,
        vec![(provider.clone(), sim.provider_config(BOTH, 0.1))],
    );
    cfg.metrics.store_gauges_interval_secs = 0.2;
    let app = TestApp::start(cfg).await;
    let p = provider.as_str();
    let none = scrape_until(&app, "a zero task gauge", |s| {
        s.has("omnigate_tasks", &[("provider", p)])
    })
    .await;
    assert_eq!(none.sum("omnigate_tasks", &[("provider", p)]), 0.0);
    assert_eq!(
        none.sum(
            "omnigate_oldest_unfinished_task_age_seconds",
            &[("provider", p)]
        ),
        0.0
    );
    assert!(none.has("omnigate_poll_lag_seconds", &[]));

    let task = app.create(&body()).await;
    let id = task["id"].as_str().unwrap();
    let busy = scrape_until(&app, "the task in flight", |s| {
        s.sum(
            "omnigate_tasks",
            &[("provider", p), ("status", "in_progress")],
        ) == 1.0
    })
    .await;
    assert_eq!(
        busy.sum("omnigate_tasks", &[("provider", p)]),
        1.0,
        "one task, one status"
    );
    let aged = scrape_until(&app, "the task's age", |s| {
        s.sum(
            "omnigate_oldest_unfinished_task_age_seconds",
            &[("provider", p)],
        ) > 0.0
    })
    .await;
    assert!(
        aged.sum(
            "omnigate_oldest_unfinished_task_age_seconds",
            &[("provider", p)]
        ) < 60.0
    );

    app.wait_terminal(id, Duration::from_secs(30)).await;
    scrape_until(&app, "the gauge back at zero", |s| {
        s.sum("omnigate_tasks", &[("provider", p)]) == 0.0
            && s.sum(
                "omnigate_oldest_unfinished_task_age_seconds",
                &[("provider", p)],
            ) == 0.0
    })
    .await;
}

async fn limit_refusals_are_counted_by_kind(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(
        &db,
        vec![(unique_provider(), sim.provider_config(BOTH, 0.1))],
    )
    .await;
    let one_per_minute = KeyChange {
        rpm: Some(Some(1)),
        burst: Some(Some(1)),
        ..KeyChange::default()
    };
    let limited = app
        .gateway()
        .store
        .issue_key("limited", &one_per_minute)
        .await
        .unwrap();
    let before = Scrape::take(&app).await;
    let (first, _) = app
        .post_as(&limited.key, "/v1/video/generations", &body())
        .await;
    assert_eq!(first, StatusCode::ACCEPTED);
    let (second, refusal) = app
        .post_as(&limited.key, "/v1/video/generations", &body())
        .await;
    assert_eq!(second, StatusCode::TOO_MANY_REQUESTS, "{refusal}");
    let after = Scrape::take(&app).await;
    let kind = [("kind", "rate")];
    assert!(
        after.sum("omnigate_limit_refusals_total", &kind)
            - before.sum("omnigate_limit_refusals_total", &kind)
            >= 1.0
    );
}

async fn the_request_id_is_returned_and_sent_to_the_provider(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Anyfast).await;
    let app = TestApp::spawn(
        &db,
        vec![(unique_provider(), sim.provider_config(BOTH, 0.1))],
    )
    .await;
    let create = |id: Option<&str>| {
        let mut req = app
            .client
            .post(format!("{}/v1/video/generations", app.base))
            .bearer_auth(&app.key)
            .json(&body());
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };

    // The client's own id: answered back, and on the provider's submit.
    let mine = format!("client-{}", uuid::Uuid::new_v4());
    let resp = create(Some(&mine)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-request-id"], mine.as_str());
    assert_eq!(sim.submit_request_ids().last(), Some(&Some(mine.clone())));

    // None given: one is made (a uuid), answered, and sent upstream.
    let resp = create(None).await.unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    assert_eq!(sim.submit_request_ids().last(), Some(&Some(made.clone())));

    // An id that is not sane (too long, or with spaces) is replaced, not echoed.
    for bad in ["x".repeat(300), "two words".to_string()] {
        let resp = create(Some(&bad)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let given = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(
            uuid::Uuid::parse_str(&given).is_ok(),
            "{bad:?} answered as {given}"
        );
        assert_eq!(sim.submit_request_ids().last(), Some(&Some(given)));
    }

    // Every answer carries one, errors included.
    let resp = app
        .client
        .get(format!("{}/no/such/path", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(sim.submit_request_ids().len(), 4, "one submit per create");
}

async fn readyz_answers_200_when_ready_and_503_when_a_migration_is_missing(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let app = TestApp::spawn(
        &db,
        vec![(unique_provider(), sim.provider_config(BOTH, 0.1))],
    )
    .await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["checks"],
        json!({"store": "ok", "migrations": "ok", "redis": "not_configured"})
    );

    // As if the schema were older than this binary: the newest migration not applied.
    let pool = app.gateway().store.pool().clone();
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "DELETE FROM _sqlx_migrations WHERE version = {newest}"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let (status, err) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "not_ready");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("migrations not applied") && message.contains(&newest.to_string()),
        "{message}"
    );
    // The process itself is fine: /healthz says so.
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_once_the_database_turns_connections_away() {
    let db = TestDb::new(Db::Postgres).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let mut cfg = config(
        &db,
        vec![(unique_provider(), sim.provider_config(BOTH, 0.1))],
    );
    cfg.database.acquire_timeout_secs = 1.0;
    let app = TestApp::start(cfg).await;
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);

    // The database refuses new connections and its sessions are ended: the pool's
    // connections die and no new one can be made. (Not DROP DATABASE: its checkpoint can
    // take a minute on a busy test machine.)
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL).await.unwrap();
    for sql in [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    let started = Instant::now();
    let resp = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_ready", "{err}");
    assert_eq!(err["error"]["type"], "api_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a probe answers quickly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_checks_redis_when_the_limits_use_it() {
    let db = TestDb::new(Db::Sqlite).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let providers = vec![(unique_provider(), sim.provider_config(BOTH, 0.1))];

    let mut cfg = config(&db, providers.clone());
    cfg.limits.redis_url = Some("redis://127.0.0.1:6379".into());
    let app = TestApp::start(cfg).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"]["redis"], "ok");
    drop(app);

    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(&db, providers);
    cfg.limits.redis_url = Some(format!("redis://127.0.0.1:{closed}"));
    let app = TestApp::start(cfg).await;
    let (status, err) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "not_ready");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("Redis"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_the_admin_token_or_be_turned_off() {
    let db = TestDb::new(Db::Sqlite).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let providers = vec![(unique_provider(), sim.provider_config(BOTH, 0.1))];
    let mut cfg = config(&db, providers.clone());
    cfg.admin.token = Some(Secret::new("metrics-admin-secret-0123456789abcdef"));
    cfg.metrics.require_admin_token = true;
    let app = TestApp::start(cfg).await;
    let scrape = |token: Option<&str>| {
        let mut req = app.client.get(format!("{}/metrics", app.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(
        scrape(None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        scrape(Some("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = scrape(Some("metrics-admin-secret-0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok
        .text()
        .await
        .unwrap()
        .contains("omnigate_http_requests_total"));
    drop(app);

    let mut cfg = config(&db, providers);
    cfg.metrics.enabled = false;
    let app = TestApp::start(cfg).await;
    assert_eq!(app.get("/metrics").await.0, StatusCode::NOT_FOUND);
}

/// The real binary with `[log] format = "json"` from the environment: its log lines are
/// JSON objects, and those written while serving a request carry its id in their spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_on_the_lines_of_its_request() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("OMNIGATE_LOG__FORMAT", "json")
        // tower_http at debug: a line when each request starts and ends, inside its span.
        .env("OMNIGATE_LOG__FILTER", "info,tower_http=debug")
        .env("OMNIGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env(
            "OMNIGATE_DATABASE__URL",
            format!("sqlite://{}/o.db", dir.path().display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    // Stopped however the test ends, so a failed assertion leaves no gateway running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = KillOnDrop(child);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let next = |within: Duration| {
        let line = lines_rx.recv_timeout(within).expect("a log line");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let addr = loop {
        let line = next(WAIT);
        if line["fields"]["message"] == "omnigate listening" {
            break line["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    let id = format!("json-{}", uuid::Uuid::new_v4().simple());
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/readyz"))
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut ours = Vec::new();
    while ours.len() < 2 {
        let line = next(WAIT);
        let spans = line["spans"].as_array().cloned().unwrap_or_default();
        if let Some(request) = spans.iter().find(|s| s["name"] == "http_request") {
            assert_eq!(request["request_id"], id.as_str(), "{line}");
            assert_eq!(request["route"], "/readyz", "{line}");
            ours.push(
                line["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    assert!(
        ours.iter()
            .any(|m| m.contains("started processing request")),
        "{ours:?}"
    );
    assert!(
        ours.iter()
            .any(|m| m.contains("finished processing request")),
        "{ours:?}"
    );
}

/// The real binary with JSON logs (debug for omnigate and the request lines) and a
/// provider that calls back: after a real upstream callback, no log line holds the
/// callback token, and the callback's request span names its route template and task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_callbacks_token_reaches_no_log_line() {
    use support::drill::{free_port, GatewayProcess};
    let db = TestDb::new(Db::Sqlite).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    sim.set_script(Script {
        queued_polls: 1_000,
        ..Script::default()
    });
    let mut cfg = config(&db, vec![("kk".into(), sim.provider_config(BOTH, 0.1))]);
    let port = free_port();
    cfg.server.listen = ([127, 0, 0, 1], port).into();
    cfg.webhooks.public_base_url = Some(format!("http://127.0.0.1:{port}"));
    cfg.log.format = omnigate::telemetry::LogFormat::Json;
    cfg.log.filter = "info,omnigate=debug,tower_http=debug".into();
    let store = omnigate::store::Store::connect(&db.url, 1).await.unwrap();
    let key = store
        .issue_key("logs", &KeyChange::default())
        .await
        .unwrap();
    let gateway = GatewayProcess::start(cfg).await;

    let resp = reqwest::Client::new()
        .post(format!("{}/v1/video/generations", gateway.base))
        .bearer_auth(&key.key)
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let task_id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = sim.created_bodies()[0]["callback_url"]
        .as_str()
        .expect("a callback_url")
        .to_string();
    let token = url.rsplit('/').next().unwrap().to_string();
    let upstream: String = sqlx::query_scalar("SELECT provider_task_id FROM tasks WHERE id = $1")
        .bind(&task_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sim.finish_now(&upstream).await, Some(200), "callback taken");

    // The callback's span is written when it closes, shortly after its answer.
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = gateway.log();
        if log.contains("/upstream/callbacks/{token}") && log.contains(&task_id) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no callback log line:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!log.contains(&token), "the token is in the log:\n{log}");
    let named = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|l| {
            l["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["name"] == "http_request"
                        && s["route"] == "/upstream/callbacks/{token}"
                        && s["task_id"] == task_id.as_str()
                })
            })
        });
    assert!(
        named,
        "a line of the callback's request names its route and task:\n{log}"
    );
}

#[test]
fn metrics_config_is_checked_at_start() {
    let toml = "[metrics]\nrequire_admin_token = true\n";
    let err = omnigate::config::Config::from_toml_str(toml, |_| None).unwrap_err();
    assert!(
        err.to_string().contains("metrics.require_admin_token"),
        "{err}"
    );
    let err =
        omnigate::config::Config::from_toml_str("[log]\nformat = \"xml\"\n", |_| None).unwrap_err();
    assert!(err.to_string().contains("format"), "{err}");
    let cfg = omnigate::config::Config::from_toml_str(
        "[log]\nformat = \"json\"\n[otel]\nenabled = true\nendpoint = \"http://collector:4318\"\n",
        |_| None,
    )
    .unwrap();
    assert_eq!(cfg.otel.traces_url(), "http://collector:4318/v1/traces");
}

on_both_stores!(
    metrics_move_with_requests_provider_calls_deliveries_and_spend,
    task_gauges_follow_the_store_and_drop_to_zero_when_tasks_finish,
    limit_refusals_are_counted_by_kind,
    the_request_id_is_returned_and_sent_to_the_provider,
    readyz_answers_200_when_ready_and_503_when_a_migration_is_missing,
);
