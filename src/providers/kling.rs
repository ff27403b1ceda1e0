//! The Kling dialect: Kling's own API and the resellers that pass its body through
//! (anyfast, kkiai). Owns the request body, the create, query and list answers (Kling's
//! envelope and the relay wrapper), Kling's error codes and its JWT auth.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::http::{self, check, malformed, Call, Observed, Reply, Upstream, Verdict};
use super::{Capabilities, ErrorKind, Lookup, Provider, ProviderError, Submitted, UpstreamTask};
use crate::config::ProviderConfig;
use crate::domain::{FrameType, ReferType, Shot, ShotType, TaskStatus, VideoRef, VideoRequest};

/// Resellers mount Kling's paths under `/kling`; Kling's own host is configured with "".
const DEFAULT_PREFIX: &str = "/kling";
const LIST_PAGE_SIZE: usize = 100;
/// Lookups run shortly after a lost submit answer, and the list is newest first.
pub const LIST_MAX_PAGES: u32 = 5;

static CAPABILITIES: Capabilities = Capabilities {
    element_list: true,
    negative_prompt: true,
    watermark: true,
    frame_images: true,
    feature_video: true,
    keep_original_sound: true,
    o1_free_duration_from_references: true,
    shot_types: &[ShotType::Customize],
    upstream_callback: true,
    external_task_id: true,
};

pub struct Kling {
    name: String,
    upstream: Upstream,
    prefix: String,
    query_path: Option<String>,
    element_id_as_string: bool,
    always_send_duration: bool,
}

impl Kling {
    pub fn new(name: &str, cfg: &ProviderConfig) -> anyhow::Result<Self> {
        if let Some(template) = &cfg.query_path {
            if !template.contains("{task_id}") {
                anyhow::bail!("providers.{name}.query_path: must contain {{task_id}}");
            }
        }
        Ok(Kling {
            name: name.to_string(),
            upstream: Upstream::new(cfg)?,
            prefix: absolute_path(cfg.path_prefix.as_deref().unwrap_or(DEFAULT_PREFIX)),
            query_path: cfg.query_path.as_deref().map(absolute_path),
            element_id_as_string: cfg
                .element_id_as_string
                .unwrap_or_else(|| cfg.is_kkiai(name)),
            always_send_duration: cfg
                .always_send_duration
                .unwrap_or_else(|| cfg.is_kkiai(name)),
        })
    }

    fn create_path(&self) -> String {
        format!("{}/v1/videos/omni-video", self.prefix)
    }

    fn query_path(&self, upstream_id: &str) -> String {
        let id = http::path_segment(upstream_id);
        match &self.query_path {
            Some(template) => template.replace("{task_id}", &id),
            None => format!("{}/{id}", self.create_path()),
        }
    }

    fn list_path(&self, page: u32) -> String {
        format!(
            "{}?pageNum={page}&pageSize={LIST_PAGE_SIZE}",
            self.create_path()
        )
    }
}

impl Kling {
    async fn query_at(&self, path: &str, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
        let request = self.upstream.get(path);
        self.upstream
            .call(request, |reply| read_task(reply, upstream_id))
            .await
    }
}

/// The action anyfast's guide queries omni-video tasks under.
const RELAY_QUERY_ACTION: &str = "text2video";

/// `"/kling/"` and `"kling"` both become `"/kling"`; `""` stays empty.
fn absolute_path(p: &str) -> String {
    let p = p.trim().trim_end_matches('/');
    if p.is_empty() || p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

#[async_trait]
impl Provider for Kling {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    async fn submit_with_callback(
        &self,
        task_id: &str,
        req: &VideoRequest,
        callback_url: Option<&str>,
    ) -> Result<Submitted, ProviderError> {
        let mut body = create_body(task_id, req);
        if let (Some(url), Some(body)) = (callback_url, body.as_object_mut()) {
            body.insert("callback_url".into(), json!(url));
        }
        if self.element_id_as_string {
            stringify_element_ids(&mut body);
        }
        if self.always_send_duration {
            fill_ignored_duration(&mut body, req);
        }
        let request = self.upstream.post(&self.create_path(), &body);
        self.upstream.call(request, read_created).await
    }

    async fn query(&self, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
        let first = self
            .query_at(&self.query_path(upstream_id), upstream_id)
            .await;
        match first {
            // Relays answer omni-video queries under another action (anyfast's guide uses
            // text2video); without a configured query_path, try that before giving up.
            Err(e) if e.http_status == Some(404) && self.query_path.is_none() => {
                let id = http::path_segment(upstream_id);
                let relay = format!("{}/v1/videos/{RELAY_QUERY_ACTION}/{id}", self.prefix);
                self.query_at(&relay, upstream_id).await.map_err(|_| e)
            }
            other => other,
        }
        .inspect_err(|e| http::log_unreadable(&self.name, upstream_id, e))
    }

    fn parse_callback(&self, body: &[u8]) -> Result<UpstreamTask, ProviderError> {
        read_callback(body).inspect_err(|e| http::log_unreadable(&self.name, "(callback)", e))
    }

    async fn find_by_external_id(&self, task_id: &str) -> Result<Lookup, ProviderError> {
        self.lookup(task_id)
            .await
            .inspect_err(|e| http::log_unreadable(&self.name, task_id, e))
    }
}

impl Kling {
    /// Kling's single-task query takes our `external_task_id` in place of its own id
    /// (kkiai's query page: "choose one of the two query methods"), so that is asked
    /// first: one call, whatever the account's volume. A host that does not know the id
    /// that way (anyfast's relay, or a task that never landed) answers not-found, and
    /// then the newest tasks of the list decide, because "absent" leads to a resubmit and
    /// must not be said on one not-found from an endpoint that may not serve the form.
    async fn lookup(&self, task_id: &str) -> Result<Lookup, ProviderError> {
        let request = self.upstream.get(&self.query_path(task_id));
        let direct = self
            .upstream
            .call(request, |reply| {
                read_task_by_external_id(reply, task_id).map_err(|e| transient_on_lookup(reply, e))
            })
            .await;
        match direct {
            Ok(Some(task)) => return Ok(Lookup::Found(task)),
            Ok(None) => {}
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::BadRequest) => {}
            Err(e) => return Err(e),
        }
        for page in 1..=LIST_MAX_PAGES {
            let request = self.upstream.get(&self.list_path(page));
            let (found, listed) = self
                .upstream
                .call(request, |reply| {
                    read_list_page(reply, task_id).map_err(|e| transient_on_lookup(reply, e))
                })
                .await?;
            if let Some(task) = found {
                return Ok(Lookup::Found(task));
            }
            if listed < LIST_PAGE_SIZE {
                break;
            }
        }
        Ok(Lookup::Absent)
    }
}

/// A lookup decides between resubmitting and waiting, so only a definite answer may
/// end it: a garbled 2xx (a proxy's page, a cut-off body) is asked again, not taken as
/// "this provider cannot look tasks up".
fn transient_on_lookup(reply: &Reply, mut e: ProviderError) -> ProviderError {
    if e.kind == ErrorKind::Malformed
        && reply.is_success()
        && !reply.oversized
        && reply.json().is_none()
    {
        e.kind = ErrorKind::Retryable;
    }
    e
}

/// The create body. `task_id` (omnigate's id) always goes as `external_task_id`, so a
/// lost answer can be recovered by a lookup. The client's `callback_url` is ours to
/// serve, never the provider's.
pub fn create_body(task_id: &str, req: &VideoRequest) -> Value {
    let mut body = Map::new();
    body.insert("model_name".into(), json!(req.model.as_str()));
    if let Some(negative) = req.negative_prompt() {
        body.insert("negative_prompt".into(), json!(negative));
    }
    body.extend(shared_fields(req));
    body.insert("external_task_id".into(), json!(task_id));
    Value::Object(body)
}

/// kkiai's parameter table types `element_id` as a string (its example sends a number).
fn stringify_element_ids(body: &mut Value) {
    let elements = body.get_mut("element_list").and_then(Value::as_array_mut);
    for e in elements.into_iter().flatten() {
        if let Some(id) = e.get("element_id").and_then(Value::as_u64) {
            e["element_id"] = json!(id.to_string());
        }
    }
}

/// kkiai marks `duration` Required even for a base-video edit, where the output lasts as
/// long as the input and the value "is invalid" (ignored; billing follows the input).
/// Sent then as the input's length when the client gave one within Kling's 3-10 s
/// (what a video allows), else Kling's default.
fn fill_ignored_duration(body: &mut Value, req: &VideoRequest) {
    if let Some(body) = body.as_object_mut().filter(|b| !b.contains_key("duration")) {
        let input = req.base_video().and_then(|v| v.duration).map(f64::round);
        let seconds = input
            .filter(|s| (3.0..=10.0).contains(s))
            .map_or(crate::domain::DEFAULT_DURATION, |s| s as u32);
        body.insert("duration".into(), json!(seconds.to_string()));
    }
}

/// The fields that every Kling-shaped body carries (apimodels takes them too). Absent
/// optional fields are left out, never sent as null.
pub(super) fn shared_fields(req: &VideoRequest) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(prompt) = &req.prompt {
        body.insert("prompt".into(), json!(prompt));
    }
    body.insert("mode".into(), json!(req.mode().as_str()));
    if let Some(ratio) = req.aspect_ratio {
        body.insert("aspect_ratio".into(), json!(ratio.as_str()));
    }
    if let Some(seconds) = req.output_seconds() {
        body.insert("duration".into(), json!(seconds.to_string()));
    }
    // Always sent: kkiai marks it required.
    body.insert("multi_shot".into(), json!(req.is_multi_shot()));
    if let Some(shot_type) = req.shot_type {
        body.insert("shot_type".into(), json!(shot_type_name(shot_type)));
    }
    if let Some(shots) = &req.multi_prompt {
        body.insert("multi_prompt".into(), multi_prompt(shots));
    }
    if !req.image_list.is_empty() {
        body.insert("image_list".into(), image_list(req));
    }
    if !req.element_list.is_empty() {
        let elements = req.element_list.iter();
        let elements = elements.map(|e| json!({ "element_id": e.element_id }));
        body.insert("element_list".into(), Value::Array(elements.collect()));
    }
    if !req.video_list.is_empty() {
        let videos = req.video_list.iter().map(video_entry).collect();
        body.insert("video_list".into(), Value::Array(videos));
    }
    body.insert("sound".into(), json!(req.sound().as_str()));
    if let Some(enabled) = req.watermark {
        body.insert("watermark_info".into(), json!({ "enabled": enabled }));
    }
    body
}

fn shot_type_name(shot_type: ShotType) -> &'static str {
    match shot_type {
        ShotType::Customize => "customize",
        ShotType::Intelligence => "intelligence",
    }
}

fn multi_prompt(shots: &[Shot]) -> Value {
    let shots = shots.iter().enumerate().map(|(i, shot)| {
        // 1-based, as Kling numbers its shots.
        let index = shot.number(i);
        json!({
            "index": index,
            "prompt": shot.prompt,
            "duration": shot.duration.to_string(),
        })
    });
    Value::Array(shots.collect())
}

fn image_list(req: &VideoRequest) -> Value {
    let images = req.image_list.iter().map(|image| {
        let mut entry = Map::new();
        entry.insert("image_url".into(), json!(raw_image(&image.image_url)));
        if let Some(frame) = image.frame {
            let name = match frame {
                FrameType::FirstFrame => "first_frame",
                FrameType::EndFrame => "end_frame",
            };
            entry.insert("type".into(), json!(name));
        }
        Value::Object(entry)
    });
    Value::Array(images.collect())
}

fn video_entry(video: &VideoRef) -> Value {
    let mut entry = Map::new();
    entry.insert("video_url".into(), json!(video.video_url));
    // Explicit even though `base` is Kling's default: resellers need not share defaults.
    let refer_type = match video.refer_type() {
        ReferType::Base => "base",
        ReferType::Feature => "feature",
    };
    entry.insert("refer_type".into(), json!(refer_type));
    if let Some(keep) = video.keep_original_sound {
        entry.insert("keep_original_sound".into(), json!(keep.as_str()));
    }
    Value::Object(entry)
}

/// Kling wants raw base64: strips a `data:<mime>;base64,` prefix and leaves URLs alone.
pub(super) fn raw_image(image: &str) -> &str {
    let is_data_uri = image
        .get(..5)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:"));
    match image.split_once(";base64,") {
        Some((_, raw)) if is_data_uri => raw,
        _ => image,
    }
}

/// Kling's error codes. The HTTP status beside them is not reliable (an empty balance
/// comes as 429), so the code decides. `None`: a code we do not know.
pub fn kind_for_code(code: i64) -> Option<ErrorKind> {
    Some(match code {
        1000..=1004 => ErrorKind::Auth,
        1100..=1102 => ErrorKind::Billing,
        1103 => ErrorKind::Auth,
        1200..=1201 => ErrorKind::BadRequest,
        // A path or model this reseller does not have says nothing against the request.
        1202..=1203 => ErrorKind::NotFound,
        1300..=1301 => ErrorKind::ContentPolicy,
        1302 => ErrorKind::RateLimited,
        1303 => ErrorKind::ConcurrencyLimited,
        1304 => ErrorKind::Auth,
        5000..=5002 => ErrorKind::Retryable,
        _ => return None,
    })
}

/// Kling's envelope says `code: 0`; the relay wrapper says `code: "success"`.
fn classify_code(code: &Value) -> Option<Verdict> {
    if let Some(n) = http::integer(code) {
        return Some(match n {
            0 => Verdict::Success,
            n => Verdict::Error(kind_for_code(n)),
        });
    }
    let word = code.as_str().map(str::trim).filter(|w| !w.is_empty())?;
    Some(if word.eq_ignore_ascii_case("success") {
        Verdict::Success
    } else {
        Verdict::Error(None)
    })
}

/// Reads a create answer: Kling's envelope (`data.task_id`, `data.task_status`) or
/// anyfast's OpenAI-like object (`task_id`/`id`, `status`).
pub(super) fn read_created(reply: &Reply) -> Result<Submitted, ProviderError> {
    let body = check(reply, Call::Submit, classify_code).map_err(|mut e| {
        if is_duplicate_external_id(&e) {
            // Our id is unique per task, so a task already carries it: an earlier submit
            // landed although its answer was lost. Not a refusal of this request; looking
            // the task up (by that id) finds it.
            e.ambiguous = true;
        }
        e
    })?;
    let task = body.get("data").filter(|d| d.is_object()).unwrap_or(&body);
    let upstream_id = ["task_id", "id"]
        .iter()
        .find_map(|k| task.get(k).and_then(http::text))
        .ok_or_else(|| malformed(reply, Call::Submit, "no task id in the create answer"))?;
    let state = ["task_status", "status"]
        .iter()
        .find_map(|k| task.get(k).and_then(Value::as_str))
        .unwrap_or_default();
    let observed = Observed {
        upstream_id: upstream_id.clone(),
        raw_state: state.to_string(),
        // A fresh task whose answer names no state is queued.
        status: if state.trim().is_empty() {
            Some(TaskStatus::Queued)
        } else {
            kling_state(state)
        },
        ..Default::default()
    };
    Ok(Submitted {
        upstream_id,
        status: observed.created_status(),
    })
}

/// Kling documents no code for "external_task_id already used" (a parameter error,
/// 1200-1201, in practice), so the refusal is recognized by naming the field and saying
/// it is taken.
fn is_duplicate_external_id(e: &ProviderError) -> bool {
    let message = e.message.to_ascii_lowercase().replace([' ', '-'], "_");
    e.kind == ErrorKind::BadRequest
        && message.contains("external_task_id")
        && [
            "exist", "already", "duplicat", "repeat", "used", "unique", "taken",
        ]
        .iter()
        .any(|w| message.contains(w))
}

/// Reads a create answer (HTTP `status` and `body`) exactly as a submit does: the entry
/// point of the fuzz targets and property tests.
pub fn parse_create_answer(status: u16, body: &[u8]) -> Result<Submitted, ProviderError> {
    http::read_answer(status, body, read_created)
}

/// Reads a task answer (HTTP `status` and `body`) about `upstream_id` exactly as a poll
/// does; for the fuzz targets and property tests.
pub fn parse_status_answer(
    status: u16,
    body: &[u8],
    upstream_id: &str,
) -> Result<UpstreamTask, ProviderError> {
    http::read_answer(status, body, |reply| read_task(reply, upstream_id))
}

/// Reads the answer to the single-task query made with our id, as a lookup by our id
/// ([`Provider::find_by_external_id`]) does; for the fuzz targets and property tests.
pub fn parse_lookup_answer(
    status: u16,
    body: &[u8],
    external_task_id: &str,
) -> Result<Option<UpstreamTask>, ProviderError> {
    http::read_answer(status, body, |reply| {
        read_task_by_external_id(reply, external_task_id).map_err(|e| transient_on_lookup(reply, e))
    })
}

/// Reads one page of the task list as a lookup by our id does: the task carrying
/// `external_task_id` if listed, and how many the page held. For the fuzz targets and
/// property tests.
pub fn parse_list_page(
    status: u16,
    body: &[u8],
    external_task_id: &str,
) -> Result<(Option<UpstreamTask>, usize), ProviderError> {
    http::read_answer(status, body, |reply| {
        read_list_page(reply, external_task_id).map_err(|e| transient_on_lookup(reply, e))
    })
}

/// Reads a query answer for the task we asked about.
pub(super) fn read_task(reply: &Reply, upstream_id: &str) -> Result<UpstreamTask, ProviderError> {
    let body = check(reply, Call::Read, classify_code)?;
    observe(&body, Some(upstream_id))
        .ok_or_else(|| malformed(reply, Call::Read, "no task state in the answer"))?
        .settle(reply)
}

/// Reads a callback body: the task object, flat or in Kling's envelope (WIRE-NOTES: both
/// arrive), or the relay wrapper, read exactly as a query answer is. The task id is the
/// one the body names.
pub(super) fn read_callback(body: &[u8]) -> Result<UpstreamTask, ProviderError> {
    let reply = http::callback_reply(body);
    let json = check(&reply, Call::Read, classify_code)?;
    observe(&json, None)
        .ok_or_else(|| malformed(&reply, Call::Read, "no task state in the callback"))?
        .settle(&reply)
}

/// Reads the answer to a single-task query made with our id in place of Kling's:
/// the task with its own `task_id`, or `None` when the answer is about another task.
pub(super) fn read_task_by_external_id(
    reply: &Reply,
    external_task_id: &str,
) -> Result<Option<UpstreamTask>, ProviderError> {
    let body = check(reply, Call::Read, classify_code)?;
    let observed = observe(&body, None)
        .ok_or_else(|| malformed(reply, Call::Read, "no task state in the answer"))?;
    let labelled = [
        "/data/task_info/external_task_id",
        "/data/data/data/task_info/external_task_id",
    ]
    .iter()
    .find_map(|p| body.pointer(p).and_then(Value::as_str));
    if labelled.is_some_and(|id| id != external_task_id) {
        return Ok(None);
    }
    if observed.upstream_id.is_empty() {
        return Err(malformed(reply, Call::Read, "task has no task_id"));
    }
    observed.settle(reply).map(Some)
}

/// Reads one page of the task list: the task carrying `external_task_id` if listed, and
/// how many tasks the page held (a full page means there may be more).
pub(super) fn read_list_page(
    reply: &Reply,
    external_task_id: &str,
) -> Result<(Option<UpstreamTask>, usize), ProviderError> {
    let body = check(reply, Call::Read, classify_code)?;
    let tasks = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(reply, Call::Read, "task list is not an array"))?;
    let listed = tasks.iter().find(|t| {
        t.pointer("/task_info/external_task_id")
            .and_then(Value::as_str)
            == Some(external_task_id)
    });
    let found = match listed {
        None => None,
        Some(task) => {
            let observed = observe_kling(task, None, "data[].");
            if observed.upstream_id.is_empty() {
                return Err(malformed(reply, Call::Read, "listed task has no task_id"));
            }
            Some(observed.settle(reply)?)
        }
    };
    Ok((found, tasks.len()))
}

/// Every shape a Kling-dialect task arrives in, in one place (WIRE-NOTES: the shapes of
/// kkiai's query and of callbacks are unconfirmed, so all are accepted everywhere):
/// - Kling's envelope: `{code: 0, data: {task_status, task_result, ...}}`;
/// - the relay wrapper (anyfast, maybe kkiai): `{code: "success", data: {status,
///   fail_reason, progress, data: <Kling envelope or bare task>}}`;
/// - a bare task (list entries, most callbacks): `{task_status, ...}`.
///
/// `None` when none of them is recognizable.
fn observe(body: &Value, upstream_id: Option<&str>) -> Option<Observed> {
    let data = body.get("data");
    if let Some(task) = data.filter(|d| d.get("task_status").is_some()) {
        return Some(observe_kling(task, upstream_id, "data."));
    }
    if let Some(relay) = data.filter(|d| d.get("status").is_some()) {
        return Some(observe_relay(relay, upstream_id));
    }
    body.get("task_status")
        .is_some()
        .then(|| observe_kling(body, upstream_id, ""))
}

/// `at`: where `task` sits in the answer, for the field names in an Unreadable error.
fn observe_kling(task: &Value, upstream_id: Option<&str>, at: &str) -> Observed {
    let state = task
        .get("task_status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Observed {
        upstream_id: upstream_id
            .map(str::to_string)
            .or_else(|| task.get("task_id").and_then(http::text))
            .unwrap_or_default(),
        raw_state: state.to_string(),
        state_field: format!("{at}task_status"),
        status: kling_state(state),
        videos: http::videos(task.pointer("/task_result/videos")),
        videos_field: format!("{at}task_result.videos"),
        failure_message: task.get("task_status_msg").and_then(http::text),
        progress: task.get("progress").and_then(http::progress),
    }
}

fn observe_relay(relay: &Value, upstream_id: Option<&str>) -> Observed {
    let inner = relay.get("data").and_then(|d| {
        if d.get("task_status").is_some() {
            Some((d, "data.data."))
        } else {
            let task = d.get("data").filter(|t| t.get("task_status").is_some());
            task.map(|t| (t, "data.data.data."))
        }
    });
    let inner = inner.map(|(t, at)| observe_kling(t, upstream_id, at));
    let state = relay
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let upstream_id = upstream_id
        .map(str::to_string)
        .or_else(|| relay.get("task_id").and_then(http::text))
        .or_else(|| inner.as_ref().map(|t| t.upstream_id.clone()))
        .unwrap_or_default();
    let inner = inner.unwrap_or_else(|| Observed {
        // Where anyfast's guide puts the URL when the relay wraps nothing yet.
        videos_field: "data.data.data.task_result.videos".into(),
        ..Observed::default()
    });
    Observed {
        upstream_id,
        raw_state: state.to_string(),
        state_field: "data.status".into(),
        // The relay's own word first; the wrapped Kling state if the relay's is new to us.
        status: kling_state(state).or(inner.status),
        videos: inner.videos,
        videos_field: inner.videos_field,
        failure_message: relay
            .get("fail_reason")
            .and_then(http::text)
            .or(inner.failure_message),
        progress: relay
            .get("progress")
            .and_then(http::progress)
            .or(inner.progress),
    }
}

/// Kling's states and the relay spellings of them (WIRE-NOTES "Normalized states"),
/// matched case-insensitively. `None`: a state we do not know.
pub fn kling_state(state: &str) -> Option<TaskStatus> {
    match state.trim().to_ascii_lowercase().as_str() {
        "submitted" | "queued" | "not_start" => Some(TaskStatus::Queued),
        "processing" | "in_progress" => Some(TaskStatus::InProgress),
        "succeed" | "success" => Some(TaskStatus::Completed),
        "failed" | "failure" => Some(TaskStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::VideoResult;
    use crate::providers::fixtures::{reply, request};

    fn config(extra: Value) -> ProviderConfig {
        let mut v = json!({
            "dialect": "kling",
            "base_url": "https://www.anyfast.ai/",
            "models": ["kling-v3-omni"],
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        serde_json::from_value(v).expect("test config parses")
    }

    #[test]
    fn text_to_video_body_applies_defaults_and_sends_our_id() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "a cat",
            "aspect_ratio": "16:9",
            "callback_url": "https://client.example/hook",
            "metadata": {"k": "v"},
        }));
        assert_eq!(
            create_body("vgt_1", &req),
            json!({
                "model_name": "kling-v3-omni",
                "prompt": "a cat",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": "5",
                "multi_shot": false,
                "sound": "off",
                "external_task_id": "vgt_1",
            })
        );
    }

    #[test]
    fn frame_images_keep_their_roles_and_lose_the_data_uri_prefix() {
        let req = request(json!({
            "model": "kling-video-o1",
            "prompt": "from here to there",
            "mode": "std",
            "duration": 10,
            "sound": "on",
            "image_list": [
                {"image_url": "data:image/png;base64,iVBORw0KGgo=", "type": "first_frame"},
                {"image_url": "https://img.example/end.jpg", "type": "end_frame"},
                {"image_url": "https://img.example/style.jpg"},
            ],
        }));
        assert_eq!(
            create_body("vgt_2", &req),
            json!({
                "model_name": "kling-video-o1",
                "prompt": "from here to there",
                "mode": "std",
                "duration": "10",
                "multi_shot": false,
                "sound": "on",
                "image_list": [
                    {"image_url": "iVBORw0KGgo=", "type": "first_frame"},
                    {"image_url": "https://img.example/end.jpg", "type": "end_frame"},
                    {"image_url": "https://img.example/style.jpg"},
                ],
                "external_task_id": "vgt_2",
            })
        );
    }

    #[test]
    fn element_ids_can_be_sent_as_strings() {
        let req = request(
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1",
                                 "element_list": [{"element_id": 835266081714884677_u64}]}),
        );
        let mut body = create_body("vgt_9", &req);
        stringify_element_ids(&mut body);
        assert_eq!(
            body["element_list"],
            json!([{"element_id": "835266081714884677"}])
        );
    }

    #[test]
    fn with_always_send_duration_a_base_edit_carries_an_ignored_duration() {
        let edit = |video: Value| {
            let req =
                request(json!({"model": "kling-v3-omni", "prompt": "p", "video_list": [video]}));
            let mut body = create_body("vgt_3", &req);
            fill_ignored_duration(&mut body, &req);
            body["duration"].clone()
        };
        let url = "https://v.example/in.mp4";
        assert_eq!(edit(json!({"video_url": url})), json!("5"));
        assert_eq!(edit(json!({"video_url": url, "duration": 7.4})), json!("7"));
        assert_eq!(edit(json!({"video_url": url, "duration": 30})), json!("5"));
        // A request that has a duration keeps its own.
        let req = request(
            json!({"model": "kling-v3-omni", "prompt": "p", "aspect_ratio": "1:1", "duration": 8}),
        );
        let mut body = create_body("vgt_4", &req);
        fill_ignored_duration(&mut body, &req);
        assert_eq!(body["duration"], json!("8"));
    }

    #[test]
    fn kkiai_sends_its_required_fields_unless_its_config_says_otherwise() {
        let quirks = |name: &str, extra: Value| {
            let k = Kling::new(name, &config(extra)).unwrap();
            (k.always_send_duration, k.element_id_as_string)
        };
        // Named kkiai, or on kkiai's host: its table's required duration and string ids.
        assert_eq!(quirks("kkiai", json!({})), (true, true));
        assert_eq!(quirks("kkiai-backup", json!({})), (true, true));
        assert_eq!(
            quirks("reseller-b", json!({"base_url": "https://www.kkiai.com"})),
            (true, true)
        );
        // Anyone else: as Kling and anyfast document.
        assert_eq!(quirks("anyfast", json!({})), (false, false));
        assert_eq!(
            quirks(
                "evil",
                json!({"base_url": "https://kkiai.com.evil.example"})
            ),
            (false, false)
        );
        // The config wins either way.
        assert_eq!(
            quirks(
                "kkiai",
                json!({"always_send_duration": false, "element_id_as_string": false})
            ),
            (false, false)
        );
        assert_eq!(
            quirks("anyfast", json!({"always_send_duration": true})),
            (true, false)
        );
    }

    #[test]
    fn base_video_edit_omits_duration() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "make it snow",
            "video_list": [{"video_url": "https://v.example/in.mp4", "keep_original_sound": "yes"}],
        }));
        assert_eq!(
            create_body("vgt_3", &req),
            json!({
                "model_name": "kling-v3-omni",
                "prompt": "make it snow",
                "mode": "pro",
                "multi_shot": false,
                "video_list": [{
                    "video_url": "https://v.example/in.mp4",
                    "refer_type": "base",
                    "keep_original_sound": "yes",
                }],
                "sound": "off",
                "external_task_id": "vgt_3",
            })
        );
    }

    #[test]
    fn feature_video_keeps_the_duration() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "prompt": "in this style",
            "duration": 7,
            "aspect_ratio": "9:16",
            "video_list": [{"video_url": "https://v.example/ref.mp4", "refer_type": "feature"}],
        }));
        let body = create_body("vgt_4", &req);
        assert_eq!(body["duration"], json!("7"));
        assert_eq!(
            body["video_list"],
            json!([{"video_url": "https://v.example/ref.mp4", "refer_type": "feature"}])
        );
    }

    #[test]
    fn customized_multi_shot_numbers_shots_from_one_with_string_durations() {
        let req = request(json!({
            "model": "kling-v3-omni",
            "duration": 8,
            "aspect_ratio": "1:1",
            "multi_shot": true,
            "shot_type": "customize",
            "multi_prompt": [
                {"prompt": "wide shot", "duration": 3},
                {"index": 7, "prompt": "close up", "duration": "5"},
            ],
        }));
        assert_eq!(
            create_body("vgt_5", &req),
            json!({
                "model_name": "kling-v3-omni",
                "mode": "pro",
                "aspect_ratio": "1:1",
                "duration": "8",
                "multi_shot": true,
                "shot_type": "customize",
                "multi_prompt": [
                    {"index": 1, "prompt": "wide shot", "duration": "3"},
                    {"index": 7, "prompt": "close up", "duration": "5"},
                ],
                "sound": "off",
                "external_task_id": "vgt_5",
            })
        );
    }

    #[test]
    fn elements_are_numbers_and_watermark_and_negative_prompt_are_passed() {
        let req = request(json!({
            "model": "kling-video-o1",
            "prompt": "<<<element_1>>> dancing",
            "negative_prompt": "blur",
            "aspect_ratio": "16:9",
            "element_list": [{"element_id": "835266081714884677"}, {"element_id": 12}],
            "watermark": false,
        }));
        assert_eq!(
            create_body("vgt_6", &req),
            json!({
                "model_name": "kling-video-o1",
                "prompt": "<<<element_1>>> dancing",
                "negative_prompt": "blur",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": "5",
                "multi_shot": false,
                "element_list": [{"element_id": 835266081714884677_u64}, {"element_id": 12}],
                "sound": "off",
                "watermark_info": {"enabled": false},
                "external_task_id": "vgt_6",
            })
        );
    }

    #[test]
    fn raw_image_strips_only_data_uris() {
        assert_eq!(raw_image("data:image/jpeg;base64,/9j/4AAQ"), "/9j/4AAQ");
        assert_eq!(raw_image("/9j/4AAQ"), "/9j/4AAQ");
        assert_eq!(
            raw_image("https://x.example/a;base64,b.png"),
            "https://x.example/a;base64,b.png"
        );
    }

    #[test]
    fn paths_default_to_the_reseller_prefix() {
        let kling = Kling::new("anyfast", &config(json!({}))).unwrap();
        assert_eq!(kling.create_path(), "/kling/v1/videos/omni-video");
        assert_eq!(kling.query_path("86"), "/kling/v1/videos/omni-video/86");
        assert_eq!(
            kling.list_path(2),
            "/kling/v1/videos/omni-video?pageNum=2&pageSize=100"
        );
    }

    #[test]
    fn kling_own_host_has_no_prefix_and_anyfast_has_its_query_template() {
        let own = Kling::new("kling", &config(json!({"path_prefix": ""}))).unwrap();
        assert_eq!(own.create_path(), "/v1/videos/omni-video");
        let anyfast = Kling::new(
            "anyfast",
            &config(json!({"query_path": "/kling/v1/videos/text2video/{task_id}"})),
        )
        .unwrap();
        assert_eq!(anyfast.query_path("86"), "/kling/v1/videos/text2video/86");
        assert!(Kling::new("x", &config(json!({"query_path": "/q"}))).is_err());
    }

    #[test]
    fn create_answer_in_kling_envelope() {
        let r = reply(
            200,
            json!({"code": 0, "message": "SUCCEED", "request_id": "r",
                   "data": {"task_id": "86", "task_status": "submitted", "created_at": 1773130665000_u64}}),
        );
        assert_eq!(
            read_created(&r).unwrap(),
            Submitted {
                upstream_id: "86".into(),
                status: TaskStatus::Queued
            }
        );
    }

    #[test]
    fn create_answer_as_anyfast_video_object() {
        let r = reply(
            200,
            json!({"id": "860260753860210752", "task_id": "860260753860210752", "object": "video",
                   "model": "kling-v3-omni", "status": "", "progress": 0, "created_at": 1773130665}),
        );
        assert_eq!(
            read_created(&r).unwrap(),
            Submitted {
                upstream_id: "860260753860210752".into(),
                status: TaskStatus::Queued
            }
        );
        let r = reply(
            200,
            json!({"id": "9", "object": "video", "status": "IN_PROGRESS"}),
        );
        assert_eq!(read_created(&r).unwrap().status, TaskStatus::InProgress);
    }

    #[test]
    fn create_answer_without_task_id_is_malformed_and_ambiguous() {
        let err = read_created(&reply(200, json!({}))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(err.ambiguous);
    }

    #[test]
    fn every_kling_code_group_is_classified_by_code_not_status() {
        let cases = [
            (401, 1000, ErrorKind::Auth),
            (401, 1004, ErrorKind::Auth),
            (429, 1100, ErrorKind::Billing),
            (429, 1102, ErrorKind::Billing),
            (403, 1103, ErrorKind::Auth),
            (400, 1200, ErrorKind::BadRequest),
            (400, 1201, ErrorKind::BadRequest),
            (404, 1202, ErrorKind::NotFound),
            (404, 1203, ErrorKind::NotFound),
            (400, 1300, ErrorKind::ContentPolicy),
            (400, 1301, ErrorKind::ContentPolicy),
            (429, 1302, ErrorKind::RateLimited),
            (429, 1303, ErrorKind::ConcurrencyLimited),
            (429, 1304, ErrorKind::Auth),
            (500, 5000, ErrorKind::Retryable),
            (503, 5001, ErrorKind::Retryable),
            (504, 5002, ErrorKind::Retryable),
        ];
        for (status, code, kind) in cases {
            let r = reply(
                status,
                json!({"code": code, "message": "words", "request_id": "r"}),
            );
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, kind, "code {code}");
            assert_eq!(err.code.as_deref(), Some(code.to_string().as_str()));
            assert_eq!(err.http_status, Some(status));
            assert_eq!(err.message, "words");
            assert!(!err.ambiguous, "code {code} is an explicit refusal");
        }
    }

    #[test]
    fn nonzero_code_on_http_200_is_an_error() {
        let r = reply(
            200,
            json!({"code": 1303, "message": "parallel task over resource pack limit"}),
        );
        let err = read_created(&r).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ConcurrencyLimited);
        assert_eq!(err.http_status, Some(200));
        let r = reply(200, json!({"code": "1301", "message": "risky"}));
        assert_eq!(read_created(&r).unwrap_err().kind, ErrorKind::ContentPolicy);
    }

    #[test]
    fn without_a_known_code_the_http_status_decides() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (402, ErrorKind::Billing),
            (404, ErrorKind::NotFound),
            (429, ErrorKind::RateLimited),
            (502, ErrorKind::Retryable),
        ];
        for (status, kind) in cases {
            let r = reply(status, json!({"error": {"message": "nope", "type": "x"}}));
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, kind, "HTTP {status}");
            assert_eq!(err.message, "nope");
        }
        let r = reply(429, json!({"code": 1999, "message": "new"}));
        assert_eq!(read_created(&r).unwrap_err().kind, ErrorKind::RateLimited);
    }

    fn envelope(task: Value) -> Value {
        json!({"code": 0, "message": "SUCCEED", "request_id": "r", "data": task})
    }

    fn query(body: Value) -> UpstreamTask {
        read_task(&reply(200, body), "86").expect("answer reads")
    }

    #[test]
    fn kling_envelope_states_map_onto_normalized_states() {
        let states = [
            ("submitted", TaskStatus::Queued),
            ("processing", TaskStatus::InProgress),
            ("failed", TaskStatus::Failed),
        ];
        for (state, want) in states {
            let task = query(envelope(
                json!({"task_id": "86", "task_status": state, "task_result": {}}),
            ));
            assert_eq!(task.status, want, "{state}");
        }
    }

    #[test]
    fn succeeded_kling_task_carries_its_videos() {
        let task = query(envelope(json!({
            "task_id": "86", "task_status": "succeed", "task_status_msg": "",
            "task_info": {"external_task_id": "vgt_1"},
            "task_result": {"videos": [{"id": "v", "url": "https://cdn/v.mp4", "duration": "5.041"}]},
            "created_at": 1773130665000_u64, "updated_at": 1773130700000_u64,
        })));
        assert_eq!(
            task,
            UpstreamTask {
                upstream_id: "86".into(),
                status: TaskStatus::Completed,
                progress: None,
                videos: vec![VideoResult {
                    url: "https://cdn/v.mp4".into(),
                    duration: Some(5.041)
                }],
                failure_message: None,
            }
        );
    }

    #[test]
    fn failed_kling_task_keeps_the_provider_reason() {
        let task = query(envelope(json!({
            "task_id": "86", "task_status": "failed", "task_status_msg": "Failure to pass the risk control system",
        })));
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(
            task.failure_message.as_deref(),
            Some("Failure to pass the risk control system")
        );
    }

    fn unreadable(body: Value) -> ProviderError {
        read_task(&reply(200, body), "86").expect_err("answer is unreadable")
    }

    #[test]
    fn success_without_a_video_url_is_unreadable_naming_the_videos_field() {
        let err = unreadable(envelope(
            json!({"task_id": "86", "task_status": "succeed", "task_result": {}}),
        ));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data.task_result.videos: no video URL although the task says "succeed""#
        );
        assert!(err.raw_body.unwrap().contains(r#""succeed""#));
        assert!(!err.ambiguous);
    }

    #[test]
    fn unknown_state_is_unreadable_naming_the_state_field() {
        let err = unreadable(envelope(json!({"task_id": "86", "task_status": "paused"})));
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data.task_status: unknown state word "paused""#
        );
        let err =
            unreadable(json!({"code": "success", "data": {"task_id": "86", "status": "WAITING"}}));
        assert_eq!(err.message, r#"data.status: unknown state word "WAITING""#);
        let err = unreadable(json!({"task_id": "86", "task_status": "frobbing"}));
        assert_eq!(err.message, r#"task_status: unknown state word "frobbing""#);
    }

    #[test]
    fn an_unknown_relay_word_is_read_through_the_wrapped_kling_state() {
        let inner = envelope(json!({"task_id": "86", "task_status": "processing"}));
        let task = query(relay("WAITING", inner));
        assert_eq!(task.status, TaskStatus::InProgress);
    }

    #[test]
    fn a_listed_task_in_an_unknown_state_is_unreadable() {
        let page = envelope(json!([
            {"task_id": "2", "task_status": "frobbing", "task_info": {"external_task_id": "vgt_9"}},
        ]));
        let err = read_list_page(&reply(200, page), "vgt_9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(
            err.message,
            r#"data[].task_status: unknown state word "frobbing""#
        );
    }

    #[test]
    fn a_direct_lookup_reads_kling_s_own_id_and_skips_another_task() {
        let answer = envelope(json!({
            "task_id": "86", "task_status": "processing",
            "task_info": {"external_task_id": "vgt_9"},
        }));
        let found = read_task_by_external_id(&reply(200, answer), "vgt_9").unwrap();
        assert_eq!(found.map(|t| t.upstream_id), Some("86".into()));
        let other = envelope(json!({
            "task_id": "vgt_9", "task_status": "processing",
            "task_info": {"external_task_id": "someone_else"},
        }));
        assert_eq!(
            read_task_by_external_id(&reply(200, other), "vgt_9").unwrap(),
            None
        );
    }

    #[test]
    fn a_garbled_lookup_answer_is_retryable_but_a_query_s_stays_malformed() {
        let garbled = Reply {
            status: 200,
            body: b"<html>upstream hiccup</html>".to_vec(),
            oversized: false,
        };
        let err = read_task_by_external_id(&garbled, "vgt_9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert_eq!(
            transient_on_lookup(&garbled, err).kind,
            ErrorKind::Retryable
        );
        let not_found = reply(404, json!({"code": 1203, "message": "no"}));
        let err = read_task_by_external_id(&not_found, "vgt_9").unwrap_err();
        assert_eq!(
            transient_on_lookup(&not_found, err).kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_duplicate_external_task_id_refusal_is_ambiguous_not_a_refusal() {
        for message in [
            "external_task_id: \"vgt_1\" is already used by a task of this account",
            "Duplicate external_task_id",
            "external task id already exists",
        ] {
            let r = reply(400, json!({"code": 1201, "message": message}));
            let err = read_created(&r).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadRequest, "{message}");
            assert!(err.ambiguous, "{message}");
        }
        let r = reply(
            400,
            json!({"code": 1201, "message": "external_task_id too long"}),
        );
        assert!(!read_created(&r).unwrap_err().ambiguous);
        let r = reply(
            400,
            json!({"code": 1201, "message": "duration already invalid"}),
        );
        assert!(!read_created(&r).unwrap_err().ambiguous);
    }

    fn relay(status: &str, inner: Value) -> Value {
        json!({"code": "success", "message": "", "data": {
            "task_id": "86", "status": status, "fail_reason": "", "progress": "30%",
            "submit_time": 1773130665, "finish_time": 0, "data": inner,
        }})
    }

    #[test]
    fn relay_wrapper_states_map_case_insensitively() {
        let states = [
            ("SUBMITTED", TaskStatus::Queued),
            ("QUEUED", TaskStatus::Queued),
            ("NOT_START", TaskStatus::Queued),
            ("PROCESSING", TaskStatus::InProgress),
            ("IN_PROGRESS", TaskStatus::InProgress),
            ("in_progress", TaskStatus::InProgress),
            ("FAILED", TaskStatus::Failed),
            ("FAILURE", TaskStatus::Failed),
            ("Failure", TaskStatus::Failed),
        ];
        for (state, want) in states {
            let task = query(relay(state, Value::Null));
            assert_eq!(task.status, want, "{state}");
            assert_eq!(task.progress, Some(30));
        }
    }

    #[test]
    fn relay_success_takes_the_url_from_the_wrapped_envelope() {
        let inner = envelope(json!({
            "task_id": "86", "task_status": "succeed",
            "task_result": {"videos": [{"id": "v", "url": "https://cdn/r.mp4", "duration": "10.0"}]},
        }));
        let task = query(relay("SUCCESS", inner));
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.videos[0].url, "https://cdn/r.mp4");
        assert_eq!(task.videos[0].duration, Some(10.0));
        let err = unreadable(relay("SUCCESS", Value::Null));
        assert_eq!(err.kind, ErrorKind::Unreadable, "no URL, not completed");
        assert!(
            err.message
                .starts_with("data.data.data.task_result.videos: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn relay_failure_prefers_fail_reason() {
        let mut body = relay("FAILURE", Value::Null);
        body["data"]["fail_reason"] = json!("content blocked");
        let task = query(body);
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(task.failure_message.as_deref(), Some("content blocked"));
    }

    #[test]
    fn bare_task_object_is_read_too() {
        let task = query(json!({"task_id": "86", "task_status": "processing"}));
        assert_eq!(task.status, TaskStatus::InProgress);
    }

    #[test]
    fn query_answer_without_a_state_is_malformed_but_not_ambiguous() {
        let err = read_task(&reply(200, json!({"code": 0, "data": {}})), "86").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(!err.ambiguous);
        let err = read_task(&reply(404, json!({"code": 1202, "message": "no"})), "86").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    #[test]
    fn list_page_finds_the_task_by_external_id() {
        let page = envelope(json!([
            {"task_id": "1", "task_status": "processing", "task_info": {"external_task_id": "other"}},
            {"task_id": "2", "task_status": "submitted", "task_info": {"external_task_id": "vgt_9"}},
            {"task_id": "3", "task_status": "failed", "task_info": {}},
        ]));
        let (found, listed) = read_list_page(&reply(200, page), "vgt_9").unwrap();
        assert_eq!(listed, 3);
        let found = found.expect("task is listed");
        assert_eq!(found.upstream_id, "2");
        assert_eq!(found.status, TaskStatus::Queued);
    }

    #[test]
    fn list_page_without_the_task_is_absent_and_bad_pages_are_errors() {
        let (found, listed) = read_list_page(&reply(200, envelope(json!([]))), "vgt_9").unwrap();
        assert_eq!((found, listed), (None, 0));
        let err = read_list_page(&reply(200, envelope(json!({}))), "vgt_9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        let err = read_list_page(
            &reply(401, json!({"code": 1001, "message": "bad token"})),
            "vgt_9",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
    }

    #[test]
    fn a_callback_reads_flat_and_enveloped_alike_with_the_query_mapping() {
        let flat = json!({
            "task_id": "86", "task_status": "succeed", "task_status_msg": "",
            "task_info": {"external_task_id": "vgt_1"},
            "task_result": {"videos": [{"id": "v", "url": "https://cdn/v.mp4", "duration": "5.041"}]},
            "created_at": 1773130665000_u64, "updated_at": 1773130700000_u64,
        });
        let from_flat = read_callback(flat.to_string().as_bytes()).unwrap();
        assert_eq!(from_flat.upstream_id, "86");
        assert_eq!(from_flat.status, TaskStatus::Completed);
        assert_eq!(from_flat.videos[0].url, "https://cdn/v.mp4");
        let wrapped = envelope(flat).to_string();
        assert_eq!(read_callback(wrapped.as_bytes()).unwrap(), from_flat);
        let unknown = json!({"task_id": "86", "task_status": "paused"}).to_string();
        let err = read_callback(unknown.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        for garbage in [&b"not json"[..], br#"{"hello": 1}"#] {
            let err = read_callback(garbage).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Malformed);
        }
    }

    #[test]
    fn capabilities_match_the_kling_dialect() {
        let caps = &CAPABILITIES;
        assert!(caps.element_list && caps.negative_prompt && caps.watermark);
        assert!(caps.frame_images && caps.feature_video && caps.keep_original_sound);
        assert!(caps.upstream_callback && caps.external_task_id);
        assert_eq!(caps.shot_types, &[ShotType::Customize]);
    }
}
