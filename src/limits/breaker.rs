//! The circuit breaker in front of the shared backend (Redis). A failing Redis costs one
//! `redis_timeout_ms` per call without it; with it, a failure opens the breaker for
//! `limits.redis_skip_ms`, during which checks apply `on_redis_error` at once without
//! touching Redis. Then one call probes: success closes the breaker, failure opens it
//! for another window. So an outage costs about one timeout per window, not one per call.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Skipping the backend until this instant.
    Open {
        until: Instant,
    },
    /// One call is probing; others skip until it reports or this instant passes (a probe
    /// whose caller hung up never reports).
    Probing {
        until: Instant,
    },
}

/// What a check should do, from [`Breaker::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Ask the backend.
    Ask,
    /// Do not: the backend failed lately; apply the failure policy now.
    Skip,
}

pub struct Breaker {
    state: Mutex<State>,
    /// How long the backend is skipped after a failure (zero: never skipped).
    window: Duration,
    /// How long a probe may take before another call may probe.
    probe_limit: Duration,
}

impl Breaker {
    pub fn new(window: Duration, probe_limit: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed),
            window,
            probe_limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this call may ask the backend; the first one after a window is the probe.
    pub fn admit(&self) -> Admit {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Closed => Admit::Ask,
            State::Open { until } | State::Probing { until } if now >= until => {
                *state = State::Probing {
                    until: now + self.probe_limit,
                };
                Admit::Ask
            }
            State::Open { .. } | State::Probing { .. } => Admit::Skip,
        }
    }

    /// The backend answered: closes the breaker. True when it was not closed (the backend
    /// is back).
    pub fn succeeded(&self) -> bool {
        std::mem::replace(&mut *self.lock(), State::Closed) != State::Closed
    }

    /// The backend failed: skips it for a window. True when it was closed (skipping starts).
    pub fn failed(&self) -> bool {
        let open = State::Open {
            until: Instant::now() + self.window,
        };
        std::mem::replace(&mut *self.lock(), open) == State::Closed
    }

    /// Whether the backend is being skipped or probed (it failed last time it was asked).
    pub fn is_open(&self) -> bool {
        *self.lock() != State::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_skips_the_backend_for_a_window_then_one_call_probes() {
        let b = Breaker::new(Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(b.admit(), Admit::Ask);
        assert!(b.failed(), "skipping starts");
        assert_eq!(b.admit(), Admit::Skip);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Ask, "the probe");
        assert_eq!(b.admit(), Admit::Skip, "one probe at a time");
        assert!(
            !b.failed(),
            "a failed probe opens again without a new start"
        );
        assert_eq!(b.admit(), Admit::Skip);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Ask);
        assert!(b.succeeded(), "back");
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Ask);
        assert!(!b.succeeded());
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let b = Breaker::new(Duration::ZERO, Duration::from_millis(30));
        b.failed();
        assert_eq!(b.admit(), Admit::Ask);
        assert_eq!(b.admit(), Admit::Skip);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Ask);
    }
}
