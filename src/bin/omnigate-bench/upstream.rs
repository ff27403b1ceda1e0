//! The fake upstream: answers apimodels' create and status calls at once, counts what the
//! scale measurements count, and runs as a child process of the bench (`upstream`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::extract::Query;
use axum::routing::post;
use axum::Json;
use serde_json::json;
use tokio::process::Command;

use super::children::{log_file, Proc};
use super::{live, scale};

static NEXT_TASK: AtomicU64 = AtomicU64::new(1);
static COUNTS: std::sync::LazyLock<scale::Counts> = std::sync::LazyLock::new(Default::default);

pub(crate) async fn serve_upstream(listen: SocketAddr, min_gap_ms: i64) -> anyhow::Result<()> {
    let app = axum::Router::new()
        // What the scale measurements count: status queries and client webhook deliveries.
        .route(
            "/_counts",
            axum::routing::get(|| async { Json(COUNTS.json()) }),
        )
        .route(
            "/_receiver",
            post(|| async {
                COUNTS.delivered();
                "ok"
            }),
        )
        .route(
            "/api/v1/video/generations",
            post(|body: axum::body::Bytes| async move {
                let n = NEXT_TASK.fetch_add(1, Ordering::Relaxed);
                let id = format!("fake_{n}");
                live::note_create(&id, &body);
                Json(json!({"code": 200, "msg": "success",
                        "data": {"taskId": id, "state": "pending"}}))
            })
            .get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let id = q.get("task_id").cloned().unwrap_or_default();
                    let now = omnigate::store::now_ms();
                    COUNTS.query(&id, now, min_gap_ms);
                    if live::finished_by(&id, now) {
                        return Json(json!({"code": 200, "msg": "success", "data": {
                            "taskId": id, "state": "completed",
                            "resultUrls": [format!("https://example.invalid/{id}.mp4")]}}));
                    }
                    Json(json!({"code": 200, "msg": "success",
                            "data": {"taskId": id, "state": "processing", "progress": 50}}))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // The parent reads the port from this line.
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

pub(crate) async fn start_upstream(dir: &Path, min_gap_ms: i64) -> anyhow::Result<(Proc, u16)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["upstream", "--listen", "127.0.0.1:0"])
        .arg(format!("--min-gap-ms={min_gap_ms}"))
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "upstream")?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the fake upstream")?;
    let stdout = child.stdout.take().context("upstream stdout")?;
    let proc = Proc {
        name: "fake upstream",
        child,
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("fake upstream did not start")??
        .context("fake upstream exited")?;
    let addr: SocketAddr = line
        .strip_prefix("listening ")
        .context("fake upstream's first line")?
        .parse()?;
    Ok((proc, addr.port()))
}
