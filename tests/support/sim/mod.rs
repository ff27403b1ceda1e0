//! HTTP simulators of the upstream providers, one per wire dialect, each on its own random
//! port. They speak their dialect as `provider-docs/` and `WIRE-NOTES.md` describe it and
//! refuse requests that break the documented rules (recording why), so a wrong field
//! mapping in the gateway fails a test instead of passing silently. This module owns what
//! the dialects share: the public API, task progression, the fault queues and auth.

mod apimodels;
mod body;
mod kling;
mod modellix;
mod rules;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use omnigate::config::{Credential, ProviderConfig, Secret};
use omnigate::domain::Model;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimDialect {
    Modellix,
    Anyfast,
    Kkiai,
    KlingOfficial,
    Apimodels,
}

impl SimDialect {
    pub const ALL: [SimDialect; 5] = [
        SimDialect::Modellix,
        SimDialect::Anyfast,
        SimDialect::Kkiai,
        SimDialect::KlingOfficial,
        SimDialect::Apimodels,
    ];

    /// Anyfast, kkiai and Kling's own host share Kling's body and envelope.
    pub fn is_kling(self) -> bool {
        matches!(
            self,
            SimDialect::Anyfast | SimDialect::Kkiai | SimDialect::KlingOfficial
        )
    }

    /// The dialect's error body and HTTP status for a refusal.
    fn error_response(self, problem: Problem, message: &str) -> Response {
        let (status, body) = match self {
            SimDialect::Modellix => modellix::error(problem, message),
            SimDialect::Apimodels => apimodels::error(problem, message),
            _ => kling::error(problem, message),
        };
        let status = StatusCode::from_u16(status).expect("simulator statuses are valid");
        (status, Json(body)).into_response()
    }
}

/// How a task created from now on behaves: the first `queued_polls` queries see it queued,
/// the next `processing_polls` see it processing (with rising progress), then `outcome`.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub queued_polls: u32,
    pub processing_polls: u32,
    pub outcome: Outcome,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            queued_polls: 1,
            processing_polls: 1,
            outcome: Outcome::Succeed,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// One video at `https://cdn.sim.test/{task_id}.mp4` (or, after `Sim::serve_videos`,
    /// at the simulator's own `/videos/{task_id}.mp4`), lasting the requested duration.
    Succeed,
    /// Failed with this reason in the dialect's failure field.
    Fail(String),
}

/// What the next create (or read) call gets instead of normal handling.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The dialect's canonical refusal, in its own status and body.
    Error(SimError),
    /// This status and JSON body, verbatim.
    Status(u16, Value),
    /// 200 labelled `application/json` whose body is not JSON.
    Malformed,
    /// Normal handling (a submit creates its task, a query advances it), then the answer
    /// only after the delay: a client timeout makes the outcome ambiguous.
    Slow(Duration),
    /// Accepts the connection and never answers; a submit creates nothing.
    Hang,
    /// `302 Found` to another path of the simulator, which records a rejection if the
    /// client follows it. A submit creates nothing.
    Redirect,
    /// 200 with a JSON-looking body this many bytes long (it never ends its string).
    Oversized(usize),
    /// A read answered normally (the task advances), but with this word in the dialect's
    /// state field.
    StateWord(String),
    /// A read answered as the task having succeeded, in the dialect's own words, but
    /// without any video URL.
    SucceededWithoutUrl,
}

/// How a [`Fault::StateWord`] or [`Fault::SucceededWithoutUrl`] bends the next task answer.
#[derive(Debug, Clone)]
enum Twist {
    StateWord(String),
    NoUrl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimError {
    Server,
    RateLimited,
    TooManyParallel,
    Billing,
    BadRequest,
    ContentPolicy,
    Auth,
}

impl SimError {
    pub const ALL: [SimError; 7] = [
        SimError::Server,
        SimError::RateLimited,
        SimError::TooManyParallel,
        SimError::Billing,
        SimError::BadRequest,
        SimError::ContentPolicy,
        SimError::Auth,
    ];

    fn canned_message(self) -> &'static str {
        match self {
            SimError::Server => "internal server error",
            SimError::RateLimited => "rate limit exceeded, slow down",
            SimError::TooManyParallel => "too many parallel tasks for this account",
            SimError::Billing => "insufficient account balance",
            SimError::BadRequest => "invalid request parameters",
            SimError::ContentPolicy => "content policy violation: the request was flagged",
            SimError::Auth => "invalid api key",
        }
    }
}

/// Every kind of refusal a dialect renders: the public errors plus "no such thing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Sim(SimError),
    NotFound,
}

/// Why a request was refused during normal handling.
struct Refusal {
    problem: Problem,
    reason: String,
    /// Kept in `rejections()`: the gateway broke a documented rule.
    recorded: bool,
}

impl Refusal {
    /// A request that breaks a documented rule of the dialect.
    fn rule(reason: impl Into<String>) -> Refusal {
        Refusal {
            problem: Problem::Sim(SimError::BadRequest),
            reason: reason.into(),
            recorded: true,
        }
    }

    /// A path the dialect does not serve: the gateway built a wrong URL.
    fn route(reason: impl Into<String>) -> Refusal {
        Refusal {
            problem: Problem::NotFound,
            reason: reason.into(),
            recorded: true,
        }
    }

    /// A task id the simulator never issued.
    fn unknown_task(id: &str) -> Refusal {
        Refusal {
            problem: Problem::NotFound,
            reason: format!("task {id} not found"),
            recorded: false,
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        Refusal::rule(reason)
    }
}

/// Where a task is in its script after some number of queries.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Queued,
    Processing { progress: u8 },
    Succeeded,
    Failed(String),
}

impl Phase {
    fn is_terminal(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed(_))
    }
}

/// How a Kling-flavoured simulator shapes the task object it POSTs to a `callback_url`
/// (WIRE-NOTES: usually flat, sometimes in the envelope). apimodels always sends its
/// `{code, msg, data}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallbackStyle {
    #[default]
    Flat,
    Enveloped,
}

/// A callback the simulator POSTed, and what came of it.
#[derive(Debug, Clone)]
pub struct SentCallback {
    pub url: String,
    pub body: Value,
    /// The receiver's HTTP status; `None` if it could not be reached.
    pub status: Option<u16>,
}

/// One upstream task.
struct SimTask {
    id: String,
    external_id: Option<String>,
    /// Where the provider POSTs the task on status changes, as the create body said.
    callback_url: Option<String>,
    /// The phase changed since the last callback was queued.
    callback_due: bool,
    /// The model as the request named it (`kling-v3-omni`, or a modellix slug).
    model: String,
    /// Seconds the finished video lasts.
    seconds: u32,
    /// Where its video is served (`Sim::serve_videos`); None: the unreachable CDN name.
    video_base: Option<String>,
    /// How many videos it finishes with (`Sim::set_videos_per_task`).
    videos: usize,
    /// The URL its answers give instead of its own (`Sim::answer_video_url`).
    url_override: Option<String>,
    script: Script,
    polls: u32,
    /// Set by `Sim::set_task_millis`: the task ends at this time (ms) whatever the
    /// queries, and stays running until then.
    finish_at: Option<u64>,
    /// When each query of the task came (ms), in order.
    polled_at: Vec<u64>,
    created_ms: u64,
    updated_ms: u64,
    finished_ms: Option<u64>,
}

impl SimTask {
    fn phase(&self) -> Phase {
        let s = &self.script;
        if self.polls <= s.queued_polls {
            Phase::Queued
        } else if self.polls <= s.queued_polls + s.processing_polls {
            let step = self.polls - s.queued_polls;
            let progress = 100 * step / (s.processing_polls + 1);
            Phase::Processing {
                progress: u8::try_from(progress).unwrap_or(99),
            }
        } else {
            match &s.outcome {
                Outcome::Succeed => Phase::Succeeded,
                Outcome::Fail(reason) => Phase::Failed(reason.clone()),
            }
        }
    }

    /// One query of this task: advances the script and answers the new phase.
    fn poll(&mut self) -> Phase {
        let before = self.phase();
        let last_running = self.script.queued_polls + self.script.processing_polls;
        self.polls = match self.finish_at {
            Some(at) if now_ms() >= at => self.polls.max(last_running + 1),
            Some(_) => (self.polls + 1).min(last_running),
            None => self.polls + 1,
        };
        self.polled_at.push(now_ms());
        let after = self.phase();
        if after != before {
            self.callback_due = self.callback_url.is_some();
            let now = now_ms();
            self.updated_ms = now;
            if after.is_terminal() {
                self.finished_ms = Some(now);
            }
        }
        after
    }

    /// Ends the script now, as the provider finishing the task would; later queries see
    /// the outcome.
    fn finish(&mut self) {
        let s = &self.script;
        let before = self.phase();
        self.polls = s.queued_polls + s.processing_polls + 1;
        let now = now_ms();
        self.updated_ms = now;
        self.finished_ms = Some(now);
        self.callback_due = self.callback_url.is_some() && self.phase() != before;
    }

    /// The URLs of its videos: `{id}.mp4`, then `{id}-2.mp4`, `{id}-3.mp4`...
    fn video_urls(&self) -> Vec<String> {
        if let Some(url) = &self.url_override {
            return vec![url.clone()];
        }
        let dir = match &self.video_base {
            Some(base) => format!("{base}/videos"),
            None => "https://cdn.sim.test".into(),
        };
        (1..=self.videos.max(1))
            .map(|n| match n {
                1 => format!("{dir}/{}.mp4", self.id),
                n => format!("{dir}/{}-{n}.mp4", self.id),
            })
            .collect()
    }

    /// Kling reports the real length of the encoded file, a little over the request.
    fn video_duration(&self) -> String {
        format!("{}.041", self.seconds)
    }
}

/// What a dialect module hands over to create a task from an accepted body.
struct NewTask {
    id: String,
    external_id: Option<String>,
    model: String,
    seconds: u32,
}

#[derive(Default)]
struct Ledger {
    script: Script,
    submit_faults: VecDeque<Fault>,
    query_faults: VecDeque<Fault>,
    /// In creation order.
    tasks: Vec<SimTask>,
    created_bodies: Vec<Value>,
    rejections: Vec<String>,
    submit_count: usize,
    query_count: usize,
    /// Task list calls (Kling flavours), part of `query_count`.
    list_count: usize,
    /// Set by a query fault for the query handler about to run.
    twist: Option<Twist>,
    callback_style: CallbackStyle,
    callbacks: Vec<SentCallback>,
    /// The headers of every create and of every read call, in order.
    submit_headers: Vec<HeaderMap>,
    query_headers: Vec<HeaderMap>,
    /// Set by `Sim::serve_videos`: tasks created from then on get fetchable video URLs.
    video_base: Option<String>,
    /// Requests the video route answered, with their `Range` header if any.
    video_fetches: usize,
    /// The account's limit on tasks running at once (`Sim::limit_running`): a create past
    /// it gets the dialect's "too many parallel tasks" refusal, as a real account would.
    max_running: Option<usize>,
    /// The most tasks that were running at once.
    peak_running: usize,
    /// Videos per task created from now on (0 and 1 both mean one).
    videos_per_task: usize,
    /// The `Content-Type` the video route answers; None: `video/mp4`.
    video_type: Option<String>,
    /// A URL every task created from now on reports as its video instead of its own.
    video_url: Option<String>,
    /// Set by `Sim::set_base_video_seconds`: how long every input video of a base edit is.
    base_video_seconds: Option<u32>,
    /// Set by `Sim::set_task_millis`: how long each task created from now on runs, taken
    /// in turn.
    task_millis: Vec<u64>,
    timed_created: usize,
}

impl Ledger {
    /// How long the video made from `accepted` lasts: a base edit's input length when the
    /// test set one (whatever the client declared), else what was asked.
    fn output_seconds(&self, accepted: &rules::Accepted) -> u32 {
        match self.base_video_seconds {
            Some(seconds) if accepted.base_edit => seconds,
            _ => accepted.seconds,
        }
    }

    fn create(&mut self, new: NewTask, body: Value) -> &SimTask {
        let now = now_ms();
        let callback_url = body
            .get("callback_url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        self.created_bodies.push(body);
        let finish_at = self.next_task_millis().map(|ms| now + ms);
        self.tasks.push(SimTask {
            id: new.id,
            external_id: new.external_id,
            callback_url,
            callback_due: false,
            model: new.model,
            seconds: new.seconds,
            video_base: self.video_base.clone(),
            videos: self.videos_per_task,
            url_override: self.video_url.clone(),
            script: self.script.clone(),
            polls: 0,
            finish_at,
            polled_at: Vec::new(),
            created_ms: now,
            updated_ms: now,
            finished_ms: None,
        });
        self.tasks.last().expect("just pushed")
    }

    /// How long the next task runs, if tasks are timed.
    fn next_task_millis(&mut self) -> Option<u64> {
        if self.task_millis.is_empty() {
            return None;
        }
        self.timed_created += 1;
        Some(self.task_millis[(self.timed_created - 1) % self.task_millis.len()])
    }

    /// Kling's single-task query takes either its own id or the `external_task_id`.
    fn task_by_either_id_mut(&mut self, id: &str) -> Result<&mut SimTask, Refusal> {
        self.tasks
            .iter_mut()
            .find(|t| t.id == id || t.external_id.as_deref() == Some(id))
            .ok_or_else(|| Refusal::unknown_task(id))
    }

    fn task_mut(&mut self, id: &str) -> Result<&mut SimTask, Refusal> {
        self.tasks
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| Refusal::unknown_task(id))
    }

    /// Tasks created and not yet finished, as the provider sees them.
    fn running(&self) -> usize {
        self.tasks
            .iter()
            .filter(|t| !t.phase().is_terminal())
            .count()
    }

    fn external_id_taken(&self, external_id: &str) -> bool {
        self.tasks
            .iter()
            .any(|t| t.external_id.as_deref() == Some(external_id))
    }
}

/// The credential the simulator expects, generated fresh for every simulator.
#[derive(Clone)]
enum Keys {
    ApiKey(String),
    /// Kling's own host: a JWT issued by the access key, signed with the secret key.
    Kling {
        access_key: String,
        secret_key: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Submit,
    /// A task query or a task list: both consume `push_query_fault` faults.
    Query,
}

#[derive(Clone)]
pub struct Sim {
    pub dialect: SimDialect,
    pub base_url: String,
    keys: Keys,
    ledger: Arc<Mutex<Ledger>>,
    /// Built once: building a client costs ~30 ms of CPU in a debug build, and a burst of
    /// callbacks each building its own stalled the simulator's runtime past the gateway's
    /// request timeout (which then opened the provider's circuit in the crash drill).
    callback_client: reqwest::Client,
}

impl Sim {
    /// Starts the simulator on 127.0.0.1 on a random port; it runs until the test's runtime ends.
    pub async fn start(dialect: SimDialect) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a simulator port");
        let addr = listener.local_addr().expect("simulator address");
        let keys = match dialect {
            SimDialect::KlingOfficial => Keys::Kling {
                access_key: format!("ak-sim-{}", uuid::Uuid::new_v4().simple()),
                secret_key: format!("sk-sim-{}", uuid::Uuid::new_v4().simple()),
            },
            _ => Keys::ApiKey(format!("sk-sim-{}", uuid::Uuid::new_v4().simple())),
        };
        let sim = Sim {
            dialect,
            base_url: format!("http://{addr}"),
            keys,
            ledger: Arc::default(),
            callback_client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("callback client"),
        };
        let routes = match dialect {
            SimDialect::Modellix => modellix::routes(),
            SimDialect::Apimodels => apimodels::routes(),
            _ => kling::routes(dialect),
        };
        let app = routes
            // The provider's CDN: no credential, like a signed result URL.
            .route("/videos/{file}", axum::routing::get(serve_video))
            .fallback(unknown_endpoint)
            .method_not_allowed_fallback(unknown_endpoint)
            .with_state(sim.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("simulator server");
        });
        sim
    }

    /// A provider config pointing at this simulator with its credential filled in.
    pub fn provider_config(&self, models: &[Model], usd_per_second: f64) -> ProviderConfig {
        let p = usd_per_second;
        let prices: serde_json::Map<String, Value> = models
            .iter()
            .map(|m| {
                let flat = json!({"std": p, "std_sound": p, "std_keep_sound": p,
                                  "pro": p, "pro_sound": p, "pro_keep_sound": p});
                (m.as_str().to_string(), flat)
            })
            .collect();
        let (dialect, path_prefix, query_path) = match self.dialect {
            SimDialect::Modellix => ("modellix", None, None),
            SimDialect::Apimodels => ("apimodels", None, None),
            SimDialect::Anyfast => (
                "kling",
                Some("/kling"),
                Some("/kling/v1/videos/text2video/{task_id}"),
            ),
            SimDialect::Kkiai => ("kling", Some("/kling"), None),
            SimDialect::KlingOfficial => ("kling", Some(""), None),
        };
        // Built through serde rather than a struct literal so fields the gateway adds
        // later with defaults do not break every test.
        let mut cfg: ProviderConfig = serde_json::from_value(json!({
            "dialect": dialect,
            "base_url": self.base_url,
            "models": models,
            "prices": prices,
            "request_timeout_secs": 2.0,
            "connect_timeout_secs": 1.0,
            "poll_interval_secs": 0.05,
            "path_prefix": path_prefix,
            "query_path": query_path,
            // As the example config has kkiai: its parameter table types element_id as a
            // string and marks duration Required even for a base video edit.
            "element_id_as_string": (self.dialect == SimDialect::Kkiai).then_some(true),
            "always_send_duration": (self.dialect == SimDialect::Kkiai).then_some(true),
        }))
        .expect("simulator provider config");
        cfg.credential = match &self.keys {
            Keys::ApiKey(key) => Credential::Bearer(Secret::new(key)),
            Keys::Kling {
                access_key,
                secret_key,
            } => Credential::KlingJwt {
                access_key: Secret::new(access_key),
                secret_key: Secret::new(secret_key),
            },
        };
        cfg
    }

    /// A valid `Authorization` header value (a freshly signed JWT for Kling's own host),
    /// for tests that talk to the simulator directly.
    pub fn auth_header(&self) -> String {
        match &self.keys {
            Keys::ApiKey(key) => format!("Bearer {key}"),
            Keys::Kling {
                access_key,
                secret_key,
            } => {
                let now = now_ms() / 1000;
                let claims = json!({"iss": access_key, "exp": now + 1800, "nbf": now - 5});
                let token = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(Algorithm::HS256),
                    &claims,
                    &EncodingKey::from_secret(secret_key.as_bytes()),
                )
                .expect("sign a JWT");
                format!("Bearer {token}")
            }
        }
    }

    /// Applies to tasks created afterwards.
    /// Every base video the simulator is given lasts `seconds` (Kling flavours report it
    /// as the result's duration), whatever length the client declared.
    pub fn set_base_video_seconds(&self, seconds: u32) {
        self.ledger().base_video_seconds = Some(seconds);
    }

    pub fn set_script(&self, script: Script) {
        self.ledger().script = script;
    }

    /// FIFO, one consumed per create call.
    pub fn push_submit_fault(&self, fault: Fault) {
        self.ledger().submit_faults.push_back(fault);
    }

    /// FIFO, one consumed per read call (a task query, or a list on the Kling flavours).
    pub fn push_query_fault(&self, fault: Fault) {
        self.ledger().query_faults.push_back(fault);
    }

    /// Upstream tasks actually created.
    pub fn created_count(&self) -> usize {
        self.ledger().tasks.len()
    }

    /// Bodies of accepted creates, in order.
    pub fn created_bodies(&self) -> Vec<Value> {
        self.ledger().created_bodies.clone()
    }

    /// Header `name` of each create call, in order (None: it had none).
    pub fn submit_header(&self, name: &str) -> Vec<Option<String>> {
        header_values(&self.ledger().submit_headers, name)
    }

    /// Header `name` of each read call (query or list), in order.
    pub fn query_header(&self, name: &str) -> Vec<Option<String>> {
        header_values(&self.ledger().query_headers, name)
    }

    /// The `x-request-id` each create call carried, in order (None: it had none).
    pub fn submit_request_ids(&self) -> Vec<Option<String>> {
        self.submit_header("x-request-id")
    }

    /// Why each request refused for a rule, auth or path violation was refused.
    pub fn rejections(&self) -> Vec<String> {
        self.ledger().rejections.clone()
    }

    /// Read calls received (task queries and lists), answered or not.
    pub fn query_count(&self) -> usize {
        self.ledger().query_count
    }

    /// Tasks created from now on run for a wall-clock time instead of a number of queries:
    /// the n-th one `millis[n % len]` ms, seen running by every query until then and
    /// finished by the first query after. The script's outcome still applies.
    pub fn set_task_millis(&self, millis: Vec<u64>) {
        self.ledger().task_millis = millis;
    }

    /// When each timed task finished (ms), by the simulator's task id.
    pub fn finish_times(&self) -> Vec<(String, Option<u64>)> {
        self.ledger()
            .tasks
            .iter()
            .map(|t| (t.id.clone(), t.finish_at))
            .collect()
    }

    /// When each task was queried (ms, in order), by the simulator's task id.
    pub fn query_times(&self) -> Vec<(String, Vec<u64>)> {
        self.ledger()
            .tasks
            .iter()
            .map(|t| (t.id.clone(), t.polled_at.clone()))
            .collect()
    }

    /// Task list calls received (Kling flavours).
    pub fn list_count(&self) -> usize {
        self.ledger().list_count
    }

    /// Create calls received, accepted or not.
    pub fn submit_count(&self) -> usize {
        self.ledger().submit_count
    }

    /// Applies to callbacks sent from now on (Kling flavours).
    pub fn set_callback_style(&self, style: CallbackStyle) {
        self.ledger().callback_style = style;
    }

    /// Callbacks sent so far, in order, with the receiver's answers (a callback still in
    /// flight is not listed yet).
    pub fn callbacks(&self) -> Vec<SentCallback> {
        self.ledger().callbacks.clone()
    }

    /// Finishes the task `upstream_id` now (its script's outcome), as the provider would
    /// between two polls, and sends the callback the dialect sends for that, if the create
    /// gave a `callback_url`. Returns the receiver's status, `None` if nothing was sent.
    pub async fn finish_now(&self, upstream_id: &str) -> Option<u16> {
        let due = {
            let mut ledger = self.ledger();
            let task = ledger
                .task_mut(upstream_id)
                .ok()
                .expect("a task of this simulator");
            task.finish();
            self.due_callbacks(&mut ledger)
        };
        let mut status = None;
        for (url, body) in due {
            status = self.deliver(url, body).await;
        }
        status
    }

    /// Sends the callback for the task's current state once more, as providers repeat
    /// them. `None` if the dialect sends none for that state or the create gave no URL.
    pub async fn repeat_callback(&self, upstream_id: &str) -> Option<u16> {
        let (url, body) = {
            let ledger = self.ledger();
            let task = ledger.tasks.iter().find(|t| t.id == upstream_id)?;
            let body = self.callback_body(task, &task.phase(), ledger.callback_style)?;
            (task.callback_url.clone()?, body)
        };
        self.deliver(url, body).await
    }

    /// Sends a callback saying the task is processing, whatever it is now: one that
    /// arrives late, after a later one. Kling flavours only (apimodels calls back on
    /// terminal states alone).
    pub async fn stale_callback(&self, upstream_id: &str) -> Option<u16> {
        let (url, body) = {
            let ledger = self.ledger();
            let task = ledger.tasks.iter().find(|t| t.id == upstream_id)?;
            let phase = Phase::Processing { progress: 50 };
            let body = self.callback_body(task, &phase, ledger.callback_style)?;
            (task.callback_url.clone()?, body)
        };
        self.deliver(url, body).await
    }

    /// The body the dialect POSTs for `task` in `phase`, if it calls back for that phase.
    fn callback_body(&self, task: &SimTask, phase: &Phase, style: CallbackStyle) -> Option<Value> {
        match self.dialect {
            SimDialect::Modellix => None,
            SimDialect::Apimodels => apimodels::callback_body(task, phase),
            _ => Some(kling::callback_body(task, phase, style)),
        }
    }

    /// Takes the callbacks that phase changes made due.
    fn due_callbacks(&self, ledger: &mut Ledger) -> Vec<(String, Value)> {
        let style = ledger.callback_style;
        let mut due = Vec::new();
        for task in ledger.tasks.iter_mut().filter(|t| t.callback_due) {
            task.callback_due = false;
            let body = self.callback_body(task, &task.phase(), style);
            if let (Some(url), Some(body)) = (task.callback_url.clone(), body) {
                due.push((url, body));
            }
        }
        due
    }

    /// POSTs one callback, unsigned, as the providers do, and records the answer.
    async fn deliver(&self, url: String, body: Value) -> Option<u16> {
        let status = self
            .callback_client
            .post(&url)
            .json(&body)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        self.ledger()
            .callbacks
            .push(SentCallback { url, body, status });
        status
    }

    /// Tasks created from now on finish with a video URL this simulator serves (real bytes,
    /// `video_bytes`), instead of the unreachable `cdn.sim.test`.
    pub fn serve_videos(&self) {
        self.ledger().video_base = Some(self.base_url.clone());
    }

    /// Tasks created from now on finish with `n` videos.
    pub fn set_videos_per_task(&self, n: usize) {
        self.ledger().videos_per_task = n;
    }

    /// The video route answers with this `Content-Type` from now on; for `text/html`, with
    /// a page holding a script, as a hostile or broken CDN might.
    pub fn set_video_type(&self, content_type: &str) {
        self.ledger().video_type = Some(content_type.to_string());
    }

    /// Tasks created from now on report `url` as their video (any text, even no URL).
    pub fn answer_video_url(&self, url: &str) {
        self.ledger().video_url = Some(url.to_string());
    }

    /// From now on, refuses a create while `max` tasks are running (the dialect's
    /// documented "too many parallel tasks" answer: Kling 1303, a reseller's 429).
    pub fn limit_running(&self, max: usize) {
        self.ledger().max_running = Some(max);
    }

    /// The most tasks that were ever running at once.
    pub fn peak_running(&self) -> usize {
        self.ledger().peak_running
    }

    /// Tasks created and not yet finished.
    pub fn running(&self) -> usize {
        self.ledger().running()
    }

    /// The provider's ids of the tasks it created, in creation order.
    pub fn created_ids(&self) -> Vec<String> {
        self.ledger().tasks.iter().map(|t| t.id.clone()).collect()
    }

    /// Ends the oldest running task now (see `finish_now`); false when none runs.
    pub async fn finish_oldest_running(&self) -> bool {
        let oldest = {
            let ledger = self.ledger();
            let task = ledger.tasks.iter().find(|t| !t.phase().is_terminal());
            task.map(|t| t.id.clone())
        };
        match oldest {
            Some(id) => {
                self.finish_now(&id).await;
                true
            }
            None => false,
        }
    }

    /// How many times the video route was fetched.
    pub fn video_fetches(&self) -> usize {
        self.ledger().video_fetches
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panicking test thread must not hide the ledger from the others.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The front door of every create and read: counts the call, checks the credential,
    /// then plays the next queued fault or runs `handle` on the ledger. The credential is
    /// checked before any fault so that a gateway sending a bad one is always caught; a
    /// refused call leaves the fault queue as it was.
    async fn serve(
        &self,
        call: Call,
        headers: &HeaderMap,
        handle: impl FnOnce(&mut Ledger) -> Result<Response, Refusal>,
    ) -> Response {
        let fault = {
            let mut ledger = self.ledger();
            match call {
                Call::Submit => {
                    ledger.submit_count += 1;
                    ledger.submit_headers.push(headers.clone());
                }
                Call::Query => {
                    ledger.query_count += 1;
                    ledger.query_headers.push(headers.clone());
                }
            }
            if let Err(reason) = self.authenticate(headers) {
                ledger.rejections.push(format!("auth: {reason}"));
                return self
                    .dialect
                    .error_response(Problem::Sim(SimError::Auth), &reason);
            }
            let full = ledger
                .max_running
                .is_some_and(|max| ledger.running() >= max);
            if call == Call::Submit && full {
                let e = SimError::TooManyParallel;
                return self
                    .dialect
                    .error_response(Problem::Sim(e), e.canned_message());
            }
            match call {
                Call::Submit => ledger.submit_faults.pop_front(),
                Call::Query => ledger.query_faults.pop_front(),
            }
        };
        match fault {
            None => self.handle_now(handle),
            Some(Fault::Error(e)) => self
                .dialect
                .error_response(Problem::Sim(e), e.canned_message()),
            Some(Fault::Status(status, body)) => {
                let status = StatusCode::from_u16(status).expect("a valid HTTP status");
                (status, Json(body)).into_response()
            }
            Some(Fault::Malformed) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"code":0,"message":"SUCCEED","data":{"task_id":"#,
            )
                .into_response(),
            Some(Fault::Slow(delay)) => {
                let answer = self.handle_now(handle);
                tokio::time::sleep(delay).await;
                answer
            }
            Some(Fault::Hang) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::GATEWAY_TIMEOUT.into_response()
            }
            Some(Fault::Redirect) => (
                StatusCode::FOUND,
                [(header::LOCATION, format!("{}/redirected", self.base_url))],
            )
                .into_response(),
            Some(Fault::Oversized(len)) => {
                let head = r#"{"code":0,"message":"SUCCEED","data":{"pad":""#;
                let body = format!("{head}{}", "x".repeat(len.saturating_sub(head.len())));
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
            Some(Fault::StateWord(word)) => {
                self.ledger().twist = Some(Twist::StateWord(word));
                self.handle_now(handle)
            }
            Some(Fault::SucceededWithoutUrl) => {
                self.ledger().twist = Some(Twist::NoUrl);
                self.handle_now(handle)
            }
        }
    }

    fn handle_now(
        &self,
        handle: impl FnOnce(&mut Ledger) -> Result<Response, Refusal>,
    ) -> Response {
        let mut ledger = self.ledger();
        let answer = handle(&mut ledger);
        ledger.peak_running = ledger.peak_running.max(ledger.running());
        // A twist applies to one answer only, whether or not the handler used it.
        ledger.twist = None;
        // A query that moved a task on makes the provider call back, a moment later.
        for (url, body) in self.due_callbacks(&mut ledger) {
            let sim = self.clone();
            tokio::spawn(async move { sim.deliver(url, body).await });
        }
        match answer {
            Ok(answer) => answer,
            Err(refusal) => {
                if refusal.recorded {
                    ledger.rejections.push(refusal.reason.clone());
                }
                self.dialect
                    .error_response(refusal.problem, &refusal.reason)
            }
        }
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<(), String> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or("missing Authorization header")?
            .to_str()
            .map_err(|_| "Authorization header is not text")?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or("Authorization must be `Bearer <token>`")?;
        match &self.keys {
            Keys::ApiKey(key) if token == key => Ok(()),
            Keys::ApiKey(_) => Err("unknown API key".into()),
            Keys::Kling {
                access_key,
                secret_key,
            } => verify_kling_jwt(token, access_key, secret_key),
        }
    }
}

/// Kling's own host: HS256 with the secret key, `iss` the access key, `exp` not yet
/// passed and `nbf` already passed (no leeway, so a sloppy clock shows in tests).
fn verify_kling_jwt(token: &str, access_key: &str, secret_key: &str) -> Result<(), String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["iss", "exp", "nbf"]);
    validation.set_issuer(&[access_key]);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret_key.as_bytes()),
        &validation,
    )
    .map(|_| ())
    .map_err(|e| format!("JWT refused: {e}"))
}

/// The bytes of the video of upstream task `id`: a few hundred KiB that differ from task to
/// task and from position to position, so that a copy cut, shifted or mixed up shows.
pub fn video_bytes(id: &str) -> Vec<u8> {
    let seed = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(300_007);
    out.extend_from_slice(b"\0\0\0\x18ftypmp42");
    while out.len() < 300_007 {
        // xorshift64: cheap, deterministic noise.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

async fn serve_video(
    State(sim): State<Sim>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    let content_type = {
        let mut ledger = sim.ledger();
        ledger.video_fetches += 1;
        ledger
            .video_type
            .clone()
            .unwrap_or_else(|| "video/mp4".into())
    };
    let Some(name) = file.strip_suffix(".mp4") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // `{id}-{n}.mp4` is a task's n-th video.
    let id = name.rsplit_once('-').map_or(name, |(id, _)| id);
    if !sim.ledger().tasks.iter().any(|t| t.id == id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body = if content_type.starts_with("text/html") {
        b"<html><script>fetch('/console/keys')</script></html>".to_vec()
    } else {
        video_bytes(name)
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn unknown_endpoint(State(sim): State<Sim>, method: Method, uri: Uri) -> Response {
    let reason = format!("no such endpoint: {method} {}", uri.path());
    sim.ledger().rejections.push(reason.clone());
    sim.dialect.error_response(Problem::NotFound, &reason)
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// A Kling-style numeric task id.
fn numeric_id() -> String {
    use rand::Rng;
    rand::thread_rng()
        .gen_range(800_000_000_000_000_000u64..900_000_000_000_000_000)
        .to_string()
}

fn header_values(calls: &[HeaderMap], name: &str) -> Vec<Option<String>> {
    calls
        .iter()
        .map(|h| {
            h.get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        })
        .collect()
}
