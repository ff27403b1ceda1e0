//! Kling's create-body rules (the kkiai and anyfast pages plus WIRE-NOTES), shared by the
//! Kling flavours and apimodels, which forwards the same body under `model`. A [`Shape`]
//! holds the few things that differ between them.

use serde_json::{Map, Value};

use super::body::Fields;

pub(super) const O1: &str = "kling-video-o1";
pub(super) const V3: &str = "kling-v3-omni";
pub(super) const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1"];
/// Kling's default when `duration` is omitted.
pub(super) const DEFAULT_SECONDS: u32 = 5;

/// What sets one dialect's Kling-shaped body apart.
pub(super) struct Shape {
    /// `model_name` (Kling) or `model` (apimodels).
    pub(super) model_field: &'static str,
    pub(super) models: &'static [&'static str],
    /// Every top-level key the dialect documents; anything else is refused.
    pub(super) fields: &'static [&'static str],
    /// kkiai's page marks `mode` and `duration` Required; providers that document
    /// defaults do not.
    pub(super) mode_and_duration_required: bool,
    /// kkiai: `duration` is Required even for a base video edit, where it "is invalid"
    /// (ignored: the output lasts as long as the input). Elsewhere it must be omitted
    /// there.
    pub(super) duration_on_base_edit: bool,
    /// kkiai's table types `element_id` as a string (its example sends a number): both a
    /// number and a numeric string are taken. Elsewhere only a number.
    pub(super) element_id_string: bool,
    pub(super) content: ContentRule,
}

pub(super) enum ContentRule {
    /// Kling: `prompt` must not be empty unless `multi_shot` is true.
    PromptUnlessMultiShot,
    /// apimodels: at least one of `prompt`, `image_list`, `video_list`.
    PromptOrMedia,
}

/// What the simulator keeps of an accepted body.
pub(super) struct Accepted<'a> {
    pub(super) model: &'a str,
    /// Seconds the finished video will last.
    pub(super) seconds: u32,
    pub(super) external_task_id: Option<&'a str>,
    /// A base-video edit: the video lasts as long as its input (see `Sim::set_base_video_seconds`).
    pub(super) base_edit: bool,
}

/// Checks a create body against every documented rule; the error names the field.
pub(super) fn check<'a>(
    body: &'a Map<String, Value>,
    shape: &Shape,
) -> Result<Accepted<'a>, String> {
    let f = Fields::root(body, shape.fields)?;
    let model = f.one_of(shape.model_field, shape.models)?;
    let model = f.require(shape.model_field, model)?;
    let mode = f.one_of("mode", &["std", "pro"])?;
    let aspect_ratio = f.one_of("aspect_ratio", ASPECT_RATIOS)?;
    let sound = f.one_of("sound", &["on", "off"])?;
    let multi_shot = f.bool("multi_shot")?.unwrap_or(false);
    let prompt = f.text("prompt", 2500)?.filter(|p| !p.trim().is_empty());
    f.text("negative_prompt", 2500)?;
    if let Some(cfg) = f.number("cfg_scale")? {
        if !(0.0..=1.0).contains(&cfg) {
            return Err(format!("cfg_scale: {cfg} is outside 0..1"));
        }
    }
    let frames = image_list(&f)?;
    let video = video_list(&f)?;
    let elements = element_list(&f, shape.element_id_string)?;
    if let Some(watermark) = f.object("watermark_info", &["enabled"])? {
        watermark.bool("enabled")?;
    }
    if let Some(url) = f.str("callback_url")? {
        if !url.is_empty() && !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(format!("callback_url: {url:?} is not an http(s) URL"));
        }
    }
    let external_task_id = f.str("external_task_id")?.filter(|s| !s.is_empty());
    let duration = duration(&f, model)?;
    let base_edit = video.as_ref().is_some_and(|v| v.base);

    if shape.mode_and_duration_required {
        f.require("mode", mode)?;
        if duration.is_none() && shape.duration_on_base_edit {
            return Err("duration: required (even for a base video edit)".into());
        }
        if duration.is_none() && !base_edit {
            return Err("duration: required (except for a base video edit)".into());
        }
    }
    match shape.content {
        ContentRule::PromptUnlessMultiShot if !multi_shot && prompt.is_none() => {
            return Err("prompt: required when multi_shot is false".into());
        }
        ContentRule::PromptOrMedia if prompt.is_none() && frames.count == 0 && video.is_none() => {
            return Err(
                "prompt: at least one of prompt, image_list or video_list is required".into(),
            );
        }
        _ => {}
    }
    if multi_shot {
        storyboard(&f, duration.unwrap_or(DEFAULT_SECONDS))?;
    }
    if video.is_some() && sound == Some("on") {
        return Err("sound: must be off when video_list is given".into());
    }
    if base_edit {
        if duration.is_some() && !shape.duration_on_base_edit {
            return Err("duration: must be omitted for a base video edit (refer_type base)".into());
        }
        if frames.first > 0 || frames.end > 0 {
            return Err("image_list: first/end frames cannot be set with a base video edit".into());
        }
    }
    let references = frames.count + elements;
    let most = if video.is_some() { 4 } else { 7 };
    if references > most {
        let with = if video.is_some() { "with" } else { "without" };
        return Err(format!(
            "image_list: {references} images and elements, at most {most} {with} a video"
        ));
    }
    if aspect_ratio.is_none() && frames.first == 0 && !base_edit {
        return Err("aspect_ratio: required unless a first frame or a base video is given".into());
    }
    if let Some(seconds) = duration {
        if model == V3 && video.is_some() && seconds > 10 {
            return Err(format!(
                "duration: {seconds} with a video; {V3} allows at most 10"
            ));
        }
        // kkiai: "When using text-to-video or first frame image to video, only 5 and 10s are
        // supported"; reference images or elements alone keep the full 3-10.
        let text_or_first_frame = (frames.count == 0 && elements == 0) || frames.first > 0;
        if model == O1 && video.is_none() && text_or_first_frame && seconds != 5 && seconds != 10 {
            return Err(format!(
                "duration: {seconds}; {O1} text/image-to-video takes only \"5\" or \"10\""
            ));
        }
    }
    Ok(Accepted {
        model,
        seconds: duration.unwrap_or(DEFAULT_SECONDS),
        external_task_id,
        base_edit,
    })
}

/// `duration` is a string in the model's enum: `"3"`..`"10"` (o1) or `"3"`..`"15"` (v3).
fn duration(f: &Fields, model: &str) -> Result<Option<u32>, String> {
    let Some(text) = f.str("duration")? else {
        return Ok(None);
    };
    let longest = if model == O1 { 10 } else { 15 };
    match text.parse::<u32>() {
        Ok(seconds) if (3..=longest).contains(&seconds) && text == seconds.to_string() => {
            Ok(Some(seconds))
        }
        _ => Err(format!(
            "duration: {text:?} is not one of \"3\"..\"{longest}\" for {model}"
        )),
    }
}

#[derive(Default)]
struct Frames {
    count: usize,
    first: usize,
    end: usize,
}

fn image_list(f: &Fields) -> Result<Frames, String> {
    let items = f.items("image_list", &["image_url", "type"])?;
    let mut frames = Frames {
        count: items.len(),
        ..Frames::default()
    };
    for item in &items {
        let url = item.required_str("image_url")?;
        if url.starts_with("data:") {
            return Err(format!(
                "{}: base64 is sent without a data: prefix",
                item.name("image_url")
            ));
        }
        match item.one_of("type", &["first_frame", "end_frame"])? {
            Some("first_frame") => frames.first += 1,
            Some(_) => frames.end += 1,
            None => {}
        }
    }
    if frames.first > 1 || frames.end > 1 {
        return Err("image_list: at most one first_frame and one end_frame".into());
    }
    if frames.end > 0 && frames.first == 0 {
        return Err("image_list: an end_frame needs a first_frame".into());
    }
    Ok(frames)
}

struct Video {
    /// The video to edit (Kling's default) rather than a feature reference.
    base: bool,
}

fn video_list(f: &Fields) -> Result<Option<Video>, String> {
    let items = f.items(
        "video_list",
        &["video_url", "refer_type", "keep_original_sound"],
    )?;
    if items.len() > 1 {
        return Err(format!("video_list: {} videos, at most 1", items.len()));
    }
    let Some(item) = items.first() else {
        return Ok(None);
    };
    item.required_str("video_url")?;
    item.one_of("keep_original_sound", &["yes", "no"])?;
    let refer_type = item.one_of("refer_type", &["base", "feature"])?;
    Ok(Some(Video {
        base: refer_type != Some("feature"),
    }))
}

/// Answers how many elements are referenced.
fn element_list(f: &Fields, string_ids: bool) -> Result<usize, String> {
    let items = f.items("element_list", &["element_id"])?;
    for item in &items {
        let text = if string_ids {
            item.str("element_id").ok().flatten()
        } else {
            None
        };
        match text {
            Some(text) if text.parse::<u64>().is_ok_and(|n| n.to_string() == text) => {}
            Some(text) => {
                let field = item.name("element_id");
                return Err(format!("{field}: {text:?} is not a whole number"));
            }
            None => {
                let id = item.integer("element_id")?;
                item.require("element_id", id)?;
            }
        }
    }
    Ok(items.len())
}

/// `multi_shot: true`: `shot_type` `customize` and 1-6 shots whose durations sum to the total.
fn storyboard(f: &Fields, total: u32) -> Result<(), String> {
    let shot_type = f.one_of("shot_type", &["customize"])?;
    f.require("shot_type", shot_type)?;
    if !f.has("multi_prompt") {
        return Err("multi_prompt: required when multi_shot is true".into());
    }
    let shots = f.items("multi_prompt", &["index", "prompt", "duration"])?;
    if !(1..=6).contains(&shots.len()) {
        return Err(format!(
            "multi_prompt: {} shots, 1 to 6 allowed",
            shots.len()
        ));
    }
    let mut sum = 0;
    for shot in &shots {
        let index = shot.integer("index")?;
        shot.require("index", index)?;
        shot.required_str("prompt")?;
        shot.text("prompt", 512)?;
        let text = shot.required_str("duration")?;
        let seconds = text
            .parse::<u32>()
            .ok()
            .filter(|s| (1..=total).contains(s))
            .ok_or_else(|| {
                format!(
                    "{}: {text:?} is not a whole number of seconds from 1 to {total}",
                    shot.name("duration")
                )
            })?;
        sum += seconds;
    }
    if sum != total {
        return Err(format!(
            "multi_prompt: shot durations sum to {sum}, but duration is {total}"
        ));
    }
    Ok(())
}
