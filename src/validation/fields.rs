//! Rules 1, 2, 4, 8, 9 (`routing`) and 10 and the queue wait: single fields, their lengths
//! and ranges, and the fields whose presence depends on another.

use serde_json::Value;

use super::{char_len, non_blank, Checked, ValidationError};
use crate::domain::{FrameType, Model, OnOff, ShotType, VideoRequest};

const PROMPT_MAX_CHARS: usize = 2500;
/// Kling's ceiling for the output when a video is given (feature reference).
const MAX_SECONDS_WITH_VIDEO: u32 = 10;
/// The provider documents set no metadata limits; these are OpenAI's metadata limits
/// (Stripe's are alike: string values only), so the echoed object stays small and flat.
const METADATA_MAX_KEYS: usize = 16;
const METADATA_KEY_MAX_CHARS: usize = 64;
const METADATA_VALUE_MAX_CHARS: usize = 512;

/// The wait a create may ask for in omnigate's queue.
pub(super) fn check_max_wait(req: &VideoRequest) -> Checked {
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
pub(super) fn check_prompt(req: &VideoRequest) -> Checked {
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
pub(super) fn check_duration(req: &VideoRequest) -> Checked {
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

/// Rule 4.
pub(super) fn check_sound(req: &VideoRequest) -> Checked {
    if req.sound() == OnOff::On && !req.video_list.is_empty() {
        return Err(ValidationError::new(
            "sound",
            "sound must be off when video_list is given (use keep_original_sound to keep \
             the video's audio).",
        ));
    }
    Ok(())
}

/// Rule 8.
pub(super) fn check_aspect_ratio(req: &VideoRequest) -> Checked {
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

/// Rule 9, `routing`.
pub(super) fn check_routing(req: &VideoRequest) -> Checked {
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
pub(super) fn check_metadata(req: &VideoRequest) -> Checked {
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
