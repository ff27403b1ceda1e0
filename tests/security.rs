//! What the security review asked of the gateway's edges: the admin API checks its token
//! before reading a body and says so in its own words, wrong credentials are throttled per
//! client address, short admin tokens are refused at start, every answer carries `nosniff`,
//! and `/docs` serves its reference from the binary under a self-only CSP.

mod support;

use omnigate::config::{SandboxMode, Secret};
use reqwest::StatusCode;
use serde_json::Value;
use support::app::{config, Db, TestApp, TestDb};

const ADMIN: &str = "security-admin-token-0123456789abcdef";

async fn gateway(db: &TestDb, token: Option<&str>, trust_forwarded_for: bool) -> TestApp {
    let mut cfg = config(db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.admin.token = token.map(Secret::new);
    cfg.server.trust_forwarded_for = trust_forwarded_for;
    TestApp::start(cfg).await
}

/// `POST /admin/keys` with a body no handler would take.
async fn bad_create(
    app: &TestApp,
    token: Option<&str>,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/admin/keys", app.base))
        .header("content-type", "application/json")
        .body(r#"{"nonsense": true}"#);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_admin_token_is_checked_before_the_body_is_read() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = gateway(&db, Some(ADMIN), false).await;
    for token in [None, Some("wrong")] {
        let resp = bad_create(&app, token, None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_admin_token", "{body}");
        assert_eq!(body["error"]["message"], "invalid admin token");
        assert!(
            !body.to_string().contains("budget_usd"),
            "no field list: {body}"
        );
    }
    let resp = app
        .client
        .patch(format!("{}/admin/keys/key_x", app.base))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // With the token, the same body is judged (and refused) as a body.
    let resp = bad_create(&app, Some(ADMIN), None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["cache-control"], "no-store");

    let off_db = TestDb::new(Db::Sqlite).await;
    let off = gateway(&off_db, None, false).await;
    let resp = bad_create(&off, Some(ADMIN), None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "the admin API is off");
}

#[tokio::test]
async fn wrong_admin_tokens_are_throttled_per_client_address() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = gateway(&db, Some(ADMIN), false).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(bad_create(&app, Some("wrong"), None).await.status());
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses[10..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let resp = bad_create(&app, Some(ADMIN), Some("203.0.113.9")).await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "untrusted X-Forwarded-For changes nothing, and the right token waits too"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_failed_attempts");

    // Behind a trusted proxy each client has its own bucket.
    let db = TestDb::new(Db::Sqlite).await;
    let proxied = gateway(&db, Some(ADMIN), true).await;
    for _ in 0..11 {
        bad_create(&proxied, Some("wrong"), Some("198.51.100.1, 203.0.113.1")).await;
    }
    let blocked = bad_create(&proxied, Some(ADMIN), Some("203.0.113.1")).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = bad_create(&proxied, Some(ADMIN), Some("203.0.113.1, 203.0.113.2")).await;
    assert_eq!(
        other.status(),
        StatusCode::BAD_REQUEST,
        "another client is not blocked"
    );
}

#[tokio::test]
async fn a_short_admin_token_is_refused_at_start() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut cfg = config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.admin.token = Some(Secret::new("too-short-0123456789"));
    let err = omnigate::app::start(cfg).await.err().expect("refused");
    assert!(err.to_string().contains("admin.token_env"), "{err}");
    assert!(err.to_string().contains("32"), "{err}");
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = gateway(&db, Some(ADMIN), false).await;
    for path in [
        "/healthz",
        "/v1/video/generations",
        "/openapi.json",
        "/nowhere",
    ] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
    let resp = app
        .client
        .post(format!("{}/admin/keys", app.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "team-x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["cache-control"],
        "no-store",
        "a key's secret is not cached"
    );
}

#[tokio::test]
async fn the_docs_page_serves_its_reference_from_the_gateway_under_a_self_only_csp() {
    let db = TestDb::new(Db::Sqlite).await;
    let app = gateway(&db, Some(ADMIN), false).await;
    let resp = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let page = resp.text().await.unwrap();
    assert!(!page.contains("://"), "no other origin: {page}");
    assert!(!page.contains("<script>"), "no inline script: {page}");
    let mut assets = 0;
    for (at, _) in page.match_indices("/docs/assets/") {
        let rest = &page[at..];
        let path = &rest[..rest.find('"').unwrap()];
        let attrs = &rest[..rest.find('>').unwrap()];
        assert!(attrs.contains("integrity=\"sha384-"), "{attrs}");
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let ty = resp.headers()["content-type"].to_str().unwrap().to_string();
        let want = if path.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert!(ty.starts_with(want), "{path}: {ty}");
        assets += 1;
    }
    assert_eq!(assets, 3, "the script, the stylesheet and the starter");
}
