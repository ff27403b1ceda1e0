//! Property tests over the parsers of outside input (`support::entry_points`, the same
//! checks the fuzz targets in `fuzz/` run under libFuzzer): client create bodies on both
//! APIs, each dialect's create and status answers, and upstream callbacks. Inputs are
//! arbitrary bytes, arbitrary JSON, and JSON shaped like the real thing with every field
//! drawn from valid and invalid values. Nothing may panic or be refused with a 5xx, and
//! every request a create accepts must reach each provider routing would give it as a
//! body that provider's simulator accepts.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use omnigate::config::ProviderConfig;
use omnigate::domain::VideoRequest;
use omnigate::providers;
use omnigate::routing::{Router, Upstream};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use support::app::{Db, TestApp, TestDb};
use support::entry_points::{self, Dialect, TASK_STATES};
use support::fixtures::{models_of, BOTH};
use support::sim::{Sim, SimDialect};

/// Cases per property: the whole file runs in a few seconds of a debug build.
/// `PROPTEST_CASES=N` runs N instead, for a longer search.
const CASES: u32 = 384;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Failures are reported with the shrunk input; nothing is written to the tree.
        failure_persistence: None,
        ..Config::default()
    })
}

// ---- generators -------------------------------------------------------------------

/// Any JSON value, a few levels deep, with keys that are often the dialects' own.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Field names the parsers look for, and some they do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&[
            "code", "message", "msg", "data", "task_id", "id", "taskId", "status", "state",
            "task_status", "task_status_msg", "task_result", "videos", "url", "video_url",
            "duration", "progress", "resultUrls", "failMsg", "fail_reason", "error", "result",
            "resources", "get_result", "task_info", "external_task_id", "model", "prompt",
            "image_list", "video_list", "image_url", "type", "refer_type",
        ][..]).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

/// State words of every dialect, in odd spellings too.
fn word() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "success",
            "SUCCESS",
            "succeed",
            "failed",
            "FAILURE",
            "failure",
            "pending",
            "processing",
            "completed",
            "submitted",
            "queued",
            "not_start",
            "in_progress",
            " Succeed ",
            "",
            "  ",
            "done",
            "0",
            "200",
            "5000",
            "1102",
            "https://cdn.example/v.mp4",
            "40%",
            "NaN",
            "a\u{0}b",
            "\u{0}",
        ][..],
    )
    .prop_map(str::to_string)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..256)
}

/// An HTTP status a provider might answer with.
fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(&[200u16, 201, 204, 302, 400, 401, 402, 404, 429, 500, 502, 504, 524][..]),
        1 => 100u16..600,
    ]
}

/// `Some(value)` a third of the time: most fields of a request are optional.
fn sometimes<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop::option::weighted(0.35, s).boxed()
}

fn one_of(values: Vec<Value>) -> BoxedStrategy<Value> {
    prop::sample::select(values).boxed()
}

/// One of `valid` most of the time, else one of `invalid`: enough requests get through
/// every rule to reach the simulators, and each rule still sees its violations.
fn mostly(valid: Vec<Value>, invalid: Vec<Value>) -> BoxedStrategy<Value> {
    prop_oneof![9 => one_of(valid), 1 => one_of(invalid)].boxed()
}

fn text() -> BoxedStrategy<Value> {
    prop_oneof![
        24 => Just(json!("a cat walks through <<<element_1>>>")),
        1 => Just(json!("")),
        1 => Just(json!("   ")),
        1 => Just(json!("a".repeat(2501))),
        1 => Just(json!("猫 🐈 walks\u{0}\n")),
        6 => "\\PC{1,20}".prop_map(Value::String),
    ]
    .boxed()
}

fn image() -> BoxedStrategy<Value> {
    let url = mostly(
        vec![
            json!("https://img.example/a.png"),
            json!("https://img.example/b.jpg"),
            json!("AAAA"),
            json!("data:image/png;base64,iVBORw0KGgo="),
        ],
        vec![
            json!("data:image/png;base64,"),
            json!("data:text/plain;base64,AAAA"),
            json!(""),
            json!(" https://img.example/a.png"),
            json!("ftp://img.example/a.png"),
            json!(7),
        ],
    );
    let frame = mostly(
        vec![json!("first_frame"), json!("end_frame")],
        vec![json!("middle")],
    );
    (url, sometimes(frame))
        .prop_map(|(url, frame)| {
            let mut entry = json!({"image_url": url});
            if let Some(frame) = frame {
                entry["type"] = frame;
            }
            entry
        })
        .boxed()
}

fn video() -> BoxedStrategy<Value> {
    let url = mostly(
        vec![json!("https://v.example/in.mp4")],
        vec![json!("AAAA"), json!("")],
    );
    let refer = mostly(vec![json!("base"), json!("feature")], vec![json!("other")]);
    let keep = one_of(vec![json!("yes"), json!("no"), json!(true)]);
    let duration = (2.0f64..11.0).prop_map(|d| json!((d * 10.0).round() / 10.0));
    (url, sometimes(refer), sometimes(keep), sometimes(duration))
        .prop_map(|(url, refer, keep, duration)| {
            let mut entry = Map::new();
            entry.insert("video_url".into(), url);
            let optional = [
                ("refer_type", refer),
                ("keep_original_sound", keep),
                ("duration", duration),
            ];
            for (k, v) in optional {
                if let Some(v) = v {
                    entry.insert(k.into(), v);
                }
            }
            Value::Object(entry)
        })
        .boxed()
}

fn shot() -> BoxedStrategy<Value> {
    (
        sometimes(0u32..8),
        text(),
        prop_oneof![4 => Just(1u32), 1 => 0u32..8],
        any::<bool>(),
    )
        .prop_map(|(index, prompt, duration, as_string)| {
            let mut entry = json!({"prompt": prompt});
            entry["duration"] = if as_string {
                json!(duration.to_string())
            } else {
                json!(duration)
            };
            if let Some(index) = index {
                entry["index"] = json!(index);
            }
            entry
        })
        .boxed()
}

/// The fields of a `POST /v1/video/generations` body, each often valid, sometimes not.
fn native_request() -> impl Strategy<Value = Value> {
    let model = prop_oneof![
        8 => Just(json!("kling-v3-omni")),
        6 => Just(json!("kling-video-o1")),
        1 => Just(json!("kling-v3-omni-video")),
        1 => Just(json!("sora-2")),
        1 => Just(json!(5)),
    ];
    let duration = prop_oneof![
        4 => (3u32..16).prop_map(|d| json!(d)),
        4 => one_of(vec![json!(5), json!(10)]),
        1 => (3u32..16).prop_map(|d| json!(format!(" {d} "))),
        1 => one_of(vec![json!("seven"), json!(-1), json!(5.5), json!(0)]),
    ];
    let ratio = mostly(
        vec![json!("16:9"), json!("9:16"), json!("1:1")],
        vec![json!("4:3")],
    );
    let core = (
        model,
        prop::option::weighted(0.85, text()),
        sometimes(text()),
        sometimes(mostly(
            vec![json!("std"), json!("pro")],
            vec![json!("ultra")],
        )),
        sometimes(duration),
        prop::option::weighted(0.8, ratio),
        sometimes(one_of(vec![json!("on"), json!("off")])),
    );
    let shot_type = one_of(vec![
        json!("customize"),
        json!("intelligence"),
        json!("auto"),
    ]);
    let multi_shot = prop_oneof![
        // Single shot, as most requests are.
        12 => Just((None, None, None)),
        2 => Just((Some(true), Some(json!("intelligence")), None)),
        // Shots that fill the default duration of 5 seconds.
        2 => (1usize..6).prop_flat_map(|n| prop::collection::vec(shot(), n)).prop_map(|mut shots| {
            let last = shots.len() - 1;
            for (i, shot) in shots.iter_mut().enumerate() {
                shot["duration"] = json!(if i == last { 5 - last } else { 1 });
            }
            (Some(true), Some(json!("customize")), Some(shots))
        }),
        3 => (
            prop::option::of(any::<bool>()),
            prop::option::of(shot_type),
            prop::option::of(prop::collection::vec(shot(), 0..7)),
        ),
    ];
    let media = (
        prop::option::weighted(0.4, prop::collection::vec(image(), 0..5)),
        prop::option::weighted(0.25, prop::collection::vec(video(), 1..3)),
        prop::option::weighted(
            0.25,
            prop::collection::vec(
                prop_oneof![
                    any::<u64>().prop_map(|id| json!({"element_id": id})),
                    any::<u64>().prop_map(|id| json!({"element_id": id.to_string()})),
                    Just(json!({"element_id": -3})),
                ],
                0..5,
            ),
        ),
        sometimes(any::<bool>().prop_map(Value::Bool)),
    );
    let extras = (
        sometimes(one_of(vec![
            json!("https://client.example/hooks/omnigate"),
            json!("http://client.example/hook"),
            json!("https://127.0.0.1/hook"),
            json!("https://client.example/a\u{0}b"),
            json!("https://client.example/a\tb"),
            json!("not a url"),
        ])),
        sometimes(one_of(vec![
            json!(["in_progress"]),
            json!(["completed", "completed"]),
            json!(["started"]),
        ])),
        sometimes(prop_oneof![
            prop::collection::btree_map("\\PC{0,70}", "\\PC{0,20}", 0..4).prop_map(|m| json!(m)),
            Just(json!({"n": 1})),
            Just(json!("flat")),
        ]),
        sometimes(one_of(vec![
            json!({"max_cost_usd": 100.0}),
            json!({"max_cost_usd": 0.01}),
            json!({"max_cost_usd": -1}),
            json!({"providers": ["modellix", "kkiai"]}),
            json!({"providers": []}),
            json!({"providers": [" "]}),
        ])),
        prop::option::weighted(0.05, (key(), any_json())),
    );
    (core, multi_shot, media, extras).prop_map(
        |(
            (model, prompt, negative, mode, duration, ratio, sound),
            (multi, shot_type, shots),
            (images, videos, elements, watermark),
            (callback_url, events, metadata, routing, unknown),
        )| {
            let mut body = Map::new();
            body.insert("model".into(), model);
            let fields = [
                ("prompt", prompt),
                ("negative_prompt", negative),
                ("mode", mode),
                ("duration", duration),
                ("aspect_ratio", ratio),
                ("sound", sound),
                ("multi_shot", multi.map(Value::Bool)),
                ("shot_type", shot_type),
                ("multi_prompt", shots.map(Value::Array)),
                ("image_list", images.map(Value::Array)),
                ("video_list", videos.map(Value::Array)),
                ("element_list", elements.map(Value::Array)),
                ("watermark", watermark),
                ("callback_url", callback_url),
                ("callback_events", events),
                ("metadata", metadata),
                ("routing", routing),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = unknown {
                body.insert(k, v);
            }
            Value::Object(body)
        },
    )
}

/// The fields of a `POST /v1/videos` body, and whether to send them as a multipart form.
fn openai_request() -> impl Strategy<Value = (Map<String, Value>, bool)> {
    let fields = (
        prop::option::weighted(0.9, text()),
        sometimes(one_of(vec![
            json!("kling-v3-omni"),
            json!("kling-video-o1"),
            json!("sora-2"),
            json!(""),
        ])),
        sometimes(prop_oneof![
            (0u32..17).prop_map(|s| json!(s.to_string())),
            (0u32..17).prop_map(|s| json!(s)),
            Just(json!("8s")),
            Just(json!(-4)),
        ]),
        sometimes(one_of(vec![
            json!("1280x720"),
            json!("1920x1080"),
            json!("720x1280"),
            json!("1080x1080"),
            json!("1024x1792"),
        ])),
        prop::option::weighted(0.05, Just(json!("file-123"))),
        prop::option::weighted(0.05, (key(), any_json())),
    );
    (fields, any::<bool>()).prop_map(
        |((prompt, model, seconds, size, reference, unknown), multipart)| {
            let mut body = Map::new();
            let known = [
                ("prompt", prompt),
                ("model", model),
                ("seconds", seconds),
                ("size", size),
                ("input_reference", reference),
            ];
            for (k, v) in known {
                if let Some(v) = v {
                    body.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = unknown {
                body.insert(k, v);
            }
            (body, multipart)
        },
    )
}

const BOUNDARY: &str = "omnigate-properties-boundary";

/// The fields as the OpenAI SDK sends them: one text part each (strings unquoted).
fn multipart(fields: &Map<String, Value>) -> Vec<u8> {
    let mut body = String::new();
    for (name, value) in fields {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{text}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body.into_bytes()
}

/// A task answer or callback in one dialect's shape, its fields drawn from any JSON.
fn dialect_answer(dialect: Dialect) -> impl Strategy<Value = Value> {
    let code = prop_oneof![
        Just(json!(0)),
        Just(json!(200)),
        Just(json!("success")),
        (0i64..6000).prop_map(|c| json!(c)),
        any_json(),
    ];
    let state = prop_oneof![4 => word().prop_map(Value::String), 1 => any_json()];
    let videos = prop_oneof![
        Just(json!([{"url": "https://cdn.example/v.mp4", "duration": "5.041"}])),
        Just(json!(["https://cdn.example/v.mp4"])),
        Just(json!([])),
        Just(json!([{"video_url": "", "duration": "x"}])),
        any_json(),
    ];
    let id = prop_oneof![
        Just(json!("task-1")),
        Just(json!(42)),
        Just(json!("")),
        word().prop_map(Value::String),
        any_json()
    ];
    let progress = prop_oneof![Just(json!("40%")), Just(json!(1e300)), any_json()];
    let noise = prop_oneof![
        any_json(),
        word().prop_map(Value::String),
        // Longer than the 500 characters of provider text an error keeps.
        (490usize..700).prop_map(|n| json!("é".repeat(n))),
    ];
    (code, state, videos, id, progress, noise).prop_map(
        move |(code, state, videos, id, progress, noise)| match dialect {
            Dialect::Modellix => json!({"code": code, "message": noise, "data": {
                "task_id": id, "status": state, "progress": progress,
                "result": {"resources": videos}, "error": noise,
                "get_result": {"url": "https://api.modellix.ai/api/v2/results/task-1?x=1"},
            }}),
            Dialect::Apimodels => json!({"code": code, "msg": noise, "data": {
                "taskId": id, "state": state, "resultUrls": videos, "failMsg": noise,
                "progress": progress,
            }}),
            Dialect::Kling => json!({"code": code, "message": noise, "data": {
                "task_id": id, "task_status": state, "task_status_msg": noise,
                "task_result": {"videos": videos}, "progress": progress,
                "status": state, "data": {"task_status": state, "task_info": {
                    "external_task_id": "vgt_entrypoints"}},
                "task_info": {"external_task_id": "vgt_entrypoints"},
            }}),
        },
    )
}

// ---- properties without a network -------------------------------------------------

#[test]
fn any_create_body_is_parsed_without_panic_and_refused_only_with_a_4xx() {
    let input = prop_oneof![
        bytes(),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        native_request().prop_map(|v| v.to_string().into_bytes()),
    ];
    runner()
        .run(&input, |bytes| {
            entry_points::native_create(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_openai_create_body_is_parsed_without_panic_and_refused_only_with_a_4xx() {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let input = prop_oneof![
        (bytes(), any::<bool>()),
        any_json().prop_map(|v| (v.to_string().into_bytes(), false)),
        openai_request().prop_map(|(fields, form)| if form {
            (multipart(&fields), true)
        } else {
            (Value::Object(fields).to_string().into_bytes(), false)
        }),
    ];
    runner()
        .run(&input, |(bytes, form)| {
            let ct = if form {
                content_type.as_str()
            } else {
                "application/json"
            };
            entry_points::openai_create(ct, &bytes);
            Ok(())
        })
        .unwrap();
}

/// A native request in Kling's words: `model_name`, `watermark_info`, `duration` as a
/// string, and an `external_task_id` now and then.
fn kling_body(mut native: Value) -> Value {
    let Some(body) = native.as_object_mut() else {
        return native;
    };
    if let Some(model) = body.remove("model") {
        body.insert("model_name".into(), model);
    }
    if let Some(enabled) = body.remove("watermark") {
        body.insert("watermark_info".into(), json!({ "enabled": enabled }));
    }
    if let Some(d) = body.get("duration").and_then(Value::as_u64) {
        body.insert("duration".into(), json!(d.to_string()));
    }
    for ours in [
        "callback_events",
        "metadata",
        "routing",
        "max_wait_secs",
        "priority",
    ] {
        body.remove(ours);
    }
    if body.len() % 3 == 0 {
        body.insert(
            "external_task_id".into(),
            json!(format!("ext-{}", body.len())),
        );
    }
    native
}

#[test]
fn any_kling_create_body_is_parsed_without_panic_and_refused_only_with_a_4xx() {
    let input = prop_oneof![
        bytes(),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        native_request().prop_map(|v| kling_body(v).to_string().into_bytes()),
    ];
    let accepted = AtomicUsize::new(0);
    runner()
        .run(&input, |bytes| {
            if entry_points::kling_create(&bytes).is_some() {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    assert!(
        accepted.load(Ordering::Relaxed) > 0,
        "the generator reaches accepted Kling bodies too"
    );
}

#[test]
fn any_provider_answer_is_read_without_panic_and_keeps_the_poller_s_rules() {
    for dialect in Dialect::ALL {
        let input = (
            status(),
            prop_oneof![
                bytes(),
                any_json().prop_map(|v| v.to_string().into_bytes()),
                dialect_answer(dialect).prop_map(|v| v.to_string().into_bytes()),
            ],
        );
        runner()
            .run(&input, |(status, body)| {
                entry_points::provider_answer(dialect, status, &body);
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn any_upstream_callback_is_judged_without_panic() {
    let body = prop_oneof![
        bytes(),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        prop::sample::select(&Dialect::ALL[..])
            .prop_flat_map(dialect_answer)
            .prop_map(|v| v.to_string().into_bytes()),
        // Kling's callbacks are most often the bare task object.
        dialect_answer(Dialect::Kling).prop_map(|v| v["data"].to_string().into_bytes()),
    ];
    let token = prop_oneof!["[A-Za-z0-9_-]{43}", "\\PC{0,50}"];
    let ours = prop::option::of(prop_oneof![Just("task-1".to_string()), "\\PC{0,8}"]);
    let input = (token, body, prop::sample::select(&TASK_STATES[..]), ours);
    runner()
        .run(&input, |(token, body, state, ours)| {
            entry_points::upstream_callback(&token, &body, state, ours.as_deref());
            Ok(())
        })
        .unwrap();
}

// ---- accepted requests reach the simulators ---------------------------------------

/// The five simulators behind one router, as a gateway configured with them routes.
struct Providers {
    runtime: tokio::runtime::Runtime,
    sims: Vec<Sim>,
    configs: Vec<(String, ProviderConfig)>,
    router: Router,
}

impl Providers {
    fn start() -> Providers {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let sims: Vec<Sim> = SimDialect::ALL
            .iter()
            .map(|d| runtime.block_on(Sim::start(*d)))
            .collect();
        let configs: Vec<(String, ProviderConfig)> = sims
            .iter()
            .map(|sim| {
                let models = models_of(sim.dialect);
                let name = format!("{:?}", sim.dialect).to_lowercase();
                (name, sim.provider_config(models, 0.1))
            })
            .collect();
        let upstreams = configs
            .iter()
            .map(|(name, config)| Upstream {
                name: name.clone(),
                config: config.clone(),
                adapter: providers::build(name, config).expect("an adapter"),
            })
            .collect();
        Providers {
            runtime,
            sims,
            configs,
            router: Router::new(upstreams),
        }
    }

    /// Submits `req` to every provider routing would try for it, with an upstream
    /// callback URL where the dialect takes one, as a create does; each must take it.
    fn submit_everywhere(&self, req: &VideoRequest, task_id: &str) -> usize {
        let plan = self.router.plan(req, &HashMap::new());
        for candidate in &plan.candidates {
            let adapter = &candidate.upstream.adapter;
            let callback = adapter
                .capabilities()
                .upstream_callback
                .then_some("https://gateway.example/upstream/callbacks/0123456789");
            let submitted = self
                .runtime
                .block_on(adapter.submit_with_callback(task_id, req, callback));
            let rejections: Vec<String> = self.sims.iter().flat_map(Sim::rejections).collect();
            assert!(
                submitted.is_ok() && rejections.is_empty(),
                "{} refused an accepted request: {submitted:?} {rejections:?}\nrequest: {}\nbody: {}",
                candidate.upstream.name,
                serde_json::to_string(req).unwrap(),
                self.sims
                    .iter()
                    .flat_map(Sim::created_bodies)
                    .last()
                    .unwrap_or_default(),
            );
        }
        plan.candidates.len()
    }
}

#[test]
fn every_accepted_request_is_a_body_each_routed_simulator_accepts() {
    let providers = Providers::start();
    let (accepted, submits) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let native = native_request().prop_map(|v| (v.to_string().into_bytes(), None));
    let openai = openai_request().prop_map(|(fields, form)| {
        if form {
            (multipart(&fields), Some(true))
        } else {
            (Value::Object(fields).to_string().into_bytes(), Some(false))
        }
    });
    let input = prop_oneof![3 => native, 1 => openai];
    runner()
        .run(&input, |(bytes, openai)| {
            let req = match openai {
                None => entry_points::native_create(&bytes),
                Some(true) => entry_points::openai_create(&content_type, &bytes),
                Some(false) => entry_points::openai_create("application/json", &bytes),
            };
            if let Some(req) = req {
                let n = accepted.fetch_add(1, Ordering::Relaxed);
                let sent = providers.submit_everywhere(&req, &format!("vgt_prop{n:06}"));
                submits.fetch_add(sent, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    // The generators must keep producing requests that are accepted and routed to every
    // dialect, or this test would pass without checking anything.
    let (accepted, submits) = (accepted.into_inner(), submits.into_inner());
    let created: Vec<_> = providers
        .sims
        .iter()
        .map(|s| (s.dialect, s.created_count()))
        .collect();
    eprintln!("{accepted} accepted, {submits} submits: {created:?}");
    assert!(
        accepted >= cases() as usize / 12,
        "only {accepted} accepted"
    );
    for sim in &providers.sims {
        assert!(
            sim.created_count() >= 5,
            "{:?} took only {} of {accepted} accepted requests ({submits} submits)",
            sim.dialect,
            sim.created_count()
        );
    }
}

// ---- the running gateway ----------------------------------------------------------

/// Cases sent to the running gateway: each is a real create (or refusal) on PostgreSQL.
const GATEWAY_CASES: u32 = 96;

/// What the parsers cannot see: a body they accept must also be stored and submitted
/// without a 5xx, by the real gateway on PostgreSQL in front of the simulators.
#[test]
fn no_generated_create_body_gets_a_5xx_from_the_running_gateway() {
    let providers = Providers::start();
    let rt = &providers.runtime;
    let db = rt.block_on(TestDb::new(Db::Postgres));
    let app = rt.block_on(TestApp::spawn(&db, providers.configs.clone()));
    let form = format!("multipart/form-data; boundary={BOUNDARY}");
    let native = prop_oneof![
        3 => native_request().prop_map(|v| v.to_string().into_bytes()),
        1 => bytes(),
    ]
    .prop_map(|body| ("/v1/video/generations", "application/json", body));
    let openai = openai_request().prop_map(|(fields, multipart_form)| {
        if multipart_form {
            ("/v1/videos", "form", multipart(&fields))
        } else {
            let body = Value::Object(fields).to_string().into_bytes();
            ("/v1/videos", "application/json", body)
        }
    });
    let input = prop_oneof![3 => native, 1 => openai];
    // Found by this test: a NUL in callback_url passed validation and the database
    // refused the row (500). Sent first, on every run.
    for url in [
        "https://client.example/a\u{0}b",
        "https://client.example/\u{0}",
    ] {
        let body = json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9",
                          "callback_url": url});
        let (status, answer) = rt.block_on(app.post("/v1/video/generations", &body));
        assert_eq!(status.as_u16(), 400, "{answer}");
        assert_eq!(answer["error"]["param"], "callback_url", "{answer}");
    }
    let answered = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: GATEWAY_CASES.max(cases() / 4),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&input, |(path, content_type, body)| {
            let content_type = if content_type == "form" {
                form.as_str()
            } else {
                content_type
            };
            let sent = app
                .client
                .post(format!("{}{path}", app.base))
                .bearer_auth(&app.key)
                .header("content-type", content_type)
                .body(body.clone())
                .send();
            let resp = rt.block_on(sent).expect("the gateway answers");
            let status = resp.status();
            let answer = rt.block_on(resp.text()).unwrap_or_default();
            prop_assert!(
                status.as_u16() < 500,
                "{path} answered {status} {answer} to {}",
                String::from_utf8_lossy(&body)
            );
            if status.is_success() {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    assert!(answered.into_inner() > 0, "no generated body was accepted");
}

/// Found by the answer property above: a NUL in a provider's failure reason made the
/// database refuse the poll's record, so the task could never be recorded as failed.
#[tokio::test]
async fn a_failure_reason_with_a_nul_is_recorded_and_the_task_fails() {
    let sim = Sim::start(SimDialect::Apimodels).await;
    sim.set_script(support::sim::Script {
        queued_polls: 0,
        processing_polls: 0,
        outcome: support::sim::Outcome::Fail("bad\u{0}thing".into()),
    });
    let db = TestDb::new(Db::Postgres).await;
    let config = sim.provider_config(BOTH, 0.1);
    let app = TestApp::spawn(&db, vec![("apimodels".into(), config)]).await;
    let task = app
        .create(&json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9"}))
        .await;
    let id = task["id"].as_str().expect("a task id");
    let task = app
        .wait_terminal(id, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        task["error"]["provider_message"], "bad\u{FFFD}thing",
        "{task}"
    );
}
