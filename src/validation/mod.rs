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

mod callbacks;
mod fields;
mod media;
mod shots;

pub use callbacks::check_callback_url;

use crate::domain::VideoRequest;

use callbacks::{check_callback_events, check_callback_url_shape, check_webhook_events};
use fields::{check_aspect_ratio, check_duration, check_max_wait, check_metadata, check_prompt};
use fields::{check_routing, check_sound};
use media::{check_image_list, check_reference_count, check_video_list};
use shots::check_multi_shot;

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

/// `None` for a missing or whitespace-only string.
fn non_blank(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

/// Limits are in characters, as the providers count them, not bytes.
fn char_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests;
