//! The OpenAPI document against the gateway that serves it: every route the router serves
//! is in the document with exactly its methods, and schemathesis (the Python package; CI
//! installs it) finds no 5xx and no answer that breaks the document.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use omnigate::config::{Config, SandboxMode, Secret};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::app::{config, Db, TestApp, TestDb};

const ADMIN: &str = "openapi-admin-token-0123456789abcdef";
/// Test cases per operation and phase; `OMNIGATE_SCHEMATHESIS_MAX_EXAMPLES` raises it (the
/// default keeps this test to a couple of minutes on two cores).
const DEFAULT_MAX_EXAMPLES: u32 = 12;

/// The sandbox on a fresh PostgreSQL database, the admin API on, and rate limits high
/// enough never to refuse but present, so the RateLimit headers are on the answers.
async fn gateway() -> (TestDb, TestApp) {
    let db = TestDb::new(Db::Postgres).await;
    let mut cfg: Config = config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.sandbox.task_seconds = 1.0;
    cfg.admin.token = Some(Secret::new(ADMIN));
    cfg.limits.default_rpm = Some(1_000_000);
    cfg.limits.default_read_rpm = Some(1_000_000);
    // The fuzzer sends many wrong admin tokens from one address on purpose.
    cfg.server.failed_auth_burst = 1_000_000;
    let app = TestApp::start(cfg).await;
    (db, app)
}

async fn document(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// The path of every `.route("...", ...)` in the API's source: the router has no list of
/// its routes to ask, and this is where a new one is written.
fn routes_in_source() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices(".route(") {
            let rest = text[i + ".route(".len()..].trim_start();
            if let Some(lit) = rest.strip_prefix('"') {
                paths.insert(lit[..lit.find('"').unwrap()].to_string());
            }
        }
    }
    paths
}

/// A request to `path` (its parameters filled in) with the credentials its prefix needs.
async fn probe(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    let mut concrete = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                concrete.push_str("probe");
            }
            _ if !in_param => concrete.push(c),
            _ => {}
        }
    }
    let token = if path.starts_with("/admin/") {
        ADMIN
    } else {
        &app.key
    };
    let mut req = app
        .client
        .request(method.clone(), format!("{}{concrete}", app.base))
        .bearer_auth(token);
    if method != Method::GET {
        req = req.json(&serde_json::json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_document_lists_every_route_the_router_serves_with_its_methods() {
    let (_db, app) = gateway().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();

    let missing: Vec<_> = routes_in_source()
        .into_iter()
        .filter(|p| !paths.contains_key(p))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an OpenAPI operation (add #[utoipa::path] to the handler and name it \
         in src/api/openapi.rs): {missing:?}"
    );

    for (path, item) in paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let documented = item.get(method.as_str().to_lowercase()).is_some();
            let (status, body) = probe(&app, method.clone(), path).await;
            if documented {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_ne!(
                    body["error"]["message"], "no such endpoint",
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }

    // Every operation says who may call it and what its errors look like.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let security = &op["security"];
            // The Kling facade is under Kling's `/v1/...` and the resellers' `/kling/v1/...`,
            // its errors in Kling's envelope.
            let kling = path.contains("/v1/videos/omni-video");
            let expected = if path.starts_with("/v1/") || kling {
                Some("api_key")
            } else if path.starts_with("/admin/") {
                Some("admin_token")
            } else {
                None
            };
            match expected {
                Some(scheme) => assert!(
                    security[0].get(scheme).is_some(),
                    "{method} {path}: {security}"
                ),
                None => assert!(security.is_null(), "{method} {path}: {security}"),
            }
            let errors = &op["responses"]["503"];
            let envelope = if kling { "KlingError" } else { "ErrorBody" };
            assert_eq!(
                errors["content"]["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{envelope}"),
                "{method} {path}"
            );
            assert_eq!(errors["headers"]["Retry-After"]["required"], true);
        }
    }
    // Every create says how a replay is marked.
    for (path, status) in [
        ("/v1/video/generations", "202"),
        ("/v1/videos", "200"),
        ("/v1/videos/omni-video", "200"),
        ("/kling/v1/videos/omni-video", "200"),
    ] {
        let answer = &paths[path]["post"]["responses"][status];
        assert!(
            answer["headers"].get("Idempotent-Replayed").is_some(),
            "{path}: {answer}"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");

    let page = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/docs/assets/docs.js"));
}

#[tokio::test]
async fn the_request_schema_carries_the_validators_limits() {
    let (_db, app) = gateway().await;
    let doc = document(&app).await;
    let req = &doc["components"]["schemas"]["VideoRequest"];
    assert_eq!(
        req["additionalProperties"], false,
        "unknown fields are refused"
    );
    assert_eq!(req["required"], serde_json::json!(["model"]));
    let props = &req["properties"];
    assert_eq!(props["prompt"]["maxLength"], 2500);
    assert_eq!(props["duration"]["oneOf"][0]["minimum"], 3);
    assert_eq!(props["duration"]["oneOf"][0]["maximum"], 15);
    assert_eq!(props["video_list"]["maxItems"], 1);
    assert_eq!(props["metadata"]["maxProperties"], 16);
    let model = &doc["components"]["schemas"]["Model"]["enum"];
    assert!(model
        .as_array()
        .unwrap()
        .contains(&"kling-v3-omni-video".into()));
}

/// schemathesis against the running gateway: every documented operation, valid and
/// invalid input, with the API key and the admin token from its config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let (_db, app) = gateway().await;
    let max_examples = std::env::var("OMNIGATE_SCHEMATHESIS_MAX_EXAMPLES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(DEFAULT_MAX_EXAMPLES);
    let dir = tempfile::tempdir().unwrap();
    // OpenAPI-aware auth: each security scheme of the document gets its own credential.
    let config_file = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config_file,
        format!(
            "[auth.openapi.api_key]\nbearer = \"{}\"\n\n[auth.openapi.admin_token]\nbearer = \"{ADMIN}\"\n",
            app.key
        ),
    )
    .unwrap();
    let base = app.base.clone();
    let report_dir = dir.path().join("report");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-m", "schemathesis.cli", "--config-file"])
            .arg(&config_file)
            .arg("run")
            .arg(format!("{base}/openapi.json"))
            .args(["--url", &base])
            .args(["--checks", CHECKS])
            .args(["--max-examples", &max_examples.to_string()])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--seed", "20261126"])
            .args(["--request-timeout", "10"])
            .args(["--max-failures", "50"])
            // Revoking or rotating a key would take away the run's own credential (the
            // only key there is), and every later call would be a 401; both are tested in
            // tests/key_limits.rs.
            .args([
                "--exclude-path-regex",
                r"^/admin/keys/\{id\}/(revoke|rotate)$",
            ])
            .args(["--suppress-health-check", "all"])
            .args(["--no-color"])
            .arg("--report-dir")
            .arg(&report_dir)
            .current_dir(dir.path())
            .output()
            .expect("python3 runs (CI installs schemathesis: pip install schemathesis)")
    });
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named schemathesis"),
        "schemathesis is not installed: pip install schemathesis"
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // Its summary (operations, test cases, phases), for a run with --nocapture such as
    // the benchmark's.
    println!("{stdout}");
}

/// What must hold of every answer. Left out: `positive_data_acceptance`, which expects a
/// 2xx for any body the schema allows, but the validator's conditional rules (o1 takes
/// only 5 or 10 s for text-to-video, `aspect_ratio` unless a first frame, ...) are beyond
/// what a JSON schema can say, so such a body is rightly a 400; and `use_after_free` and
/// `ensure_resource_availability`, which expect a created resource to be deletable at
/// once, where `DELETE /v1/videos/{id}` refuses an unfinished video (400 naming it).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      negative_data_rejection,missing_required_header,unsupported_method,\
                      ignored_auth";
