//! A raw HTTP/1.1 client over a TcpStream, for what reqwest will not do: trickle headers,
//! stall a body, declare a length it never sends.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn connect(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    TcpStream::connect(addr)
        .await
        .expect("connect to the gateway")
}

/// Opens a connection and sends `head` (request line and headers, each ending in CRLF,
/// plus the empty line) and then `body`.
pub async fn send(base: &str, head: &str, body: &[u8]) -> TcpStream {
    let mut s = connect(base).await;
    s.write_all(head.as_bytes()).await.expect("send head");
    s.write_all(body).await.expect("send body");
    s
}

/// The request head of a `method path` with `headers` (each `Name: value`).
pub fn head(method: &str, path: &str, headers: &[String]) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\n");
    for line in headers {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (head, then a body of its Content-Length); `None` if the connection
/// closed first, or nothing came within `within`.
pub async fn read_response(s: &mut TcpStream, within: Duration) -> Option<RawResponse> {
    tokio::time::timeout(within, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut resp = RawResponse {
            status,
            head,
            body: String::new(),
        };
        let len: usize = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        resp.body = String::from_utf8_lossy(&buf[head_end..]).to_string();
        Some(resp)
    })
    .await
    .ok()
    .flatten()
}

/// Waits until the server closes the connection (a read sees EOF or a reset), reading and
/// discarding whatever it sends first; false if it is still open after `within`.
pub async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
