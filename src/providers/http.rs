//! Plumbing the adapters share: the HTTP client and auth, sending a request and
//! classifying what went wrong, and the rules every dialect's task report obeys.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::RequestBuilder;
use serde::Serialize;
use serde_json::Value;

use super::{ErrorKind, ProviderError, Submitted, UpstreamTask};
use crate::config::{Credential, ProviderConfig};
use crate::domain::{TaskStatus, VideoResult};

/// Lifetime of a Kling JWT, as Kling's own examples issue them.
const JWT_TTL_SECS: u64 = 1800;
/// The most of an answer we read: task answers are a few KiB, so anything near this is
/// not an answer of the dialect, and an unbounded read would let a provider (or a proxy
/// in front of it) exhaust our memory.
pub(super) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Provider words kept in an error (`error.provider_message`, logs); longer is cut.
pub(super) const MAX_MESSAGE_CHARS: usize = 500;
/// The part of an unreadable answer kept in `ProviderError::raw_body`.
pub(super) const MAX_RAW_BODY_BYTES: usize = 2048;
/// Re-issue this long before expiry so a token never expires in flight.
const JWT_REFRESH_MARGIN_SECS: u64 = 300;
/// Kling rejects tokens whose `nbf` is in its future; allow for clock skew.
const JWT_NBF_SKEW_SECS: u64 = 5;

/// Which kind of call a reply answers: a lost or unreadable submit answer may hide a
/// task that was created, a read has no such consequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Submit,
    Read,
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body went past [`MAX_BODY_BYTES`]; `body` holds only its start.
    pub oversized: bool,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer's JSON with every string in it made storable (see [`storable`]). Every
    /// dialect reads its answers (and the callbacks it POSTs) through here, so no field a
    /// task write keeps (an id, a video URL, a message) can be missed.
    pub fn json(&self) -> Option<Value> {
        let mut body = serde_json::from_slice(&self.body).ok()?;
        make_storable(&mut body);
        Some(body)
    }

    /// The body as text for `ProviderError::raw_body`, cut to [`MAX_RAW_BODY_BYTES`].
    pub fn raw_text(&self) -> String {
        let text = storable(&String::from_utf8_lossy(&self.body));
        truncate_chars_to_bytes(&text, MAX_RAW_BODY_BYTES)
    }
}

/// Provider text as the store can keep it: a NUL becomes U+FFFD. PostgreSQL refuses a
/// NUL in text, so a task step recording one could never complete: the poller would ask
/// again for ever while the task held its key's slot (issue 19.6, tests/properties.rs).
pub(super) fn storable(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn make_storable(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = storable(s),
        Value::Array(items) => items.iter_mut().for_each(make_storable),
        Value::Object(fields) => fields.values_mut().for_each(make_storable),
        _ => {}
    }
}

/// `s` cut to at most `max_bytes` bytes on a char boundary.
pub(super) fn truncate_chars_to_bytes(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Provider text cut to [`MAX_MESSAGE_CHARS`] characters, marked when cut.
pub(super) fn truncate_message(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

/// One provider's endpoint: client, base URL and credential.
pub(super) struct Upstream {
    client: reqwest::Client,
    base_url: String,
    auth: Auth,
}

impl Upstream {
    pub fn new(cfg: &ProviderConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout())
            .timeout(cfg.request_timeout())
            // A redirect is not part of any dialect; following one would send the
            // credential (and a POST body) wherever the answer points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Upstream {
            client,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            auth: Auth::new(cfg.credential.clone()),
        })
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base_url))
    }

    pub fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base_url))
            .json(body)
    }

    /// The configured base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Authenticates and sends `req`, then lets the dialect read the reply. Every error
    /// leaving here has had the credential scrubbed from its message, then the message
    /// cut to [`MAX_MESSAGE_CHARS`].
    pub async fn call<T>(
        &self,
        req: RequestBuilder,
        read: impl FnOnce(&Reply) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        // The client request's id (and trace), so the provider's logs and support
        // tickets can be matched with ours.
        let req = crate::telemetry::outgoing(req);
        let result = match self.auth.apply(req) {
            Ok(req) => send(req).await.and_then(|reply| read(&reply)),
            Err(e) => Err(e),
        };
        result.map_err(|e| cut_message(self.auth.redact(e)))
    }
}

/// Sends a request and reads the body up to [`MAX_BODY_BYTES`], classifying transport
/// failures by whether the provider may have received (and acted on) the request.
pub(super) async fn send(req: RequestBuilder) -> Result<Reply, ProviderError> {
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            let mut err = transport_error(e);
            // The status line arrived, so the request did too: never "nothing was sent".
            err.kind = ErrorKind::Timeout;
            err.ambiguous = true;
            err.http_status = Some(status);
            err
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            // Stop reading: the rest is dropped with the connection.
            let room = MAX_BODY_BYTES - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok(Reply {
                status,
                body,
                oversized: true,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        body,
        oversized: false,
    })
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    // Checked first: a connect timeout is also `is_timeout()`, yet nothing was sent.
    let (kind, ambiguous, what) = if e.is_connect() {
        (ErrorKind::Retryable, false, "could not connect to provider")
    } else if e.is_builder() {
        (ErrorKind::Retryable, false, "could not build the request")
    } else if e.is_timeout() {
        (ErrorKind::Timeout, true, "no answer from provider in time")
    } else {
        (
            ErrorKind::Timeout,
            true,
            "connection to provider failed mid-request",
        )
    };
    // `without_url` keeps paths and query strings out of the message.
    let mut err = ProviderError::new(kind, format!("{what}: {}", e.without_url()));
    err.ambiguous = ambiguous;
    err
}

/// What a dialect makes of the `code` field of a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Success,
    /// An error; `None` when the dialect does not know the code (fall back on HTTP status).
    Error(Option<ErrorKind>),
}

/// Turns a reply into its JSON body or a classified error. A body code the dialect
/// recognizes wins over the HTTP status (Kling answers 429 for an empty balance);
/// without one the HTTP status decides. `classify` returns `None` for values it does
/// not treat as a code at all.
pub(super) fn check(
    reply: &Reply,
    call: Call,
    classify: impl Fn(&Value) -> Option<Verdict>,
) -> Result<Value, ProviderError> {
    if reply.oversized {
        let what = format!("answer larger than {MAX_BODY_BYTES} bytes");
        return Err(malformed(reply, call, &what));
    }
    if (300..400).contains(&reply.status) {
        // Not followed (see `Upstream::new`). No dialect redirects, so this is a proxy or
        // a moved endpoint; after a submit nobody can say whether the task was made.
        let what = format!("redirect (HTTP {}) not followed", reply.status);
        return Err(malformed(reply, call, &what));
    }
    let json = reply.json();
    let code = json.as_ref().and_then(|v| v.get("code"));
    let verdict = code.and_then(&classify);
    let kind = match verdict {
        Some(Verdict::Error(Some(kind))) => kind,
        Some(Verdict::Error(None)) => kind_for_http_status(reply.status),
        Some(Verdict::Success) | None if !reply.is_success() => kind_for_http_status(reply.status),
        Some(Verdict::Success) | None => {
            return json.ok_or_else(|| malformed(reply, call, "body is not JSON"));
        }
    };
    // A provider's own code says it refused; one that only repeats a gateway failure
    // status (modellix, apimodels) does not.
    let explicit_refusal = matches!(verdict, Some(Verdict::Error(Some(_))))
        && !code.and_then(integer).is_some_and(is_gateway_failure);
    let message = json
        .as_ref()
        .and_then(provider_message)
        .unwrap_or_else(|| format!("provider answered HTTP {}", reply.status));
    Err(ProviderError {
        kind,
        message,
        http_status: Some(reply.status),
        code: code.and_then(scalar_text),
        // A front proxy that timed out waiting on the origin (504, 524) or lost the
        // connection to it mid-answer (502) may still have let the task through, exactly
        // like our own timeout; an explicit provider error code says it did not.
        ambiguous: call == Call::Submit && is_gateway_failure(reply.status) && !explicit_refusal,
        raw_body: None,
    })
}

/// Statuses a front proxy answers when it lost track of the origin mid-request. A body
/// `code` repeating one of them (modellix, apimodels) says no more than the status.
fn is_gateway_failure(status: impl TryInto<u16>) -> bool {
    matches!(status.try_into().ok(), Some(502 | 504 | 524))
}

/// The fallback classification by HTTP status, shared by every dialect (modellix and
/// apimodels also put HTTP-like numbers in their body `code`).
pub(super) fn kind_for_http_status(status: u16) -> ErrorKind {
    match status {
        400 => ErrorKind::BadRequest,
        401 | 403 => ErrorKind::Auth,
        402 => ErrorKind::Billing,
        404 => ErrorKind::NotFound,
        // The server gave up reading our request: it was not accepted.
        408 => ErrorKind::Retryable,
        429 => ErrorKind::RateLimited,
        405..=499 => ErrorKind::BadRequest,
        500..=599 => ErrorKind::Retryable,
        _ => ErrorKind::Malformed,
    }
}

/// For dialects whose body `code` repeats an HTTP status (modellix, apimodels):
/// `success` or any 2xx is success, other HTTP-like numbers classify as that status.
pub(super) fn classify_http_like(code: &Value, success: i64) -> Option<Verdict> {
    let n = integer(code)?;
    Some(match n {
        n if n == success || (200..300).contains(&n) => Verdict::Success,
        100..=599 => Verdict::Error(u16::try_from(n).ok().map(kind_for_http_status)),
        _ => Verdict::Error(None),
    })
}

/// A 2xx answer we cannot read as the dialect's success shape. After a submit the task
/// may exist upstream, so it is ambiguous there.
/// A create answer shaped `{code, data: {<id_field>, <state_field>}}` (modellix and
/// apimodels). A missing state means just queued.
pub(super) fn read_data_created(
    reply: &Reply,
    classify: fn(&Value) -> Option<Verdict>,
    id_field: &str,
    state_field: &str,
    map_state: fn(&str) -> Option<TaskStatus>,
) -> Result<Submitted, ProviderError> {
    let body = check(reply, Call::Submit, classify)?;
    let data = body.get("data");
    let upstream_id = data
        .and_then(|d| d.get(id_field))
        .and_then(text)
        .ok_or_else(|| {
            let what = format!("no data.{id_field} in the create answer");
            malformed(reply, Call::Submit, &what)
        })?;
    let state = data
        .and_then(|d| d.get(state_field))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let observed = Observed {
        upstream_id: upstream_id.clone(),
        raw_state: state.to_string(),
        status: if state.trim().is_empty() {
            Some(TaskStatus::Queued)
        } else {
            map_state(state)
        },
        ..Default::default()
    };
    Ok(Submitted {
        upstream_id,
        status: observed.created_status(),
    })
}

/// A task answer shaped `{code, data: {...}}` (modellix and apimodels): the checked body
/// and the raw state found at `data.<state_field>`.
pub(super) fn read_data_task(
    reply: &Reply,
    classify: fn(&Value) -> Option<Verdict>,
    state_field: &str,
) -> Result<(Value, String), ProviderError> {
    let body = check(reply, Call::Read, classify)?;
    if !body.get("data").is_some_and(Value::is_object) {
        return Err(malformed(
            reply,
            Call::Read,
            "no data object in the task answer",
        ));
    }
    let state = body["data"]
        .get(state_field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok((body, state))
}

pub(super) fn malformed(reply: &Reply, call: Call, what: &str) -> ProviderError {
    ProviderError {
        kind: ErrorKind::Malformed,
        message: format!("unexpected answer from provider: {what}"),
        http_status: Some(reply.status),
        code: None,
        ambiguous: call == Call::Submit,
        raw_body: None,
    }
}

/// The error of a dialect that cannot find tasks by our id. Whether the submit landed
/// stays unknown, hence ambiguous.
pub(super) fn no_external_id_lookup(provider: &str) -> ProviderError {
    let mut err = ProviderError::new(
        ErrorKind::BadRequest,
        format!("{provider} cannot look tasks up by external_task_id"),
    );
    err.ambiguous = true;
    err
}

/// The provider's own error text: `message`, `msg`, or an OpenAI-style `error`.
pub(super) fn provider_message(v: &Value) -> Option<String> {
    ["message", "msg"]
        .iter()
        .filter_map(|k| v.get(k))
        .chain(v.get("error").map(|e| e.get("message").unwrap_or(e)))
        .find_map(text)
}

/// A non-empty string, or a number spelled out (some relays send ids as numbers). Its NULs
/// are already gone when it came through [`Reply::json`]; a value built some other way is
/// cleaned the same way here.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(storable(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        other => text(other),
    }
}

/// A whole number sent as a number or a numeric string.
pub(super) fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A progress percentage sent as `40`, `"40"` or `"40%"`.
pub(super) fn progress(v: &Value) -> Option<u8> {
    let pct = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok(),
        _ => None,
    }?;
    // Truncation is intended: the value is clamped to 0..=100 first.
    pct.is_finite().then(|| pct.clamp(0.0, 100.0) as u8)
}

/// One result video: a plain URL string, or an object with `url` (or `video_url`) and an
/// optional `duration` (Kling sends it as a string such as `"5.041"`).
pub(super) fn video(entry: &Value) -> Option<VideoResult> {
    if let Some(url) = entry.as_str() {
        return (!url.trim().is_empty()).then(|| VideoResult {
            url: url.to_string(),
            duration: None,
        });
    }
    let url = ["url", "video_url"]
        .iter()
        .find_map(|k| entry.get(k).and_then(Value::as_str))
        .filter(|u| !u.trim().is_empty())?;
    let duration = entry.get("duration").and_then(|d| match d {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Some(VideoResult {
        url: url.to_string(),
        duration,
    })
}

pub(super) fn videos(list: Option<&Value>) -> Vec<VideoResult> {
    list.and_then(Value::as_array)
        .map(|items| items.iter().filter_map(video).collect())
        .unwrap_or_default()
}

/// Percent-encodes a path segment (upstream ids are opaque to us).
pub(super) fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A task as a dialect read it, before the rules every dialect shares are applied.
#[derive(Debug, Clone, Default)]
pub(super) struct Observed {
    pub upstream_id: String,
    /// The provider's state word, for the error when it is not one we know.
    pub raw_state: String,
    /// Where the state word sits in the answer (`data.status`), named in that error.
    pub state_field: String,
    pub status: Option<TaskStatus>,
    pub videos: Vec<VideoResult>,
    /// Where the video URLs sit in the answer, named when a finished task has none.
    pub videos_field: String,
    pub failure_message: Option<String>,
    pub progress: Option<u8>,
}

impl Observed {
    /// The state of a task a create answer reports. The task exists whatever the answer
    /// says, so a state word we do not know counts as in progress (and is logged); the
    /// first query reads it properly.
    pub fn created_status(&self) -> TaskStatus {
        match self.status {
            Some(TaskStatus::Completed) | None => {
                tracing::warn!(
                    upstream_id = ?self.upstream_id,
                    state = ?self.raw_state,
                    "unexpected state in a create answer; treating it as in progress"
                );
                TaskStatus::InProgress
            }
            Some(status) => status,
        }
    }

    /// Applies the rules every read of a task obeys: a state word we do not know, or a
    /// completion without a video URL, is an answer we cannot interpret. Guessing
    /// "in progress" would poll a finished (and paid) task forever, so it is an
    /// [`ErrorKind::Unreadable`] naming the field, with the answer kept in `raw_body`.
    pub fn settle(self, reply: &Reply) -> Result<UpstreamTask, ProviderError> {
        let unreadable = |message: String| ProviderError {
            kind: ErrorKind::Unreadable,
            message,
            http_status: Some(reply.status),
            code: None,
            ambiguous: false,
            raw_body: Some(reply.raw_text()),
        };
        let status = match self.status {
            None => {
                let (field, word) = (&self.state_field, &self.raw_state);
                return Err(unreadable(format!("{field}: unknown state word {word:?}")));
            }
            // Stored, copied and shown to clients as a link: it must be a web URL. (Not
            // quoted in the message: a signed URL is a credential; raw_body keeps it.)
            Some(TaskStatus::Completed) if !self.videos.iter().all(|v| is_web_url(&v.url)) => {
                let field = &self.videos_field;
                return Err(unreadable(format!(
                    "{field}: a video URL is not an http(s) URL"
                )));
            }
            Some(TaskStatus::Completed) if self.videos.is_empty() => {
                let (field, word) = (&self.videos_field, &self.raw_state);
                return Err(unreadable(format!(
                    "{field}: no video URL although the task says {word:?}"
                )));
            }
            Some(status) => status,
        };
        Ok(UpstreamTask {
            upstream_id: self.upstream_id,
            status,
            progress: self.progress,
            videos: self.videos,
            failure_message: self
                .failure_message
                .filter(|_| status == TaskStatus::Failed)
                .map(|m| truncate_message(&m)),
        })
    }
}

/// An absolute `http` or `https` URL with a host.
fn is_web_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A body a provider POSTed to us, as if it were the answer to a query, so that a
/// callback is read by the same code as a poll.
pub(super) fn callback_reply(body: &[u8]) -> Reply {
    answer(200, body)
}

/// An answer held whole, as [`send`] would leave it: cut at [`MAX_BODY_BYTES`] and marked
/// oversized beyond.
fn answer(status: u16, body: &[u8]) -> Reply {
    let oversized = body.len() > MAX_BODY_BYTES;
    Reply {
        status,
        body: body[..body.len().min(MAX_BODY_BYTES)].to_vec(),
        oversized,
    }
}

/// Reads an answer held in memory as [`Upstream::call`] reads one off the network (there
/// is no credential to scrub): what each adapter's `parse_*_answer`, the fuzz targets'
/// and property tests' way in, goes through, so that they see what a call sees.
pub(super) fn read_answer<T>(
    status: u16,
    body: &[u8],
    read: impl FnOnce(&Reply) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    read(&answer(status, body)).map_err(cut_message)
}

/// The provider's words in an error cut to [`MAX_MESSAGE_CHARS`], as every call leaves them.
fn cut_message(mut e: ProviderError) -> ProviderError {
    e.message = truncate_message(&e.message);
    e
}

/// Logs an [`ErrorKind::Unreadable`] read once, where the provider and task are known.
pub(super) fn log_unreadable(provider: &str, upstream_id: &str, err: &ProviderError) {
    if err.kind == ErrorKind::Unreadable {
        tracing::warn!(
            provider,
            upstream_id = ?upstream_id,
            problem = ?err.message,
            "upstream task answer cannot be interpreted"
        );
    }
}

/// Adds the credential to requests and keeps it out of error messages. Kling's own host
/// takes a short-lived JWT, cached here and re-issued before it expires.
pub(super) struct Auth {
    credential: Credential,
    jwt: Mutex<Option<CachedJwt>>,
}

#[derive(Clone)]
struct CachedJwt {
    token: String,
    expires_at: u64,
}

#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    exp: u64,
    nbf: u64,
}

impl Auth {
    pub fn new(credential: Credential) -> Self {
        Auth {
            credential,
            jwt: Mutex::new(None),
        }
    }

    fn apply(&self, req: RequestBuilder) -> Result<RequestBuilder, ProviderError> {
        match self.header_value(unix_now())? {
            Some(value) => Ok(req.header(AUTHORIZATION, value)),
            // No credential (a local sandbox): let the upstream decide.
            None => Ok(req),
        }
    }

    fn header_value(&self, now: u64) -> Result<Option<HeaderValue>, ProviderError> {
        let token = match &self.credential {
            Credential::Missing => return Ok(None),
            Credential::Bearer(key) => key.expose().to_string(),
            Credential::KlingJwt {
                access_key,
                secret_key,
            } => self.jwt(access_key.expose(), secret_key.expose(), now)?,
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ProviderError::new(ErrorKind::Auth, "credential is not a valid header value")
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn jwt(&self, access_key: &str, secret_key: &str, now: u64) -> Result<String, ProviderError> {
        // A poisoned lock only means another thread panicked mid-update of a cache.
        let mut cached = self.jwt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(jwt) = cached.as_ref() {
            if now + JWT_REFRESH_MARGIN_SECS < jwt.expires_at {
                return Ok(jwt.token.clone());
            }
        }
        let expires_at = now + JWT_TTL_SECS;
        let claims = JwtClaims {
            iss: access_key,
            exp: expires_at,
            nbf: now.saturating_sub(JWT_NBF_SKEW_SECS),
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret_key.as_bytes()),
        )
        .map_err(|_| ProviderError::new(ErrorKind::Auth, "could not sign the Kling JWT"))?;
        *cached = Some(CachedJwt {
            token: token.clone(),
            expires_at,
        });
        Ok(token)
    }

    /// Removes any credential (or issued token) a provider echoed into its message.
    fn redact(&self, mut err: ProviderError) -> ProviderError {
        let token = self
            .jwt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|j| j.token.clone());
        let secrets: Vec<String> = match &self.credential {
            Credential::Missing => vec![],
            Credential::Bearer(key) => vec![key.expose().to_string()],
            Credential::KlingJwt {
                access_key,
                secret_key,
            } => vec![
                access_key.expose().to_string(),
                secret_key.expose().to_string(),
            ],
        };
        for secret in secrets.iter().chain(token.iter()) {
            if !secret.is_empty() {
                err.message = err.message.replace(secret.as_str(), "*****");
            }
        }
        err
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dialect, Secret};
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::json;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            oversized: false,
        }
    }

    fn numeric_zero_is_success(v: &Value) -> Option<Verdict> {
        integer(v).map(|n| {
            if n == 0 {
                Verdict::Success
            } else {
                Verdict::Error(None)
            }
        })
    }

    fn config(base_url: &str, timeout: f64) -> ProviderConfig {
        let mut cfg: ProviderConfig = serde_json::from_value(json!({
            "dialect": "kling",
            "base_url": base_url,
            "models": ["kling-v3-omni"],
            "request_timeout_secs": timeout,
            "connect_timeout_secs": timeout,
        }))
        .unwrap();
        cfg.credential = Credential::Bearer(Secret::new("sk-secret"));
        assert_eq!(cfg.dialect, Dialect::Kling);
        cfg
    }

    #[test]
    fn http_statuses_map_onto_error_kinds() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (402, ErrorKind::Billing),
            (404, ErrorKind::NotFound),
            (422, ErrorKind::BadRequest),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Retryable),
            (503, ErrorKind::Retryable),
            (302, ErrorKind::Malformed),
        ];
        for (status, kind) in cases {
            assert_eq!(kind_for_http_status(status), kind, "HTTP {status}");
        }
    }

    #[test]
    fn non_json_2xx_is_malformed_and_ambiguous_only_for_submits() {
        let r = reply(200, "<html>");
        let submit = check(&r, Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(submit.kind, ErrorKind::Malformed);
        assert!(submit.ambiguous);
        let read = check(&r, Call::Read, numeric_zero_is_success).unwrap_err();
        assert!(!read.ambiguous);
    }

    #[test]
    fn error_without_body_falls_back_on_http_status_with_short_message() {
        let err = check(&reply(503, "busy"), Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert_eq!(err.http_status, Some(503));
        assert_eq!(err.message, "provider answered HTTP 503");
        assert!(!err.ambiguous);
    }

    #[test]
    fn gateway_timeout_on_submit_is_ambiguous() {
        let err = check(&reply(504, ""), Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert!(err.ambiguous);
    }

    #[test]
    fn provider_message_reads_message_msg_and_openai_error() {
        assert_eq!(provider_message(&json!({"message": "m"})), Some("m".into()));
        assert_eq!(provider_message(&json!({"msg": "x"})), Some("x".into()));
        assert_eq!(
            provider_message(&json!({"error": {"message": "e"}})),
            Some("e".into())
        );
        assert_eq!(provider_message(&json!({"message": ""})), None);
    }

    #[test]
    fn a_nul_in_provider_text_is_replaced_so_the_text_can_be_stored() {
        assert_eq!(text(&json!("a\u{0}b")).as_deref(), Some("a\u{FFFD}b"));
        let err = check(
            &reply(400, r#"{"msg": "bad\u0000thing"}"#),
            Call::Read,
            |_| None,
        );
        assert_eq!(err.unwrap_err().message, "bad\u{FFFD}thing");
    }

    #[test]
    fn progress_accepts_numbers_and_percent_strings() {
        assert_eq!(progress(&json!(40)), Some(40));
        assert_eq!(progress(&json!("100%")), Some(100));
        assert_eq!(progress(&json!("250")), Some(100));
        assert_eq!(progress(&json!("soon")), None);
    }

    #[test]
    fn video_entries_may_be_strings_or_objects_with_url_or_video_url() {
        assert_eq!(
            video(&json!("https://v/1.mp4")).map(|v| v.url),
            Some("https://v/1.mp4".into())
        );
        assert_eq!(
            video(&json!({"url": "https://v/2.mp4", "duration": "5.041"})),
            Some(VideoResult {
                url: "https://v/2.mp4".into(),
                duration: Some(5.041)
            })
        );
        assert_eq!(
            video(&json!({"video_url": "https://v/3.mp4"})).map(|v| v.url),
            Some("https://v/3.mp4".into())
        );
        assert_eq!(video(&json!({"id": "x"})), None);
    }

    #[test]
    fn settle_refuses_unknown_state_and_urlless_completion_as_unreadable() {
        let r = reply(200, r#"{"state":"weird"}"#);
        let unknown = Observed {
            upstream_id: "t".into(),
            raw_state: "weird".into(),
            state_field: "data.state".into(),
            ..Default::default()
        };
        let err = unknown.settle(&r).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreadable);
        assert_eq!(err.message, r#"data.state: unknown state word "weird""#);
        assert_eq!(err.raw_body.as_deref(), Some(r#"{"state":"weird"}"#));
        let urlless = Observed {
            upstream_id: "t".into(),
            status: Some(TaskStatus::Completed),
            videos_field: "data.resultUrls".into(),
            ..Default::default()
        };
        assert_eq!(urlless.settle(&r).unwrap_err().kind, ErrorKind::Unreadable);
        let created = Observed {
            status: None,
            ..Default::default()
        };
        assert_eq!(created.created_status(), TaskStatus::InProgress);
    }

    #[test]
    fn every_string_of_an_answer_is_storable_video_urls_too() {
        let answer = reply(
            200,
            r#"{"data": {"task_id": "t\u0000", "videos": [{"url": "https://cdn/a\u0000.mp4"}]}}"#,
        );
        let body = answer.json().unwrap();
        assert_eq!(body["data"]["task_id"], "t\u{FFFD}");
        let urls = videos(body.pointer("/data/videos"));
        assert_eq!(urls[0].url, "https://cdn/a\u{FFFD}.mp4");
        assert!(!reply(200, "a\0b").raw_text().contains('\0'));
    }

    #[test]
    fn a_finished_task_whose_video_url_is_no_web_url_is_unreadable() {
        let finished = |url: &str| Observed {
            status: Some(TaskStatus::Completed),
            videos: vec![VideoResult {
                url: url.into(),
                duration: None,
            }],
            videos_field: "data.resultUrls".into(),
            ..Default::default()
        };
        for bad in [
            "not a url",
            "javascript:alert(1)",
            "ftp://h/v.mp4",
            "/v.mp4",
            "https://",
        ] {
            let err = finished(bad).settle(&reply(200, "")).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Unreadable, "{bad}");
            assert!(
                err.message.starts_with("data.resultUrls: "),
                "{}",
                err.message
            );
        }
        for good in ["https://cdn.example/v.mp4?sig=1", "http://10.0.0.1:9/v.mp4"] {
            assert!(finished(good).settle(&reply(200, "")).is_ok(), "{good}");
        }
    }

    #[test]
    fn failure_messages_are_cut_to_500_characters() {
        let failed = Observed {
            status: Some(TaskStatus::Failed),
            failure_message: Some("é".repeat(600)),
            ..Default::default()
        };
        let message = failed
            .settle(&reply(200, ""))
            .unwrap()
            .failure_message
            .unwrap();
        assert_eq!(message.chars().count(), 501, "500 and the mark");
        assert!(message.ends_with('…'));
    }

    #[test]
    fn raw_text_is_cut_on_a_char_boundary() {
        assert_eq!(truncate_chars_to_bytes("aé", 2), "a");
        assert_eq!(truncate_chars_to_bytes("aé", 3), "aé");
    }

    #[test]
    fn a_redirect_is_an_error_ambiguous_only_after_a_submit() {
        let r = reply(302, "");
        let submit = check(&r, Call::Submit, numeric_zero_is_success).unwrap_err();
        assert_eq!(submit.kind, ErrorKind::Malformed);
        assert!(submit.ambiguous);
        assert!(submit.message.contains("redirect"), "{}", submit.message);
        assert!(
            !check(&r, Call::Read, numeric_zero_is_success)
                .unwrap_err()
                .ambiguous
        );
    }

    #[test]
    fn an_oversized_answer_is_malformed_whatever_it_starts_with() {
        let mut r = reply(200, r#"{"code":0,"data":{}}"#);
        r.oversized = true;
        let err = check(&r, Call::Read, numeric_zero_is_success).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed);
        assert!(!err.ambiguous);
        assert!(
            check(&r, Call::Submit, numeric_zero_is_success)
                .unwrap_err()
                .ambiguous
        );
    }

    #[test]
    fn a_bad_gateway_after_a_submit_is_ambiguous_unless_the_provider_refused() {
        for body in [
            "",
            "<html>502 Bad Gateway</html>",
            r#"{"code":502,"message":"bad gateway"}"#,
        ] {
            let err = check(&reply(502, body), Call::Submit, classify_modellix).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Retryable, "{body}");
            assert!(err.ambiguous, "{body}");
        }
        let refused = reply(502, r#"{"code":400,"message":"bad prompt"}"#);
        let err = check(&refused, Call::Submit, classify_modellix).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(!err.ambiguous);
        assert!(
            !check(&reply(502, ""), Call::Read, classify_modellix)
                .unwrap_err()
                .ambiguous
        );
    }

    fn classify_modellix(v: &Value) -> Option<Verdict> {
        classify_http_like(v, 0)
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("abc-1_2.3~"), "abc-1_2.3~");
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn bearer_credential_becomes_a_sensitive_authorization_header() {
        let auth = Auth::new(Credential::Bearer(Secret::new("sk-1")));
        let value = auth.header_value(1_000).unwrap().unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer sk-1");
        assert!(value.is_sensitive());
    }

    #[test]
    fn kling_jwt_has_the_documented_claims_and_is_cached_until_near_expiry() {
        let auth = Auth::new(Credential::KlingJwt {
            access_key: Secret::new("ak"),
            secret_key: Secret::new("sk"),
        });
        let now = 1_700_000_000;
        let first = auth.jwt("ak", "sk", now).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims =
            jsonwebtoken::decode::<Value>(&first, &DecodingKey::from_secret(b"sk"), &validation)
                .unwrap()
                .claims;
        assert_eq!(
            claims,
            json!({"iss": "ak", "exp": now + 1800, "nbf": now - 5})
        );
        assert_eq!(auth.jwt("ak", "sk", now + 1000).unwrap(), first);
        assert_ne!(auth.jwt("ak", "sk", now + 1501).unwrap(), first);
    }

    #[test]
    fn credentials_are_scrubbed_from_error_messages() {
        let auth = Auth::new(Credential::Bearer(Secret::new("sk-secret")));
        let err = auth.redact(ProviderError::new(
            ErrorKind::Auth,
            "invalid key sk-secret for this account",
        ));
        assert_eq!(err.message, "invalid key ***** for this account");
    }

    #[tokio::test]
    async fn refused_connection_is_retryable_and_not_ambiguous() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = Upstream::new(&config(&format!("http://{addr}"), 2.0)).unwrap();
        let err = upstream
            .call(upstream.get("/x"), |_| Ok(()))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert!(!err.ambiguous);
        assert!(!err.message.contains("sk-secret"));
    }

    #[tokio::test]
    async fn silent_upstream_times_out_ambiguously() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let upstream = Upstream::new(&config(&format!("http://{addr}"), 0.3)).unwrap();
        let err = upstream
            .call(upstream.post("/x", &json!({})), |_| Ok(()))
            .await
            .unwrap_err();
        hold.abort();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(err.ambiguous);
    }
}
