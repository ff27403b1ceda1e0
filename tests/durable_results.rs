//! Durable results: each finished video copied into object storage (a local folder, and
//! S3 as played by moto's server over real HTTP), served byte for byte with range requests,
//! bounded in size, made by a leased worker that another process takes over, and removed
//! when the client deletes the video. Real gateway on port 0, PostgreSQL and SQLite.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use omnigate::config::Config;
use omnigate::domain::Model;
use omnigate::results::ResultsBackend;
use omnigate::store::now_ms;
use reqwest::header::{ACCEPT_RANGES, CONTENT_RANGE, LOCATION, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::console::Console;
use support::sim::{video_bytes, Sim, SimDialect};

const WAIT: Duration = Duration::from_secs(20);

fn request() -> Value {
    json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "duration": 5})
}

/// A gateway on one simulator that serves real video bytes, with copies into `dir`.
async fn local_setup(db: &TestDb, dir: &Path) -> (Config, Sim) {
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.serve_videos();
    let mut cfg = config(
        db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    cfg.results.enabled = true;
    cfg.results.local_dir = dir.to_path_buf();
    // The simulator is on 127.0.0.1 and speaks plain http.
    cfg.results.allow_private_sources = true;
    cfg.results.tick_ms = 50;
    cfg.results.download_timeout_secs = 10.0;
    cfg.results.lease_secs = 20;
    (cfg, sim)
}

/// The upstream id in a provider video URL (`.../videos/{id}.mp4`): what the simulator
/// served under it is `video_bytes(id)`.
fn upstream_id(task: &Value) -> String {
    let url = task["result"]["videos"][0]["url"]
        .as_str()
        .expect("a video URL");
    let file = url.rsplit('/').next().unwrap();
    file.trim_end_matches(".mp4").to_string()
}

/// Reads the task until its copy is stored (it shows `omnigate_url`).
async fn wait_stored(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, task) = app.get(&format!("/v1/video/generations/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        if task["result"]["videos"][0]["omnigate_url"].is_string() {
            return task;
        }
        assert!(Instant::now() < deadline, "no copy of {id} stored: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_raw(app: &TestApp, key: &str, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = no_redirects()
        .get(format!("{}{path}", app.base))
        .bearer_auth(key);
    if let Some(r) = range {
        req = req.header(RANGE, r);
    }
    req.send().await.expect("the gateway answers")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The stored copy of a finished task, checked over both content endpoints: the whole
/// video, a middle range, a suffix range, an open range and an unsatisfiable one.
async fn assert_served_byte_for_byte(app: &TestApp, id: &str, expected: &[u8]) {
    let len = expected.len();
    for path in [
        format!("/v1/video/generations/{id}/content"),
        format!("/v1/videos/{id}/content"),
    ] {
        let whole = get_raw(app, &app.key, &path, None).await;
        assert_eq!(whole.status(), StatusCode::OK, "{path}");
        assert_eq!(whole.headers()[ACCEPT_RANGES], "bytes");
        assert_eq!(whole.headers()["content-type"], "video/mp4");
        let body = whole.bytes().await.unwrap();
        assert_eq!(body.len(), len, "{path}");
        assert!(
            body[..] == expected[..],
            "{path}: the copy differs from the provider's video"
        );

        let part = get_raw(app, &app.key, &path, Some("bytes=1000-1999")).await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers()[CONTENT_RANGE],
            format!("bytes 1000-1999/{len}").as_str()
        );
        assert_eq!(part.headers()["content-length"], "1000");
        let body = part.bytes().await.unwrap();
        assert!(
            body[..] == expected[1000..2000],
            "the range is not the requested bytes"
        );

        let tail = get_raw(app, &app.key, &path, Some("bytes=-7")).await;
        assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            tail.headers()[CONTENT_RANGE],
            format!("bytes {}-{}/{len}", len - 7, len - 1).as_str()
        );
        assert!(tail.bytes().await.unwrap()[..] == expected[len - 7..]);

        let open = get_raw(app, &app.key, &path, Some(&format!("bytes={}-", len - 100))).await;
        assert_eq!(open.status(), StatusCode::PARTIAL_CONTENT);
        assert!(open.bytes().await.unwrap()[..] == expected[len - 100..]);

        let past = get_raw(app, &app.key, &path, Some(&format!("bytes={len}-"))).await;
        assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            past.headers()[CONTENT_RANGE],
            format!("bytes */{len}").as_str()
        );
        let err: Value = past.json().await.unwrap();
        assert_eq!(err["error"]["code"], "range_not_satisfiable");
    }
}

async fn mirrored_video_is_served_byte_for_byte_with_ranges(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _sim) = local_setup(&db, dir.path()).await;
    let app = TestApp::start(cfg).await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap();
    let done = app.wait_terminal(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    let stored = wait_stored(&app, id).await;
    let expected = video_bytes(&upstream_id(&stored));
    let video = &stored["result"]["videos"][0];
    // Both URLs: the provider's, kept as it was, and omnigate's.
    assert!(video["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(
        video["omnigate_url"],
        format!("/v1/video/generations/{id}/content")
    );
    assert_eq!(video["stored_bytes"], expected.len());
    // The copy is a file in the configured folder, byte for byte.
    let file = dir.path().join(format!("videos/{id}.mp4"));
    assert_eq!(std::fs::read(&file).expect("the copy is on disk"), expected);
    assert_served_byte_for_byte(&app, id, &expected).await;
    // Another key does not see it, content included.
    let other = app.issue_key("other").await;
    let theirs = get_raw(
        &app,
        &other,
        &format!("/v1/video/generations/{id}/content"),
        None,
    )
    .await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    // A copy gone from the store (removed by hand) falls back to the provider's URL.
    std::fs::remove_file(&file).unwrap();
    let path = format!("/v1/video/generations/{id}/content");
    let resp = get_raw(&app, &app.key, &path, None).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()[LOCATION], video["url"].as_str().unwrap());
}

async fn without_a_copy_content_redirects_to_the_provider(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Modellix).await;
    // Results off (the default).
    let app = TestApp::spawn(
        &db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    )
    .await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap();
    // Before it is finished there is nothing to serve.
    let early = get_raw(
        &app,
        &app.key,
        &format!("/v1/video/generations/{id}/content"),
        None,
    )
    .await;
    assert_eq!(early.status(), StatusCode::NOT_FOUND);
    let done = app.wait_terminal(id, WAIT).await;
    let provider_url = done["result"]["videos"][0]["url"].as_str().unwrap();
    assert!(
        done["result"]["videos"][0].get("omnigate_url").is_none(),
        "{done}"
    );
    for path in [
        format!("/v1/video/generations/{id}/content"),
        format!("/v1/videos/{id}/content"),
    ] {
        let resp = get_raw(&app, &app.key, &path, None).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{path}");
        assert_eq!(resp.headers()[LOCATION], provider_url);
    }
}

async fn a_video_over_the_size_bound_is_not_copied(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, sim) = local_setup(&db, dir.path()).await;
    cfg.results.max_bytes = 10_000;
    let app = TestApp::start(cfg).await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, WAIT).await;
    // The worker gives up at once (no retry can make the video smaller).
    let (state, error) = settled_copy(&app, &id).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap().contains("max_bytes"));
    assert_eq!(sim.video_fetches(), 1, "a permanent refusal is not retried");
    assert!(!dir.path().join(format!("videos/{id}.mp4")).exists());
    let resp = get_raw(
        &app,
        &app.key,
        &format!("/v1/video/generations/{id}/content"),
        None,
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::FOUND,
        "served from the provider instead"
    );
}

/// The copy job's state and last error, once it has left `pending`.
async fn settled_copy(app: &TestApp, id: &str) -> (String, Option<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT state, last_error FROM result_copies WHERE task_id = $1")
                .bind(id)
                .fetch_optional(app.gateway().store.pool())
                .await
                .unwrap();
        if let Some(settled) = row.filter(|(s, _)| s != "pending") {
            return settled;
        }
        assert!(Instant::now() < deadline, "the copy of {id} never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn result_urls_on_internal_addresses_are_not_fetched(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, sim) = local_setup(&db, dir.path()).await;
    // Production's setting: a provider's answer may not point the gateway inside.
    cfg.results.allow_private_sources = false;
    let app = TestApp::start(cfg).await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, WAIT).await;
    let (state, error) = settled_copy(&app, &id).await;
    assert_eq!(state, "failed", "refused at once, never retried");
    assert!(error.unwrap().contains("must be https"));
    assert_eq!(sim.video_fetches(), 0, "nothing was fetched");
}

async fn a_copy_claimed_by_a_crashed_worker_is_made_once_its_lease_runs_out(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, _sim) = local_setup(&db, dir.path()).await;
    // This gateway's own loop runs once at start and then sleeps: the test drives the steps.
    cfg.results.tick_ms = 3_600_000;
    let app = TestApp::start(cfg).await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, WAIT).await;
    let gw = app.gateway();
    // Another process claims the copy and dies before making it.
    let dead = gw
        .store
        .claim_copies("dead-process/1", now_ms() + 1500, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task_id, id);
    // While its claim lasts, nobody else starts the same copy.
    assert_eq!(omnigate::workers::results::copy_once(gw).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(omnigate::workers::results::copy_once(gw).await.unwrap(), 1);
    let stored = wait_stored(&app, &id).await;
    assert_eq!(
        std::fs::read(dir.path().join(format!("videos/{id}.mp4"))).unwrap(),
        video_bytes(&upstream_id(&stored))
    );
    // The dead process's late write changes nothing.
    assert!(!gw
        .store
        .copy_stored(&dead[0], "dead-process/1", 1, None)
        .await
        .unwrap());
    let (_, again) = app.get(&format!("/v1/video/generations/{id}")).await;
    assert_eq!(
        again["result"]["videos"][0]["stored_bytes"],
        stored["result"]["videos"][0]["stored_bytes"]
    );
}

async fn deleting_a_video_removes_its_stored_copy(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _sim) = local_setup(&db, dir.path()).await;
    let app = TestApp::start(cfg).await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, WAIT).await;
    wait_stored(&app, &id).await;
    let file = dir.path().join(format!("videos/{id}.mp4"));
    assert!(file.exists());
    let resp = app
        .client
        .delete(format!("{}/v1/videos/{id}", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": id, "object": "video.deleted", "deleted": true})
    );
    let deadline = Instant::now() + WAIT;
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "the stored copy was never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [
        format!("/v1/video/generations/{id}"),
        format!("/v1/videos/{id}"),
        format!("/v1/videos/{id}/content"),
    ] {
        let (status, _) = app.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

/// moto's S3 server on a free port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs moto's server (pip install 'moto[server]')");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = reqwest::get(format!("{}/moto-api/", moto.endpoint)).await {
                if resp.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto's server did not start (pip install 'moto[server]')"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn copies_go_to_s3_and_are_served_from_it(db: Db) {
    let moto = Moto::start().await;
    let bucket = format!("omnigate-{}", uuid::Uuid::new_v4().simple());
    // moto takes an unsigned CreateBucket over plain HTTP.
    let made = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    std::env::set_var("OMNIGATE_TEST_S3_KEY_ID", "testing");
    std::env::set_var("OMNIGATE_TEST_S3_SECRET", "testing");

    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, _sim) = local_setup(&db, dir.path()).await;
    cfg.results.backend = ResultsBackend::S3;
    cfg.results.s3_bucket = Some(bucket.clone());
    cfg.results.s3_endpoint = Some(moto.endpoint.clone());
    cfg.results.s3_allow_http = true;
    cfg.results.s3_access_key_id_env = Some("OMNIGATE_TEST_S3_KEY_ID".into());
    cfg.results.s3_secret_access_key_env = Some("OMNIGATE_TEST_S3_SECRET".into());
    cfg.results.prefix = "gw/".into();
    let app = TestApp::start(cfg).await;
    let task = app.create(&request()).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, WAIT).await;
    let stored = wait_stored(&app, &id).await;
    let expected = video_bytes(&upstream_id(&stored));
    // The object is in the bucket, under the prefix, as moto serves it to a signed GET
    // (moto refuses anonymous reads).
    let results = app.gateway().results.as_ref().expect("results on");
    let path = object_store::path::Path::from(format!("gw/videos/{id}.mp4"));
    let in_bucket = results
        .object_store()
        .get(&path)
        .await
        .expect("the copy is in moto's bucket")
        .bytes()
        .await
        .unwrap();
    assert!(in_bucket[..] == expected[..]);
    let listed = reqwest::get(format!("{}/{bucket}?list-type=2", moto.endpoint)).await;
    // Whether moto lists anonymously or not, it never shows a second object.
    if let Ok(resp) = listed {
        let text = resp.text().await.unwrap_or_default();
        assert!(text.matches("<Key>").count() <= 1, "{text}");
    }
    // Nothing went to the local folder.
    assert!(!dir.path().join("videos").exists());
    assert_served_byte_for_byte(&app, &id, &expected).await;
}

// ---------------------------------------------------------------------------------------
// The provider's Content-Type (issue 19.1) and every video of a task (19.17)

/// A gateway whose only key may also use the console, signed in as that key.
async fn app_and_console(cfg: Config) -> (TestApp, Console) {
    let app = TestApp::start(cfg).await;
    let console = Console::sign_in(&app, &app.key.clone()).await;
    (app, console)
}

/// The answers of the three content paths to video `index` of task `id`.
async fn content_answers(
    app: &TestApp,
    console: &Console,
    id: &str,
    index: usize,
) -> Vec<reqwest::Response> {
    let query = if index == 0 {
        String::new()
    } else {
        format!("?video={index}")
    };
    let mut answers = Vec::new();
    for path in [
        format!("/v1/video/generations/{id}/content{query}"),
        format!("/v1/videos/{id}/content"),
    ] {
        if index == 0 || !path.starts_with("/v1/videos/") {
            answers.push(get_raw(app, &app.key, &path, None).await);
        }
    }
    answers.push(
        console
            .get_raw(&format!("/console/tasks/{id}/video{query}"))
            .await,
    );
    answers
}

async fn a_copy_the_provider_labelled_html_is_served_as_a_download(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, sim) = local_setup(&db, dir.path()).await;
    let (app, console) = app_and_console(cfg).await;
    sim.set_video_type("text/html; charset=utf-8");
    let id = app.create(&request()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_stored(&app, &id).await;
    let stored: (Option<String>,) =
        sqlx::query_as("SELECT content_type FROM result_copies WHERE task_id = $1")
            .bind(&id)
            .fetch_one(app.gateway().store.pool())
            .await
            .unwrap();
    assert_eq!(
        stored.0.as_deref(),
        Some("application/octet-stream"),
        "normalised on copy"
    );
    let assert_download = |resp: &reqwest::Response| {
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.url());
        let h = resp.headers();
        assert_eq!(
            h["content-type"],
            "application/octet-stream",
            "{}",
            resp.url()
        );
        assert_eq!(h["content-disposition"], "attachment", "{}", resp.url());
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", resp.url());
    };
    content_answers(&app, &console, &id, 0)
        .await
        .iter()
        .for_each(assert_download);
    // A row stored before types were checked is checked again when served.
    sqlx::query("UPDATE result_copies SET content_type = 'text/html' WHERE task_id = $1")
        .bind(&id)
        .execute(app.gateway().store.pool())
        .await
        .unwrap();
    content_answers(&app, &console, &id, 0)
        .await
        .iter()
        .for_each(assert_download);

    sim.set_video_type("video/webm");
    let webm = app.create(&request()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_stored(&app, &webm).await;
    for resp in content_answers(&app, &console, &webm, 0).await {
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "video/webm", "{}", resp.url());
        assert!(h.get("content-disposition").is_none(), "{}", resp.url());
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", resp.url());
    }
}

async fn every_video_of_a_task_is_copied_and_served(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, sim) = local_setup(&db, dir.path()).await;
    let (app, console) = app_and_console(cfg).await;
    sim.set_videos_per_task(2);
    let id = app.create(&request()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + WAIT;
    let task = loop {
        let (_, task) = app.get(&format!("/v1/video/generations/{id}")).await;
        let videos = task["result"]["videos"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if videos.len() == 2 && videos.iter().all(|v| v["omnigate_url"].is_string()) {
            break task;
        }
        assert!(
            Instant::now() < deadline,
            "both copies never stored: {task}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let upstream = upstream_id(&task);
    for (index, name) in [(0, upstream.clone()), (1, format!("{upstream}-2"))] {
        let video = &task["result"]["videos"][index];
        let expected = video_bytes(&name);
        assert_eq!(video["stored_bytes"], expected.len(), "{task}");
        let url = video["omnigate_url"].as_str().unwrap();
        let by_url = get_raw(&app, &app.key, url, None).await;
        assert_eq!(by_url.status(), StatusCode::OK, "{url}");
        assert!(by_url.bytes().await.unwrap()[..] == expected[..], "{url}");
        for resp in content_answers(&app, &console, &id, index).await {
            let what = resp.url().to_string();
            assert_eq!(resp.status(), StatusCode::OK, "{what}");
            assert!(
                resp.bytes().await.unwrap()[..] == expected[..],
                "{what}: video {index}"
            );
        }
    }
    let copies: Vec<(i64, String)> = sqlx::query_as(
        "SELECT video_index, state FROM result_copies WHERE task_id = $1 ORDER BY video_index",
    )
    .bind(&id)
    .fetch_all(app.gateway().store.pool())
    .await
    .unwrap();
    assert_eq!(copies, vec![(0, "stored".into()), (1, "stored".into())]);
    let missing = get_raw(
        &app,
        &app.key,
        &format!("/v1/video/generations/{id}/content?video=2"),
        None,
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Provider answers the store would refuse (issue 19.6)

async fn a_nul_in_a_video_url_is_cleaned_and_the_task_completes(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, sim) = local_setup(&db, dir.path()).await;
    let app = TestApp::start(cfg).await;
    sim.answer_video_url("https://cdn.sim.test/a\u{0}b.mp4");
    let id = app.create(&request()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = app.wait_terminal(&id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["videos"][0]["url"],
        "https://cdn.sim.test/a\u{FFFD}b.mp4"
    );
}

async fn a_video_url_that_is_no_url_is_an_unreadable_answer(db: Db) {
    let db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, sim) = local_setup(&db, dir.path()).await;
    let app = TestApp::start(cfg).await;
    sim.answer_video_url("javascript:alert(1)");
    let id = app.create(&request()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = app.wait_terminal(&id, WAIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "upstream_unreadable", "{done}");
}

/// Makes the store refuse every copy row, as PostgreSQL refuses a NUL: the transaction
/// that completes a task (and queues its copy) fails each time.
async fn refuse_copies(app: &TestApp, db: Db) {
    let statements: &[&str] = match db {
        Db::Postgres => &[
            "CREATE FUNCTION refuse_copy() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_copy BEFORE INSERT ON result_copies FOR EACH ROW EXECUTE FUNCTION refuse_copy()",
        ],
        Db::Sqlite => &[
            "CREATE TRIGGER refuse_copy BEFORE INSERT ON result_copies BEGIN SELECT RAISE(ABORT, 'refused'); END",
        ],
    };
    for sql in statements {
        sqlx::raw_sql(sql)
            .execute(app.gateway().store.pool())
            .await
            .unwrap();
    }
}

async fn a_completion_the_store_keeps_refusing_fails_the_task_and_frees_its_slot(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _sim) = local_setup(&test_db, dir.path()).await;
    let app = TestApp::start(cfg).await;
    refuse_copies(&app, db).await;
    sqlx::query("UPDATE api_keys SET max_in_flight = 1")
        .execute(app.gateway().store.pool())
        .await
        .unwrap();
    let id = app.create(&request()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = app.wait_terminal(&id, WAIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "store_refused", "{done}");
    let (refusals, holds): (i64, i64) =
        sqlx::query_as("SELECT store_refusals, holds_slot FROM tasks WHERE id = $1")
            .bind(&id)
            .fetch_one(app.gateway().store.pool())
            .await
            .unwrap();
    assert_eq!(refusals, 5, "counted on the task row");
    assert_eq!(holds, 0, "the key's slot is released");
    let in_flight: (i64,) = sqlx::query_as("SELECT in_flight FROM api_keys")
        .fetch_one(app.gateway().store.pool())
        .await
        .unwrap();
    assert_eq!(in_flight.0, 0);
}

on_both_stores!(
    a_nul_in_a_video_url_is_cleaned_and_the_task_completes,
    a_video_url_that_is_no_url_is_an_unreadable_answer,
    a_completion_the_store_keeps_refusing_fails_the_task_and_frees_its_slot,
    a_copy_the_provider_labelled_html_is_served_as_a_download,
    every_video_of_a_task_is_copied_and_served,
    mirrored_video_is_served_byte_for_byte_with_ranges,
    without_a_copy_content_redirects_to_the_provider,
    a_video_over_the_size_bound_is_not_copied,
    result_urls_on_internal_addresses_are_not_fetched,
    a_copy_claimed_by_a_crashed_worker_is_made_once_its_lease_runs_out,
    deleting_a_video_removes_its_stored_copy,
    copies_go_to_s3_and_are_served_from_it,
);

#[tokio::test]
async fn results_config_errors_name_the_key() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = config(&db, vec![]);
    cfg.results.enabled = true;
    cfg.results.backend = ResultsBackend::S3;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("results.s3_bucket"), "{err}");
    let mut cfg = config(&db, vec![]);
    cfg.results.lease_secs = 10;
    cfg.results.download_timeout_secs = 60.0;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("results.lease_secs"), "{err}");
    let mut cfg = config(&db, vec![]);
    cfg.results.enabled = true;
    cfg.results.download_timeout_secs = 400.0;
    cfg.results.lease_secs = 500;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("results.download_timeout_secs") && err.contains("workers.stall_secs"),
        "{err}"
    );
}
