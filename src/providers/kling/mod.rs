//! The Kling dialect: Kling's own API and the resellers that pass its body through
//! (anyfast, kkiai). The adapter and its paths live here; the request body in
//! [`request`], the answers and Kling's error codes in [`answer`] (the task shapes in
//! [`observe`]), and the JWT its own host takes in [`jwt`].

mod answer;
pub(super) mod jwt;
mod observe;
mod request;

use async_trait::async_trait;

use self::answer::{
    read_callback, read_created, read_list_page, read_task, read_task_by_external_id,
    transient_on_lookup,
};
use self::request::{fill_ignored_duration, stringify_element_ids};
use super::http::{self, Upstream};
use super::{Capabilities, ErrorKind, Lookup, Provider, ProviderError, Submitted, UpstreamTask};
use crate::config::ProviderConfig;
use crate::domain::{ShotType, VideoRequest};

pub use self::answer::{
    kind_for_code, parse_create_answer, parse_list_page, parse_lookup_answer, parse_status_answer,
};
pub use self::observe::kling_state;
pub use self::request::create_body;
pub(super) use self::request::{raw_image, shared_fields};

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
        http::set_callback_url(&mut body, callback_url);
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

/// Kling's envelope around a task (or a task list), for the answer tests.
#[cfg(test)]
fn envelope(task: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"code": 0, "message": "SUCCEED", "request_id": "r", "data": task})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
    fn capabilities_match_the_kling_dialect() {
        let caps = &CAPABILITIES;
        assert!(caps.element_list && caps.negative_prompt && caps.watermark);
        assert!(caps.frame_images && caps.feature_video && caps.keep_original_sound);
        assert!(caps.upstream_callback && caps.external_task_id);
        assert_eq!(caps.shot_types, &[ShotType::Customize]);
    }
}
