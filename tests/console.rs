//! The console at `/console`: in a real headless Chromium (tests/console_browser.py, which
//! also writes a screenshot of every page to target/console-screenshots/), and over plain
//! HTTP for what a browser would hide: CSRF refusals, cookie flags, another key's pages.

mod support;

use std::process::Command;

use omnigate::config::{Config, SandboxMode, Secret, SecureCookies};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::app::{config, Db, TestApp, TestDb};
use support::console::{csrf_in, Console};
use support::receiver::Receiver;

const ADMIN_TOKEN: &str = "console-admin-token-0123456789abcdef";

fn sandbox_config(db: &TestDb) -> Config {
    let mut cfg = config(db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.sandbox.task_seconds = 3.0;
    cfg.admin.token = Some(Secret::new(ADMIN_TOKEN));
    cfg
}

async fn second_key(app: &TestApp) -> (String, String) {
    let k = app.gateway().store.create_api_key("team-b").await.unwrap();
    (k.id, k.secret)
}

fn prompt_task() -> Value {
    json!({"model": "kling-video-o1", "prompt": "a red kite over hills", "mode": "std",
           "duration": 5, "aspect_ratio": "16:9"})
}

#[tokio::test]
async fn a_key_builds_a_task_in_the_playground_and_watches_it_play_in_a_real_browser() {
    let db = TestDb::new(Db::Postgres).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let (b_id, b_secret) = second_key(&app).await;
    let (status, task_of_b) = app
        .post_as(&b_secret, "/v1/video/generations", &prompt_task())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task_of_b}");
    let task_of_b = task_of_b["id"].as_str().unwrap().to_string();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console_browser.py");
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/console-screenshots");
    let args = [
        script.to_string(),
        app.base.clone(),
        app.key.clone(),
        b_id.clone(),
        task_of_b.clone(),
        ADMIN_TOKEN.to_string(),
        shots.to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .output()
            .expect("python3 runs (the test command installs selenium and chromium)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();

    // The task the browser created is the key's, completed, and its video played.
    let id = seen["task_id"].as_str().unwrap();
    let (status, task) = app.get(&format!("/v1/video/generations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        task["provider"], seen["quoted_provider"],
        "the quote named the provider used"
    );
    assert!(
        seen["video_src"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/console/tasks/{id}/video")),
        "{seen}"
    );
    assert!(seen["video_seconds"].as_f64().unwrap() > 1.0, "{seen}");
    assert_eq!(seen["other_task_heading"], "Not found");

    // A signed-in console page carries the security headers, and nothing on any page the
    // browser opened (the console's and the API reference's) broke their CSP.
    let headers = &seen["console_headers"];
    let csp = headers["content-security-policy"]
        .as_str()
        .unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{headers}");
    assert!(csp.contains("frame-ancestors 'none'"), "{headers}");
    assert_eq!(headers["x-frame-options"], "DENY", "{headers}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{headers}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{headers}");
    assert_eq!(headers["cache-control"], "no-store", "{headers}");
    assert!(
        seen["docs_title"].as_str().unwrap().contains("omnigate"),
        "{seen}"
    );
    assert!(seen["docs_operations"].as_u64().unwrap() > 10, "{seen}");
    assert_eq!(seen["csp_violations"], json!([]), "{seen}");

    // The key the operator revoked in the browser is refused by the API.
    let (status, _) = app.get_as(&b_secret, "/v1/video/generations").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for page in [
        "01-sign-in",
        "02-playground",
        "03-task",
        "04-tasks",
        "05-usage",
        "06-providers",
        "07-keys",
        "08-key-revoked",
        "10-docs",
    ] {
        let path = format!("{shots}/{page}.png");
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {path} missing or empty");
    }
}

async fn forms_without_the_csrf_token_are_refused(kind: Db) {
    let db = TestDb::new(kind).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let (b_id, b_secret) = second_key(&app).await;
    let mut operator = Console::sign_in(&app, ADMIN_TOKEN).await;

    let revoke = format!("/console/keys/{b_id}/revoke");
    let resp = operator.post(&revoke, &[]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = operator.post(&revoke, &[("csrf", "not-the-token")]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = operator.post("/console/keys", &[("name", "sneaky")]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = operator.post("/console/logout", &[]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, _) = app.get_as(&b_secret, "/v1/video/generations").await;
    assert_eq!(status, StatusCode::OK, "a refused form changed nothing");
    assert!(!app
        .gateway()
        .store
        .list_keys()
        .await
        .unwrap()
        .iter()
        .any(|k| k.name == "sneaky"));

    // With the token, the same form works.
    let csrf = operator.csrf().await;
    let resp = operator.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, _) = app.get_as(&b_secret, "/v1/video/generations").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The sign-in form needs its own token (the cookie it set), so no page elsewhere can
    // sign a browser in.
    let mut fresh = Console::new(&app);
    let resp = fresh
        .post("/console/login", &[("token", ADMIN_TOKEN)])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = fresh
        .post(
            "/console/login",
            &[("token", ADMIN_TOKEN), ("csrf", "guess")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // A playground submit without the token creates nothing.
    let mut key = Console::sign_in(&app, &app.key).await;
    let resp = key
        .post(
            "/console/playground",
            &[
                ("model", "kling-video-o1"),
                ("prompt", "x"),
                ("aspect_ratio", "16:9"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, list) = app.get("/v1/video/generations").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused_sqlite() {
    forms_without_the_csrf_token_are_refused(Db::Sqlite).await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused_postgres() {
    forms_without_the_csrf_token_are_refused(Db::Postgres).await;
}

async fn a_key_sees_only_its_own_tasks(kind: Db) {
    let db = TestDb::new(kind).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let (_, b_secret) = second_key(&app).await;
    let mine = app.create(&prompt_task()).await;
    let (_, theirs) = app
        .post_as(&b_secret, "/v1/video/generations", &prompt_task())
        .await;
    let (mine, theirs) = (mine["id"].as_str().unwrap(), theirs["id"].as_str().unwrap());

    let mut a = Console::sign_in(&app, &app.key).await;
    let (status, list) = a.get("/console/tasks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(mine) && !list.contains(theirs), "{list}");
    // Even asking for the other key by the operator's filter shows only its own.
    let (_, list) = a.get("/console/tasks?key=whatever").await;
    assert!(list.contains(mine) && !list.contains(theirs));
    for path in [
        format!("/console/tasks/{theirs}"),
        format!("/console/tasks/{theirs}/video"),
        "/console/keys".to_string(),
        "/console/providers".to_string(),
    ] {
        let (status, page) = a.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!page.contains(theirs), "{path} leaks the other task");
    }
    let csrf = a.csrf().await;
    let resp = a
        .post(
            &format!("/console/tasks/{theirs}/events/evt_x/redeliver"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (status, page) = a.get(&format!("/console/tasks/{mine}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Status history") && page.contains("Submit attempts"));

    // The operator sees both, and can filter by key.
    let mut op = Console::sign_in(&app, ADMIN_TOKEN).await;
    let (_, list) = op.get("/console/tasks").await;
    assert!(list.contains(mine) && list.contains(theirs));
    let a_id = &app
        .gateway()
        .store
        .authenticate(&app.key)
        .await
        .unwrap()
        .unwrap()
        .id;
    let (_, list) = op.get(&format!("/console/tasks?key={a_id}")).await;
    assert!(list.contains(mine) && !list.contains(theirs));
    let (status, _) = op.get(&format!("/console/tasks/{theirs}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_sees_only_its_own_tasks_sqlite() {
    a_key_sees_only_its_own_tasks(Db::Sqlite).await;
}

#[tokio::test]
async fn a_key_sees_only_its_own_tasks_postgres() {
    a_key_sees_only_its_own_tasks(Db::Postgres).await;
}

#[tokio::test]
async fn revoking_a_key_or_signing_out_ends_the_console_session() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let (b_id, b_secret) = second_key(&app).await;
    let mut b = Console::sign_in(&app, &b_secret).await;
    assert_eq!(b.get("/console/tasks").await.0, StatusCode::OK);
    app.gateway().store.revoke_key(&b_id).await.unwrap();
    let (status, _) = b.get("/console/tasks").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a revoked key's session goes to sign-in"
    );

    let mut a = Console::sign_in(&app, &app.key).await;
    let csrf = a.csrf().await;
    let stolen = a.cookie_header();
    let resp = a.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // The old cookie is dead on the server too, not only forgotten by the browser.
    let resp = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console/tasks", app.base))
        .header(COOKIE, stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    // Wrong tokens are told so, with the form again.
    let mut c = Console::new(&app);
    let (_, page) = c.get("/console/login").await;
    let resp = c
        .post(
            "/console/login",
            &[("csrf", &csrf_in(&page)), ("token", "og_nope")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("neither the admin token nor a live API key"));
}

/// Signs in with the app's key as a browser behind a TLS proxy would (`X-Forwarded-Proto:
/// https`); the client follows no redirects, and the answer is the sign-in's.
async fn sign_in_behind_https(app: &TestApp) -> (reqwest::Client, reqwest::Response) {
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(format!("{}/console/login", app.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let nonce_cookie = login.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let page = login.text().await.unwrap();
    let resp = http
        .post(format!("{}/console/login", app.base))
        .header("x-forwarded-proto", "https")
        .header(COOKIE, nonce_cookie.split(';').next().unwrap())
        .form(&[
            ("csrf", csrf_in(&page).as_str()),
            ("token", app.key.as_str()),
        ])
        .send()
        .await
        .unwrap();
    (http, resp)
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_secure_behind_https() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let (_, resp) = sign_in_behind_https(&app).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-omnigate_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/;"] {
        assert!(session.contains(flag), "{flag} missing: {session}");
    }
}

#[tokio::test]
async fn bad_filters_and_form_fields_get_a_400_naming_the_field() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let mut op = Console::sign_in(&app, ADMIN_TOKEN).await;
    for (query, field) in [
        ("status=sleeping", "status"),
        ("model=sora", "model"),
        ("from=yesterday", "from"),
        ("after=garbage", "after"),
    ] {
        let (status, page) = op.get(&format!("/console/tasks?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(page.contains(&format!("{field}:")), "{query}: {page}");
    }
    let csrf = op.csrf().await;
    let resp = op
        .post(
            "/console/keys",
            &[("csrf", &csrf), ("name", "x"), ("rpm", "lots")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("rpm:"));

    // The playground's quote answers with the API's envelope, naming the field.
    let mut key = Console::sign_in(&app, &app.key).await;
    let csrf = key.csrf().await;
    let resp = key
        .post(
            "/console/playground/quote",
            &[
                ("csrf", &csrf),
                ("model", "kling-video-o1"),
                ("prompt", "x"),
                ("duration", "99"),
                ("aspect_ratio", "16:9"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "duration", "{body}");
    // It refuses a callback URL the create would refuse: no price for a task never made.
    for url in ["http://example.com/h", "https://10.0.0.5/h"] {
        let resp = key
            .post(
                "/console/playground/quote",
                &[
                    ("csrf", &csrf),
                    ("model", "kling-video-o1"),
                    ("prompt", "a kite"),
                    ("duration", "5"),
                    ("aspect_ratio", "16:9"),
                    ("callback_url", url),
                ],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{url}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], "callback_url", "{url}: {body}");
    }
    let resp = key
        .post(
            "/console/playground/quote",
            &[
                ("csrf", &csrf),
                ("model", "kling-video-o1"),
                ("prompt", "a kite"),
                ("duration", "5"),
                ("aspect_ratio", "16:9"),
                ("mode", "std"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["quote"]["estimated_usd"].as_f64().unwrap() > 0.0,
        "{body}"
    );
    assert_eq!(body["request"]["duration"], "5");
}

#[tokio::test]
async fn the_task_page_lists_webhook_deliveries_and_redelivers_one() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = sandbox_config(&db);
    cfg.webhooks.allow_private_targets = true;
    cfg.sandbox.task_seconds = 1.0;
    let app = TestApp::start(cfg).await;
    let receiver = Receiver::start().await;
    let mut body = prompt_task();
    body["callback_url"] = json!(receiver.url());
    let id = app.create(&body).await["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id, std::time::Duration::from_secs(20))
        .await;
    let first = receiver
        .wait_for(1, std::time::Duration::from_secs(20))
        .await;
    let event_id = first[0].header("webhook-id").to_string();

    let mut key = Console::sign_in(&app, &app.key).await;
    let (status, page) = key.get(&format!("/console/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("video.generation.completed") && page.contains(">200<"),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let resp = key
        .post(
            &format!("/console/tasks/{id}/events/{event_id}/redeliver"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let again = receiver
        .wait_for(2, std::time::Duration::from_secs(20))
        .await;
    assert_eq!(
        again[1].header("webhook-id"),
        event_id,
        "the same event, delivered again"
    );
}

/// Whether the session opens a page.
async fn session_alive(c: &mut Console) -> bool {
    c.get("/console/tasks").await.0 == StatusCode::OK
}

async fn a_rotation_ends_the_old_secrets_sessions_after_the_grace_period(kind: Db) {
    let db = TestDb::new(kind).await;
    let mut cfg = sandbox_config(&db);
    cfg.admin.key_rotation_grace_secs = 0;
    let app = TestApp::start(cfg).await;
    let (b_id, b_secret) = second_key(&app).await;
    let mut old = Console::sign_in(&app, &b_secret).await;
    assert!(session_alive(&mut old).await);
    let store = &app.gateway().store;
    let rotated = store.rotate_key(&b_id, 0).await.unwrap().unwrap();
    assert!(
        !session_alive(&mut old).await,
        "a session of the rotated-out secret ends when its grace does"
    );
    let mut new = Console::sign_in(&app, &rotated.key).await;
    assert!(session_alive(&mut new).await);

    // Within a grace period the old secret's session lives on, as the secret does; a
    // session opened with the new secret outlives the next rotation's grace too.
    let mut current = Console::sign_in(&app, &rotated.key).await;
    store.rotate_key(&b_id, 60_000).await.unwrap().unwrap();
    assert!(session_alive(&mut current).await);
}
on_both_stores!(a_rotation_ends_the_old_secrets_sessions_after_the_grace_period);

async fn an_operator_session_ends_when_the_admin_token_changes_or_goes(kind: Db) {
    let db = TestDb::new(kind).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let mut op = Console::sign_in(&app, ADMIN_TOKEN).await;
    assert!(session_alive(&mut op).await);

    // Another gateway on the same store, with the same token: the session is good there.
    let same = TestApp::restart_with(sandbox_config(&db), app.key.clone()).await;
    op.base = same.base.clone();
    assert!(session_alive(&mut op).await);

    let mut changed = sandbox_config(&db);
    changed.admin.token = Some(Secret::new("another-admin-token-0123456789abcdef"));
    let changed = TestApp::restart_with(changed, app.key.clone()).await;
    op.base = changed.base.clone();
    assert!(
        !session_alive(&mut op).await,
        "the old token's session ends"
    );

    let mut off = sandbox_config(&db);
    off.admin.token = None;
    let off = TestApp::restart_with(off, app.key.clone()).await;
    op.base = off.base.clone();
    assert!(
        !session_alive(&mut op).await,
        "no operator console without the admin API"
    );
    // A key's session is unaffected by either.
    let mut key = Console::sign_in(&off, &app.key).await;
    assert!(session_alive(&mut key).await);
}
on_both_stores!(an_operator_session_ends_when_the_admin_token_changes_or_goes);

/// Signs in over "https" (the proxy's header) with `mode`, returning the session cookie as
/// set and a client that sends it back by the name it was set with.
async fn cookie_with(mode: SecureCookies) -> (String, bool) {
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = sandbox_config(&db);
    cfg.console.secure_cookies = mode;
    let app = TestApp::start(cfg).await;
    let (http, resp) = sign_in_behind_https(&app).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.contains("omnigate_session="))
        .expect("a session cookie");
    let works = http
        .get(format!("{}/console/tasks", app.base))
        .header(COOKIE, session.split(';').next().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        == StatusCode::OK;
    (session, works)
}

#[tokio::test]
async fn the_session_cookie_is_host_prefixed_whenever_it_is_secure() {
    for mode in [SecureCookies::Auto, SecureCookies::Always] {
        let (cookie, works) = cookie_with(mode).await;
        assert!(
            cookie.starts_with("__Host-omnigate_session="),
            "{mode:?}: {cookie}"
        );
        for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/;"] {
            assert!(cookie.contains(flag), "{mode:?}: {flag} missing: {cookie}");
        }
        assert!(!cookie.contains("Domain"), "{cookie}");
        assert!(works, "{mode:?}: the prefixed cookie opens the console");
    }
    let (cookie, works) = cookie_with(SecureCookies::Never).await;
    assert!(cookie.starts_with("omnigate_session="), "{cookie}");
    assert!(
        !cookie.contains("Secure") && cookie.contains("Path=/console"),
        "{cookie}"
    );
    assert!(works, "never: the plain cookie opens the console");
}

#[tokio::test]
async fn console_pages_carry_the_security_headers() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let c = Console::sign_in(&app, ADMIN_TOKEN).await;
    for path in ["/console/login", "/console/tasks", "/console/keys"] {
        let resp = c
            .http
            .get(format!("{}{path}", c.base))
            .header(COOKIE, c.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
    }
}

#[tokio::test]
async fn wrong_tokens_at_sign_in_are_throttled_per_address() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = TestApp::start(sandbox_config(&db)).await;
    let mut c = Console::new(&app);
    let (_, page) = c.get("/console/login").await;
    let nonce = csrf_in(&page);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let resp = c
            .post("/console/login", &[("csrf", &nonce), ("token", "og_wrong")])
            .await;
        statuses.push((resp.status(), resp.headers().get("retry-after").cloned()));
    }
    assert!(statuses[..10]
        .iter()
        .all(|(s, _)| *s == StatusCode::UNAUTHORIZED));
    let (status, retry) = &statuses[10];
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some(), "429 says when to retry");
    // Refused before the token is looked at: the right one does not get in either.
    let resp = c
        .post(
            "/console/login",
            &[("csrf", &nonce), ("token", ADMIN_TOKEN)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}
