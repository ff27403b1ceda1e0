//! Rules 5, 6, 7 and 11: the video and image lists, how many references a request may
//! carry, and what an image or video source may be (URL, base64, data URL).

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use url::Url;

use super::{Checked, ValidationError};
use crate::domain::{FrameType, VideoRequest};

const MAX_VIDEOS: usize = 1;
const MAX_REFERENCES_WITH_VIDEO: usize = 4;
const MAX_REFERENCES_WITHOUT_VIDEO: usize = 7;
/// Clients send base64 with or without `=` padding; both decode to the same image.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Input videos the providers accept (WIRE-NOTES: 3-10 s).
const VIDEO_MIN_SECS: f64 = 3.0;
const VIDEO_MAX_SECS: f64 = 10.0;

/// Rules 5 and 11 (videos).
pub(super) fn check_video_list(req: &VideoRequest) -> Checked {
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
pub(super) fn check_image_list(req: &VideoRequest) -> Checked {
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
pub(super) fn check_reference_count(req: &VideoRequest) -> Checked {
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
