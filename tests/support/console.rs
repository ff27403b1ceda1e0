//! The console as a browser-like client sees it: a signed-in session over plain HTTP.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use super::app::TestApp;

/// A browser-like client for one session: follows no redirects, keeps its cookies.
pub struct Console {
    pub base: String,
    pub http: reqwest::Client,
    pub cookies: Vec<(String, String)>,
}

impl Console {
    pub fn new(app: &TestApp) -> Console {
        Console {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn keep_cookies(&mut self, resp: &reqwest::Response) {
        for c in resp.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        resp
    }

    /// Signs in with `token` through the sign-in form, as a browser would.
    pub async fn sign_in(app: &TestApp, token: &str) -> Console {
        let mut c = Console::new(app);
        let (status, page) = c.get("/console/login").await;
        assert_eq!(status, StatusCode::OK);
        let nonce = csrf_in(&page);
        let resp = c
            .post("/console/login", &[("csrf", &nonce), ("token", token)])
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in with {token}");
        assert_eq!(resp.headers()[LOCATION], "/console/tasks");
        c
    }

    /// The CSRF token of the session, from any page's forms.
    pub async fn csrf(&mut self) -> String {
        let (_, page) = self.get("/console/tasks").await;
        csrf_in(&page)
    }
}

pub fn csrf_in(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

impl Console {
    /// A GET answered as it came (status, headers, body unread).
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap()
    }
}
