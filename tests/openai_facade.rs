//! The OpenAI-compatible facade (`/v1/videos`): the official OpenAI Python SDK run
//! unmodified against the real gateway (`tests/openai_sdk.py`), OpenAI's fields mapped onto
//! ours with errors naming OpenAI's field, the cursor list, deletion, and keys isolated
//! from each other. Real gateway on port 0, PostgreSQL and SQLite.

mod support;

use std::time::Duration;

use omnigate::domain::Model;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::app::{config, Db, TestApp, TestDb};
use support::python::run_script;
use support::sim::{video_bytes, Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(20);

/// A gateway on a simulator whose result URLs serve real bytes, copies in a temp folder.
async fn setup(db: &TestDb) -> (TestApp, Sim, tempfile::TempDir) {
    let sim = Sim::start(SimDialect::Anyfast).await;
    sim.serve_videos();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    cfg.results.enabled = true;
    cfg.results.local_dir = dir.path().to_path_buf();
    cfg.results.allow_private_sources = true;
    cfg.results.tick_ms = 50;
    cfg.results.download_timeout_secs = 10.0;
    cfg.results.lease_secs = 20;
    (TestApp::start(cfg).await, sim, dir)
}

async fn create_video(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.post("/v1/videos", &body).await
}

/// Polls `GET /v1/videos/{id}` until it is finished.
async fn wait_video(app: &TestApp, id: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, v) = app.get(&format!("/v1/videos/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if matches!(v["status"].as_str(), Some("completed" | "failed")) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{id} unfinished: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_official_openai_sdk_works_unmodified(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim, _dir) = setup(&db).await;
    let args = vec![format!("{}/v1", app.base), app.key.clone()];
    let report = run_script("openai_sdk.py", args, "openai").await;
    // What the SDK downloaded is, byte for byte, what the provider served for that task.
    let id = report["id"].as_str().unwrap();
    let (_, task) = app.get(&format!("/v1/video/generations/{id}")).await;
    let url = task["result"]["videos"][0]["url"].as_str().unwrap();
    let upstream = url.rsplit('/').next().unwrap().trim_end_matches(".mp4");
    let expected = video_bytes(upstream);
    assert_eq!(report["bytes"], expected.len());
    assert_eq!(report["sha256"], hex::encode(Sha256::digest(&expected)));
    assert_eq!(
        sim.created_count(),
        1,
        "the bad-size create reached no provider"
    );
}

async fn a_key_never_sees_another_keys_video(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim, _dir) = setup(&db).await;
    let (status, mine) = create_video(&app, json!({"prompt": "a red kite", "seconds": "5"})).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let id = mine["id"].as_str().unwrap();
    wait_video(&app, id).await;
    let other = app.issue_key("other").await;
    for path in [
        format!("/v1/videos/{id}"),
        format!("/v1/videos/{id}/content"),
    ] {
        let (status, body) = app.get_as(&other, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, list) = app.get_as(&other, "/v1/videos").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"], json!([]));
    let (status, _) = app.get_as(&other, &format!("/v1/videos?after={id}")).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "another key's id is no cursor"
    );
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{id}", app.base))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Still there for its owner.
    let (status, _) = app.get(&format!("/v1/videos/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    // And no key at all is a 401.
    let resp = app
        .client
        .get(format!("{}/v1/videos/{id}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

async fn bad_fields_are_400s_naming_openais_field(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim, _dir) = setup(&db).await;
    for (body, param) in [
        (json!({"prompt": "x", "seconds": "five"}), "seconds"),
        (json!({"prompt": "x", "seconds": "99"}), "seconds"),
        (json!({"prompt": "x", "seconds": 1}), "seconds"),
        (json!({"prompt": "x", "size": "640x480"}), "size"),
        (json!({"prompt": "x", "size": "wide"}), "size"),
        (json!({"prompt": "x", "model": "sora-2"}), "model"),
        (json!({"prompt": "x", "model": "kling-v9"}), "model"),
        (
            json!({"prompt": "x", "input_reference": {"image_url": "https://a.test/i.png"}}),
            "input_reference",
        ),
        (json!({"prompt": "x", "duration": 5}), "duration"),
        (json!({"seconds": "5"}), "prompt"),
    ] {
        let (status, err) = create_video(&app, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    // The duration rule, in OpenAI's words, still reads as a sentence.
    let (_, err) = create_video(&app, json!({"prompt": "x", "seconds": "99"})).await;
    assert_eq!(
        err["error"]["message"], "kling-v3-omni accepts 3 to 15 seconds, got 99.",
        "{err}"
    );
    // The SDK's own form: multipart fields, the same rules.
    let boundary = "omnigate-test-boundary";
    let form = |fields: &[(&str, &str)]| {
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        body
    };
    let post_form = |body: String| {
        app.client
            .post(format!("{}/v1/videos", app.base))
            .bearer_auth(&app.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
    };
    let resp = post_form(form(&[("prompt", "x"), ("size", "1x1")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "size");
    // A file upload (the SDK's `input_reference=open(...)`) is refused by name.
    let with_file = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n\x7fPNG\r\n--{boundary}--\r\n"
    );
    let resp = post_form(with_file).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "input_reference", "{err}");
    assert_eq!(
        sim.created_count(),
        0,
        "no refused create reached the provider"
    );
    // A good form creates, with OpenAI's fields mapped onto ours.
    let resp = post_form(form(&[
        ("prompt", "a quiet harbour"),
        ("model", "kling-v3-omni"),
        ("seconds", "8"),
        ("size", "1080x1920"),
    ]))
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let video: Value = resp.json().await.unwrap();
    assert_eq!(video["object"], "video");
    assert_eq!(video["seconds"], "8");
    assert_eq!(video["size"], "1080x1920");
    assert_eq!(video["prompt"], "a quiet harbour");
    let (_, task) = app
        .get(&format!(
            "/v1/video/generations/{}",
            video["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(task["model"], "kling-v3-omni");
    let sent = &sim.created_bodies()[0];
    assert_eq!(sent["aspect_ratio"], "9:16", "{sent}");
    assert_eq!(sent["mode"], "pro", "{sent}");
    assert_eq!(sent["duration"], "8", "{sent}");
}

async fn the_list_pages_with_after_in_both_orders_and_deletes_hide_videos(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim, _dir) = setup(&db).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, v) = create_video(
            &app,
            json!({"prompt": format!("video {n}"), "size": "1280x720"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
        // Distinct creation times, so that the order is the order of creation.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Deleting an unfinished video is refused, naming it.
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{}", app.base, ids[0]))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    if status == StatusCode::BAD_REQUEST {
        assert_eq!(err["error"]["param"], "video_id");
    } else {
        // The simulator may already have finished it.
        assert_eq!(status, StatusCode::OK, "{err}");
        ids.remove(0);
    }
    let (_, page) = app.get("/v1/videos?limit=2").await;
    assert_eq!(page["object"], "list");
    let got: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(got, newest_first[..got.len()]);
    assert_eq!(page["first_id"], got[0]);
    assert_eq!(page["last_id"], *got.last().unwrap());
    assert_eq!(page["has_more"], ids.len() > 2);
    let (_, rest) = app
        .get(&format!("/v1/videos?limit=2&after={}", got.last().unwrap()))
        .await;
    assert_eq!(
        rest["data"].as_array().unwrap().len(),
        ids.len() - got.len()
    );
    assert_eq!(rest["has_more"], false);
    let (_, asc) = app.get("/v1/videos?order=asc&limit=100").await;
    let asc: Vec<&str> = asc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(asc, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for bad in [
        "limit=0",
        "limit=101",
        "order=sideways",
        "after=vgt_nope",
        "page=2",
    ] {
        let (status, err) = app.get(&format!("/v1/videos?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
    }
    // Deleted once finished: gone from reads and lists on both APIs.
    let last = ids.last().unwrap().clone();
    wait_video(&app, &last).await;
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{last}", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _) = app.get(&format!("/v1/videos/{last}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("/v1/video/generations/{last}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/v1/videos?limit=100").await;
    assert!(!list.to_string().contains(&last));
    let (_, list) = app.get("/v1/video/generations?limit=100").await;
    assert!(!list.to_string().contains(&last));
    // A second delete finds nothing.
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{last}", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

async fn a_failed_video_carries_openais_error_shape(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim, _dir) = setup(&db).await;
    sim.set_script(support::sim::Script {
        outcome: support::sim::Outcome::Fail("the model refused".into()),
        ..Default::default()
    });
    let (_, v) = create_video(&app, json!({"prompt": "a storm"})).await;
    let done = wait_video(&app, v["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["code"], "generation_failed", "{done}");
    assert!(done["error"]["message"].is_string());
    assert!(done["completed_at"].is_null());
    // The defaults: our newer model, 5 s, 16:9 in the default (pro) mode.
    assert_eq!(done["model"], "kling-v3-omni");
    assert_eq!(done["seconds"], "5");
    assert_eq!(done["size"], "1920x1080");
}

async fn facade_creates_share_the_keys_create_rate_limit(db: Db) {
    let db = TestDb::new(db).await;
    let (app, _sim, _dir) = setup(&db).await;
    let change = omnigate::store::KeyChange {
        rpm: Some(Some(1)),
        burst: Some(Some(1)),
        ..Default::default()
    };
    let key = app
        .gateway()
        .store
        .issue_key("one-a-minute", &change)
        .await
        .unwrap()
        .key;
    let (status, first) = app
        .post_as(
            &key,
            "/v1/video/generations",
            &json!({"model": "kling-v3-omni", "prompt": "a", "aspect_ratio": "16:9"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // The facade's create spends the same bucket: one a minute in all.
    let (status, second) = app
        .post_as(&key, "/v1/videos", &json!({"prompt": "b"}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{second}");
    assert_eq!(second["error"]["code"], "rate_limited");
    // Reads are another bucket.
    let (status, _) = app
        .get_as(
            &key,
            &format!("/v1/videos/{}", first["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// An Idempotency-Key replay is marked `Idempotent-Replayed: true` on the facade, as on
/// the native create; the first create is not.
async fn an_idempotent_replay_is_marked_as_on_the_native_api(db: Db) {
    let db = TestDb::new(db).await;
    let (app, sim, _dir) = setup(&db).await;
    let native = json!({"model": "kling-v3-omni", "prompt": "a kite", "aspect_ratio": "16:9"});
    for (path, body) in [
        ("/v1/videos", json!({"prompt": "a kite", "seconds": "5"})),
        ("/v1/video/generations", native),
    ] {
        let send = || {
            app.client
                .post(format!("{}{path}", app.base))
                .bearer_auth(&app.key)
                .header("idempotency-key", format!("replay-{path}"))
                .json(&body)
                .send()
        };
        let first = send().await.unwrap();
        assert!(first.status().is_success(), "{path}");
        assert!(
            first.headers().get("idempotent-replayed").is_none(),
            "{path}"
        );
        let first: Value = first.json().await.unwrap();
        let again = send().await.unwrap();
        assert!(again.status().is_success(), "{path}");
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{path}");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["id"], first["id"], "{path}");
    }
    assert_eq!(sim.submit_count(), 2, "one upstream task per key");
}

on_both_stores!(
    an_idempotent_replay_is_marked_as_on_the_native_api,
    facade_creates_share_the_keys_create_rate_limit,
    the_official_openai_sdk_works_unmodified,
    a_key_never_sees_another_keys_video,
    bad_fields_are_400s_naming_openais_field,
    the_list_pages_with_after_in_both_orders_and_deletes_hide_videos,
    a_failed_video_carries_openais_error_shape,
);
