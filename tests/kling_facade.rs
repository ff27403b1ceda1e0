//! The Kling-shaped facade (`/v1/videos/omni-video`, `/kling/v1/videos/omni-video`):
//! omnigate's own kling adapter (a second gateway whose provider is the first's facade)
//! round-trips tasks of both models, with images, elements, a base-video edit and
//! multi-shot, authenticating with a Kling JWT or the key and hearing of changes through
//! Kling-shaped callbacks; a Python client written from Kling's documented example runs
//! unchanged (`tests/kling_client.py`); every refusal in Kling's code naming the field;
//! `external_task_id` lookups, duplicates and list paging; callbacks in Kling's shape
//! verified by the stock Standard Webhooks library; keys isolated from each other. Real
//! gateways on port 0, PostgreSQL and SQLite.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use omnigate::config::{Config, Credential, ProviderConfig, Secret};
use omnigate::secrets::{issue_kling_credentials, KlingCredentials};
use omnigate::store::KeyChange;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::BOTH;
use support::python::{run_script, verify_with_python};
use support::receiver::Receiver;
use support::sim::{Fault, Sim, SimDialect, SimError};

const WAIT: Duration = Duration::from_secs(30);
const CREATE: &str = "/v1/videos/omni-video";

/// A gateway ("A") in front of a kkiai simulator, able to issue Kling credentials, its
/// webhooks allowed to reach 127.0.0.1 (the receivers and the second gateway).
async fn front(db: &TestDb) -> (TestApp, Sim) {
    let sim = Sim::start(SimDialect::Kkiai).await;
    (TestApp::start(front_config(db, &sim)).await, sim)
}

fn front_config(db: &TestDb, sim: &Sim) -> Config {
    let mut cfg = config(db, vec![("kkiai".into(), sim.provider_config(BOTH, 0.1))]);
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    cfg.server.secrets_key = Some(Secret::new(key));
    cfg.webhooks.allow_private_targets = true;
    cfg.webhooks.tick_ms = 50;
    cfg.webhooks.request_timeout_secs = 2.0;
    cfg.webhooks.lease_secs = 5;
    cfg
}

/// The id of the harness's key.
async fn key_id(app: &TestApp, secret: &str) -> String {
    let key = app.gateway().store.authenticate(secret).await.unwrap();
    key.expect("the key authenticates").id
}

async fn credentials(app: &TestApp, secret: &str) -> KlingCredentials {
    let id = key_id(app, secret).await;
    let gw = app.gateway();
    issue_kling_credentials(&gw.store, &gw.config.server, &id)
        .await
        .unwrap()
}

/// A JWT as Kling's documentation signs one, with the claims and algorithm given.
fn jwt(alg: Algorithm, claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn kling_jwt(c: &KlingCredentials) -> String {
    let claims = json!({"iss": c.access_key, "exp": now() + 1800, "nbf": now() - 5});
    jwt(Algorithm::HS256, claims, &c.secret_key)
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

async fn post(app: &TestApp, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let (s, b, _) = call(app, reqwest::Method::POST, path, Some(token), Some(body)).await;
    (s, b)
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let (s, b, _) = call(app, reqwest::Method::GET, path, Some(token), None).await;
    (s, b)
}

fn text_to_video(external: &str) -> Value {
    json!({
        "model_name": "kling-v3-omni",
        "prompt": "a lighthouse at dusk",
        "mode": "std",
        "aspect_ratio": "16:9",
        "duration": "5",
        "external_task_id": external,
    })
}

/// Reads the task through the facade until it succeeds or fails.
async fn wait_kling(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, answer) = get(app, token, &format!("{CREATE}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["code"], 0, "{answer}");
        if matches!(
            answer["data"]["task_status"].as_str(),
            Some("succeed" | "failed")
        ) {
            return answer["data"].clone();
        }
        assert!(Instant::now() < deadline, "{id} unfinished: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A provider of the second gateway: the kling dialect at the first gateway's facade.
fn facade_provider(base: &str, prefix: &str, credential: Credential) -> ProviderConfig {
    let prices: serde_json::Map<String, Value> = BOTH
        .iter()
        .map(|m| {
            let p = 0.1;
            let flat = json!({"std": p, "std_sound": p, "std_keep_sound": p,
                              "pro": p, "pro_sound": p, "pro_keep_sound": p});
            (m.as_str().to_string(), flat)
        })
        .collect();
    let mut cfg: ProviderConfig = serde_json::from_value(json!({
        "dialect": "kling",
        "base_url": base,
        "models": BOTH,
        "prices": prices,
        // Below the test config's poll lease (3 s); A's create answers within a submit.
        "request_timeout_secs": 2.5,
        "connect_timeout_secs": 1.0,
        "poll_interval_secs": 0.05,
        "path_prefix": prefix,
    }))
    .unwrap();
    cfg.credential = credential;
    cfg
}

async fn a_second_omnigate_round_trips_through_its_kling_adapter(db: Db) {
    let db_a = TestDb::new(db).await;
    let (a, sim) = front(&db_a).await;
    let pair = credentials(&a, &a.key).await;
    let db_b = TestDb::new(db).await;
    let providers = vec![
        // Kling's own host: no prefix, a JWT from the access and secret keys.
        (
            "via_jwt".to_string(),
            facade_provider(
                &a.base,
                "",
                Credential::KlingJwt {
                    access_key: Secret::new(&pair.access_key),
                    secret_key: Secret::new(&pair.secret_key),
                },
            ),
        ),
        // A reseller: the `/kling` prefix and the key as a plain bearer token.
        (
            "via_key".to_string(),
            facade_provider(&a.base, "/kling", Credential::Bearer(Secret::new(&a.key))),
        ),
    ];
    let b_cfg = config(&db_b, providers);
    let b = TestApp::start(b_cfg.clone()).await;
    // A second process of B on the same database whose public URL is B's: its tasks give
    // A an upstream callback URL, and poll only every 60 s, so they finish in time only
    // through A's Kling-shaped callbacks to B's intake.
    let mut b2_cfg = b_cfg;
    b2_cfg.webhooks.public_base_url = Some(b.base.clone());
    let b2 = TestApp::restart_with(b2_cfg, b.key.clone()).await;
    let image = "https://img.example/first.png";
    let cases = [
        (
            "via_jwt",
            &b,
            json!({"model": "kling-v3-omni", "prompt": "a fox in the snow", "aspect_ratio": "16:9",
                   "duration": 5, "mode": "pro",
                   "image_list": [{"image_url": image, "type": "first_frame"},
                                  {"image_url": "https://img.example/style.png"}],
                   "element_list": [{"element_id": 835266081714884677u64}]}),
        ),
        (
            "via_key",
            &b,
            json!({"model": "kling-video-o1", "prompt": "<<<element_1>>> waves", "aspect_ratio": "9:16",
                   "duration": 5, "mode": "std",
                   "image_list": [{"image_url": image}],
                   "element_list": [{"element_id": 42}]}),
        ),
        (
            "via_jwt",
            &b2,
            json!({"model": "kling-v3-omni", "prompt": "make it night",
                   "video_list": [{"video_url": "https://vid.example/in.mp4", "refer_type": "base",
                                   "keep_original_sound": "yes"}]}),
        ),
        (
            "via_key",
            &b2,
            json!({"model": "kling-v3-omni", "aspect_ratio": "1:1", "duration": 6, "multi_shot": true,
                   "shot_type": "customize",
                   "multi_prompt": [{"prompt": "a door opens", "duration": 2},
                                    {"prompt": "a cat walks in", "duration": 4}]}),
        ),
    ];
    let mut a_ids = Vec::new();
    for (provider, gateway, mut body) in cases {
        body["routing"] = json!({"providers": [provider]});
        let task = gateway.create(&body).await;
        let id = task["id"].as_str().unwrap();
        let done = gateway.wait_terminal(id, WAIT).await;
        assert_eq!(done["status"], "completed", "{provider}: {done}");
        let url = done["result"]["videos"][0]["url"].as_str().unwrap();
        // B's upstream task is A's task, whose video is the simulator's.
        let b_task = gateway.gateway().store.task(id).await.unwrap().unwrap();
        let a_id = b_task.provider_task_id.clone().unwrap();
        let (status, a_task) = get(&a, &a.key, &format!("{CREATE}/{a_id}")).await;
        assert_eq!(status, StatusCode::OK, "{a_task}");
        assert_eq!(a_task["data"]["task_result"]["videos"][0]["url"], url);
        // B sent its own task id as external_task_id; A answers a query by it.
        assert_eq!(a_task["data"]["task_info"]["external_task_id"], id);
        let (_, by_external) = get(&a, &a.key, &format!("/kling{CREATE}/{id}")).await;
        assert_eq!(by_external["data"]["task_id"], a_id.as_str());
        a_ids.push(a_id);
    }
    // What A's simulator received carries what B's client asked for.
    let bodies = sim.created_bodies();
    assert_eq!(bodies.len(), 4);
    assert_eq!(bodies[0]["image_list"][0]["type"], "first_frame");
    assert_eq!(
        bodies[0]["element_list"][0]["element_id"],
        "835266081714884677"
    );
    assert_eq!(bodies[1]["model_name"], "kling-video-o1");
    assert_eq!(bodies[2]["video_list"][0]["refer_type"], "base");
    assert_eq!(bodies[2]["video_list"][0]["keep_original_sound"], "yes");
    assert_eq!(bodies[3]["multi_prompt"][1]["duration"], "4");
    assert_eq!(bodies[3]["shot_type"], "customize");
    // The last two (polled by B only every 60 s) finished through A's Kling-shaped
    // callbacks to B's intake.
    for a_id in &a_ids[2..] {
        let events = a.gateway().store.task_webhook_events(a_id).await.unwrap();
        assert!(
            events
                .iter()
                .any(|(e, _)| e.state == "delivered" && e.kind.ends_with("completed")),
            "{events:?}"
        );
    }
}

async fn a_client_written_from_kling_s_example_runs_unchanged(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = front(&db).await;
    let pair = credentials(&app, &app.key).await;
    let args = vec![
        app.base.clone(),
        pair.access_key.clone(),
        pair.secret_key.clone(),
    ];
    let report = run_script("kling_client.py", args, "PyJWT requests").await;
    assert_eq!(report["create_code"], 0, "{report}");
    assert_eq!(report["final_status"], "succeed", "{report}");
    assert!(
        report["video_url"].as_str().unwrap().ends_with(".mp4"),
        "{report}"
    );
    assert_eq!(report["by_external_id"], report["task_id"], "{report}");
    assert_eq!(report["listed"], true, "{report}");
}

/// Asserts a refusal: Kling's HTTP status and code, and `field` named in the message.
fn refused(answer: &(StatusCode, Value), status: u16, code: i64, field: &str) {
    let (s, body) = answer;
    assert_eq!(s.as_u16(), status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["data"].is_null(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(field), "{field} not named: {body}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

async fn every_refusal_answers_kling_s_code_naming_the_field(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim) = front(&db).await;
    let pair = credentials(&app, &app.key).await;
    let token = kling_jwt(&pair);
    let (s, b, h) = call(
        &app,
        reqwest::Method::POST,
        CREATE,
        None,
        Some(&text_to_video("x")),
    )
    .await;
    refused(&(s, b), 401, 1001, "Authorization");
    assert_eq!(h["www-authenticate"], "Bearer");
    refused(
        &post(&app, "og_nobody", CREATE, &text_to_video("x")).await,
        401,
        1002,
        "key",
    );
    let expired = json!({"iss": pair.access_key, "exp": now() - 120, "nbf": now() - 1800});
    let early = json!({"iss": pair.access_key, "exp": now() + 1800, "nbf": now() + 600});
    let fine = json!({"iss": pair.access_key, "exp": now() + 1800, "nbf": now() - 5});
    let stranger = json!({"iss": "ak_unknown", "exp": now() + 1800, "nbf": now() - 5});
    let no_exp = json!({"iss": pair.access_key, "nbf": now() - 5});
    for (token, code, word) in [
        (
            jwt(Algorithm::HS256, expired, &pair.secret_key),
            1004,
            "exp",
        ),
        (jwt(Algorithm::HS256, early, &pair.secret_key), 1003, "nbf"),
        (
            jwt(Algorithm::HS512, fine.clone(), &pair.secret_key),
            1002,
            "HS256",
        ),
        (
            jwt(Algorithm::HS256, fine, "not-the-secret"),
            1002,
            "signature",
        ),
        (
            jwt(Algorithm::HS256, stranger, &pair.secret_key),
            1002,
            "access key",
        ),
        (jwt(Algorithm::HS256, no_exp, &pair.secret_key), 1002, "exp"),
    ] {
        refused(&get(&app, &token, CREATE).await, 401, code, word);
    }
    // The body, field by field.
    let with = |extra: Value| {
        let mut body = text_to_video("");
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, field) in [
        (with(json!({"cfg_scale": 0.5})), "cfg_scale"),
        (with(json!({"model_name": "sora-2"})), "model_name"),
        (with(json!({"duration": "five"})), "duration"),
        (with(json!({"duration": "30"})), "duration"),
        (with(json!({"aspect_ratio": "4:3"})), "aspect_ratio"),
        (with(json!({"aspect_ratio": null})), "aspect_ratio"),
        (
            with(
                json!({"image_list": [{"image_url": "https://i.example/a.png", "type": "middle"}]}),
            ),
            "image_list[0].type",
        ),
        (
            with(
                json!({"image_list": [{"image_url": "https://i.example/a.png", "type": "end_frame"}]}),
            ),
            "image_list",
        ),
        (
            with(json!({"watermark_info": {"enabled": "yes"}})),
            "watermark_info.enabled",
        ),
        (
            with(json!({"callback_url": "ftp://hook.example/"})),
            "callback_url",
        ),
        (
            with(json!({"external_task_id": "x".repeat(300)})),
            "external_task_id",
        ),
        (
            with(
                json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a", "duration": "2"}]}),
            ),
            "multi_prompt",
        ),
    ] {
        refused(&post(&app, &token, CREATE, &body).await, 400, 1201, field);
    }
    let (s, b, _) = call(&app, reqwest::Method::POST, CREATE, Some(&token), None).await;
    refused(&(s, b), 400, 1200, "JSON");
    // A duplicate external_task_id, through either prefix.
    let (status, first) = post(&app, &token, CREATE, &text_to_video("dup-1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let again = post(
        &app,
        &app.key,
        &format!("/kling{CREATE}"),
        &text_to_video("dup-1"),
    )
    .await;
    refused(&again, 400, 1201, "external_task_id");
    // The list's bounds.
    for (query, field) in [
        ("pageNum=0", "pageNum"),
        ("pageNum=1001", "pageNum"),
        ("pageNum=abc", "pageNum"),
        ("pageSize=0", "pageSize"),
        ("pageSize=501", "pageSize"),
    ] {
        refused(
            &get(&app, &token, &format!("{CREATE}?{query}")).await,
            400,
            1201,
            field,
        );
    }
    refused(
        &get(&app, &token, &format!("{CREATE}/no-such-task")).await,
        404,
        1203,
        "no-such-task",
    );
    // The provider's content policy, and no provider at all.
    sim.push_submit_fault(Fault::Error(SimError::ContentPolicy));
    let (s, b) = post(&app, &token, CREATE, &text_to_video("refused-once")).await;
    assert_eq!((s.as_u16(), b["code"].as_i64()), (400, Some(1301)), "{b}");
    // A create the client was told failed leaves its external_task_id free.
    let (s, b) = post(&app, &token, CREATE, &text_to_video("refused-once")).await;
    assert_eq!((s, b["code"].as_i64()), (StatusCode::OK, Some(0)), "{b}");
    let (s, b) = post(
        &app,
        &token,
        CREATE,
        &json!({"model_name": "kling-v3-omni", "prompt": "x",
        "aspect_ratio": "16:9", "mode": "std", "duration": "5", "sound": "on",
        "video_list": [{"video_url": "https://v.example/a.mp4", "refer_type": "feature"}]}),
    )
    .await;
    assert_eq!((s.as_u16(), b["code"].as_i64()), (400, Some(1201)), "{b}");
    // The key's limits: rate, tasks in flight, budget.
    let store = &app.gateway().store;
    for (change, code) in [
        (
            KeyChange {
                rpm: Some(Some(1)),
                burst: Some(Some(1)),
                ..Default::default()
            },
            1302,
        ),
        (
            KeyChange {
                max_in_flight: Some(Some(1)),
                ..Default::default()
            },
            1303,
        ),
        (
            KeyChange {
                budget_usd: Some(Some(0.01)),
                ..Default::default()
            },
            1102,
        ),
    ] {
        let limited = store.issue_key("limited", &change).await.unwrap().key;
        let mut last = post(&app, &limited, CREATE, &text_to_video("")).await;
        if code != 1102 {
            assert_eq!(last.0, StatusCode::OK, "{}", last.1);
            last = post(&app, &limited, CREATE, &text_to_video("")).await;
        }
        assert_eq!(
            (last.0.as_u16(), last.1["code"].as_i64()),
            (429, Some(code)),
            "{}",
            last.1
        );
    }
}

async fn external_task_ids_are_found_unique_per_key_and_lists_page(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = front(&db).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, answer) =
            post(&app, &app.key, CREATE, &text_to_video(&format!("mine-{n}"))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["message"], "SUCCEED");
        let data = &answer["data"];
        assert!(
            matches!(
                data["task_status"].as_str(),
                Some("submitted" | "processing")
            ),
            "{data}"
        );
        assert_eq!(data["task_info"]["external_task_id"], format!("mine-{n}"));
        assert!(
            data["created_at"].as_i64().unwrap() > 1_000_000_000_000,
            "milliseconds"
        );
        ids.push(data["task_id"].as_str().unwrap().to_string());
    }
    let done = wait_kling(&app, &app.key, "mine-1").await;
    assert_eq!(done["task_id"], ids[1].as_str());
    assert_eq!(done["task_status"], "succeed");
    let video = &done["task_result"]["videos"][0];
    assert!(video["url"].as_str().unwrap().starts_with("http"), "{done}");
    assert!(
        video["duration"].as_str().unwrap().parse::<f64>().unwrap() > 0.0,
        "{done}"
    );
    // Newest first, two to a page.
    let page = |n: u32| {
        let app = &app;
        async move {
            let (status, answer) = get(
                app,
                &app.key,
                &format!("/kling{CREATE}?pageNum={n}&pageSize=2"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(1).await, vec![ids[2].clone(), ids[1].clone()]);
    assert_eq!(page(2).await, vec![ids[0].clone()]);
    assert!(page(3).await.is_empty());
    let (_, defaults) = get(&app, &app.key, CREATE).await;
    assert_eq!(defaults["data"].as_array().unwrap().len(), 3);
    assert_eq!(
        defaults["data"][0]["task_info"]["external_task_id"],
        "mine-2"
    );
    // An Idempotency-Key (without an external_task_id) replays as on the native API, and
    // the replay's own reservation is given back.
    let mut replays = Vec::new();
    for _ in 0..2 {
        let resp = app
            .client
            .post(format!("{}{CREATE}", app.base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "retry-me")
            .json(&text_to_video(""))
            .send()
            .await
            .unwrap();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let answer: Value = resp.json().await.unwrap();
        replays.push((answer["data"]["task_id"].clone(), replayed));
    }
    assert_eq!(replays[0].0, replays[1].0);
    assert_eq!((replays[0].1, replays[1].1), (false, true));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM facade_tasks")
        .fetch_one(app.gateway().store.pool())
        .await
        .unwrap();
    assert_eq!(
        rows, 4,
        "the three tasks and the replayed one: no stray reservation"
    );
    // A create that died between reserving its external_task_id and writing its task left
    // a reservation without a task: fresh, it still holds the id; a minute old, a new
    // create takes it over.
    let owner = key_id(&app, &app.key).await;
    let pool = app.gateway().store.pool();
    for (external, age_ms) in [("died-just-now", 0), ("died-long-ago", 120_000)] {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - age_ms;
        sqlx::query(
            "INSERT INTO facade_tasks (task_id, api_key_id, callback_shape, external_task_id, created_at) \
             VALUES ($1, $2, 'kling', $3, $4)",
        )
        .bind(format!("vgt_never_written_{age_ms}"))
        .bind(&owner)
        .bind(external)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }
    let (_, held) = post(&app, &app.key, CREATE, &text_to_video("died-just-now")).await;
    assert_eq!(held["code"], 1201, "{held}");
    let (_, taken) = post(&app, &app.key, CREATE, &text_to_video("died-long-ago")).await;
    assert_eq!(taken["code"], 0, "{taken}");
    let (_, found) = get(&app, &app.key, &format!("{CREATE}/died-long-ago")).await;
    assert_eq!(found["data"]["task_id"], taken["data"]["task_id"]);
}

async fn callbacks_arrive_in_kling_s_shape_signed_by_standard_webhooks(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = front(&db).await;
    let receiver = Receiver::start().await;
    let issued = app.issue_signing_key("hooks").await;
    let mut body = text_to_video("cb-1");
    body["callback_url"] = json!(receiver.url());
    let (status, answer) = post(&app, &issued.key, &format!("/kling{CREATE}"), &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let task_id = answer["data"]["task_id"].as_str().unwrap().to_string();
    let got = receiver.wait_for(2, WAIT).await;
    let statuses: Vec<String> = got
        .iter()
        .map(|r| r.json()["task_status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["processing", "succeed"]);
    for r in &got {
        let task = r.json();
        // Kling's callback body: the task object as a query answers it, flat.
        assert_eq!(task["task_id"], task_id.as_str());
        assert_eq!(task["task_info"]["external_task_id"], "cb-1");
        assert!(
            task.get("type").is_none() && task.get("code").is_none(),
            "{task}"
        );
        assert_eq!(
            verify_with_python(&issued.webhook_secret, r),
            task["task_status"].as_str().unwrap()
        );
    }
    assert!(got[1].json()["task_result"]["videos"][0]["url"].is_string());
    // The same task as a query answers it now.
    let (_, now) = get(&app, &issued.key, &format!("{CREATE}/cb-1")).await;
    assert_eq!(now["data"], got[1].json());
}

async fn another_key_s_tasks_and_external_ids_do_not_exist(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim) = front(&db).await;
    let other = app.issue_key("other").await;
    let other_pair = credentials(&app, &other).await;
    let (_, mine) = post(&app, &app.key, CREATE, &text_to_video("shared-name")).await;
    let id = mine["data"]["task_id"].as_str().unwrap();
    let jwt = kling_jwt(&other_pair);
    for path in [format!("{CREATE}/{id}"), format!("{CREATE}/shared-name")] {
        let answer = get(&app, &jwt, &path).await;
        assert_eq!(
            (answer.0, answer.1["code"].as_i64()),
            (StatusCode::NOT_FOUND, Some(1203)),
            "{}",
            answer.1
        );
    }
    let (_, listed) = get(&app, &jwt, CREATE).await;
    assert_eq!(listed["data"], json!([]));
    // The id is unique per key: the other key may use it too, for its own task.
    let (status, theirs) = post(&app, &jwt, CREATE, &text_to_video("shared-name")).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    let (_, again) = get(&app, &app.key, &format!("{CREATE}/shared-name")).await;
    assert_eq!(again["data"]["task_id"], id);
    // A new pair replaces the old one at once.
    let old = kling_jwt(&other_pair);
    credentials(&app, &other).await;
    assert_eq!(get(&app, &old, CREATE).await.1["code"], 1002);
}

async fn without_a_secrets_key_credentials_are_refused_and_the_api_key_still_works(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let mut cfg = front_config(&db, &sim);
    cfg.server.secrets_key = None;
    let admin = "b".repeat(40);
    cfg.admin.token = Some(Secret::new(&admin));
    let app = TestApp::start(cfg).await;
    let id = key_id(&app, &app.key).await;
    let gw = app.gateway();
    let err = issue_kling_credentials(&gw.store, &gw.config.server, &id)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets_key"), "{err}");
    let resp = app
        .client
        .post(format!("{}/admin/keys/{id}/kling-credentials", app.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "secrets_key_missing", "{body}");
    let (status, answer) = post(&app, &app.key, CREATE, &text_to_video("plain")).await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{answer}"
    );
}

/// `omnigate keys create --kling-credentials` and `POST /admin/keys/{id}/kling-credentials`
/// show the pair once; the database holds the secret key only sealed, and a JWT signed
/// with it is let in. Without a secrets key the CLI refuses before making the key.
async fn kling_credentials_are_shown_once_and_stored_sealed(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let mut cfg = front_config(&db, &sim);
    let admin = "a".repeat(40);
    cfg.admin.token = Some(Secret::new(&admin));
    let secrets_key = cfg.server.secrets_key.clone().unwrap();
    let app = TestApp::start(cfg).await;
    let cli = |secrets: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnigate"));
        cmd.args(args)
            .env("OMNIGATE_DATABASE__URL", &db.url)
            // A config without providers is valid on PostgreSQL only with the sandbox on.
            .env("OMNIGATE_SANDBOX__ENABLED", "always")
            .env_remove("OMNIGATE_CONFIG")
            .env_remove("OMNIGATE_SECRETS_KEY");
        if let Some(key) = secrets {
            cmd.env("OMNIGATE_SECRETS_KEY", key);
        }
        cmd.output().expect("run omnigate keys")
    };
    let args = [
        "keys",
        "create",
        "--name",
        "kling-user",
        "--kling-credentials",
        "--json",
    ];
    let refused = cli(None, &args);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("OMNIGATE_SECRETS_KEY"), "{why}");
    let keys_before = app.gateway().store.count_api_keys().await.unwrap();
    let out = cli(Some(secrets_key.expose()), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        app.gateway().store.count_api_keys().await.unwrap(),
        keys_before + 1
    );
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pair = KlingCredentials {
        access_key: issued["kling_credentials"]["access_key"]
            .as_str()
            .unwrap()
            .into(),
        secret_key: issued["kling_credentials"]["secret_key"]
            .as_str()
            .unwrap()
            .into(),
    };
    let (status, answer) = post(&app, &kling_jwt(&pair), CREATE, &text_to_video("cli")).await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{answer}"
    );
    // Through the admin API, for an existing key: a new pair replaces the old one.
    let id = issued["id"].as_str().unwrap();
    let resp = app
        .client
        .post(format!("{}/admin/keys/{id}/kling-credentials", app.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let renewed: KlingCredentialsAnswer = resp.json().await.unwrap();
    assert_eq!(get(&app, &kling_jwt(&pair), CREATE).await.1["code"], 1002);
    let fresh = KlingCredentials {
        access_key: renewed.access_key,
        secret_key: renewed.secret_key,
    };
    assert_eq!(get(&app, &kling_jwt(&fresh), CREATE).await.1["code"], 0);
    // `keys update --kling-credentials` replaces the pair once more.
    let update = cli(
        Some(secrets_key.expose()),
        &["keys", "update", id, "--kling-credentials"],
    );
    assert!(
        update.status.success(),
        "{}",
        String::from_utf8_lossy(&update.stderr)
    );
    let said = String::from_utf8_lossy(&update.stderr);
    let fresh_ak = said
        .split_whitespace()
        .find(|w| w.starts_with("ak_"))
        .unwrap();
    assert_ne!(fresh_ak, fresh.access_key);
    assert_eq!(get(&app, &kling_jwt(&fresh), CREATE).await.1["code"], 1002);
    let sealed: Vec<String> = sqlx::query_scalar("SELECT secret_sealed FROM kling_credentials")
        .fetch_all(app.gateway().store.pool())
        .await
        .unwrap();
    assert_eq!(sealed.len(), 1, "one pair per key");
    assert!(sealed[0].starts_with("v1:") && !said.contains(&sealed[0]));
    let fresh_sk = said
        .split_whitespace()
        .find(|w| w.starts_with("sk_"))
        .unwrap();
    assert!(
        !sealed[0].contains(fresh_sk),
        "the secret key is not stored in the clear"
    );
}

#[derive(serde::Deserialize)]
struct KlingCredentialsAnswer {
    access_key: String,
    secret_key: String,
}

on_both_stores!(
    kling_credentials_are_shown_once_and_stored_sealed,
    a_second_omnigate_round_trips_through_its_kling_adapter,
    a_client_written_from_kling_s_example_runs_unchanged,
    every_refusal_answers_kling_s_code_naming_the_field,
    external_task_ids_are_found_unique_per_key_and_lists_page,
    callbacks_arrive_in_kling_s_shape_signed_by_standard_webhooks,
    another_key_s_tasks_and_external_ids_do_not_exist,
    without_a_secrets_key_credentials_are_refused_and_the_api_key_still_works,
);
