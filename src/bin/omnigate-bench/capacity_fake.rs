//! The capacity bench's fake providers, in one HTTP server: a Kling-dialect reseller
//! (`/kling/v1/videos/omni-video`, as kkiai and anyfast resell Kling) and a modellix one
//! (`/api/v1/kling/{slug}/async`, `/api/v1/tasks/{id}`), each with a real cap on tasks
//! running at once. A create that would be the cap's first task too many is refused as
//! the provider's documents say (Kling: HTTP 429, code 1303 "parallel task over resource
//! pack limit"; modellix: HTTP 429, code 429) and counted as a cap violation: omnigate
//! must never send it. Every task runs for the same set time, then succeeds; a Kling task
//! given a `callback_url` is called back when it ends.
//!
//! The fake records what the measurements need, on the bench's own clock (seconds since
//! the fake started): each create's arrival, each task's start and end, and the moment
//! omnigate learned of its end (the first status answer that showed it finished: a poll,
//! or the re-read a callback makes omnigate do).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Which fake provider: also its index in `Fake`'s state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kling = 0,
    Modellix = 1,
}

/// One task the fake ran.
#[derive(Debug, Clone)]
pub struct FakeTask {
    pub upstream_id: String,
    pub external_id: Option<String>,
    /// The bench's label from the prompt (`capbench a-17`: key `a`, task 17).
    pub label: String,
    pub start: f64,
    pub end: f64,
    /// When omnigate first read it finished.
    pub learned: Option<f64>,
    created_ms: i64,
}

/// What one fake provider saw, copied out for the report.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub cap: usize,
    pub tasks: Vec<FakeTask>,
    /// Arrival of every create, refused or not.
    pub creates: Vec<f64>,
    /// Creates refused because `cap` tasks were running: cap violations.
    pub over_cap: u64,
    /// Creates refused because their `external_task_id` had been accepted before.
    pub duplicate_ids: u64,
    pub most_running: usize,
}

#[derive(Default)]
struct Provider {
    seen: Seen,
    /// Ends of the running tasks, earliest first (every task runs the same time).
    running: VecDeque<f64>,
    by_id: HashMap<String, usize>,
    by_external: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct Fake {
    inner: Arc<Inner>,
}

struct Inner {
    t0: Instant,
    task_secs: f64,
    http: reqwest::Client,
    providers: Mutex<[Provider; 2]>,
    next_id: Mutex<u64>,
}

enum Refusal {
    OverCap,
    DuplicateId(String),
}

impl Fake {
    /// A fake whose providers have caps `kling_cap` and `modellix_cap` and run each task
    /// `task_secs`; its clock starts at `t0`.
    pub fn new(t0: Instant, task_secs: f64, kling_cap: usize, modellix_cap: usize) -> Fake {
        let mut providers: [Provider; 2] = Default::default();
        providers[Dialect::Kling as usize].seen.cap = kling_cap;
        providers[Dialect::Modellix as usize].seen.cap = modellix_cap;
        Fake {
            inner: Arc::new(Inner {
                t0,
                task_secs,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("a plain HTTP client"),
                providers: Mutex::new(providers),
                next_id: Mutex::new(8_100_000_000),
            }),
        }
    }

    /// Serves both providers on a random port of 127.0.0.1; returns the port.
    pub async fn serve(&self) -> anyhow::Result<u16> {
        let app = Router::new()
            .route(
                "/kling/v1/videos/omni-video",
                post(kling_create).get(kling_list),
            )
            .route("/kling/v1/videos/omni-video/{id}", get(kling_query))
            .route("/api/v1/kling/{slug}/async", post(modellix_create))
            .route("/api/v1/tasks/{id}", get(modellix_query))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(port)
    }

    /// Seconds on the bench's clock.
    pub fn now(&self) -> f64 {
        self.inner.t0.elapsed().as_secs_f64()
    }

    pub fn seen(&self, d: Dialect) -> Seen {
        self.lock()[d as usize].seen.clone()
    }

    /// Tasks accepted by both providers so far.
    pub fn accepted(&self) -> usize {
        self.lock().iter().map(|p| p.seen.tasks.len()).sum()
    }

    /// Tasks running at `d` now.
    pub fn running(&self, d: Dialect) -> usize {
        let now = self.now();
        self.lock()[d as usize]
            .running
            .iter()
            .filter(|end| **end > now)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Provider; 2]> {
        self.inner
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A create at `d`: refused when `cap` tasks run there (or the external id was taken),
    /// else started now.
    fn create(
        &self,
        d: Dialect,
        body: &Value,
        external_id: Option<String>,
    ) -> Result<FakeTask, Refusal> {
        let now = self.now();
        let label = body["prompt"]
            .as_str()
            .and_then(|p| p.strip_prefix("capbench "))
            .unwrap_or("?")
            .to_string();
        let upstream_id = {
            let mut next = self.inner.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            next.to_string()
        };
        let mut providers = self.lock();
        let p = &mut providers[d as usize];
        p.seen.creates.push(now);
        while p.running.front().is_some_and(|end| *end <= now) {
            p.running.pop_front();
        }
        if let Some(id) = &external_id {
            if p.by_external.contains_key(id) {
                p.seen.duplicate_ids += 1;
                return Err(Refusal::DuplicateId(id.clone()));
            }
        }
        if p.running.len() >= p.seen.cap {
            p.seen.over_cap += 1;
            return Err(Refusal::OverCap);
        }
        let task = FakeTask {
            upstream_id: upstream_id.clone(),
            external_id: external_id.clone(),
            label,
            start: now,
            end: now + self.inner.task_secs,
            learned: None,
            created_ms: omnigate::store::now_ms(),
        };
        p.running.push_back(task.end);
        p.seen.most_running = p.seen.most_running.max(p.running.len());
        let index = p.seen.tasks.len();
        p.by_id.insert(upstream_id, index);
        if let Some(id) = external_id {
            p.by_external.insert(id, index);
        }
        p.seen.tasks.push(task.clone());
        Ok(task)
    }

    /// A status read of task `id` at `d` (Kling: its id or our `external_task_id`): the
    /// task as it is now, marking the first read that finds it finished.
    fn read(&self, d: Dialect, id: &str) -> Option<(FakeTask, bool)> {
        let now = self.now();
        let mut providers = self.lock();
        let p = &mut providers[d as usize];
        let index = *p.by_id.get(id).or_else(|| p.by_external.get(id))?;
        let task = &mut p.seen.tasks[index];
        let done = now >= task.end;
        if done && task.learned.is_none() {
            task.learned = Some(now);
        }
        Some((task.clone(), done))
    }

    /// Kling POSTs the task object to its `callback_url` when it ends (one retry a second
    /// later if that fails: the backstop poll covers a lost one).
    fn call_back_when_done(&self, task: FakeTask, url: String) {
        let fake = self.clone();
        tokio::spawn(async move {
            let wait = (task.end - fake.now()).max(0.0);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            let body = kling_task(&task, true);
            for _ in 0..2 {
                let sent = fake.inner.http.post(&url).json(&body).send().await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7)
}

// ---------------------------------------------------------------------------------------
// Kling's dialect.

fn kling_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body =
        json!({"code": code, "message": message, "request_id": uuid::Uuid::new_v4().to_string()});
    (status, Json(body)).into_response()
}

fn kling_envelope(data: Value) -> Response {
    Json(json!({"code": 0, "message": "SUCCEED", "request_id": uuid::Uuid::new_v4().to_string(), "data": data}))
        .into_response()
}

fn kling_task(task: &FakeTask, done: bool) -> Value {
    let info = match &task.external_id {
        Some(id) => json!({"external_task_id": id}),
        None => json!({}),
    };
    let result = if done {
        json!({"videos": [{"id": format!("{}1", task.upstream_id),
            "url": format!("https://example.invalid/capbench/{}.mp4", task.upstream_id),
            "duration": "5.041"}]})
    } else {
        json!({})
    };
    json!({
        "task_id": task.upstream_id,
        "task_status": if done { "succeed" } else { "processing" },
        "task_status_msg": "",
        "task_info": info,
        "task_result": result,
        "created_at": task.created_ms,
        "updated_at": if done { omnigate::store::now_ms() } else { task.created_ms },
    })
}

async fn kling_create(State(fake): State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    if !authorized(&headers) {
        return kling_error(StatusCode::UNAUTHORIZED, 1000, "authorization failed");
    }
    let external = body["external_task_id"].as_str().map(str::to_string);
    let callback = body["callback_url"].as_str().map(str::to_string);
    match fake.create(Dialect::Kling, &body, external) {
        Ok(task) => {
            let answer = json!({
                "task_id": task.upstream_id,
                "task_status": "submitted",
                "task_info": kling_task(&task, false)["task_info"],
                "created_at": task.created_ms,
                "updated_at": task.created_ms,
            });
            if let Some(url) = callback {
                fake.call_back_when_done(task, url);
            }
            kling_envelope(answer)
        }
        Err(Refusal::OverCap) => kling_error(
            StatusCode::TOO_MANY_REQUESTS,
            1303,
            "parallel task over resource pack limit",
        ),
        Err(Refusal::DuplicateId(id)) => kling_error(
            StatusCode::BAD_REQUEST,
            1201,
            &format!("external_task_id: {id:?} is already used by a task of this account"),
        ),
    }
}

async fn kling_query(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return kling_error(StatusCode::UNAUTHORIZED, 1000, "authorization failed");
    }
    match fake.read(Dialect::Kling, &id) {
        Some((task, done)) => kling_envelope(kling_task(&task, done)),
        None => kling_error(StatusCode::NOT_FOUND, 1203, "task not found"),
    }
}

/// `GET /kling/v1/videos/omni-video?pageNum=&pageSize=`: the newest tasks first.
async fn kling_list(
    State(fake): State<Fake>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return kling_error(StatusCode::UNAUTHORIZED, 1000, "authorization failed");
    }
    let page: usize = q.get("pageNum").and_then(|v| v.parse().ok()).unwrap_or(1);
    let size: usize = q.get("pageSize").and_then(|v| v.parse().ok()).unwrap_or(30);
    let now = fake.now();
    let tasks = fake.seen(Dialect::Kling).tasks;
    let listed: Vec<Value> = tasks
        .iter()
        .rev()
        .skip(page.saturating_sub(1) * size)
        .take(size)
        .map(|t| kling_task(t, now >= t.end))
        .collect();
    Json(json!({"code": 0, "message": "SUCCEED", "request_id": uuid::Uuid::new_v4().to_string(), "data": listed}))
        .into_response()
}

// ---------------------------------------------------------------------------------------
// modellix's dialect: `{code, message}` with the HTTP status as the code.

fn modellix_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

async fn modellix_create(
    State(fake): State<Fake>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return modellix_error(StatusCode::UNAUTHORIZED, "invalid api key");
    }
    match fake.create(Dialect::Modellix, &body, None) {
        Ok(task) => Json(json!({"code": 0, "message": "success", "data": {
            "status": "pending",
            "task_id": task.upstream_id,
            "model_id": slug,
        }}))
        .into_response(),
        Err(_) => modellix_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests: concurrent task limit reached",
        ),
    }
}

async fn modellix_query(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return modellix_error(StatusCode::UNAUTHORIZED, "invalid api key");
    }
    let Some((task, done)) = fake.read(Dialect::Modellix, &id) else {
        return modellix_error(StatusCode::NOT_FOUND, "task not found");
    };
    let mut data = json!({
        "status": if done { "success" } else { "processing" },
        "task_id": task.upstream_id,
        "model_id": "kling-v3-omni-video",
    });
    if done {
        data["result"] = json!({"resources": [{
            "url": format!("https://example.invalid/capbench/{}.mp4", task.upstream_id),
            "type": "video",
        }]});
    }
    Json(json!({"code": 0, "message": "success", "data": data})).into_response()
}
