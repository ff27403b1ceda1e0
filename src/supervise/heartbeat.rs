//! Each named worker's heartbeat: when it last completed a step and how often a step
//! panicked, so `/healthz` can name a worker that is stuck or gone.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Default)]
pub struct Heartbeats {
    workers: Mutex<BTreeMap<&'static str, Beat>>,
}

struct Beat {
    tick: Duration,
    last_step: Instant,
    steps: u64,
    panics: u64,
    running: bool,
}

/// One worker as `/healthz` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerStatus {
    pub name: &'static str,
    pub steps: u64,
    pub panics: u64,
    /// Seconds since the last completed step (or since the worker started).
    pub idle_secs: f64,
    /// Why the worker is unhealthy, naming it; `None` when it is fine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Heartbeats {
    pub fn started(&self, name: &'static str, tick: Duration) {
        self.lock().insert(
            name,
            Beat {
                tick,
                last_step: Instant::now(),
                steps: 0,
                panics: 0,
                running: true,
            },
        );
    }

    /// A step ended, well or with an error (an error is the step's to report; the loop is
    /// alive). A panicking step does not count.
    pub fn step_done(&self, name: &'static str) {
        if let Some(b) = self.lock().get_mut(name) {
            b.last_step = Instant::now();
            b.steps += 1;
        }
    }

    pub fn panicked(&self, name: &'static str) {
        if let Some(b) = self.lock().get_mut(name) {
            b.panics += 1;
        }
    }

    pub fn stopped(&self, name: &'static str) {
        if let Some(b) = self.lock().get_mut(name) {
            b.running = false;
        }
    }

    /// Every worker; one is unhealthy if it stopped, or has not completed a step for
    /// `stall` beyond its own tick.
    pub fn report(&self, stall: Duration) -> Vec<WorkerStatus> {
        self.lock()
            .iter()
            .map(|(name, b)| {
                let idle = b.last_step.elapsed();
                let problem = if !b.running {
                    Some(format!("worker {name} has stopped"))
                } else if idle > b.tick + stall {
                    Some(format!(
                        "worker {name} has not completed a step for {:.1} s ({} panics)",
                        idle.as_secs_f64(),
                        b.panics
                    ))
                } else {
                    None
                };
                WorkerStatus {
                    name,
                    steps: b.steps,
                    panics: b.panics,
                    idle_secs: (idle.as_secs_f64() * 10.0).round() / 10.0,
                    problem,
                }
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Beat>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
