//! What one client (or a flood of them), a database outage, a panicking worker or a
//! deploy can take from the gateway, and what it cannot: slow and oversized requests are
//! cut off while normal ones go on, limits shed load with 503, an outage answers 503 fast
//! and heals by itself, a shutdown finishes the submits in flight, and a bad config is a
//! start-up error naming the key.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnigate::app;
use omnigate::config::{Config, SandboxMode};
use omnigate::domain::Model;
use omnigate::store::TaskState;
use omnigate::workers;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::eventually;
use support::proxy::TcpProxy;
use support::raw;
use support::sim::{Fault, Sim, SimDialect};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const CREATE_PATH: &str = "/v1/video/generations";

fn a_request() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})
}

/// A gateway on SQLite serving the sandbox: for tests of the front end, which does not
/// care where tasks go.
async fn sandbox_app(db: &TestDb, tune: impl FnOnce(&mut Config)) -> TestApp {
    let mut cfg = config(db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    tune(&mut cfg);
    TestApp::start(cfg).await
}

async fn healthz(app: &TestApp) -> (StatusCode, Value) {
    app.get("/healthz").await
}

/// Polls `probe` until it gives something, failing after `within`.
async fn first_some<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A POST held in flight: its body promises 100 bytes and sends 1. Returns once the
/// gateway has had time to take it in, before anything else competes for the limits.
async fn hold(app: &TestApp, path: &str) -> tokio::net::TcpStream {
    let head = raw::head(
        "POST",
        path,
        &[
            format!("Authorization: Bearer {}", app.key),
            "Content-Type: application/json".into(),
            "Content-Length: 100".into(),
        ],
    );
    let held = raw::send(&app.base, &head, b"{").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off_while_others_are_served() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |c| c.server.header_read_timeout_secs = 1.0).await;
    let started = Instant::now();
    let mut slow = raw::send(&app.base, "GET /healthz HTTP/1.1\r\nHost: gateway\r\n", b"").await;
    let mut silent = raw::connect(&app.base).await;
    // The slowloris keeps sending a header byte now and then; the timeout is on the whole head.
    let trickle = async {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let normal = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        healthz(&app).await
    };
    let ((), (status, _)) = tokio::join!(trickle, normal);
    assert_eq!(
        status,
        StatusCode::OK,
        "a normal request is served meanwhile"
    );
    assert!(
        raw::closed_within(&mut slow, Duration::from_secs(3)).await,
        "the trickling client was not cut off"
    );
    assert!(
        raw::closed_within(&mut silent, Duration::from_secs(1)).await,
        "the silent connection was not closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}, not about the 1 s header timeout"
    );
    assert_eq!(healthz(&app).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_it_is_read_and_a_chunked_one_when_it_passes_the_limit()
{
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |c| c.server.max_body_bytes = 4096).await;
    // Declares 50 MB and sends none of it: the answer comes without waiting for the body.
    let head = raw::head(
        "POST",
        CREATE_PATH,
        &[
            format!("Authorization: Bearer {}", app.key),
            "Content-Type: application/json".into(),
            "Content-Length: 50000000".into(),
        ],
    );
    let mut declared = raw::send(&app.base, &head, b"").await;
    let resp = raw::read_response(&mut declared, Duration::from_secs(2))
        .await
        .expect("an answer before any body byte");
    assert_eq!(resp.status, 413, "{resp:?}");
    assert!(resp.body.contains("body_too_large"), "{resp:?}");

    // Chunked: refused once more than the limit has arrived, though the body goes on.
    let head = raw::head(
        "POST",
        CREATE_PATH,
        &[
            format!("Authorization: Bearer {}", app.key),
            "Content-Type: application/json".into(),
            "Transfer-Encoding: chunked".into(),
        ],
    );
    let mut chunked = raw::send(&app.base, &head, b"").await;
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    for _ in 0..5 {
        chunked.write_all(chunk.as_bytes()).await.unwrap();
    }
    let resp = raw::read_response(&mut chunked, Duration::from_secs(2))
        .await
        .expect("an answer while the chunked body is still open");
    assert_eq!(resp.status, 413, "{resp:?}");

    let (status, _) = app.post("/v1/video/quotes", &a_request()).await;
    assert_eq!(status, StatusCode::OK, "a normal body still goes through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_memory_budget_are_shed_and_a_stalled_body_times_out() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |c| {
        c.server.max_body_bytes = 3000;
        c.server.body_memory_budget_bytes = 4000;
        c.server.body_timeout_secs = 1.5;
    })
    .await;
    let post_head = |len: usize| {
        raw::head(
            "POST",
            "/v1/video/quotes",
            &[
                format!("Authorization: Bearer {}", app.key),
                "Content-Type: application/json".into(),
                format!("Content-Length: {len}"),
            ],
        )
    };
    // Holds 3000 bytes of the budget and stalls after 10 of them.
    let mut stalled = raw::send(&app.base, &post_head(3000), b"{\"model\": ").await;
    // Let it take its share before anything else competes for the budget.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = || async {
        let mut s = raw::send(&app.base, &post_head(2000), &[b' '; 2000]).await;
        raw::read_response(&mut s, Duration::from_secs(2)).await
    };
    let resp = first_some(
        Duration::from_secs(1),
        "a body shed for the budget",
        || async { shed().await.filter(|r| r.status == 503) },
    )
    .await;
    assert!(resp.body.contains("\"overloaded\""), "{resp:?}");
    assert!(resp.header("retry-after").is_some(), "{resp:?}");
    assert_eq!(
        healthz(&app).await.0,
        StatusCode::OK,
        "requests without a body go on"
    );

    // The stalled body runs out of time: 408, and its bytes go back to the budget.
    let resp = raw::read_response(&mut stalled, Duration::from_secs(4))
        .await
        .expect("the stalled request is answered");
    assert_eq!(resp.status, 408, "{resp:?}");
    assert!(resp.body.contains("body_timeout"), "{resp:?}");
    let resp = shed().await.expect("an answer");
    assert_eq!(
        resp.status, 400,
        "the budget is free again (a body of spaces is bad JSON): {resp:?}"
    );

    // A chunked body takes from the budget chunk by chunk, as it arrives.
    let head = raw::head(
        "POST",
        "/v1/video/quotes",
        &[
            format!("Authorization: Bearer {}", app.key),
            "Content-Type: application/json".into(),
            "Transfer-Encoding: chunked".into(),
        ],
    );
    let mut chunked = raw::send(&app.base, &head, b"").await;
    for _ in 0..3 {
        let chunk = format!("3e8\r\n{}\r\n", " ".repeat(1000));
        chunked.write_all(chunk.as_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = first_some(
        Duration::from_secs(1),
        "a body shed behind chunks",
        || async { shed().await.filter(|r| r.status == 503) },
    )
    .await;
    assert!(resp.body.contains("\"overloaded\""), "{resp:?}");
    drop(chunked);
    eventually(
        Duration::from_secs(2),
        "the chunks' bytes returned",
        || async { shed().await.is_some_and(|r| r.status == 400) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limits_shed_creates_and_requests_with_503_and_retry_after() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |c| {
        c.server.max_in_flight_requests = 3;
        c.server.max_in_flight_creates = 1;
    })
    .await;
    let _create = hold(&app, CREATE_PATH).await;
    let (retry_after, err) = first_some(Duration::from_secs(1), "a create shed", || async {
        let resp = app
            .client
            .post(format!("{}{CREATE_PATH}", app.base))
            .bearer_auth(&app.key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        let retry_after = resp.headers().get("retry-after").cloned();
        Some((retry_after, resp.json::<Value>().await.unwrap()))
    })
    .await;
    assert!(retry_after.is_some());
    assert_eq!(err["error"]["code"], "overloaded", "{err}");
    assert_eq!(err["error"]["type"], "api_error", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("creates"));
    let (status, _) = app.get(CREATE_PATH).await;
    assert_eq!(status, StatusCode::OK, "reads are not creates");

    let _quotes = (
        hold(&app, "/v1/video/quotes").await,
        hold(&app, "/v1/video/quotes").await,
    );
    eventually(Duration::from_secs(1), "a read shed", || async {
        let (status, err) = healthz(&app).await;
        status == StatusCode::SERVICE_UNAVAILABLE
            && err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("requests")
    })
    .await;
    drop(_quotes);
    eventually(Duration::from_secs(2), "requests served again", || async {
        healthz(&app).await.0 == StatusCode::OK
    })
    .await;
}

/// PostgreSQL reached through a proxy the test cuts: requests answer 503 within the
/// acquire timeout, and once it is restored they succeed without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_fast_and_heals_without_a_restart() {
    let db = TestDb::new(Db::Postgres).await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let mut cfg = config(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    cfg.database.url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    cfg.database.acquire_timeout_secs = 1.0;
    let app = TestApp::start(cfg).await;
    let task = app.create(&a_request()).await;
    let path = format!("{CREATE_PATH}/{}", task["id"].as_str().unwrap());
    assert_eq!(app.get(&path).await.0, StatusCode::OK);

    proxy.cut();
    for what in ["read", "list", "create"] {
        let started = Instant::now();
        let resp = match what {
            "read" => app.client.get(format!("{}{path}", app.base)),
            "list" => app.client.get(format!("{}{CREATE_PATH}", app.base)),
            _ => app
                .client
                .post(format!("{}{CREATE_PATH}", app.base))
                .json(&a_request()),
        }
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert!(resp.headers().get("retry-after").is_some(), "{what}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "store_unavailable", "{what}: {err}");
        assert_eq!(err["error"]["type"], "api_error", "{what}: {err}");
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
    }

    proxy.restore();
    eventually(Duration::from_secs(5), "reads served again", || async {
        app.get(&path).await.0 == StatusCode::OK
    })
    .await;
    let again = app.create(&a_request()).await;
    assert_eq!(again["status"], "queued", "{again}");
}

/// Another client holds the database's write lock: a create waits at most the statement
/// timeout (PostgreSQL `statement_timeout`, SQLite `busy_timeout`), answers 503, and goes
/// through once the lock is released.
async fn a_locked_database_answers_503_after_the_statement_timeout(kind: Db) {
    use sqlx::Connection;
    let db = TestDb::new(kind).await;
    let app = sandbox_app(&db, |c| c.database.statement_timeout_secs = 0.5).await;
    let mut locker = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let lock = match kind {
        Db::Postgres => "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE",
        Db::Sqlite => "BEGIN IMMEDIATE",
    };
    sqlx::raw_sql(lock).execute(&mut locker).await.unwrap();
    let started = Instant::now();
    let (status, err) = app.post(CREATE_PATH, &a_request()).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "store_unavailable", "{err}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    app.create(&a_request()).await;
}
on_both_stores!(a_locked_database_answers_503_after_the_statement_timeout);

/// A shutdown that starts while a create waits on a slow provider lets the submit finish:
/// the client gets its 202, the task is recorded as accepted, and the provider saw one
/// create. (This holds whether the submit runs on `gw.submits` or inside the request.)
async fn shutdown_during_a_slow_submit_finishes_it(kind: Db) {
    let db = TestDb::new(kind).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let mut app = TestApp::spawn(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    )
    .await;
    sim.push_submit_fault(Fault::Slow(Duration::from_millis(1200)));
    let (client, url, key) = (
        app.client.clone(),
        format!("{}{CREATE_PATH}", app.base),
        app.key.clone(),
    );
    let create = tokio::spawn(async move {
        let resp = client
            .post(url)
            .bearer_auth(key)
            .json(&a_request())
            .send()
            .await
            .expect("the create is answered, not cut");
        (resp.status(), resp.json::<Value>().await.unwrap())
    });
    eventually(
        Duration::from_secs(2),
        "the submit reaching the provider",
        || async { sim.submit_count() == 1 },
    )
    .await;
    let running = app.app.take().unwrap();
    let gw = running.gateway.clone();
    let started = Instant::now();
    running.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let (status, task) = create.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let record = gw
        .store
        .task(task["id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the task is recorded");
    assert_eq!(record.state, TaskState::Queued, "accepted upstream");
    assert!(record.provider_task_id.is_some());
    assert_eq!(sim.submit_count(), 1);
    assert_eq!(sim.created_count(), 1);
}
on_both_stores!(shutdown_during_a_slow_submit_finishes_it);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_draining_creates_answer_503_shutting_down_and_reads_go_on() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |_| {}).await;
    let task = app.create(&a_request()).await;
    // The first thing a graceful shutdown does.
    app.gateway().draining.cancel();
    let resp = app
        .client
        .post(format!("{}{CREATE_PATH}", app.base))
        .bearer_auth(&app.key)
        .json(&a_request())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "shutting_down", "{err}");
    let path = format!("{CREATE_PATH}/{}", task["id"].as_str().unwrap());
    assert_eq!(app.get(&path).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_step_restarts_its_loop_and_is_counted() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |_| {}).await;
    let gw = app.app.as_ref().unwrap().gateway.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let stop = CancellationToken::new();
    let worker = workers::spawn_loop(
        "flaky",
        Duration::from_millis(20),
        stop.clone(),
        gw,
        move |_gw| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("step {n} blew up");
                }
                Ok(0)
            }
        },
    );
    eventually(Duration::from_secs(2), "steps after the panics", || async {
        calls.load(Ordering::SeqCst) >= 5
    })
    .await;
    assert!(!worker.is_finished(), "the loop is alive");
    let (status, body) = healthz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let flaky = body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "flaky")
        .cloned()
        .expect("the worker is listed");
    assert_eq!(flaky["panics"], 2, "{flaky}");
    assert!(flaky["steps"].as_u64().unwrap() >= 3, "{flaky}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), worker)
        .await
        .expect("stops between steps")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_a_worker_that_is_stuck_or_panics_every_step() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |c| c.workers.stall_secs = 1.0).await;
    let gw = app.app.as_ref().unwrap().gateway.clone();
    let stop = CancellationToken::new();
    let tick = Duration::from_millis(20);
    workers::spawn_loop("wedged", tick, stop.clone(), gw.clone(), |_gw| {
        std::future::pending::<anyhow::Result<usize>>()
    });
    workers::spawn_loop("doomed", tick, stop.clone(), gw, |_gw| async {
        if true {
            panic!("always");
        }
        Ok(0)
    });
    let (status, body) = healthz(&app).await;
    assert_eq!(status, StatusCode::OK, "fine before the stall time: {body}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = healthz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("wedged") && message.contains("doomed"),
        "{message}"
    );
    assert!(
        !message.contains("poller"),
        "the real workers are fine: {message}"
    );
    stop.cancel();
}

#[tokio::test]
async fn negative_or_non_finite_durations_are_start_up_errors_naming_the_key() {
    for (key, line) in [
        (
            "poller.max_backoff_secs",
            "[poller]\nmax_backoff_secs = -1.0",
        ),
        ("health.cooldown_secs", "[health]\ncooldown_secs = -30.0"),
        (
            "server.drain_timeout_secs",
            "[server]\ndrain_timeout_secs = nan",
        ),
        (
            "server.header_read_timeout_secs",
            "[server]\nheader_read_timeout_secs = inf",
        ),
        (
            "database.acquire_timeout_secs",
            "[database]\nacquire_timeout_secs = 0.0",
        ),
        ("sandbox.task_seconds", "[sandbox]\ntask_seconds = -6.0"),
        ("workers.stall_secs", "[workers]\nstall_secs = -1.0"),
    ] {
        let err = Config::from_toml_str(line, |_| None)
            .expect_err(key)
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    let err = Config::from_toml_str("[poller]\nlease_secs = -5", |_| None)
        .expect_err("a negative integer")
        .to_string();
    assert!(err.contains("lease_secs"), "{err}");

    // A config built in code meets the same rules when the gateway starts.
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.poller.max_backoff_secs = -300.0;
    let err = app::start(cfg).await.err().expect("refused").to_string();
    assert!(err.contains("poller.max_backoff_secs"), "{err}");
}

#[tokio::test]
async fn the_drain_deadline_must_cover_a_whole_submit() {
    let sim = Sim::start(SimDialect::Kkiai).await;
    let db = TestDb::new(Db::Sqlite).await;
    let providers = vec![
        ("a".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1)),
        ("b".into(), sim.provider_config(&[Model::KlingV3Omni], 0.2)),
    ];
    let mut cfg = config(&db, providers);
    cfg.server.drain_timeout_secs = 8.0;
    let err = app::start(cfg.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("server.drain_timeout_secs") && err.contains("8.75"),
        "two providers of 2 s each, two rounds with a pause of up to 0.75 s: {err}"
    );
    cfg.server.drain_timeout_secs = 8.75;
    assert!(app::start(cfg).await.is_ok());
}

#[tokio::test]
async fn the_sandbox_runs_by_itself_only_on_sqlite_and_never_beside_real_providers() {
    let pg = "postgres://postgres@127.0.0.1:5432/unused";
    let err = Config::from_toml_str(&format!("[database]\nurl = \"{pg}\""), |_| None)
        .expect_err("auto on PostgreSQL with no provider")
        .to_string();
    assert!(
        err.contains("sandbox.enabled") && err.contains("always"),
        "{err}"
    );
    let cfg = Config::from_toml_str(
        &format!("[database]\nurl = \"{pg}\"\n[sandbox]\nenabled = \"always\""),
        |_| None,
    )
    .expect("always is the explicit way");
    assert!(cfg.sandbox_wanted());
    assert!(Config::from_toml_str("", |_| None)
        .unwrap()
        .sandbox_wanted());

    let sim = Sim::start(SimDialect::Kkiai).await;
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = config(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    cfg.sandbox.enabled = SandboxMode::Always;
    let err = app::start(cfg.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("sandbox.enabled"), "{err}");
    cfg.sandbox.enabled = SandboxMode::Auto;
    assert!(!cfg.sandbox_wanted(), "real providers: no sandbox");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_over_http() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |_| {}).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = app
            .client
            .get(format!("{}{CREATE_PATH}", app.base))
            .header("authorization", format!("{scheme} {}", app.key))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn status_history_and_attempts_use_unix_seconds_like_the_task() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = sandbox_app(&db, |_| {}).await;
    let task = app.create(&a_request()).await;
    let (_, detail) = app
        .get(&format!("{CREATE_PATH}/{}", task["id"].as_str().unwrap()))
        .await;
    let created = detail["created_at"].as_i64().unwrap();
    let times: Vec<i64> = detail["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .chain(detail["attempts"].as_array().unwrap())
        .map(|e| e["at"].as_i64().expect("an integer time"))
        .collect();
    assert!(times.len() >= 2, "{detail}");
    for at in times {
        assert!(
            (created..=created + 5).contains(&at),
            "{at} vs {created}: {detail}"
        );
    }
}
