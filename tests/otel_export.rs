//! OpenTelemetry export, in a test binary of its own because the tracing subscriber is
//! global to a process: a gateway with `[otel] enabled` sends its spans over OTLP/HTTP to
//! a receiver on 127.0.0.1, and they are there after a shutdown flushed them.

mod support;

use std::time::Duration;

use omnigate::domain::Model;
use reqwest::StatusCode;
use serde_json::json;
use support::app::{config, Db, TestApp, TestDb};
use support::receiver::{Receiver, Reply};
use support::sim::{Sim, SimDialect};

/// The id of the only task the gateway holds.
async fn resp_id(app: &TestApp) -> String {
    let (status, list) = app.get("/v1/video/generations").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"][0]["id"].as_str().expect("a task").to_string()
}

/// Whether `needle` occurs in `hay` (protobuf keeps strings as raw UTF-8 bytes).
fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_request_and_its_provider_call_reach_the_otlp_collector() {
    let collector = Receiver::start().await;
    // An empty protobuf message is a valid ExportTraceServiceResponse.
    collector.by_default(Reply {
        body: String::new(),
        ..Reply::ok().header("content-type", "application/x-protobuf")
    });
    let db = TestDb::new(Db::Sqlite).await;
    let sim = Sim::start(SimDialect::Apimodels).await;
    let mut cfg = config(
        &db,
        vec![(
            "otelsim".into(),
            sim.provider_config(&[Model::KlingV3Omni], 0.1),
        )],
    );
    cfg.otel.enabled = true;
    cfg.otel.endpoint = collector.base.clone();
    cfg.otel.service_name = "omnigate-otel-test".into();
    // The provider is given a callback URL, whose token must reach no exported span.
    cfg.webhooks.public_base_url = Some("http://gateway.invalid".into());
    let telemetry = omnigate::telemetry::init(&cfg.log, &cfg.otel).expect("telemetry starts");

    let mut app = TestApp::start(cfg).await;
    let request_id = format!("otel-{}", uuid::Uuid::new_v4().simple());
    // The caller's trace, which the request's spans must join.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let resp = app
        .client
        .post(format!("{}/v1/video/generations", app.base))
        .bearer_auth(&app.key)
        .header("x-request-id", &request_id)
        .header("traceparent", &traceparent)
        .json(
            &json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk",
                      "aspect_ratio": "16:9", "duration": 5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // The provider call carries the same trace, as a child of one of our spans.
    let sent = sim.submit_header("traceparent");
    let sent = sent
        .last()
        .cloned()
        .flatten()
        .expect("a traceparent on the submit");
    assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
    assert!(
        !sent.contains("00f067aa0ba902b7"),
        "its parent is our span, not the caller's"
    );
    assert_eq!(
        sim.submit_request_ids().last(),
        Some(&Some(request_id.clone()))
    );
    // An upstream callback on the token the provider was given.
    let task_id = resp_id(&app).await;
    let callback_url = sim.created_bodies()[0]["callback_url"]
        .as_str()
        .expect("a callback_url")
        .to_string();
    let token = callback_url.rsplit('/').next().unwrap().to_string();
    let status = app
        .client
        .post(format!("{}/upstream/callbacks/{token}", app.base))
        .json(&json!({"id": "whatever", "status": "processing"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_ne!(status, StatusCode::NOT_FOUND, "the token was taken");
    app.app.take().unwrap().shutdown().await;
    // Flushes what the batch processor still holds.
    telemetry.shutdown().await;

    let got = collector.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        got.iter().all(|r| r.path == "/v1/traces"),
        "OTLP/HTTP traces path"
    );
    assert!(got
        .iter()
        .all(|r| r.header("content-type") == "application/x-protobuf"));
    let all: Vec<u8> = got.iter().flat_map(|r| r.body.clone()).collect();
    assert!(
        contains(&all, "omnigate-otel-test"),
        "service.name resource"
    );
    assert!(
        contains(&all, "POST /v1/video/generations"),
        "the request's span"
    );
    assert!(contains(&all, &request_id), "the request id on its span");
    assert!(contains(&all, "otelsim submit"), "the provider call's span");
    assert!(
        contains(&all, "POST /upstream/callbacks/{token}"),
        "the callback's span, named by its route template"
    );
    assert!(
        contains(&all, &task_id),
        "the callback's span names its task"
    );
    assert!(!contains(&all, &token), "no exported span holds the token");
    // Protobuf carries trace ids as their 16 raw bytes.
    let raw: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        all.windows(16).any(|w| w == raw.as_slice()),
        "spans joined the caller's trace"
    );
}
