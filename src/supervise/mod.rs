//! The supervision of background loops, below both the gateway (which holds the
//! heartbeats `/healthz` reads) and the workers (which run under it): each loop is named,
//! beats after every completed step, survives a panicking step, and stops between steps
//! when cancelled.

mod heartbeat;

pub use heartbeat::{Heartbeats, WorkerStatus};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often a loop steps when idle, and what else ends its pause.
pub struct Every {
    pub tick: Duration,
    pub wake: Option<Arc<Notify>>,
}

/// Runs `step` in a loop named `name` until `cancel`: again at once after a busy step
/// (it returned more than 0), after `every.tick` (or `every.wake`) otherwise.
/// Cancellation is seen between steps, so a step is never cut in half. A panicking step is
/// caught, logged and counted, and the loop goes on; every completed step is a heartbeat.
pub fn spawn<F, Fut>(
    name: &'static str,
    every: Every,
    cancel: CancellationToken,
    beats: Arc<Heartbeats>,
    step: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<usize>> + Send,
{
    beats.started(name, every.tick);
    tokio::spawn(async move {
        tracing::info!(worker = name, "started");
        loop {
            // Debug level: an idle step every tick is not worth a span in production; the
            // per-task `task_step` spans inside it are.
            let span = tracing::debug_span!("worker_step", worker = name);
            // A panic in the call itself (before any future exists) is caught too.
            let run = match std::panic::catch_unwind(AssertUnwindSafe(&step)) {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().instrument(span).await,
                Err(panic) => Err(panic),
            };
            let busy = match run {
                Ok(Ok(n)) => {
                    beats.step_done(name);
                    n > 0
                }
                Ok(Err(e)) => {
                    beats.step_done(name);
                    tracing::error!(worker = name, error = ?e, "step failed");
                    false
                }
                // A panicking step does not beat: one that panics every time shows as stuck.
                Err(panic) => {
                    beats.panicked(name);
                    tracing::error!(
                        worker = name,
                        panic = panic_message(panic.as_ref()),
                        "step panicked; the loop goes on"
                    );
                    false
                }
            };
            // A full batch means more may be due: go again without sleeping.
            let pause = if busy {
                Duration::from_millis(10)
            } else {
                every.tick
            };
            let woken = async {
                match &every.wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = woken => {}
            }
        }
        beats.stopped(name);
        tracing::info!(worker = name, "stopped");
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic")
}
