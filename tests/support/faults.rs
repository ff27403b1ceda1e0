//! An HTTP proxy in front of a provider simulator that a test switches between passing
//! requests on, answering every request with a 5xx, and hanging: a provider outage of
//! any length, whatever the gateway asks (creates and polls alike).

use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Every request goes on to the simulator, and its answer back.
    Forward,
    /// Every request is answered with this status and a JSON error body.
    Fail(u16),
    /// Every request is accepted and never answered (the gateway's timeout ends it).
    Hang,
}

#[derive(Clone)]
pub struct FaultyUpstream {
    /// Give this to the gateway as the provider's `base_url`.
    pub base_url: String,
    target: String,
    state: Arc<Mutex<(Behaviour, Counts)>>,
    client: reqwest::Client,
}

/// Requests seen, by what was done with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub forwarded: usize,
    pub failed: usize,
    pub hung: usize,
}

impl FaultyUpstream {
    /// Listens on a random port of 127.0.0.1, in front of `target` (a simulator's base URL).
    pub async fn start(target: &str) -> FaultyUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = FaultyUpstream {
            base_url: format!("http://{addr}"),
            target: target.trim_end_matches('/').to_string(),
            state: Arc::new(Mutex::new((Behaviour::Forward, Counts::default()))),
            client: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(proxy.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy server");
        });
        proxy
    }

    pub fn behave(&self, behaviour: Behaviour) {
        self.lock().0 = behaviour;
    }

    pub fn counts(&self) -> Counts {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Behaviour, Counts)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn handle(State(p): State<FaultyUpstream>, req: Request) -> Response {
    let behaviour = {
        let mut state = p.lock();
        let behaviour = state.0;
        match behaviour {
            Behaviour::Forward => state.1.forwarded += 1,
            Behaviour::Fail(_) => state.1.failed += 1,
            Behaviour::Hang => state.1.hung += 1,
        }
        behaviour
    };
    match behaviour {
        Behaviour::Forward => forward(&p, req).await,
        Behaviour::Fail(status) => (
            StatusCode::from_u16(status).expect("a valid status"),
            [("content-type", "application/json")],
            r#"{"code":5000,"message":"upstream is down for maintenance"}"#,
        )
            .into_response(),
        Behaviour::Hang => std::future::pending().await,
    }
}

async fn forward(p: &FaultyUpstream, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let body = to_bytes(body, usize::MAX).await.expect("request body");
    let mut out = p
        .client
        .request(parts.method, format!("{}{path}", p.target))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let Ok(answer) = out.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut resp = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            resp = resp.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    resp.body(Body::from(bytes)).expect("a proxied response")
}
