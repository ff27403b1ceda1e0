//! The playground: a form that builds a create request, shows its quote as it is filled
//! in (`console.js` posts the form to `/console/playground/quote`), and submits it as the
//! signed-in key, through the same validation, limits and submit as the API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::html;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::page::{self, csrf_field, select_field, ConsoleError};
use super::session::Session;
use crate::api::ApiError;
use crate::domain::VideoRequest;
use crate::gateway::Gateway;

#[derive(Deserialize, Default)]
pub struct PlaygroundForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    model: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    aspect_ratio: String,
    #[serde(default)]
    sound: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    first_frame: String,
    #[serde(default)]
    end_frame: String,
    /// Reference images, one URL per line.
    #[serde(default)]
    images: String,
    #[serde(default)]
    video_url: String,
    #[serde(default)]
    refer_type: String,
    #[serde(default)]
    keep_original_sound: Option<String>,
    /// Element ids, separated by commas or spaces.
    #[serde(default)]
    elements: String,
    #[serde(default)]
    multi_shot: Option<String>,
    #[serde(default)]
    shot_type: String,
    /// Customized shots, one per line: `<seconds> | <prompt>`.
    #[serde(default)]
    shots: String,
    #[serde(default)]
    callback_url: String,
}

/// `GET /console/playground`
pub async fn page(session: Session) -> Html<String> {
    let form = PlaygroundForm {
        model: "kling-video-o1".into(),
        mode: "std".into(),
        duration: "5".into(),
        aspect_ratio: "16:9".into(),
        ..PlaygroundForm::default()
    };
    render(&session, &form, None)
}

fn render(session: &Session, f: &PlaygroundForm, problem: Option<&str>) -> Html<String> {
    let body = html! {
        @if session.is_operator() {
            p.note { "The playground creates tasks as an API key: sign in with a key to submit. You can still see quotes here." }
        }
        p { "Build a request, see which provider would take it and what it would cost, then create it. "
            "In sandbox mode the task runs against the built-in sandbox upstream and ends with a playable clip." }
        @if let Some(problem) = problem { p.error role="alert" { (problem) } }
        form #playground.grid method="post" action="/console/playground" data-quote="/console/playground/quote" {
            (csrf_field(session))
            (select_field("model", "Model", "default", &["kling-video-o1", "kling-v3-omni"], &f.model))
            (select_field("mode", "Mode", "default", &["std", "pro"], &f.mode))
            (select_field("duration", "Duration (seconds)", "default", &["3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"], &f.duration))
            (select_field("aspect_ratio", "Aspect ratio", "default", &["16:9", "9:16", "1:1"], &f.aspect_ratio))
            label.check { input type="checkbox" name="sound" value="on" checked[f.sound.is_some()]; " Generate sound" }
            label.wide { "Prompt" textarea name="prompt" rows="3" maxlength="2500" { (f.prompt) } }
            label { "First frame image URL" input type="url" name="first_frame" value=(f.first_frame); }
            label { "End frame image URL" input type="url" name="end_frame" value=(f.end_frame); }
            label.wide { "Reference image URLs (one per line)" textarea name="images" rows="2" { (f.images) } }
            label { "Video URL" input type="url" name="video_url" value=(f.video_url); }
            (select_field("refer_type", "Video use", "default", &["feature", "base"], &f.refer_type))
            label.check { input type="checkbox" name="keep_original_sound" value="yes" checked[f.keep_original_sound.is_some()]; " Keep the video's sound" }
            label { "Element ids (comma-separated)" input type="text" name="elements" value=(f.elements) inputmode="numeric"; }
            label.check { input type="checkbox" name="multi_shot" value="on" checked[f.multi_shot.is_some()]; " Multi-shot" }
            (select_field("shot_type", "Shot type", "default", &["customize", "intelligence"], &f.shot_type))
            label.wide { "Shots for customize (one per line: seconds | prompt)" textarea name="shots" rows="3" { (f.shots) } }
            label.wide { "Callback URL (optional)" input type="url" name="callback_url" value=(f.callback_url); }
            section.quote.wide aria-live="polite" aria-labelledby="quote-title" {
                h2 #quote-title { "Quote" }
                p #quote-text { "Fill in the form to see the quote." }
                details { summary { "Request body" } pre #request-json {} }
            }
            @if !session.is_operator() {
                button type="submit" { "Create task" }
            }
        }
    };
    page::page(session, "Playground", "/console/playground", body)
}

/// The create body the form describes, as JSON (the quote shows it).
fn request_json(f: &PlaygroundForm) -> Result<Value, ApiError> {
    let mut body = Map::new();
    let mut put = |k: &str, v: Value| {
        body.insert(k.to_string(), v);
    };
    put("model", json!(f.model.trim()));
    for (k, v) in [
        ("mode", &f.mode),
        ("aspect_ratio", &f.aspect_ratio),
        ("prompt", &f.prompt),
        ("callback_url", &f.callback_url),
    ] {
        if !v.trim().is_empty() {
            put(k, json!(v.trim()));
        }
    }
    if !f.duration.trim().is_empty() {
        put("duration", json!(f.duration.trim()));
    }
    if f.sound.is_some() {
        put("sound", json!("on"));
    }
    let mut images = Vec::new();
    for (url, frame) in [(&f.first_frame, "first_frame"), (&f.end_frame, "end_frame")] {
        if !url.trim().is_empty() {
            images.push(json!({"image_url": url.trim(), "type": frame}));
        }
    }
    images.extend(lines(&f.images).map(|url| json!({"image_url": url})));
    if !images.is_empty() {
        put("image_list", Value::Array(images));
    }
    if !f.video_url.trim().is_empty() {
        let mut video = json!({"video_url": f.video_url.trim()});
        if !f.refer_type.is_empty() {
            video["refer_type"] = json!(f.refer_type);
        }
        if f.keep_original_sound.is_some() {
            video["keep_original_sound"] = json!("yes");
        }
        put("video_list", json!([video]));
    }
    let elements: Vec<Value> = f
        .elements
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|id| json!({"element_id": id}))
        .collect();
    if !elements.is_empty() {
        put("element_list", Value::Array(elements));
    }
    if f.multi_shot.is_some() {
        put("multi_shot", json!(true));
        if !f.shot_type.is_empty() {
            put("shot_type", json!(f.shot_type));
        }
        let shots = lines(&f.shots)
            .map(|line| {
                let (secs, prompt) = line
                    .split_once('|')
                    .ok_or_else(|| ApiError::invalid("shots", "each shot is `seconds | prompt`"))?;
                Ok(json!({"duration": secs.trim(), "prompt": prompt.trim()}))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        if !shots.is_empty() {
            put("multi_prompt", Value::Array(shots));
        }
    }
    Ok(Value::Object(body))
}

fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// The form as a request the API would take: the same parsing that names the bad field.
fn request_of(f: &PlaygroundForm) -> Result<(Value, VideoRequest), ApiError> {
    let json = request_json(f)?;
    let req = crate::api::parse_json(&serde_json::to_vec(&json).unwrap_or_default())?;
    Ok((json, req))
}

/// `POST /console/playground/quote`: `{request, quote}`, or the API's error envelope.
pub async fn quote(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Form(form): Form<PlaygroundForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(form.csrf.as_deref())?;
    let answer = async {
        let (json, req) = request_of(&form)?;
        let plan = crate::submit::plan_request(&gw, &req).await?;
        Ok::<_, ApiError>(Json(
            json!({"request": json, "quote": crate::api::quote_object(&req, &plan)}),
        ))
    }
    .await;
    Ok(match answer {
        Ok(ok) => ok.into_response(),
        Err(e) => e.into_response(),
    })
}

/// `POST /console/playground`: creates the task as the signed-in key and opens its page.
pub async fn submit(
    State(gw): State<Arc<Gateway>>,
    session: Session,
    Form(form): Form<PlaygroundForm>,
) -> Result<Response, ConsoleError> {
    session.check_csrf(form.csrf.as_deref())?;
    let owner = session.owner().ok_or(ConsoleError::Invalid {
        field: "key",
        message: "the playground creates tasks as an API key; sign in with one".into(),
    })?;
    let key = gw
        .store
        .active_key(owner)
        .await?
        .ok_or(ConsoleError::SignInRequired)?;
    let created = async {
        crate::api::refuse_while_draining(&gw)?;
        // Validated by `create_task`, the same path as the API's create and quote.
        let (_, req) = request_of(&form)?;
        crate::api::rate_limit::count_create(&gw, &key).await?;
        Ok::<_, ApiError>(crate::submit::create_task(&gw, &key, req, None).await?)
    }
    .await;
    match created {
        Ok(c) => Ok(Redirect::to(&format!("/console/tasks/{}", c.task.id)).into_response()),
        Err(e) => {
            let status = e.status();
            let message = e.public_message();
            let mut resp = render(&session, &form, Some(&message)).into_response();
            *resp.status_mut() = if status.is_server_error() {
                status
            } else {
                StatusCode::UNPROCESSABLE_ENTITY.max(status)
            };
            Ok(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_builds_the_api_body_it_describes() {
        let f = PlaygroundForm {
            model: "kling-v3-omni".into(),
            duration: "10".into(),
            prompt: "a cat".into(),
            first_frame: "https://e.com/a.png".into(),
            images: "https://e.com/b.png\n\n".into(),
            elements: "12, 34".into(),
            multi_shot: Some("on".into()),
            shot_type: "customize".into(),
            shots: "4 | one\n6 | two".into(),
            ..PlaygroundForm::default()
        };
        let body = request_json(&f).unwrap();
        assert_eq!(body["image_list"][0]["type"], "first_frame");
        assert_eq!(body["image_list"][1]["image_url"], "https://e.com/b.png");
        assert_eq!(body["element_list"][1]["element_id"], "34");
        assert_eq!(body["multi_prompt"][1]["prompt"], "two");
        let (_, req) = request_of(&f).unwrap();
        assert_eq!(req.duration, Some(10));
    }

    #[test]
    fn a_malformed_shot_names_the_shots_field() {
        let f = PlaygroundForm {
            model: "kling-v3-omni".into(),
            multi_shot: Some("on".into()),
            shots: "no bar here".into(),
            ..PlaygroundForm::default()
        };
        match request_json(&f) {
            Err(ApiError::InvalidRequest { param, .. }) => {
                assert_eq!(param.as_deref(), Some("shots"))
            }
            other => panic!("{other:?}"),
        }
    }
}
