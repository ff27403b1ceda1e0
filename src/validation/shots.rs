//! Rule 3: multi-shot requests, and the shots of `shot_type: customize`.

use std::collections::HashSet;

use super::{char_len, non_blank, Checked, ValidationError};
use crate::domain::{ShotType, VideoRequest, DEFAULT_DURATION};

const SHOT_PROMPT_MAX_CHARS: usize = 512;
const MAX_SHOTS: usize = 6;

/// Rule 3.
pub(super) fn check_multi_shot(req: &VideoRequest) -> Checked {
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
