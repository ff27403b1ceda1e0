//! The normalized vocabulary every part of omnigate speaks: the client's request, task
//! states and the task object. Provider dialects are translated to and from these types
//! inside `providers/` only.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The two Kling Omni-Video models; reseller spellings are accepted as aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Model {
    #[serde(
        rename = "kling-video-o1",
        alias = "kling-o1",
        alias = "kling-video/kling-video-o1"
    )]
    KlingVideoO1,
    #[serde(
        rename = "kling-v3-omni",
        alias = "kling-v3-omni-video",
        alias = "kling-video/kling-v3-omni"
    )]
    KlingV3Omni,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::KlingVideoO1 => "kling-video-o1",
            Model::KlingV3Omni => "kling-v3-omni",
        }
    }

    pub fn parse(s: &str) -> Option<Model> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    /// Every spelling the deserializer takes: the names, then the aliases.
    pub const SPELLINGS: [&'static str; 6] = [
        "kling-video-o1",
        "kling-v3-omni",
        "kling-o1",
        "kling-video/kling-video-o1",
        "kling-v3-omni-video",
        "kling-video/kling-v3-omni",
    ];
}

/// Written out rather than derived: the derive would list only the names, and a client
/// may send any alias (answers always carry the name).
impl PartialSchema for Model {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Model::SPELLINGS))
            .description(Some(
                "`kling-video-o1` or `kling-v3-omni`; the reseller spellings are accepted as \
                 aliases and answered with the name.",
            ))
            .into()
    }
}

impl ToSchema for Model {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Std,
    #[default]
    Pro,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Std => "std",
            Mode::Pro => "pro",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AspectRatio {
    #[serde(rename = "16:9")]
    Wide,
    #[serde(rename = "9:16")]
    Tall,
    #[serde(rename = "1:1")]
    Square,
}

impl AspectRatio {
    pub fn as_str(self) -> &'static str {
        match self {
            AspectRatio::Wide => "16:9",
            AspectRatio::Tall => "9:16",
            AspectRatio::Square => "1:1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    #[default]
    Off,
}

impl OnOff {
    pub fn as_str(self) -> &'static str {
        match self {
            OnOff::On => "on",
            OnOff::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    Yes,
    No,
}

impl YesNo {
    pub fn as_str(self) -> &'static str {
        match self {
            YesNo::Yes => "yes",
            YesNo::No => "no",
        }
    }
}

/// `customize` is Kling's storyboard (explicit `multi_prompt`); `intelligence` lets the
/// model cut shots itself (modellix's only option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShotType {
    Customize,
    Intelligence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FrameType {
    FirstFrame,
    EndFrame,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReferType {
    Base,
    Feature,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// An http(s) URL, or base64 (a `data:image/...;base64,` prefix is accepted), at most
    /// 10 MiB decoded.
    #[schema(min_length = 1)]
    pub image_url: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub frame: Option<FrameType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoRef {
    /// An http(s) URL.
    #[schema(min_length = 1)]
    pub video_url: String,
    /// Kling's default is `base` (the video to edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refer_type: Option<ReferType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_sound: Option<YesNo>,
    /// The input video's length in seconds, as the client knows it. Only prices a
    /// base-video edit (billed on the input's rounded length); never sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 3, maximum = 10)]
    pub duration: Option<f64>,
}

impl VideoRef {
    pub fn refer_type(&self) -> ReferType {
        self.refer_type.unwrap_or(ReferType::Base)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ElementRef {
    /// Kling element ids are 64-bit integers; some resellers document them as strings.
    #[serde(deserialize_with = "u64_from_number_or_string")]
    #[schema(schema_with = element_id_schema)]
    pub element_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shot {
    /// 1-6, unique; a shot without one is numbered by its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 6)]
    pub index: Option<u32>,
    #[schema(min_length = 1, max_length = 512)]
    pub prompt: String,
    /// Seconds, 1 to the request's `duration`; the shots' durations sum to it.
    #[serde(deserialize_with = "u32_from_number_or_string")]
    #[schema(schema_with = shot_duration_schema)]
    pub duration: u32,
}

impl Shot {
    /// The shot's number: its own `index`, or its 1-based position when it has none.
    pub fn number(&self, position: usize) -> u64 {
        self.index.map_or(position as u64 + 1, u64::from)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Only these configured providers may take the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub providers: Option<Vec<String>>,
    /// Only providers whose estimate is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub max_cost_usd: Option<f64>,
}

/// A status change a client can ask to be called back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackEvent {
    InProgress,
    Completed,
    Failed,
}

/// An event type a client can have delivered to its `callback_url` (`webhook_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventName {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl WebhookEventName {
    pub const ALL: [WebhookEventName; 4] = [
        WebhookEventName::InProgress,
        WebhookEventName::Completed,
        WebhookEventName::Failed,
        WebhookEventName::Cancelled,
    ];

    /// The task status whose event this is (`video.generation.<status>`).
    pub fn status(self) -> TaskStatus {
        match self {
            WebhookEventName::InProgress => TaskStatus::InProgress,
            WebhookEventName::Completed => TaskStatus::Completed,
            WebhookEventName::Failed => TaskStatus::Failed,
            WebhookEventName::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// The body of `POST /v1/video/generations`, as the client sent it (defaults not applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoRequest {
    pub model: Model,
    /// 1-2500 characters; required unless `multi_shot` with `shot_type: customize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 2500)]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2500)]
    pub negative_prompt: Option<String>,
    /// Default `pro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Seconds: kling-video-o1 3-10 (only 5 or 10 for text-to-video and first-frame
    /// image-to-video), kling-v3-omni 3-15 (at most 10 with a video); default 5; omitted
    /// for a base-video edit. A numeric string is accepted.
    #[serde(
        default,
        deserialize_with = "opt_u32_from_number_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = duration_schema)]
    pub duration: Option<u32>,
    /// Required unless a first frame or a base video is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<AspectRatio>,
    /// Default `off`; must be `off` with any video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<OnOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_shot: Option<bool>,
    /// Only with `multi_shot`, and then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shot_type: Option<ShotType>,
    /// With `shot_type: customize`: 1-6 shots whose durations sum to `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 6)]
    pub multi_prompt: Option<Vec<Shot>>,
    /// At most one `first_frame` and one `end_frame` (which needs a first frame); images
    /// plus elements at most 4 with a video, 7 without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 7)]
    pub image_list: Vec<ImageRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 1)]
    pub video_list: Vec<VideoRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 7)]
    pub element_list: Vec<ElementRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<bool>,
    /// An absolute https URL; this task's signed events are POSTed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri")]
    pub callback_url: Option<String>,
    /// Status changes sent to `callback_url` besides `completed` and `failed`, which are
    /// always sent.
    /// Each at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_events: Option<Vec<CallbackEvent>>,
    /// Which events are delivered to `callback_url` (default: all). The others are still
    /// recorded and listed by the events API, with state `filtered`. Naming `in_progress`
    /// asks for it as `callback_events` does. Each at most once, at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_events: Option<Vec<WebhookEventName>>,
    /// Echoed back on the task and its events: at most 16 keys (up to 64 characters),
    /// string values of up to 512 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// Seconds the task may wait in omnigate's queue when no provider has room (0 to
    /// 86400; default `queue.default_max_wait_secs`). 0: do not wait, answer 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 86400)]
    pub max_wait_secs: Option<u64>,
    /// Orders this key's own waiting tasks (default `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// Which of a key's waiting tasks starts first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

/// Longest wait in omnigate's queue a create may ask for (`max_wait_secs`), and the most
/// `queue.default_max_wait_secs` may be.
pub const MAX_WAIT_SECS: u64 = 86_400;

impl VideoRequest {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or_default()
    }

    pub fn sound(&self) -> OnOff {
        self.sound.unwrap_or_default()
    }

    pub fn is_multi_shot(&self) -> bool {
        self.multi_shot.unwrap_or(false)
    }

    /// Whether the client wants to hear of `in_progress` (completed and failed are always
    /// sent when there is a callback_url).
    pub fn wants_in_progress_events(&self) -> bool {
        self.callback_events
            .as_deref()
            .is_some_and(|e| e.contains(&CallbackEvent::InProgress))
            || self.delivers(WebhookEventName::InProgress) && self.webhook_events.is_some()
    }

    /// Whether an event of this type goes to `callback_url` (`webhook_events`, default all).
    pub fn delivers(&self, event: WebhookEventName) -> bool {
        self.webhook_events
            .as_deref()
            .is_none_or(|names| names.contains(&event))
    }

    /// The negative prompt, if it says anything: `""` does not use the feature.
    pub fn negative_prompt(&self) -> Option<&str> {
        self.negative_prompt
            .as_deref()
            .filter(|p| !p.trim().is_empty())
    }

    /// The base video being edited, if this is a video-edit request.
    pub fn base_video(&self) -> Option<&VideoRef> {
        self.video_list
            .iter()
            .find(|v| v.refer_type() == ReferType::Base)
    }

    /// Kling: "When using text-to-video or first frame image to video, only 5 and 10s are
    /// supported" on kling-video-o1. Generation from reference images or elements alone is
    /// neither, so it keeps the full 3-10 (modellix, stricter, is passed over for it by
    /// routing).
    pub fn is_o1_five_or_ten(&self) -> bool {
        let text_only = self.image_list.is_empty() && self.element_list.is_empty();
        self.video_list.is_empty() && (text_only || self.has_frame(FrameType::FirstFrame))
    }

    pub fn has_frame(&self, frame: FrameType) -> bool {
        self.image_list.iter().any(|i| i.frame == Some(frame))
    }

    pub fn keeps_original_sound(&self) -> bool {
        self.video_list
            .iter()
            .any(|v| v.keep_original_sound == Some(YesNo::Yes))
    }

    /// The request without its inline (base64) images, each replaced by a note of its size,
    /// or None when it has none. Kept once a provider has the task: the images are no
    /// longer needed and would make every later read of the row heavy.
    pub fn without_inline_images(&self) -> Option<VideoRequest> {
        let inline = |i: &ImageRef| {
            !i.image_url.starts_with("http://") && !i.image_url.starts_with("https://")
        };
        if !self.image_list.iter().any(inline) {
            return None;
        }
        let mut slim = self.clone();
        for image in slim.image_list.iter_mut().filter(|i| inline(i)) {
            image.image_url = format!(
                "omitted:base64 image of {} characters, removed once a provider accepted the task",
                image.image_url.len()
            );
        }
        Some(slim)
    }

    /// Seconds of output the request asks for: the declared duration or the default 5.
    /// A base-video edit has no duration of its own (the output matches the input video).
    pub fn output_seconds(&self) -> Option<u32> {
        if self.base_video().is_some() {
            None
        } else {
            Some(self.duration.unwrap_or(DEFAULT_DURATION))
        }
    }
}

pub const DEFAULT_DURATION: u32 = 5;

/// A request feature that an individual provider may be configured as unable to carry,
/// beyond what its dialect already rules out (e.g. anyfast documents no `negative_prompt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    NegativePrompt,
    ElementList,
    Watermark,
    FrameImages,
    FeatureVideo,
    KeepOriginalSound,
    MultiShot,
}

impl Feature {
    pub fn used_by(self, req: &VideoRequest) -> bool {
        match self {
            Feature::NegativePrompt => req.negative_prompt().is_some(),
            Feature::ElementList => !req.element_list.is_empty(),
            Feature::Watermark => req.watermark.is_some(),
            Feature::FrameImages => {
                req.has_frame(FrameType::FirstFrame) || req.has_frame(FrameType::EndFrame)
            }
            Feature::FeatureVideo => req
                .video_list
                .iter()
                .any(|v| v.refer_type() == ReferType::Feature),
            Feature::KeepOriginalSound => req
                .video_list
                .iter()
                .any(|v| v.keep_original_sound.is_some()),
            Feature::MultiShot => req.is_multi_shot(),
        }
    }

    /// The request field that carries the feature.
    pub fn param(self) -> &'static str {
        match self {
            Feature::NegativePrompt => "negative_prompt",
            Feature::ElementList => "element_list",
            Feature::Watermark => "watermark",
            Feature::FrameImages => "image_list",
            Feature::FeatureVideo | Feature::KeepOriginalSound => "video_list",
            Feature::MultiShot => "multi_shot",
        }
    }
}

/// The states a client sees. Every provider's states map onto the first four;
/// `cancelled` is omnigate's own (a task cancelled while it waited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    /// Cancelled by its client while it waited for a provider (nothing charged).
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        match s {
            "queued" => Some(TaskStatus::Queued),
            "in_progress" => Some(TaskStatus::InProgress),
            "completed" => Some(TaskStatus::Completed),
            "failed" => Some(TaskStatus::Failed),
            "cancelled" => Some(TaskStatus::Cancelled),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VideoResult {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// A whole number, or a string holding one (what `number_or_string` takes), with the
/// validator's range on the number.
fn whole_number_schema(minimum: u64, maximum: Option<u64>) -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(minimum))
                .maximum(maximum),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\s*\+?[0-9]+\s*$")),
        )
        .into()
}

fn duration_schema() -> Schema {
    whole_number_schema(3, Some(15))
}

fn shot_duration_schema() -> Schema {
    whole_number_schema(1, Some(15))
}

fn element_id_schema() -> Schema {
    whole_number_schema(0, None)
}

fn metadata_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(16))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(64)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(512))
                .into(),
        ))))
        .into()
}

fn u64_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    number_or_string(d)
}

fn u32_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    number_or_string(d)
}

fn opt_u32_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    number_or_string(d).map(Some)
}

/// Accepts `5` or `"5"`; anything else is an error that names the expected form.
fn number_or_string<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    let n = match &v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| T::try_from(n).ok()).ok_or_else(|| {
        D::Error::custom(format!(
            "expected a whole number (or numeric string), got {v}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reseller_model_spellings_are_aliases() {
        assert_eq!(
            Model::parse("kling-v3-omni-video"),
            Some(Model::KlingV3Omni)
        );
        assert_eq!(Model::parse("kling-video-o1"), Some(Model::KlingVideoO1));
        assert_eq!(Model::parse("kling-v2"), None);
    }

    #[test]
    fn duration_accepts_numeric_string_and_rejects_words() {
        let r: VideoRequest =
            serde_json::from_str(r#"{"model":"kling-v3-omni","duration":"7"}"#).unwrap();
        assert_eq!(r.duration, Some(7));
        assert!(serde_json::from_str::<VideoRequest>(
            r#"{"model":"kling-v3-omni","duration":"seven"}"#
        )
        .is_err());
    }
}
