//! The page shell (head, navigation, sign-out), the console's error pages, and how money,
//! times and statuses are written everywhere in it.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::{Session, Viewer};
use crate::api::ApiError;

/// The top navigation: (path, label, operator only).
const NAV: &[(&str, &str, bool)] = &[
    ("/console/tasks", "Tasks", false),
    ("/console/usage", "Usage", false),
    ("/console/queue", "Queue", false),
    ("/console/playground", "Playground", false),
    ("/console/providers", "Providers", true),
    ("/console/keys", "Keys", true),
];

/// A signed-in page: `current` is the path of its navigation entry.
pub fn page(session: &Session, title: &str, current: &str, body: Markup) -> Html<String> {
    let who = match &session.viewer {
        Viewer::Operator => "operator".to_string(),
        Viewer::Key { name, id } => format!("key {name} ({id})"),
    };
    shell(
        title,
        html! {
            header.top {
                a.brand href="/console/tasks" { "omnigate" }
                nav aria-label="Console" {
                    ul {
                        @for (path, label, operator_only) in NAV {
                            @if !operator_only || session.is_operator() {
                                li {
                                    @if *path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                form.signout method="post" action="/console/logout" {
                    span.who { "Signed in as " (who) }
                    (csrf_field(session))
                    button type="submit" { "Sign out" }
                }
            }
            main #main { h1 { (title) } (body) }
        },
    )
}

/// A page outside a session (sign-in, errors before sign-in).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    shell(title, html! { main #main { (body) } })
}

fn shell(title: &str, content: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · omnigate console" }
                    link rel="stylesheet" href="/console/assets/console.css";
                    script src="/console/assets/console.js" defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    (content)
                }
            }
        }
        .into_string(),
    )
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A labelled `<select>` of `options` with `chosen` selected; its first option, `blank`,
/// sends an empty value (no filter, or the API's default).
pub fn select_field(
    name: &str,
    label: &str,
    blank: &str,
    options: &[&str],
    chosen: &str,
) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" selected[!options.contains(&chosen)] { (blank) }
                @for o in options { option value=(o) selected[*o == chosen] { (o) } }
            }
        }
    }
}

/// Why a console request was not answered with its page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No live session: go to the sign-in page.
    SignInRequired,
    /// A state-changing form without this session's CSRF token.
    CsrfRejected,
    /// Not there, or not this viewer's (the same answer, so nothing leaks).
    NotFound,
    /// Bad input in a console form or filter, naming the field.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// From the layers the API shares: limits, the store, the task logic.
    Api(ApiError),
}

impl From<anyhow::Error> for ConsoleError {
    fn from(e: anyhow::Error) -> Self {
        ConsoleError::Api(ApiError::from(e))
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) => ConsoleError::NotFound,
            other => ConsoleError::Api(other),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::SignInRequired => {
                return Redirect::to("/console/login").into_response();
            }
            ConsoleError::CsrfRejected => (
                StatusCode::FORBIDDEN,
                "Refused",
                "This form did not carry the session's CSRF token. Reload the page and try again."
                    .to_string(),
            ),
            ConsoleError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here for you.".to_string(),
            ),
            ConsoleError::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                "Invalid input",
                format!("{field}: {message}"),
            ),
            ConsoleError::Api(ApiError::TooManyFailures { retry_after_secs }) => {
                let e = ApiError::TooManyFailures { retry_after_secs };
                let body = html! { h1 { "Too many attempts" } p.error role="alert" { (e.public_message()) } };
                let headers = [(
                    axum::http::header::RETRY_AFTER,
                    retry_after_secs.to_string(),
                )];
                return (e.status(), headers, bare("Too many attempts", body)).into_response();
            }
            ConsoleError::Api(e) => (e.status(), "Something went wrong", e.public_message()),
        };
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/console/tasks" { "Back to the console" } }
        };
        (status, bare(title, body)).into_response()
    }
}

/// Money as the gateway keeps it, to the micro-dollar that matters: `$0.4200`.
pub fn usd(v: f64) -> String {
    format!("${v:.4}")
}

pub fn usd_opt(v: Option<f64>) -> String {
    v.map(usd).unwrap_or_else(|| "—".into())
}

/// Unix milliseconds as a UTC time, `2026-11-26 21:40:03`.
pub fn time_ms(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A status as a labelled badge (colour plus its name, never colour alone).
pub fn status_badge(status: &str) -> Markup {
    html! { span class={"badge badge-" (status)} { (status.replace('_', " ")) } }
}
