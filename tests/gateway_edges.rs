//! The rest of the core path: every validation rule over HTTP, the zero-config sandbox,
//! the key CLI, and leases that keep two gateways off the same task.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use omnigate::config::{Config, SandboxMode};
use omnigate::domain::{Model, VideoRequest};
use omnigate::store::{ClaimKind, NewTask, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{Db, TestApp, TestDb};
use support::sim::{Sim, SimDialect};

/// One case per documented rule: (what, body, param the error must name).
fn rule_cases() -> Vec<(&'static str, Value, &'static str)> {
    let long = "x".repeat(2501);
    let img = |t: &str| json!({"image_url": "https://example.com/a.png", "type": t});
    let plain_img = json!({"image_url": "https://example.com/a.png"});
    let base = json!({"video_url": "https://example.com/v.mp4", "refer_type": "base"});
    let feature = json!({"video_url": "https://example.com/v.mp4", "refer_type": "feature"});
    vec![
        (
            "prompt required",
            json!({"model": "kling-v3-omni", "aspect_ratio": "16:9"}),
            "prompt",
        ),
        (
            "prompt at most 2500",
            json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "prompt": long}),
            "prompt",
        ),
        (
            "model required",
            json!({"prompt": "p", "aspect_ratio": "16:9"}),
            "model",
        ),
        (
            "unknown model",
            json!({"model": "kling-v2", "prompt": "p", "aspect_ratio": "16:9"}),
            "model",
        ),
        (
            "unknown field",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "fps": 30}),
            "fps",
        ),
        (
            "duration not a number",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "duration": "five"}),
            "duration",
        ),
        (
            "o1 at most 10",
            json!({"model": "kling-video-o1", "prompt": "p", "aspect_ratio": "16:9", "duration": 12}),
            "duration",
        ),
        (
            "v3 at most 15",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "duration": 16}),
            "duration",
        ),
        (
            "at least 3",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "duration": 2}),
            "duration",
        ),
        (
            "o1 text-to-video only 5 or 10",
            json!({"model": "kling-video-o1", "prompt": "p", "aspect_ratio": "16:9", "duration": 7}),
            "duration",
        ),
        (
            "o1 image-to-video only 5 or 10",
            json!({"model": "kling-video-o1", "prompt": "p", "duration": 4, "image_list": [img("first_frame")]}),
            "duration",
        ),
        (
            "v3 with a video at most 10",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "duration": 12, "video_list": [feature]}),
            "duration",
        ),
        (
            "no duration for a base edit",
            json!({"model": "kling-v3-omni", "prompt": "p", "duration": 5, "video_list": [base]}),
            "duration",
        ),
        (
            "shot_type needs multi_shot",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "shot_type": "customize"}),
            "shot_type",
        ),
        (
            "multi_shot needs shot_type",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "multi_shot": true}),
            "shot_type",
        ),
        (
            "customize needs multi_prompt",
            json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "multi_shot": true, "shot_type": "customize"}),
            "multi_prompt",
        ),
        (
            "at most 6 shots",
            json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "multi_shot": true, "shot_type": "customize", "duration": 14,
            "multi_prompt": (1..=7).map(|i| json!({"index": i, "prompt": "s", "duration": 2})).collect::<Vec<_>>()}),
            "multi_prompt",
        ),
        (
            "shot prompt at most 512",
            json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "multi_shot": true, "shot_type": "customize", "duration": 5,
            "multi_prompt": [{"index": 1, "prompt": "y".repeat(513), "duration": 5}]}),
            "multi_prompt[0].prompt",
        ),
        (
            "shot durations sum to duration",
            json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "multi_shot": true, "shot_type": "customize", "duration": 10,
            "multi_prompt": [{"index": 1, "prompt": "a", "duration": 3}, {"index": 2, "prompt": "b", "duration": 3}]}),
            "multi_prompt",
        ),
        (
            "sound off with a video",
            json!({"model": "kling-v3-omni", "prompt": "p", "sound": "on", "video_list": [base]}),
            "sound",
        ),
        (
            "at most one video",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "video_list": [feature, feature]}),
            "video_list",
        ),
        (
            "end frame needs first frame",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "image_list": [img("end_frame")]}),
            "image_list[0].type",
        ),
        (
            "at most 4 references with a video",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "video_list": [feature],
            "image_list": [plain_img.clone(), plain_img.clone(), plain_img.clone(), plain_img.clone(), plain_img.clone()]}),
            "image_list",
        ),
        (
            "at most 7 references without",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9",
            "image_list": vec![plain_img.clone(); 8]}),
            "image_list",
        ),
        (
            "aspect_ratio required without first frame or base video",
            json!({"model": "kling-v3-omni", "prompt": "p"}),
            "aspect_ratio",
        ),
        (
            "callback_url must be https",
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "callback_url": "ftp://x"}),
            "callback_url",
        ),
    ]
}

async fn every_rule_is_a_400_naming_the_field_before_any_provider_call(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let app = TestApp::spawn(
        &db,
        vec![(
            "up".into(),
            sim.provider_config(&[Model::KlingVideoO1, Model::KlingV3Omni], 0.1),
        )],
    )
    .await;
    for (what, body, param) in rule_cases() {
        let (status, err) = app.post("/v1/video/generations", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {err}");
        assert_eq!(err["error"]["param"], param, "{what}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, err) = app
        .post("/v1/video/generations", &json!("not an object"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let resp = app
        .client
        .post(format!("{}/v1/video/generations", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.submit_count(), 0, "nothing reached the provider");
}
on_both_stores!(every_rule_is_a_400_naming_the_field_before_any_provider_call);

/// A quote answers what a create would: each body a create refuses, a quote refuses with
/// the same status and field, including the callback URLs only the gateway's config
/// refuses (plain http, an internal address).
async fn a_quote_refuses_exactly_what_a_create_refuses(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let app = TestApp::spawn(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    )
    .await;
    let with_callback = |url: &str| json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "16:9", "callback_url": url});
    let mut cases = rule_cases();
    cases.push((
        "plain http callback",
        with_callback("http://example.com/h"),
        "callback_url",
    ));
    cases.push((
        "private callback",
        with_callback("https://10.0.0.5/h"),
        "callback_url",
    ));
    for (what, body, param) in cases {
        let (quoted, quote) = app.post("/v1/video/quotes", &body).await;
        let (created, create) = app.post("/v1/video/generations", &body).await;
        assert_eq!(quoted, StatusCode::BAD_REQUEST, "{what}: quote {quote}");
        assert_eq!(created, StatusCode::BAD_REQUEST, "{what}: create {create}");
        assert_eq!(quote["error"]["param"], param, "{what}: {quote}");
        assert_eq!(quote["error"], create["error"], "{what}");
    }
    let fine = with_callback("https://hooks.example.com/h");
    assert_eq!(app.post("/v1/video/quotes", &fine).await.0, StatusCode::OK);
    assert_eq!(
        app.post("/v1/video/generations", &fine).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        sim.submit_count(),
        1,
        "only the valid create reached the provider"
    );
}
on_both_stores!(a_quote_refuses_exactly_what_a_create_refuses);

async fn the_zero_config_sandbox_runs_a_task_to_completion(kind: Db) {
    let db = TestDb::new(kind).await;
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.database.url = db.url.clone();
    cfg.poller.tick_ms = 50;
    cfg.sandbox.task_seconds = 1.0;
    assert_eq!(cfg.sandbox.enabled, SandboxMode::Auto);
    if kind == Db::Postgres {
        // `auto` runs the sandbox on SQLite only; PostgreSQL needs it asked for.
        cfg.sandbox.enabled = SandboxMode::Always;
    }
    let app = TestApp::start(cfg).await;
    let task = app.create(&json!({"model": "kling-video-o1", "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})).await;
    assert_eq!(task["sandbox"], true);
    assert_eq!(
        task["provider"], "sandbox-modellix",
        "the cheapest sandbox dialect wins"
    );
    let done = app
        .wait_terminal(task["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    // The sandbox serves its result itself: a real, playable clip.
    let url = done["result"]["videos"][0]["url"].as_str().unwrap();
    let clip = reqwest::get(url).await.unwrap();
    assert_eq!(clip.headers()["content-type"], "video/webm");
    let bytes = clip.bytes().await.unwrap();
    assert!(
        bytes.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]),
        "a WebM (EBML) file"
    );
    // The first start made a bootstrap key; the harness made the second.
    assert_eq!(app.gateway().store.count_api_keys().await.unwrap(), 2);
}
on_both_stores!(the_zero_config_sandbox_runs_a_task_to_completion);

#[tokio::test]
async fn keys_create_prints_a_key_once_and_stores_only_its_hash() {
    let db = TestDb::new(Db::Sqlite).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args(["keys", "create", "--name", "team-a"])
        .env("OMNIGATE_DATABASE__URL", &db.url)
        .env_remove("OMNIGATE_CONFIG")
        .output()
        .expect("run omnigate keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("og_") && key.len() > 20, "{key}");
    let store = Store::connect(&db.url, 1).await.unwrap();
    assert_eq!(
        store.authenticate(&key).await.unwrap().unwrap().name,
        "team-a"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(!stored.contains(&key));
    assert!(store.authenticate("og_wrong").await.unwrap().is_none());
}

/// The container health check: `omnigate healthcheck` exits 0 against a running gateway
/// and 1 once nothing answers at the address.
#[tokio::test]
async fn the_healthcheck_command_tells_a_live_gateway_from_a_gone_one() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = support::app::config(&db, Vec::new());
    cfg.sandbox.enabled = SandboxMode::Always;
    let mut app = TestApp::start(cfg).await;
    let addr = app.app.as_ref().unwrap().addr;
    let check = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
            .arg("healthcheck")
            .env("OMNIGATE_SERVER__LISTEN", addr.to_string())
            .env_remove("OMNIGATE_CONFIG")
            .output()
            .expect("run omnigate healthcheck")
    };
    let live = tokio::task::spawn_blocking(check).await.unwrap();
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    app.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gone = tokio::task::spawn_blocking(check).await.unwrap();
    assert!(!gone.status.success(), "a stopped gateway passed the check");
}

/// With `[admin] token_env` set but its variable unset, the commands that never use the
/// token run; `serve`, which answers `/admin/*` with it, refuses to start, naming the key.
#[tokio::test]
async fn only_commands_that_use_the_admin_token_need_its_variable() {
    const VAR: &str = "OMNIGATE_TEST_ADMIN_TOKEN_NEVER_SET";
    let db = TestDb::new(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.toml");
    std::fs::write(&path, format!("[admin]\ntoken_env = \"{VAR}\"\n")).unwrap();
    let omnigate = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"));
        cmd.arg("--config")
            .arg(&path)
            .args(args)
            .env("OMNIGATE_DATABASE__URL", &db.url)
            .env_remove(VAR);
        cmd
    };
    let run = |args: &[&str]| {
        let out = omnigate(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            err,
        )
    };
    let (ok, _, err) = run(&["keys", "create", "--name", "no-admin-here"]);
    assert!(ok, "keys create: {err}");
    let (ok, listed, err) = run(&["keys", "list"]);
    assert!(ok, "keys list: {err}");
    assert!(listed.contains("no-admin-here"), "{listed}");

    let mut cfg = support::app::config(&db, Vec::new());
    cfg.sandbox.enabled = SandboxMode::Always;
    let app = TestApp::start(cfg).await;
    let addr = app.app.as_ref().unwrap().addr.to_string();
    let mut check = omnigate(&["healthcheck"]);
    check.env("OMNIGATE_SERVER__LISTEN", &addr);
    // Off the runtime: the gateway answering it runs on this test's runtime.
    let check = tokio::task::spawn_blocking(move || check.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        check.status.success(),
        "healthcheck: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Port 0: if serve wrongly started, it is stopped below instead of holding a port.
    let mut serve = omnigate(&["serve"])
        .env("OMNIGATE_SERVER__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            serve.kill().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(serve.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "serve started: {err}");
    assert!(
        err.contains("admin.token_env") && err.contains(VAR),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nport = 9\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "keys",
            "create",
            "--name",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port"), "{err}");
}

/// An unknown key is named as it was written: its TOML path from a file, the variable's
/// name from the environment.
#[tokio::test]
async fn an_unknown_config_key_is_named_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[server]\nlistn = \"127.0.0.1:0\"\n").unwrap();
    let refusal = |cmd: &mut std::process::Command| {
        let out = cmd.args(["keys", "list"]).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let bin = env!("CARGO_BIN_EXE_omnigate");
    let err = refusal(std::process::Command::new(bin).arg("--config").arg(&path));
    assert!(err.contains("server.listn: unknown key"), "{err}");
    assert!(!err.contains("default."), "{err}");
    assert!(err.contains("expected one of listen,"), "{err}");
    let err = refusal(
        std::process::Command::new(bin)
            .env_remove("OMNIGATE_CONFIG")
            .env("OMNIGATE_SERVER__LISTN", "127.0.0.1:0"),
    );
    assert!(err.contains("OMNIGATE_SERVER__LISTN: unknown key"), "{err}");
}

/// Two gateways on one database claim due tasks at the same moment: every task goes to
/// exactly one of them.
async fn concurrent_claims_never_share_a_task(db: Db) {
    let db = TestDb::new(db).await;
    let a = Store::connect(&db.url, 4).await.unwrap();
    let b = Store::connect(&db.url, 4).await.unwrap();
    let key = a.create_api_key("k").await.unwrap();
    let req: VideoRequest = serde_json::from_value(
        json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1"}),
    )
    .unwrap();
    let mut ids = HashSet::new();
    for i in 0..60 {
        let id = format!("vgt_claim{i:03}");
        a.insert_task(
            &NewTask {
                id: id.clone(),
                api_key_id: key.id.clone(),
                request: req.clone(),
                provider: "up".into(),
                sandbox: false,
                cost_estimated_usd: Some(0.5),
                routing_reason: "test".into(),
                lease_owner: "nobody".into(),
                lease_until: 0,
                holds: Default::default(),
                billed_seconds: Some(5),
                upstream_callback_token: None,
            },
            None,
        )
        .await
        .unwrap();
        let upstream_id = format!("up-{i}");
        let accepted = omnigate::store::Acceptance {
            upstream_id: &upstream_id,
            state: omnigate::store::TaskState::Queued,
            first_poll_at: 0,
            attempt: None,
            slim_request: None,
            callback_given: false,
            timing_key: None,
            eta_at: None,
        };
        a.mark_accepted(&id, "nobody", &accepted).await.unwrap();
        ids.insert(id);
    }
    let far = omnigate::store::now_ms() + 60_000;
    let claim = |s: Store, who: &'static str| async move {
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(
                s.claim_due(ClaimKind::Poll, who, far, 7)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| t.id),
            );
        }
        got
    };
    let (ga, gb) = tokio::join!(
        tokio::spawn(claim(a.clone(), "a")),
        tokio::spawn(claim(b.clone(), "b"))
    );
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    let all: Vec<&String> = ga.iter().chain(gb.iter()).collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a task was claimed twice");
    assert_eq!(unique.len(), ids.len(), "every due task was claimed");
}
on_both_stores!(concurrent_claims_never_share_a_task);

#[tokio::test]
async fn wrong_methods_and_oversized_bodies_get_json_errors() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = support::app::config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.server.max_body_bytes = 1024;
    let app = TestApp::start(cfg).await;
    let resp = app
        .client
        .delete(format!("{}/v1/video/generations", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
    let big = json!({"model": "kling-v3-omni", "prompt": "x".repeat(4096), "aspect_ratio": "16:9"});
    let (status, err) = app.post("/v1/video/generations", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["error"]["code"], "body_too_large");
    let (status, err) = app.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["type"], "invalid_request_error");
}
