//! A webhook receiver on 127.0.0.1 (random port) that records every request it gets and
//! answers from a script: the next queued reply, or the default one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One answer: a status, headers and a body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Answer only after this long.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: format!("answer {status}"),
            delay: Duration::ZERO,
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>`; events go to `{base}/hook`.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a receiver port");
        let addr = listener.local_addr().expect("receiver address");
        let receiver = Receiver {
            base: format!("http://{addr}"),
            inner: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(receiver.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver server");
        });
        receiver
    }

    /// The URL clients put in `callback_url`.
    pub fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    /// Queues replies for the next requests, in order.
    pub fn then(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// The reply once the queue is empty (200 unless set).
    pub fn by_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` requests came (panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {n} requests in {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut inner = r.inner.lock().unwrap();
        inner.received.push(Received {
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        let default = inner.default.clone().unwrap_or_else(Reply::ok);
        inner.script.pop_front().unwrap_or(default)
    };
    tokio::time::sleep(reply.delay).await;
    let mut resp = (
        StatusCode::from_u16(reply.status).expect("a valid status"),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}
