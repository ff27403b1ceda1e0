//! Checks a client's `VideoRequest` against every rule of the provider documents before
//! any provider is called or any money is spent.
//!
//! Serde already rejects unknown fields and bad enum values; what is left is the
//! conditional rules. Which provider can serve a valid request is decided elsewhere
//! (routing); these rules hold for all of them. The first violation is reported, in the
//! order below, with `param` naming the field as the client wrote it
//! (`multi_prompt[2].duration`, `image_list[1].type`).
//!
//! A "base-video edit" is a request with a `video_list` entry whose `refer_type` is `base`
//! (the default when `refer_type` is absent).
//!
//! 1. `prompt`: 1-2500 characters (blank counts as missing); required unless
//!    `multi_shot` is true with `shot_type: customize`. `negative_prompt`: at most 2500.
//! 2. `duration`: kling-video-o1 3-10, kling-v3-omni 3-15; o1 text-to-video and
//!    first-frame image-to-video only 5 or 10; v3-omni with a video at most 10; omitted for
//!    a base-video edit.
//! 3. `multi_shot`: without it, `shot_type` and `multi_prompt` are omitted; with it,
//!    `shot_type` is required and a base-video edit is not allowed. `customize` needs
//!    `multi_prompt` of 1-6 shots, each prompt 1-512 characters, each duration 1 to the
//!    total, unique indexes, durations summing to `duration` (5 when omitted).
//!    `intelligence` needs `prompt` (rule 1) and no `multi_prompt`.
//! 4. `sound` is off when `video_list` is not empty.
//! 5. `video_list`: at most 1 entry.
//! 6. `image_list`: at most one `first_frame` and one `end_frame`; an `end_frame` needs a
//!    `first_frame`; no first or end frame with a base-video edit.
//! 7. Images plus elements: at most 4 with a video, at most 7 without.
//! 8. `aspect_ratio` is required unless a `first_frame` image or a base video is given.
//! 9. `callback_url` is an absolute https URL without control characters (http only with
//!    `webhooks.allow_private_targets`, and then `check_callback_url` is the full rule); `routing.providers` is non-empty with
//!    non-empty names; `routing.max_cost_usd` is finite and positive; `callback_events`
//!    and `webhook_events` need a `callback_url` and name each event once.
//! 10. `metadata` is an object of at most 16 keys (keys up to 64 characters) whose values
//!     are strings of up to 512 characters.
//! 11. `image_url` is an http(s) URL or base64 (optionally `data:image/...;base64,`);
//!     `video_url` is an http(s) URL. Neither may be empty (checked with rules 5 and 6).

use std::collections::HashSet;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;
use url::Url;

use crate::domain::{FrameType, Model, OnOff, ShotType, VideoRequest, DEFAULT_DURATION};

const PROMPT_MAX_CHARS: usize = 2500;
const SHOT_PROMPT_MAX_CHARS: usize = 512;
const MAX_SHOTS: usize = 6;
const MAX_VIDEOS: usize = 1;
const MAX_REFERENCES_WITH_VIDEO: usize = 4;
const MAX_REFERENCES_WITHOUT_VIDEO: usize = 7;
/// Kling's ceiling for the output when a video is given (feature reference).
const MAX_SECONDS_WITH_VIDEO: u32 = 10;
/// The provider documents set no metadata limits; these are OpenAI's metadata limits
/// (Stripe's are alike: string values only), so the echoed object stays small and flat.
const METADATA_MAX_KEYS: usize = 16;
const METADATA_KEY_MAX_CHARS: usize = 64;
const METADATA_VALUE_MAX_CHARS: usize = 512;

/// Clients send base64 with or without `=` padding; both decode to the same image.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The first rule a request breaks: `param` is the field's path in the client's JSON,
/// `message` one sentence saying what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ValidationError {
    pub param: String,
    pub message: String,
}

impl ValidationError {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            param: param.into(),
            message: message.into(),
        }
    }
}

type Checked = Result<(), ValidationError>;

/// Every rule a create applies, for every entry point that prices or creates a task (the
/// native create and quote, the OpenAI facade, the console's playground): the rules in
/// `validate`, then the part of rule 9 this gateway's config decides
/// (`webhooks.allow_private_targets`). A quote refuses exactly what a create refuses.
pub fn validate_for_gateway(req: &VideoRequest, allow_private_targets: bool) -> Checked {
    validate(req)?;
    check_callback_url(req.callback_url.as_deref(), allow_private_targets)
}

/// Checks every rule listed in the module doc, in that order, and reports the first
/// violation (the rules that hold on every gateway; see `validate_for_gateway`).
pub fn validate(req: &VideoRequest) -> Checked {
    check_prompt(req)?;
    check_duration(req)?;
    check_multi_shot(req)?;
    check_sound(req)?;
    check_video_list(req)?;
    check_image_list(req)?;
    check_reference_count(req)?;
    check_aspect_ratio(req)?;
    check_callback_url_shape(req)?;
    check_callback_events(req)?;
    check_webhook_events(req)?;
    check_routing(req)?;
    check_max_wait(req)?;
    check_metadata(req)
}

/// The wait a create may ask for in omnigate's queue.
fn check_max_wait(req: &VideoRequest) -> Checked {
    match req.max_wait_secs {
        Some(s) if s > crate::domain::MAX_WAIT_SECS => Err(ValidationError::new(
            "max_wait_secs",
            format!(
                "max_wait_secs must be from 0 (do not wait) to {}, got {s}.",
                crate::domain::MAX_WAIT_SECS
            ),
        )),
        _ => Ok(()),
    }
}

/// Rule 1.
fn check_prompt(req: &VideoRequest) -> Checked {
    let carried_by_shots = req.is_multi_shot() && req.shot_type == Some(ShotType::Customize);
    match non_blank(req.prompt.as_deref()) {
        None if !carried_by_shots => {
            return Err(ValidationError::new(
                "prompt",
                "prompt is required (1 to 2500 characters) unless multi_shot is true with \
                 shot_type customize, where multi_prompt carries the prompts.",
            ))
        }
        Some(p) if char_len(p) > PROMPT_MAX_CHARS => {
            return Err(ValidationError::new(
                "prompt",
                format!(
                    "prompt must be at most {PROMPT_MAX_CHARS} characters, got {}.",
                    char_len(p)
                ),
            ))
        }
        _ => {}
    }
    match req.negative_prompt.as_deref() {
        Some(p) if char_len(p) > PROMPT_MAX_CHARS => Err(ValidationError::new(
            "negative_prompt",
            format!(
                "negative_prompt must be at most {PROMPT_MAX_CHARS} characters, got {}.",
                char_len(p)
            ),
        )),
        _ => Ok(()),
    }
}

/// Rule 2. An omitted duration means the default 5, which every case accepts.
fn check_duration(req: &VideoRequest) -> Checked {
    let Some(seconds) = req.duration else {
        return Ok(());
    };
    let invalid = |message: String| Err(ValidationError::new("duration", message));
    if req.base_video().is_some() {
        return invalid(
            "duration must be omitted when editing a video (a video_list entry with refer_type \
             base, the default): the output is as long as the input video."
                .to_string(),
        );
    }
    let has_video = !req.video_list.is_empty();
    let model = req.model.as_str();
    match req.model {
        Model::KlingVideoO1 if req.is_o1_five_or_ten() && seconds != 5 && seconds != 10 => {
            invalid(format!(
                "{model} text-to-video and first-frame image-to-video accept a duration of 5 or \
                 10 seconds only, got {seconds}."
            ))
        }
        Model::KlingVideoO1 if !(3..=10).contains(&seconds) => invalid(format!(
            "{model} accepts a duration of 3 to 10 seconds, got {seconds}."
        )),
        Model::KlingV3Omni if !(3..=15).contains(&seconds) => invalid(format!(
            "{model} accepts a duration of 3 to 15 seconds, got {seconds}."
        )),
        Model::KlingV3Omni if has_video && seconds > MAX_SECONDS_WITH_VIDEO => invalid(format!(
            "{model} with a reference video accepts a duration of 3 to \
             {MAX_SECONDS_WITH_VIDEO} seconds, got {seconds}."
        )),
        _ => Ok(()),
    }
}

/// Rule 3.
fn check_multi_shot(req: &VideoRequest) -> Checked {
    if !req.is_multi_shot() {
        if req.shot_type.is_some() {
            return Err(ValidationError::new(
                "shot_type",
                "shot_type is only allowed when multi_shot is true.",
            ));
        }
        if req.multi_prompt.is_some() {
            return Err(ValidationError::new(
                "multi_prompt",
                "multi_prompt is only allowed when multi_shot is true with shot_type customize.",
            ));
        }
        return Ok(());
    }
    // The output of an edit is as long as the input video, so shot durations could
    // never be made to sum to it.
    if req.base_video().is_some() {
        return Err(ValidationError::new(
            "multi_shot",
            "multi_shot is not allowed when editing a video (a video_list entry with \
             refer_type base, the default).",
        ));
    }
    match req.shot_type {
        None => Err(ValidationError::new(
            "shot_type",
            "shot_type is required when multi_shot is true: use customize (with \
             multi_prompt) or intelligence.",
        )),
        Some(ShotType::Intelligence) if req.multi_prompt.is_some() => Err(ValidationError::new(
            "multi_prompt",
            "multi_prompt must be omitted with shot_type intelligence, which cuts shots \
             from prompt by itself.",
        )),
        Some(ShotType::Intelligence) => Ok(()),
        Some(ShotType::Customize) => check_customized_shots(req),
    }
}

/// Rule 3, `shot_type: customize`.
fn check_customized_shots(req: &VideoRequest) -> Checked {
    let Some(shots) = req.multi_prompt.as_deref() else {
        return Err(ValidationError::new(
            "multi_prompt",
            format!(
                "multi_prompt is required with shot_type customize: give 1 to {MAX_SHOTS} shots."
            ),
        ));
    };
    if shots.is_empty() || shots.len() > MAX_SHOTS {
        return Err(ValidationError::new(
            "multi_prompt",
            format!(
                "multi_prompt must have 1 to {MAX_SHOTS} shots, got {}.",
                shots.len()
            ),
        ));
    }
    let total = req.duration.unwrap_or(DEFAULT_DURATION);
    let mut indexes = HashSet::new();
    for (i, shot) in shots.iter().enumerate() {
        let prompt_len = non_blank(Some(&shot.prompt)).map_or(0, char_len);
        if !(1..=SHOT_PROMPT_MAX_CHARS).contains(&prompt_len) {
            return Err(ValidationError::new(
                format!("multi_prompt[{i}].prompt"),
                format!(
                    "each shot's prompt must be 1 to {SHOT_PROMPT_MAX_CHARS} characters, \
                     got {prompt_len}."
                ),
            ));
        }
        if !(1..=total).contains(&shot.duration) {
            return Err(ValidationError::new(
                format!("multi_prompt[{i}].duration"),
                format!(
                    "each shot's duration must be 1 to {total} seconds (the task duration), \
                     got {}.",
                    shot.duration
                ),
            ));
        }
        let number = shot.number(i);
        if !(1..=MAX_SHOTS as u64).contains(&number) {
            return Err(ValidationError::new(
                format!("multi_prompt[{i}].index"),
                format!("shot indexes must be 1 to {MAX_SHOTS}, got {number}."),
            ));
        }
        // A shot without an index is numbered by its position, which may collide with
        // another shot's explicit index.
        if !indexes.insert(number) {
            return Err(ValidationError::new(
                format!("multi_prompt[{i}].index"),
                format!(
                    "shot number {number} is used twice (a shot without an index is numbered \
                     by its position); shot indexes must be unique."
                ),
            ));
        }
    }
    // Each shot is at most `total` (at most 15) and there are at most 6: no overflow.
    let sum: u32 = shots.iter().map(|s| s.duration).sum();
    if sum != total {
        let default_note = if req.duration.is_none() {
            " (the default, as duration is omitted)"
        } else {
            ""
        };
        return Err(ValidationError::new(
            "multi_prompt",
            format!(
                "shot durations must add up to the task duration of {total} \
                 seconds{default_note}, got {sum}."
            ),
        ));
    }
    Ok(())
}

/// Rule 4.
fn check_sound(req: &VideoRequest) -> Checked {
    if req.sound() == OnOff::On && !req.video_list.is_empty() {
        return Err(ValidationError::new(
            "sound",
            "sound must be off when video_list is given (use keep_original_sound to keep \
             the video's audio).",
        ));
    }
    Ok(())
}

/// Rules 5 and 11 (videos).
/// Input videos the providers accept (WIRE-NOTES: 3-10 s).
const VIDEO_MIN_SECS: f64 = 3.0;
const VIDEO_MAX_SECS: f64 = 10.0;

fn check_video_list(req: &VideoRequest) -> Checked {
    if req.video_list.len() > MAX_VIDEOS {
        return Err(ValidationError::new(
            "video_list",
            format!(
                "video_list accepts at most {MAX_VIDEOS} video, got {}.",
                req.video_list.len()
            ),
        ));
    }
    for (i, video) in req.video_list.iter().enumerate() {
        check_media_source("video_url", &video.video_url, false).map_err(|message| {
            ValidationError::new(format!("video_list[{i}].video_url"), message)
        })?;
        if video
            .duration
            .is_some_and(|d| !(d.is_finite() && (VIDEO_MIN_SECS..=VIDEO_MAX_SECS).contains(&d)))
        {
            return Err(ValidationError::new(
                format!("video_list[{i}].duration"),
                format!("an input video lasts {VIDEO_MIN_SECS}-{VIDEO_MAX_SECS} seconds."),
            ));
        }
    }
    Ok(())
}

/// Rules 6 and 11 (images).
fn check_image_list(req: &VideoRequest) -> Checked {
    for (i, image) in req.image_list.iter().enumerate() {
        check_media_source("image_url", &image.image_url, true).map_err(|message| {
            ValidationError::new(format!("image_list[{i}].image_url"), message)
        })?;
    }
    let editing = req.base_video().is_some();
    let (mut first_frame, mut end_frame) = (None, None);
    for (i, image) in req.image_list.iter().enumerate() {
        let Some(frame) = image.frame else { continue };
        let param = format!("image_list[{i}].type");
        if editing {
            return Err(ValidationError::new(
                param,
                "first_frame and end_frame images cannot be combined with editing a video \
                 (a video_list entry with refer_type base, the default).",
            ));
        }
        let (seen, name) = match frame {
            FrameType::FirstFrame => (&mut first_frame, "first_frame"),
            FrameType::EndFrame => (&mut end_frame, "end_frame"),
        };
        if seen.replace(i).is_some() {
            return Err(ValidationError::new(
                param,
                format!("image_list may contain at most one {name} image."),
            ));
        }
    }
    if let (Some(i), None) = (end_frame, first_frame) {
        return Err(ValidationError::new(
            format!("image_list[{i}].type"),
            "an end_frame image needs a first_frame image as well.",
        ));
    }
    Ok(())
}

/// Rule 7.
fn check_reference_count(req: &VideoRequest) -> Checked {
    let (limit, condition) = if req.video_list.is_empty() {
        (MAX_REFERENCES_WITHOUT_VIDEO, "without")
    } else {
        (MAX_REFERENCES_WITH_VIDEO, "with")
    };
    let images = req.image_list.len();
    let total = images + req.element_list.len();
    if total <= limit {
        return Ok(());
    }
    // Name the list that pushed the count over the limit.
    let param = if images > limit {
        "image_list"
    } else {
        "element_list"
    };
    Err(ValidationError::new(
        param,
        format!(
            "images plus elements may number at most {limit} {condition} a reference video, \
             got {total}."
        ),
    ))
}

/// Rule 8.
fn check_aspect_ratio(req: &VideoRequest) -> Checked {
    let shape_given = req.has_frame(FrameType::FirstFrame) || req.base_video().is_some();
    if req.aspect_ratio.is_none() && !shape_given {
        return Err(ValidationError::new(
            "aspect_ratio",
            "aspect_ratio (16:9, 9:16 or 1:1) is required unless a first_frame image or a \
             video to edit (refer_type base) is given.",
        ));
    }
    Ok(())
}

/// Rule 9, `callback_url`, as far as it holds on every gateway: an absolute http(s) URL
/// with a host. Whether plain http and internal addresses are allowed depends on
/// `webhooks.allow_private_targets`: `check_callback_url` applies that (`validate_for_gateway`).
fn check_callback_url_shape(req: &VideoRequest) -> Checked {
    let Some(raw) = req.callback_url.as_deref() else {
        return Ok(());
    };
    // The URL is stored as sent, and the database refuses a NUL (a 500, found by
    // tests/properties.rs); `Url::parse` would quietly escape or drop a control character.
    if raw.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "callback_url",
            "callback_url must not contain control characters; percent-encode them.",
        ));
    }
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "https" | "http")
                && url.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(callback_url_error()),
    }
}

fn callback_url_error() -> ValidationError {
    ValidationError::new(
        "callback_url",
        "callback_url must be an absolute https URL such as https://example.com/hooks.",
    )
}

/// Rule 9, `callback_url`, in full: https, and not a loopback, private, link-local,
/// multicast or metadata IP address, unless `allow_private_targets` (tests, private
/// networks), which allows plain http and any address. A host name is not resolved here:
/// its addresses are checked at each delivery (`outbound`).
pub fn check_callback_url(raw: Option<&str>, allow_private_targets: bool) -> Checked {
    let Some(raw) = raw else {
        return Ok(());
    };
    let url = Url::parse(raw).map_err(|_| callback_url_error())?;
    let scheme_ok = url.scheme() == "https" || (allow_private_targets && url.scheme() == "http");
    if !scheme_ok || url.host_str().is_none_or(str::is_empty) {
        return Err(callback_url_error());
    }
    if allow_private_targets {
        return Ok(());
    }
    let internal = match url.host() {
        Some(url::Host::Ipv4(ip)) => crate::outbound::is_internal(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::outbound::is_internal(ip.into()),
        // A name is resolved at each delivery, where every address it has is checked: it
        // may point elsewhere by then.
        Some(url::Host::Domain(_)) => false,
        None => true,
    };
    if internal {
        return Err(ValidationError::new(
            "callback_url",
            "callback_url must not point at a loopback, private, link-local, multicast or \
             metadata address.",
        ));
    }
    Ok(())
}

/// Rule 9, `callback_events`.
fn check_callback_events(req: &VideoRequest) -> Checked {
    let Some(events) = &req.callback_events else {
        return Ok(());
    };
    if req.callback_url.is_none() {
        return Err(ValidationError::new(
            "callback_events",
            "callback_events needs a callback_url to send them to.",
        ));
    }
    if let Some(i) = (1..events.len()).find(|&i| events[..i].contains(&events[i])) {
        return Err(ValidationError::new(
            format!("callback_events[{i}]"),
            "callback_events must not name an event twice.",
        ));
    }
    Ok(())
}

/// Rule 9, `webhook_events`: with a `callback_url`, not empty, each name once.
fn check_webhook_events(req: &VideoRequest) -> Checked {
    let Some(events) = &req.webhook_events else {
        return Ok(());
    };
    if req.callback_url.is_none() {
        return Err(ValidationError::new(
            "webhook_events",
            "webhook_events needs a callback_url to deliver them to.",
        ));
    }
    if events.is_empty() {
        return Err(ValidationError::new(
            "webhook_events",
            "webhook_events must name at least one of in_progress, completed, failed, \
             cancelled (leave it out to have all delivered).",
        ));
    }
    if let Some(i) = (1..events.len()).find(|&i| events[..i].contains(&events[i])) {
        return Err(ValidationError::new(
            format!("webhook_events[{i}]"),
            "webhook_events must not name an event twice.",
        ));
    }
    Ok(())
}

/// Rule 9, `routing`.
fn check_routing(req: &VideoRequest) -> Checked {
    let Some(routing) = &req.routing else {
        return Ok(());
    };
    if let Some(providers) = &routing.providers {
        if providers.is_empty() {
            return Err(ValidationError::new(
                "routing.providers",
                "routing.providers must name at least one provider when given.",
            ));
        }
        if let Some(i) = providers.iter().position(|p| p.trim().is_empty()) {
            return Err(ValidationError::new(
                format!("routing.providers[{i}]"),
                "provider names in routing.providers must not be empty.",
            ));
        }
    }
    match routing.max_cost_usd {
        Some(usd) if !(usd.is_finite() && usd > 0.0) => Err(ValidationError::new(
            "routing.max_cost_usd",
            "routing.max_cost_usd must be a positive number of US dollars.",
        )),
        _ => Ok(()),
    }
}

/// Rule 10.
fn check_metadata(req: &VideoRequest) -> Checked {
    let Some(metadata) = &req.metadata else {
        return Ok(());
    };
    let Value::Object(map) = metadata else {
        return Err(ValidationError::new(
            "metadata",
            "metadata must be a JSON object of string values.",
        ));
    };
    if map.len() > METADATA_MAX_KEYS {
        return Err(ValidationError::new(
            "metadata",
            format!(
                "metadata may have at most {METADATA_MAX_KEYS} keys, got {}.",
                map.len()
            ),
        ));
    }
    for (key, value) in map {
        if char_len(key) > METADATA_KEY_MAX_CHARS {
            return Err(ValidationError::new(
                "metadata",
                format!("metadata keys must be at most {METADATA_KEY_MAX_CHARS} characters."),
            ));
        }
        let fits = matches!(value, Value::String(s) if char_len(s) <= METADATA_VALUE_MAX_CHARS);
        if !fits {
            return Err(ValidationError::new(
                format!("metadata.{key}"),
                format!(
                    "metadata values must be strings of at most \
                     {METADATA_VALUE_MAX_CHARS} characters."
                ),
            ));
        }
    }
    Ok(())
}

/// Rule 11, shared by images and videos: the error is the message, the caller names the
/// param.
fn check_media_source(field: &str, value: &str, base64_allowed: bool) -> Result<(), String> {
    let expected = if base64_allowed {
        "an http(s) URL or base64 image data (optionally prefixed data:image/...;base64,)"
    } else {
        "an http(s) URL"
    };
    if value.trim().is_empty() {
        return Err(format!("{field} must not be empty: give {expected}."));
    }
    // `Url::parse` forgives surrounding whitespace, a provider would not.
    if value.trim() != value {
        return Err(format!(
            "{field} must be {expected}, without surrounding whitespace."
        ));
    }
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(url) if base64_allowed && url.scheme() == "data" => {
            check_data_url(field, value)?;
            check_image_size(field, value.split_once(',').unwrap_or_default().1)
        }
        Ok(url) => Err(format!(
            "{field} must be {expected}; the {} scheme is not accepted.",
            url.scheme()
        )),
        // Base64 has no `:`, so it never parses as an absolute URL and lands here.
        Err(_) if base64_allowed && is_base64(value) => check_image_size(field, value),
        Err(_) => Err(format!("{field} must be {expected}.")),
    }
}

/// `data:image/<type>;base64,<payload>`; the scheme is known to be `data` already.
fn check_data_url(field: &str, value: &str) -> Result<(), String> {
    let (_scheme, rest) = value.split_once(':').unwrap_or_default();
    let (media, payload) = rest.split_once(',').unwrap_or_default();
    let is_image = media.len() > "image/".len()
        && media
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("image/"));
    let is_base64_encoded = media
        .rsplit_once(';')
        .is_some_and(|(_, enc)| enc.eq_ignore_ascii_case("base64"));
    if is_image && is_base64_encoded && is_base64(payload) {
        Ok(())
    } else {
        Err(format!(
            "a data URL in {field} must read data:image/<type>;base64,<base64 data>."
        ))
    }
}

/// The largest image any provider takes (anyfast documents 10 MB); a larger one would be
/// refused upstream after routing, so it is refused here, before any provider call.
const IMAGE_MAX_BYTES: usize = 10 * 1024 * 1024;

fn check_image_size(field: &str, base64: &str) -> Result<(), String> {
    let padding = base64.bytes().rev().take_while(|b| *b == b'=').count();
    let decoded = (base64.len() - padding) * 3 / 4;
    if decoded > IMAGE_MAX_BYTES {
        return Err(format!(
            "{field} decodes to {decoded} bytes; an image may be at most 10 MB \
             ({IMAGE_MAX_BYTES} bytes). Prefer an image URL for large images."
        ));
    }
    Ok(())
}

fn is_base64(s: &str) -> bool {
    !s.is_empty() && BASE64.decode(s).is_ok()
}

/// `None` for a missing or whitespace-only string.
fn non_blank(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

/// Limits are in characters, as the providers count them, not bytes.
fn char_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Case {
        name: &'static str,
        body: Value,
        param: &'static str,
        message: &'static str,
    }

    fn case(name: &'static str, body: Value, param: &'static str, message: &'static str) -> Case {
        Case {
            name,
            body,
            param,
            message,
        }
    }

    fn request(name: &str, body: &Value) -> VideoRequest {
        serde_json::from_value(body.clone())
            .unwrap_or_else(|e| panic!("case {name}: body does not deserialize: {e}"))
    }

    /// A tiny valid PNG-ish payload; only its base64 shape matters here.
    const B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk";

    #[rustfmt::skip] // one case per line reads as a table
    fn rejected_cases() -> Vec<Case> {
        let long = "x".repeat(2501);
        let shot = |prompt: &str, duration: u32| json!({"prompt": prompt, "duration": duration});
        let img = |url: &str| json!({"image_url": url});
        let first = json!({"image_url": "https://a.example/1.png", "type": "first_frame"});
        let end = json!({"image_url": "https://a.example/2.png", "type": "end_frame"});
        let base = json!({"video_url": "https://a.example/v.mp4"});
        let feature = json!({"video_url": "https://a.example/v.mp4", "refer_type": "feature"});
        let o1 = |extra: Value| merge(json!({"model": "kling-video-o1", "prompt": "a cat", "aspect_ratio": "16:9"}), extra);
        let v3 = |extra: Value| merge(json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9"}), extra);
        vec![
            // 1. prompt
            case("r1_prompt_missing", v3(json!({"prompt": null})), "prompt", "required"),
            case("r1_prompt_blank", v3(json!({"prompt": "   \n"})), "prompt", "required"),
            case("r1_prompt_too_long", v3(json!({"prompt": long})), "prompt", "at most 2500"),
            case("r1_negative_prompt_too_long", v3(json!({"negative_prompt": long})), "negative_prompt", "at most 2500"),
            case("r1_intelligence_needs_prompt", v3(json!({"prompt": null, "multi_shot": true, "shot_type": "intelligence"})), "prompt", "required"),
            // 2. duration
            case("r2_o1_above_10", o1(json!({"duration": 11, "video_list": [feature]})), "duration", "3 to 10"),
            case("r2_v3_above_15", v3(json!({"duration": 16})), "duration", "3 to 15"),
            case("r2_v3_below_3", v3(json!({"duration": 2})), "duration", "3 to 15"),
            case("r2_o1_text_to_video_only_5_or_10", o1(json!({"duration": 7})), "duration", "5 or 10"),
            case("r2_o1_image_to_video_only_5_or_10", o1(json!({"duration": "3", "image_list": [first]})), "duration", "5 or 10"),
            case("r2_v3_with_video_at_most_10", v3(json!({"duration": 11, "video_list": [feature]})), "duration", "3 to 10"),
            case("r2_base_edit_forbids_duration", v3(json!({"duration": 5, "video_list": [base]})), "duration", "omitted"),
            // 3. multi_shot
            case("r3_shot_type_without_multi_shot", v3(json!({"shot_type": "intelligence"})), "shot_type", "only allowed when multi_shot"),
            case("r3_multi_prompt_without_multi_shot", v3(json!({"multi_shot": false, "multi_prompt": [shot("a", 5)]})), "multi_prompt", "only allowed when multi_shot"),
            case("r3_shot_type_required", v3(json!({"multi_shot": true})), "shot_type", "required"),
            case("r3_customize_needs_multi_prompt", v3(json!({"multi_shot": true, "shot_type": "customize"})), "multi_prompt", "required"),
            case("r3_customize_at_least_one_shot", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": []})), "multi_prompt", "1 to 6 shots"),
            case("r3_customize_at_most_six_shots", v3(json!({"duration": 7, "multi_shot": true, "shot_type": "customize", "multi_prompt": vec![shot("a", 1); 7]})), "multi_prompt", "1 to 6 shots"),
            case("r3_shot_prompt_empty", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 2), shot(" ", 3)]})), "multi_prompt[1].prompt", "1 to 512"),
            case("r3_shot_prompt_too_long", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot(&"é".repeat(513), 5)]})), "multi_prompt[0].prompt", "1 to 512"),
            case("r3_shot_duration_zero", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 5), shot("b", 0)]})), "multi_prompt[1].duration", "1 to 5 seconds"),
            case("r3_shot_duration_above_total", v3(json!({"duration": 6, "multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 7)]})), "multi_prompt[0].duration", "1 to 6 seconds"),
            case("r3_shot_durations_must_sum_to_duration", v3(json!({"duration": 10, "multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 4), shot("b", 4)]})), "multi_prompt", "add up to the task duration of 10"),
            case("r3_shot_durations_sum_to_default_5", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [shot("a", 3), shot("b", 3)]})), "multi_prompt", "the default, as duration is omitted"),
            case("r3_shot_indexes_unique", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 1, "prompt": "a", "duration": 2}, {"index": 1, "prompt": "b", "duration": 3}]})), "multi_prompt[1].index", "unique"),
            case("r3_unindexed_shot_collides_with_given_index", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a", "duration": 2}, {"index": 1, "prompt": "b", "duration": 3}]})), "multi_prompt[1].index", "used twice"),
            case("r3_shot_index_at_most_6", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 7, "prompt": "a", "duration": 5}]})), "multi_prompt[0].index", "1 to 6"),
            case("r3_shot_index_at_least_1", v3(json!({"multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 0, "prompt": "a", "duration": 5}]})), "multi_prompt[0].index", "1 to 6"),
            case("r3_intelligence_forbids_multi_prompt", v3(json!({"multi_shot": true, "shot_type": "intelligence", "multi_prompt": [shot("a", 5)]})), "multi_prompt", "omitted with shot_type intelligence"),
            case("r3_multi_shot_not_with_base_edit", v3(json!({"multi_shot": true, "shot_type": "intelligence", "video_list": [base]})), "multi_shot", "editing a video"),
            // 4. sound
            case("r4_sound_off_with_video", v3(json!({"sound": "on", "video_list": [feature]})), "sound", "must be off"),
            // 5. video_list
            case("r5_at_most_one_video", v3(json!({"video_list": [feature, feature]})), "video_list", "at most 1"),
            case("r5_video_url_not_empty", v3(json!({"video_list": [{"video_url": "", "refer_type": "feature"}]})), "video_list[0].video_url", "must not be empty"),
            // 6. image_list
            case("r6_image_url_not_empty", v3(json!({"image_list": [img(" ")]})), "image_list[0].image_url", "must not be empty"),
            case("r6_one_first_frame", v3(json!({"image_list": [first, first]})), "image_list[1].type", "at most one first_frame"),
            case("r6_one_end_frame", v3(json!({"image_list": [first, end, end]})), "image_list[2].type", "at most one end_frame"),
            case("r6_end_frame_needs_first_frame", v3(json!({"image_list": [img("https://a.example/x.png"), end]})), "image_list[1].type", "needs a first_frame"),
            case("r6_no_frames_with_base_edit", v3(json!({"image_list": [first], "video_list": [base]})), "image_list[0].type", "editing a video"),
            // 7. reference counts
            case("r7_at_most_7_refs_without_video", v3(json!({"image_list": vec![img("https://a.example/x.png"); 5], "element_list": [{"element_id": 1}, {"element_id": 2}, {"element_id": "3"}]})), "element_list", "at most 7 without"),
            case("r7_at_most_4_refs_with_video", v3(json!({"image_list": vec![img("https://a.example/x.png"); 5], "video_list": [feature]})), "image_list", "at most 4 with"),
            // 8. aspect_ratio
            case("r8_aspect_ratio_required", v3(json!({"aspect_ratio": null, "image_list": [img("https://a.example/x.png")]})), "aspect_ratio", "required unless a first_frame"),
            case("r8_feature_video_does_not_set_shape", v3(json!({"aspect_ratio": null, "video_list": [feature]})), "aspect_ratio", "required"),
            // 9. callback_url and routing
            case("r9_callback_must_be_http_or_https", v3(json!({"callback_url": "ftp://a.example/hook"})), "callback_url", "absolute https URL"),
            case("r9_callback_events_need_a_url", v3(json!({"callback_events": ["in_progress"]})), "callback_events", "needs a callback_url"),
            case("r9_callback_events_unique", v3(json!({"callback_url": "https://a.example/h", "callback_events": ["in_progress", "in_progress"]})), "callback_events[1]", "twice"),
            case("r9_callback_must_be_absolute", v3(json!({"callback_url": "/hook"})), "callback_url", "absolute https URL"),
            case("r9_callback_not_empty", v3(json!({"callback_url": ""})), "callback_url", "absolute https URL"),
            case("r9_callback_without_control_characters", v3(json!({"callback_url": "https://a.example/a\u{0}b"})), "callback_url", "control characters"),
            case("r9_callback_without_a_tab", v3(json!({"callback_url": "https://a.example/a\tb"})), "callback_url", "control characters"),
            case("r9_max_cost_positive", v3(json!({"routing": {"max_cost_usd": 0.0}})), "routing.max_cost_usd", "positive"),
            case("r9_providers_not_empty", v3(json!({"routing": {"providers": []}})), "routing.providers", "at least one"),
            case("r9_provider_name_not_empty", v3(json!({"routing": {"providers": ["anyfast", " "]}})), "routing.providers[1]", "must not be empty"),
            // 10. metadata
            case("r10_metadata_object", v3(json!({"metadata": ["a"]})), "metadata", "JSON object"),
            case("r10_metadata_at_most_16_keys", v3(json!({"metadata": (0..17).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()})), "metadata", "at most 16 keys"),
            case("r10_metadata_key_at_most_64", v3(json!({"metadata": {"k".repeat(65): "v"}})), "metadata", "at most 64"),
            case("r10_metadata_value_at_most_512", v3(json!({"metadata": {"order": "v".repeat(513)}})), "metadata.order", "at most 512"),
            case("r10_metadata_value_string", v3(json!({"metadata": {"order": {"id": 1}}})), "metadata.order", "must be strings"),
            // 11. media sources
            case("r11_image_ftp_rejected", v3(json!({"image_list": [img("ftp://a.example/x.png")]})), "image_list[0].image_url", "the ftp scheme is not accepted"),
            case("r11_image_file_rejected", v3(json!({"image_list": [img("https://a.example/x.png"), img("file:///etc/passwd")]})), "image_list[1].image_url", "the file scheme is not accepted"),
            case("r11_image_neither_url_nor_base64", v3(json!({"image_list": [img("cat.png")]})), "image_list[0].image_url", "base64 image data"),
            case("r11_image_data_url_not_image", v3(json!({"image_list": [img(&format!("data:text/plain;base64,{B64}"))]})), "image_list[0].image_url", "data:image/<type>;base64"),
            case("r11_image_data_url_bad_payload", v3(json!({"image_list": [img("data:image/png;base64,not base64!")]})), "image_list[0].image_url", "data:image/<type>;base64"),
            case("r11_base64_image_at_most_10_mb", v3(json!({"image_list": [img("https://a.example/x.png"), img(&"A".repeat(14_000_004))]})), "image_list[1].image_url", "at most 10 MB"),
            case("r11_data_url_image_at_most_10_mb", v3(json!({"image_list": [img(&format!("data:image/png;base64,{}", "A".repeat(14_000_004)))]})), "image_list[0].image_url", "at most 10 MB"),
            case("r11_video_base64_rejected", v3(json!({"video_list": [{"video_url": B64, "refer_type": "feature"}]})), "video_list[0].video_url", "an http(s) URL"),
            case("r11_video_file_rejected", v3(json!({"video_list": [{"video_url": "file:///tmp/v.mp4", "refer_type": "feature"}]})), "video_list[0].video_url", "the file scheme is not accepted"),
        ]
    }

    #[rustfmt::skip] // one case per line reads as a table
    fn accepted_cases() -> Vec<(&'static str, Value)> {
        let first = json!({"image_url": "https://a.example/1.png", "type": "first_frame"});
        let end = json!({"image_url": B64, "type": "end_frame"});
        let img = json!({"image_url": format!("data:image/png;base64,{B64}")});
        vec![
            ("text_to_video_o1_5s", json!({"model": "kling-video-o1", "prompt": "a cat", "aspect_ratio": "16:9", "duration": 5})),
            ("text_to_video_o1_default_duration", json!({"model": "kling-o1", "prompt": "a cat", "aspect_ratio": "1:1"})),
            ("text_to_video_v3_15s", json!({"model": "kling-v3-omni-video", "prompt": "a cat", "aspect_ratio": "9:16", "duration": "15", "sound": "on"})),
            ("first_and_end_frame_without_aspect_ratio", json!({"model": "kling-video-o1", "prompt": "a cat", "duration": 10, "image_list": [end, first]})),
            ("base_video_edit_without_duration", json!({"model": "kling-v3-omni", "prompt": "make it snow", "video_list": [{"video_url": "https://a.example/v.mp4", "keep_original_sound": "yes"}]})),
            ("feature_video_v3_10s", json!({"model": "kling-v3-omni", "prompt": "in the style of <<<video_1>>>", "aspect_ratio": "16:9", "duration": 10, "video_list": [{"video_url": "https://a.example/v.mp4", "refer_type": "feature"}]})),
            ("o1_reference_images_7s", json!({"model": "kling-video-o1", "prompt": "<<<image_1>>> on a beach", "aspect_ratio": "16:9", "duration": 7, "image_list": [{"image_url": "https://a.example/1.png"}]})),
            ("feature_video_o1_7s", json!({"model": "kling-video-o1", "prompt": "like <<<video_1>>>", "aspect_ratio": "16:9", "duration": 7, "video_list": [{"video_url": "http://a.example/v.mp4", "refer_type": "feature", "keep_original_sound": "no"}]})),
            ("multi_shot_unindexed_then_next_index", json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "duration": 5, "multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a door opens", "duration": 2}, {"index": 2, "prompt": "a cat walks in", "duration": 3}]})),
            ("multi_shot_customize_summing_to_duration", json!({"model": "kling-v3-omni", "aspect_ratio": "16:9", "duration": 12, "multi_shot": true, "shot_type": "customize", "multi_prompt": [{"index": 1, "prompt": "a door opens", "duration": 4}, {"index": 2, "prompt": "a cat walks in", "duration": "8"}]})),
            ("multi_shot_customize_default_duration", json!({"model": "kling-v3-omni", "prompt": "   ", "aspect_ratio": "16:9", "multi_shot": true, "shot_type": "customize", "multi_prompt": [{"prompt": "a", "duration": 2}, {"prompt": "b", "duration": 3}]})),
            ("multi_shot_intelligence", json!({"model": "kling-v3-omni", "prompt": "a heist in three acts", "aspect_ratio": "16:9", "duration": 15, "multi_shot": true, "shot_type": "intelligence"})),
            ("seven_images_no_video", json!({"model": "kling-v3-omni", "prompt": "a collage", "aspect_ratio": "1:1", "image_list": vec![img.clone(); 7]})),
            ("four_refs_with_a_video", json!({"model": "kling-v3-omni", "prompt": "<<<element_1>>> in <<<video_1>>>", "aspect_ratio": "16:9", "image_list": vec![img.clone(); 2], "element_list": [{"element_id": 835266081714884677_u64}, {"element_id": "42"}], "video_list": [{"video_url": "https://a.example/v.mp4", "refer_type": "feature"}]})),
            ("prompt_of_2500_multibyte_chars", json!({"model": "kling-v3-omni", "prompt": "é".repeat(2500), "negative_prompt": "", "aspect_ratio": "16:9"})),
            ("callback_routing_metadata", json!({"model": "kling-v3-omni", "prompt": "a cat", "aspect_ratio": "16:9", "callback_url": "https://hooks.example.com/omnigate?token=abc", "routing": {"providers": ["anyfast"], "max_cost_usd": 1.5}, "metadata": {"order": "42"}, "watermark": false, "mode": "std"})),
        ]
    }

    fn merge(mut base: Value, extra: Value) -> Value {
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
            for (k, v) in extra {
                if v.is_null() {
                    base.remove(&k);
                } else {
                    base.insert(k, v);
                }
            }
        }
        base
    }

    #[test]
    fn every_rule_rejects_its_violation_with_param_and_reason() {
        let mut failures = Vec::new();
        for c in rejected_cases() {
            match validate(&request(c.name, &c.body)) {
                Err(e) if e.param == c.param && e.message.contains(c.message) => {}
                other => failures.push(format!(
                    "{}: expected {} / {:?}, got {other:?}",
                    c.name, c.param, c.message
                )),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn valid_requests_pass() {
        let failures: Vec<String> = accepted_cases()
            .into_iter()
            .filter_map(|(name, body)| {
                validate(&request(name, &body))
                    .err()
                    .map(|e| format!("{name}: {e}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn case_names_are_unique() {
        let mut names = HashSet::new();
        let rejected = rejected_cases().into_iter().map(|c| c.name);
        let accepted = accepted_cases().into_iter().map(|(n, _)| n);
        for name in rejected.chain(accepted) {
            assert!(names.insert(name), "duplicate case name {name}");
        }
    }

    #[test]
    fn error_displays_param_and_message() {
        let e = ValidationError::new("duration", "duration must be omitted.");
        assert_eq!(e.to_string(), "duration: duration must be omitted.");
    }

    #[test]
    fn callback_urls_must_be_public_https_unless_private_targets_are_allowed() {
        for refused in [
            "http://hooks.example.com/h",
            "https://127.0.0.1/h",
            "https://10.0.0.8/h",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/h",
            "https://[fd00:ec2::254]/h",
            "ftp://hooks.example.com/h",
        ] {
            let e = check_callback_url(Some(refused), false).unwrap_err();
            assert_eq!(e.param, "callback_url", "{refused}");
        }
        assert!(check_callback_url(Some("https://hooks.example.com/h?t=1"), false).is_ok());
        assert!(check_callback_url(Some("https://8.8.8.8/h"), false).is_ok());
        assert!(check_callback_url(None, false).is_ok());
        for allowed in [
            "http://127.0.0.1:8080/h",
            "https://10.0.0.8/h",
            "http://localhost/h",
        ] {
            assert!(check_callback_url(Some(allowed), true).is_ok(), "{allowed}");
        }
        assert!(check_callback_url(Some("ftp://127.0.0.1/h"), true).is_err());
    }
}
