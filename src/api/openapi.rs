//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the request and answer types, served at `GET /openapi.json` with a reference page at
//! `GET /docs` (`docs.rs`).
//!
//! This file only assembles the document: nothing but the router imports it. The answers
//! built with `json!` are described as types in `schema.rs`, which the handlers name.
//!
//! To add an endpoint: put `#[utoipa::path(...)]` on its handler (its success answer and
//! the errors only it gives) and name the handler in `paths(...)` below. What every
//! endpoint of a kind shares is added here, from the path, by [`Conventions`], so it cannot
//! be forgotten: the security scheme (`/v1/...`: an API key, `/admin/...`: the admin
//! token), the error answers of the layers in front of every handler (auth, rate limit,
//! load shedding, body limits, the store) with the error envelope, and the RateLimit
//! headers. `tests/openapi.rs` fails when the router serves a route the document lacks,
//! and checks the running gateway against the document with schemathesis.

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Object, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorBody;
use super::schema::KlingError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "omnigate",
        description = "One normalized API for AI video generation in front of the Kling \
                       Omni-Video resellers. Errors are always `{\"error\": {\"type\", \"code\", \
                       \"message\", \"param\"?, \"provider_message\"?}}`; times are Unix seconds."
    ),
    paths(
        super::tasks::create,
        super::tasks::list_or_query,
        super::tasks::get_one,
        super::stream::stream,
        super::cancel::cancel,
        super::tasks::quote,
        super::events::list,
        super::events::redeliver,
        super::usage::mine,
        super::intake::upstream_callback,
        super::admin::providers,
        super::usage::all,
        super::keys::list,
        super::keys::create,
        super::keys::show,
        super::keys::update,
        super::keys::revoke,
        super::keys::rotate,
        super::keys::kling_credentials,
        super::content::generation_content,
        super::openai::create,
        super::openai::retrieve,
        super::openai::list,
        super::openai::delete,
        super::openai::content,
        super::kling::create,
        super::kling::get_one,
        super::kling::list,
        super::observe::healthz,
        super::observe::readyz,
        super::observe::metrics,
        openapi_json,
        super::docs::page,
        super::docs::asset,
    ),
    components(schemas(ErrorBody, KlingError)),
    modifiers(&KlingPrefix, &Conventions),
    tags(
        (name = "tasks", description = "Video generation tasks: create, read, list, quote."),
        (name = "events", description = "The webhook events of a task and their delivery attempts."),
        (name = "usage", description = "Tasks, seconds of video and money."),
        (name = "openai", description = "OpenAI's video API over the same tasks (the official SDK works against it)."),
        (name = "kling", description = "Kling's Omni-Video API over the same tasks, at Kling's paths and the resellers' `/kling` prefix: Kling's envelope and codes; the API key or a Kling JWT (HS256, signed with the key's Kling secret key) as the bearer token."),
        (name = "upstream", description = "Where providers call back."),
        (name = "admin", description = "The operator's API, behind the admin token."),
        (name = "meta", description = "Health and this document."),
    )
)]
pub struct ApiDoc;

/// The document as served: built once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| serde_json::to_string(&document()).expect("the OpenAPI document serializes"));

/// The document, with what utoipa's types cannot say patched into the JSON (see
/// [`require_retry_after`]).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    require_retry_after(&mut doc);
    doc
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object)),
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// The Kling facade is served under Kling's paths and under the resellers' `/kling` prefix:
/// each operation is documented once (`/v1/videos/omni-video...`) and copied here.
struct KlingPrefix;

impl Modify for KlingPrefix {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let copies: Vec<(String, PathItem)> = doc
            .paths
            .paths
            .iter()
            .filter(|(path, _)| Scope::of(path) == Scope::Kling)
            .map(|(path, item)| (format!("/kling{path}"), item.clone()))
            .collect();
        for (path, mut item) in copies {
            for op in operations(&mut item) {
                op.operation_id = op
                    .operation_id
                    .as_ref()
                    .map(|id| format!("{id}_kling_prefix"));
            }
            doc.paths.paths.insert(path, item);
        }
    }
}

/// Who may call a path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The Kling facade (`.../videos/omni-video`): the API key or a Kling JWT as the bearer
    /// token, counted by the rate limit; errors in Kling's envelope.
    Kling,
    /// `/v1/...`: `Authorization: Bearer <API key>`, counted by the rate limit.
    ApiKey,
    /// `/admin/...`: `Authorization: Bearer <admin token>`.
    Admin,
    /// Everything else: no credentials (the callback intake's token is in its path).
    Open,
}

impl Scope {
    fn of(path: &str) -> Scope {
        if path.contains("/v1/videos/omni-video") {
            Scope::Kling
        } else if path.starts_with("/v1/") {
            Scope::ApiKey
        } else if path.starts_with("/admin/") {
            Scope::Admin
        } else {
            Scope::Open
        }
    }
}

const API_KEY_SCHEME: &str = "api_key";
const ADMIN_SCHEME: &str = "admin_token";

/// What every operation of a kind shares, added from its path (see the module comment).
/// A status a handler's own attribute already lists is left as the handler describes it.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("og_...")
                    .description(Some(
                        "An API key (`og_...`), issued by `omnigate keys create` or \
                         `POST /admin/keys`. The scheme name is case-insensitive.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token, from the env var named by `admin.token_env`. Without \
                         one configured the admin API answers 404.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let scope = Scope::of(path);
            let has_path_params = path.contains('{');
            let security = match scope {
                Scope::ApiKey | Scope::Kling => Some(API_KEY_SCHEME),
                Scope::Admin => Some(ADMIN_SCHEME),
                Scope::Open => None,
            };
            for op in operations(item) {
                op.security =
                    security.map(|name| vec![SecurityRequirement::new(name, Vec::<String>::new())]);
                let has_input = op.request_body.is_some()
                    || op.parameters.iter().flatten().any(|p| {
                        !matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path)
                    });
                let has_body = op.request_body.is_some();
                if scope == Scope::Kling {
                    add_kling_responses(op, has_input, has_path_params);
                } else {
                    add_shared_responses(op, scope, has_input, has_body, has_path_params);
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn add_shared_responses(
    op: &mut Operation,
    scope: Scope,
    has_input: bool,
    has_body: bool,
    has_path_params: bool,
) {
    let mut add = |status: &str, response: Response| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    };
    if has_input {
        add(
            "400",
            error("`invalid_request`: a field or parameter breaks a rule; `param` names it."),
        );
    }
    match scope {
        Scope::ApiKey => {
            add(
                "401",
                unauthorized("`invalid_api_key`: the API key is missing or unknown."),
            );
            add(
                "429",
                with_retry_after(error(
                    "`rate_limited`: this key's rate for creates or reads is spent \
                     (`Retry-After` says when the next call passes); on a create also \
                     `concurrency_limited`: the key has its limit of tasks in flight and \
                     the create may not wait (`max_wait_secs: 0`, or queueing off); \
                     `queue_full`: the task would wait but the key has `max_queued` waiting.",
                )),
            );
        }
        Scope::Admin => {
            add(
                "401",
                unauthorized("`invalid_admin_token`: the admin token is missing or wrong."),
            );
            add(
                "429",
                with_retry_after(error(
                    "`too_many_failed_attempts`: too many wrong tokens from this address \
                     lately (`Retry-After` says when the next try is looked at).",
                )),
            );
            add(
                "404",
                error("`not_found`: no such key, or no admin token is configured (then the admin API does not exist)."),
            );
        }
        Scope::Open | Scope::Kling => {}
    }
    if has_path_params {
        add(
            "404",
            error("`not_found`: nothing with that id (another key's task is not yours to see)."),
        );
    }
    if has_body {
        add(
            "408",
            error("`body_timeout`: the body paused longer than `server.body_timeout_secs`."),
        );
        add(
            "413",
            error("`body_too_large`: the body is over `server.max_body_bytes`."),
        );
    }
    add(
        "503",
        with_retry_after(error(
            "`overloaded` (a limit of this gateway is reached), `store_unavailable` (the \
             database is unreachable or locked), `shutting_down` (a create during a graceful \
             shutdown), `rate_limiter_unavailable` (Redis cannot answer and the policy is \
             fail_closed), `no_provider_available` (every capable provider refused or has an \
             open circuit) or `worker_unhealthy` (`/healthz`).",
        )),
    );
    if scope == Scope::ApiKey {
        // The rate limit layer writes these on every answer it counted (a key with limits).
        for response in op.responses.responses.values_mut() {
            if let RefOr::T(response) = response {
                add_ratelimit_headers(response);
            }
        }
    }
}

/// What every Kling facade operation shares: its layers' refusals in Kling's envelope
/// (`kling::in_kling_envelope` rewrites them), and the RateLimit headers.
fn add_kling_responses(op: &mut Operation, has_input: bool, has_path_params: bool) {
    let mut add = |status: &str, response: Response| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    };
    if has_input {
        add(
            "400",
            kling_error("1200: the body or a parameter is unreadable (too large, stalled); 1201: a field breaks a rule (the message names it)."),
        );
    }
    let mut unauthorized = kling_error(
        "1001: no Authorization; 1002: an unknown key, a JWT of an unknown access key, a bad signature or an alg other than HS256; 1003: the JWT's nbf is ahead; 1004: its exp has passed.",
    );
    unauthorized
        .headers
        .insert("WWW-Authenticate".into(), header(Type::String, "`Bearer`."));
    add("401", unauthorized);
    add(
        "405",
        kling_error("1202: this path does not take that method."),
    );
    if has_path_params {
        add("404", kling_error("1203: no such task for this key."));
    }
    add(
        "429",
        with_retry_after(kling_error(
            "1302: this key's rate is spent (`Retry-After`); 1303: its unfinished tasks or waiting tasks are at their limit; 1102: its budget is spent.",
        )),
    );
    add(
        "503",
        with_retry_after(kling_error(
            "5001: the gateway or every capable provider cannot take it now.",
        )),
    );
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            add_ratelimit_headers(response);
        }
    }
}

/// An answer with Kling's error envelope.
fn kling_error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("KlingError")))
                .build(),
        )
        .build()
}

/// An answer with the error envelope.
fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

fn unauthorized(description: &str) -> Response {
    let mut r = error(description);
    r.headers
        .insert("WWW-Authenticate".into(), header(Type::String, "`Bearer`."));
    r
}

fn with_retry_after(mut r: Response) -> Response {
    r.headers.insert(
        "Retry-After".into(),
        header(Type::Integer, "Seconds to wait before retrying."),
    );
    r
}

fn header(ty: Type, description: &str) -> Header {
    let mut h = Header::new(Object::with_type(ty));
    h.description = Some(description.into());
    h
}

fn add_ratelimit_headers(r: &mut Response) {
    for (name, ty, description) in [
        (
            "RateLimit-Limit",
            Type::Integer,
            "Calls that can be made at once (the burst).",
        ),
        (
            "RateLimit-Remaining",
            Type::Integer,
            "How many of them are left.",
        ),
        (
            "RateLimit-Reset",
            Type::Integer,
            "Seconds until all are back.",
        ),
        (
            "RateLimit-Policy",
            Type::String,
            "The steady rate per 60 s window, with the burst: `60;w=60;burst=10`.",
        ),
    ] {
        r.headers
            .entry(name.into())
            .or_insert_with(|| header(ty, description));
    }
}

/// `Retry-After` is on every 429 and 503 this gateway sends; utoipa's `Header` has no
/// `required`, so it is set here, where schemathesis then checks it.
fn require_retry_after(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                if status != "429" && status != "503" {
                    continue;
                }
                if let Some(h) = response.pointer_mut("/headers/Retry-After") {
                    h["required"] = Value::Bool(true);
                }
            }
        }
    }
}
