//! The adapters against the simulators where the wire gets hostile: redirects, huge
//! bodies, proxy failures, answers in words nobody documented, lost submits found again
//! by our id, and element ids too big for a double. Each test checks the adapter's own
//! verdict (the `ProviderError` it returns, the body the simulator received); what the
//! submit path and the poller make of those verdicts is tested with them.

mod support;

use std::sync::Arc;

use omnigate::domain::{Model, TaskStatus, VideoRequest};
use omnigate::providers::{self, ErrorKind, Lookup, Provider, ProviderError};
use serde_json::{json, Value};
use support::app::{Db, TestApp, TestDb};
use support::fixtures::models_of;
use support::sim::{Fault, Script, Sim, SimDialect, SimError};

const KLING_FLAVOURS: [SimDialect; 3] = [
    SimDialect::Anyfast,
    SimDialect::Kkiai,
    SimDialect::KlingOfficial,
];
/// Past 2^53: a double cannot hold it exactly.
const BIG_ELEMENT_ID: u64 = 835266081714884677;

async fn adapter(dialect: SimDialect) -> (Arc<dyn Provider>, Sim) {
    let sim = Sim::start(dialect).await;
    let models = models_of(dialect);
    let name = format!("{dialect:?}").to_lowercase();
    let provider = providers::build(&name, &sim.provider_config(models, 0.1)).expect("adapter");
    (provider, sim)
}

fn request(v: Value) -> VideoRequest {
    serde_json::from_value(v).expect("test request parses")
}

fn text_to_video() -> VideoRequest {
    request(json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9"}))
}

fn task_id() -> String {
    format!("vgt_{}", uuid::Uuid::new_v4().simple())
}

async fn submit_ok(provider: &dyn Provider, id: &str) -> String {
    let submitted = provider
        .submit(id, &text_to_video())
        .await
        .expect("submit is accepted");
    submitted.upstream_id
}

// ---------------------------------------------------------------------------------------
// The upstream client (item 13, 18)

#[tokio::test]
async fn a_redirect_is_never_followed_and_after_a_submit_it_is_ambiguous() {
    for dialect in SimDialect::ALL {
        let (provider, sim) = adapter(dialect).await;
        sim.push_submit_fault(Fault::Redirect);
        let err = provider
            .submit(&task_id(), &text_to_video())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed, "{dialect:?}: {err}");
        assert!(err.ambiguous, "{dialect:?}");
        assert_eq!(err.http_status, Some(302));

        let upstream_id = submit_ok(provider.as_ref(), &task_id()).await;
        sim.push_query_fault(Fault::Redirect);
        let err = provider.query(&upstream_id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed, "{dialect:?}");
        assert!(!err.ambiguous);
        // Following it would have reached `/redirected`, which the simulator records.
        assert!(
            sim.rejections().is_empty(),
            "{dialect:?}: {:?}",
            sim.rejections()
        );
    }
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_malformed_not_read_to_the_end() {
    for dialect in SimDialect::ALL {
        let (provider, sim) = adapter(dialect).await;
        let upstream_id = submit_ok(provider.as_ref(), &task_id()).await;
        sim.push_query_fault(Fault::Oversized(6 * 1024 * 1024));
        let err = provider.query(&upstream_id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed, "{dialect:?}: {err}");
        assert!(err.message.contains("larger than"), "{}", err.message);
        // Just under the cap is read whole (and then is not a task answer either).
        sim.push_query_fault(Fault::Oversized(3 * 1024 * 1024));
        let err = provider.query(&upstream_id).await.unwrap_err();
        assert!(!err.message.contains("larger than"), "{}", err.message);
    }
}

#[tokio::test]
async fn a_bad_gateway_after_a_submit_is_ambiguous_unless_the_provider_refused_in_it() {
    for dialect in SimDialect::ALL {
        let (provider, sim) = adapter(dialect).await;
        sim.push_submit_fault(Fault::Status(502, json!({"error": "bad gateway"})));
        let err = provider
            .submit(&task_id(), &text_to_video())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable, "{dialect:?}");
        assert!(err.ambiguous, "{dialect:?}: a 502 may hide a created task");
    }
    let (kling, sim) = adapter(SimDialect::KlingOfficial).await;
    let refusal = json!({"code": 1201, "message": "invalid duration", "request_id": "r"});
    sim.push_submit_fault(Fault::Status(502, refusal));
    let err = kling
        .submit(&task_id(), &text_to_video())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(!err.ambiguous, "Kling's own code says it refused");
}

#[tokio::test]
async fn a_long_provider_message_is_cut_and_cannot_forge_a_log_line() {
    let (provider, sim) = adapter(SimDialect::Kkiai).await;
    let words = format!("bad prompt\nINFO forged line {}", "x".repeat(3000));
    sim.push_submit_fault(Fault::Status(400, json!({"code": 1201, "message": words})));
    let err = provider
        .submit(&task_id(), &text_to_video())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.chars().count() <= 501, "{}", err.message.len());
    assert!(err.message.starts_with("bad prompt\nINFO"));
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "{shown}");
    assert!(shown.contains(r"bad prompt\nINFO"), "{shown}");
}

// ---------------------------------------------------------------------------------------
// Answers nobody documented (item 6)

fn state_field(dialect: SimDialect) -> &'static str {
    match dialect {
        SimDialect::Modellix | SimDialect::Anyfast => "data.status",
        SimDialect::Apimodels => "data.state",
        SimDialect::Kkiai | SimDialect::KlingOfficial => "data.task_status",
    }
}

fn assert_unreadable(dialect: SimDialect, err: &ProviderError, field: &str, word: &str) {
    assert_eq!(err.kind, ErrorKind::Unreadable, "{dialect:?}: {err}");
    assert!(
        err.message.starts_with(field),
        "{dialect:?}: {}",
        err.message
    );
    assert!(err.message.contains(word), "{dialect:?}: {}", err.message);
    assert!(!err.ambiguous);
    let raw = err.raw_body.as_deref().expect("the answer is kept");
    assert!(raw.contains(word), "{dialect:?}: {raw}");
    assert!(raw.len() <= 2048);
}

#[tokio::test]
async fn an_unknown_state_word_is_unreadable_in_every_dialect_and_the_next_answer_reads() {
    for dialect in SimDialect::ALL {
        let (provider, sim) = adapter(dialect).await;
        let upstream_id = submit_ok(provider.as_ref(), &task_id()).await;
        sim.push_query_fault(Fault::StateWord("frobbing".into()));
        let err = provider.query(&upstream_id).await.unwrap_err();
        assert_unreadable(dialect, &err, state_field(dialect), "\"frobbing\"");
        let task = provider.query(&upstream_id).await.expect("normal answer");
        assert_ne!(task.status, TaskStatus::Failed);
    }
}

#[tokio::test]
async fn success_without_a_video_url_is_unreadable_in_every_dialect() {
    for dialect in SimDialect::ALL {
        let (provider, sim) = adapter(dialect).await;
        let upstream_id = submit_ok(provider.as_ref(), &task_id()).await;
        sim.push_query_fault(Fault::SucceededWithoutUrl);
        let err = provider.query(&upstream_id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable, "{dialect:?}: {err}");
        assert!(err.message.contains("no video URL"), "{}", err.message);
        assert!(err.raw_body.is_some());
    }
}

#[tokio::test]
async fn modellix_reads_the_task_where_its_create_answer_says_on_its_own_host() {
    let (provider, sim) = adapter(SimDialect::Modellix).await;
    sim.set_script(Script {
        queued_polls: 0,
        processing_polls: 0,
        ..Script::default()
    });
    // The simulator's get_result URL is the usual path on its own host: a plain id.
    let upstream_id = submit_ok(provider.as_ref(), &task_id()).await;
    assert!(!upstream_id.contains('#'), "{upstream_id}");
    let done = provider.query(&upstream_id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    // The carried form is read too, and only ever as a path on the configured host.
    let carried = format!("{upstream_id}#/api/v1/tasks/{upstream_id}");
    let again = provider.query(&carried).await.unwrap();
    assert_eq!(again.upstream_id, upstream_id);
    assert!(sim.rejections().is_empty(), "{:?}", sim.rejections());
}

// ---------------------------------------------------------------------------------------
// Finding a lost submit by our id (item 4)

#[tokio::test]
async fn kling_and_kkiai_find_a_task_by_our_id_with_one_query_and_no_list() {
    for dialect in [SimDialect::Kkiai, SimDialect::KlingOfficial] {
        let (provider, sim) = adapter(dialect).await;
        let ours = task_id();
        let upstream_id = submit_ok(provider.as_ref(), &ours).await;
        for _ in 0..3 {
            submit_ok(provider.as_ref(), &task_id()).await;
        }
        let before = sim.query_count();
        let Lookup::Found(task) = provider.find_by_external_id(&ours).await.unwrap() else {
            panic!("{dialect:?}: the task is there");
        };
        assert_eq!(task.upstream_id, upstream_id, "{dialect:?}");
        assert_eq!(sim.query_count() - before, 1, "{dialect:?}: one call");
        assert_eq!(sim.list_count(), 0, "{dialect:?}");
    }
}

#[tokio::test]
async fn a_lookup_that_misses_directly_asks_the_list_before_saying_absent() {
    for dialect in KLING_FLAVOURS {
        let (provider, sim) = adapter(dialect).await;
        let ours = task_id();
        let upstream_id = submit_ok(provider.as_ref(), &ours).await;
        let found = provider.find_by_external_id(&ours).await.unwrap();
        assert!(matches!(&found, Lookup::Found(t) if t.upstream_id == upstream_id));
        let absent = provider.find_by_external_id(&task_id()).await.unwrap();
        assert_eq!(absent, Lookup::Absent, "{dialect:?}");
        assert!(
            sim.list_count() >= 1,
            "{dialect:?}: absence is confirmed by the list"
        );
        assert!(
            sim.rejections().is_empty(),
            "{dialect:?}: {:?}",
            sim.rejections()
        );
    }
}

#[tokio::test]
async fn transient_lookup_failures_come_back_as_kinds_worth_retrying() {
    let transient = [
        (Fault::Error(SimError::Server), ErrorKind::Retryable),
        (Fault::Error(SimError::RateLimited), ErrorKind::RateLimited),
        (Fault::Malformed, ErrorKind::Retryable),
        (Fault::Hang, ErrorKind::Timeout),
    ];
    for dialect in KLING_FLAVOURS {
        let (provider, sim) = adapter(dialect).await;
        for (fault, kind) in transient.clone() {
            sim.push_query_fault(fault.clone());
            let err = provider.find_by_external_id(&task_id()).await.unwrap_err();
            assert_eq!(err.kind, kind, "{dialect:?} {fault:?}: {err}");
        }
    }
    // The same on the list step, after the direct query missed.
    let (provider, sim) = adapter(SimDialect::Kkiai).await;
    sim.push_query_fault(Fault::Status(404, json!({"code": 1203, "message": "no"})));
    sim.push_query_fault(Fault::Malformed);
    let err = provider.find_by_external_id(&task_id()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err}");
}

#[tokio::test]
async fn a_duplicate_external_task_id_refusal_says_look_again() {
    for dialect in KLING_FLAVOURS {
        let (provider, sim) = adapter(dialect).await;
        let ours = task_id();
        submit_ok(provider.as_ref(), &ours).await;
        let err = provider.submit(&ours, &text_to_video()).await.unwrap_err();
        assert!(err.ambiguous, "{dialect:?}: {err}");
        assert_eq!(sim.created_count(), 1);
        assert!(matches!(
            provider.find_by_external_id(&ours).await.unwrap(),
            Lookup::Found(_)
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Refusals and required fields (item 7)

#[tokio::test]
async fn parameter_and_content_refusals_are_classified_in_every_dialect() {
    for dialect in SimDialect::ALL {
        let (provider, sim) = adapter(dialect).await;
        sim.push_submit_fault(Fault::Error(SimError::BadRequest));
        let err = provider
            .submit(&task_id(), &text_to_video())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest, "{dialect:?}");
        assert!(!err.ambiguous);
        sim.push_submit_fault(Fault::Error(SimError::ContentPolicy));
        let err = provider
            .submit(&task_id(), &text_to_video())
            .await
            .unwrap_err();
        let want = if sim.dialect.is_kling() {
            ErrorKind::ContentPolicy
        } else {
            // modellix and apimodels document no content-policy code: a plain 400.
            ErrorKind::BadRequest
        };
        assert_eq!(err.kind, want, "{dialect:?}");
    }
}

#[tokio::test]
async fn kkiai_gets_a_duration_on_a_base_video_edit_as_its_table_requires() {
    let edit = request(json!({
        "model": "kling-v3-omni", "prompt": "make it snow",
        "video_list": [{"video_url": "https://v.example/in.mp4", "refer_type": "base", "duration": 6.2}],
    }));
    let (kkiai, sim) = adapter(SimDialect::Kkiai).await;
    kkiai
        .submit(&task_id(), &edit)
        .await
        .expect("kkiai takes the edit");
    assert_eq!(sim.created_bodies()[0]["duration"], "6");
    for dialect in [SimDialect::Anyfast, SimDialect::KlingOfficial] {
        let (provider, sim) = adapter(dialect).await;
        provider.submit(&task_id(), &edit).await.expect("accepted");
        assert!(
            sim.created_bodies()[0].get("duration").is_none(),
            "{dialect:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Element ids past 2^53, end to end (item 9)

async fn big_element_ids_reach_the_provider_exactly(db: Db) {
    let db = TestDb::new(db).await;
    for dialect in [
        SimDialect::Kkiai,
        SimDialect::KlingOfficial,
        SimDialect::Anyfast,
        SimDialect::Apimodels,
    ] {
        let sim = Sim::start(dialect).await;
        let name = format!("{dialect:?}").to_lowercase();
        let cfg = sim.provider_config(&[Model::KlingV3Omni], 0.1);
        let app = TestApp::spawn(&db, vec![(name, cfg)]).await;
        // Written out as text so that nothing in the test itself passes through a double.
        let body = format!(
            r#"{{"model": "kling-v3-omni", "prompt": "<<<element_1>>> and <<<element_2>>>",
                "aspect_ratio": "16:9",
                "element_list": [{{"element_id": {BIG_ELEMENT_ID}}}, {{"element_id": "{}"}}]}}"#,
            BIG_ELEMENT_ID + 1
        );
        app.create(&serde_json::from_str(&body).unwrap()).await;
        let sent = &sim.created_bodies()[0]["element_list"];
        let (first, second) = (&sent[0]["element_id"], &sent[1]["element_id"]);
        if dialect == SimDialect::Kkiai {
            assert_eq!(first, &json!(BIG_ELEMENT_ID.to_string()));
            assert_eq!(second, &json!((BIG_ELEMENT_ID + 1).to_string()));
        } else {
            assert_eq!(first.as_u64(), Some(BIG_ELEMENT_ID), "{dialect:?}: {first}");
            assert_eq!(second.as_u64(), Some(BIG_ELEMENT_ID + 1), "{dialect:?}");
            assert!(!first.is_f64(), "{dialect:?}");
        }
    }
}
on_both_stores!(big_element_ids_reach_the_provider_exactly);

// ---------------------------------------------------------------------------------------
// The sandbox's modellix answers as modellix's document does (issue 24.9)

/// Log lines written while `fut` runs (its own subscriber, at WARN and above).
async fn warnings_during<T>(fut: impl std::future::Future<Output = T>) -> (T, String) {
    use tracing::instrument::WithSubscriber;
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let out = fut.with_subscriber(subscriber).await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[tokio::test]
async fn the_sandboxs_first_modellix_task_logs_no_warning_and_is_read_back() {
    let sandbox = omnigate::sandbox::start(0.5).await.unwrap();
    let (name, cfg) = omnigate::sandbox::provider_configs(sandbox.addr)
        .into_iter()
        .find(|(_, c)| c.dialect == omnigate::config::Dialect::Modellix)
        .expect("a sandbox modellix");
    let modellix = providers::build(&name, &cfg).unwrap();
    let (submitted, logged) = warnings_during(modellix.submit(&task_id(), &text_to_video())).await;
    let submitted = submitted.expect("the sandbox takes the task");
    assert_eq!(logged, "", "no warning on the sandbox's first task");
    assert!(
        !submitted.upstream_id.contains('#'),
        "{}",
        submitted.upstream_id
    );
    let seen = modellix.query(&submitted.upstream_id).await.unwrap();
    assert_eq!(seen.upstream_id, submitted.upstream_id);
    // As the document shows it: absolute, on the sandbox's own host.
    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/kling/kling-v3-omni/async", cfg.base_url))
        .json(&json!({"prompt": "a cat"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = created["data"]["get_result"]["url"].as_str().unwrap();
    let id = created["data"]["task_id"].as_str().unwrap();
    assert_eq!(url, format!("{}/api/v1/tasks/{id}", cfg.base_url));
    sandbox.server.abort();
}
