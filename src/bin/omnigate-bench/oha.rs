//! Load, through oha: one run against one target, read back from oha's JSON output.

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::process::Command;

use super::gateway::CREATE_BODY;
use super::RunArgs;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Load {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Answers with the expected status per second of the run.
    pub(crate) ok_per_sec: f64,
    /// Answers with another status, and connection errors.
    pub(crate) errors: u64,
}

pub(crate) struct Target<'a> {
    pub(crate) url: String,
    pub(crate) key: Option<&'a str>,
    pub(crate) expect: u16,
    pub(crate) post: bool,
}

pub(crate) async fn oha(
    args: &RunArgs,
    t: &Target<'_>,
    secs: u64,
    rate: Option<u32>,
) -> anyhow::Result<Load> {
    let mut cmd = Command::new(&args.oha);
    cmd.args(["--no-tui", "--output-format", "json", "-z"])
        .arg(format!("{secs}s"))
        .arg("-c")
        .arg(args.connections.to_string());
    if let Some(q) = rate {
        // Latency from each request's scheduled start: a stalled server cannot hide the
        // requests it delayed (coordinated omission).
        cmd.arg("-q").arg(q.to_string()).arg("--latency-correction");
    }
    if t.post {
        cmd.args(["-m", "POST", "-T", "application/json", "-d", CREATE_BODY]);
    }
    if let Some(key) = t.key {
        cmd.arg("-H").arg(format!("Authorization: Bearer {key}"));
    }
    cmd.arg(&t.url).kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", args.oha.display()))?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON output")?;
    let pct = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let codes = v["statusCodeDistribution"].as_object();
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        codes.map_or(0, |m| {
            m.iter()
                .filter(|(k, _)| pred(k))
                .map(|(_, n)| n.as_u64().unwrap_or(0))
                .sum()
        })
    };
    let expect = t.expect.to_string();
    let ok = count(&|k| k == expect);
    let mut errors = count(&|k| k != expect);
    if let Some(m) = v["errorDistribution"].as_object() {
        // Requests cut off when the duration ends are not the server's errors.
        errors += m
            .iter()
            .filter(|(k, _)| !k.contains("aborted due to deadline"))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum::<u64>();
    }
    let elapsed = v["summary"]["total"].as_f64().unwrap_or(secs as f64);
    Ok(Load {
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        ok_per_sec: ok as f64 / elapsed.max(0.001),
        errors,
    })
}
