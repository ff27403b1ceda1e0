//! The disk's commit latency, measured before the load: every durable commit (PostgreSQL's
//! WAL flush, SQLite's checkpoint) waits on an `fdatasync`, so a disk that sometimes
//! stalls one for hundreds of milliseconds sets the create path's tail whatever the
//! gateway does. Printed under each table, so that a p99 can be read against it.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// `fdatasync` latencies of small appends, as a WAL flush makes them.
pub struct Fsyncs {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Syncs slower than 50 ms: each holds every commit waiting behind it.
    pub stalls: usize,
}

/// Size of each append: one WAL page.
const APPEND: usize = 8192;
/// Pause between syncs, about a commit rate of 500/s.
const GAP: Duration = Duration::from_millis(2);
const STALL_MS: f64 = 50.0;

/// Appends and syncs a scratch file in `dir` for `secs` seconds, then removes it.
pub async fn probe(dir: &Path, secs: u64) -> anyhow::Result<Fsyncs> {
    let path = dir.join("fsync-probe");
    tokio::task::spawn_blocking(move || {
        let result = sync_for(&path, Duration::from_secs(secs.max(1)));
        let _ = std::fs::remove_file(&path);
        result
    })
    .await?
}

fn sync_for(path: &Path, length: Duration) -> anyhow::Result<Fsyncs> {
    let mut file = std::fs::File::create(path)?;
    let page = [0u8; APPEND];
    let mut ms = Vec::new();
    let end = Instant::now() + length;
    while Instant::now() < end {
        file.write_all(&page)?;
        let start = Instant::now();
        file.sync_data()?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(GAP);
    }
    Ok(summarize(ms))
}

fn summarize(mut ms: Vec<f64>) -> Fsyncs {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)));
    Fsyncs {
        count: ms.len(),
        p50_ms: at(0.5).copied().unwrap_or(0.0),
        p99_ms: at(0.99).copied().unwrap_or(0.0),
        max_ms: ms.last().copied().unwrap_or(0.0),
        stalls: ms.iter().filter(|&&m| m > STALL_MS).count(),
    }
}

impl std::fmt::Display for Fsyncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "disk: {} fdatasyncs of {} KiB appends: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} over {STALL_MS:.0} ms",
            self.count,
            APPEND / 1024,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.stalls
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_stalls_come_from_the_sorted_latencies() {
        let mut ms: Vec<f64> = (1..=100).map(f64::from).collect();
        ms.reverse();
        let f = summarize(ms);
        assert_eq!(f.count, 100);
        assert_eq!(f.p50_ms, 51.0);
        assert_eq!(f.p99_ms, 100.0);
        assert_eq!(f.max_ms, 100.0);
        assert_eq!(f.stalls, 50);
        assert_eq!(summarize(Vec::new()).count, 0);
    }
}
