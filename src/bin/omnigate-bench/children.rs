//! The bench's child processes: stopped with SIGTERM (then SIGKILL) when dropped, so every
//! exit path cleans up; and the small helpers for starting them (log files, free ports,
//! waiting for an HTTP answer).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::process::Child;

pub(crate) struct Proc {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) in MiB.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                eprintln!("{} did not stop on SIGTERM; killing it", self.name);
                let _ = self.child.kill().await;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.start_kill();
        }
    }
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn log_file(dir: &Path, name: &str) -> anyhow::Result<Stdio> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?.into())
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn wait_http(url: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() < 500 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
