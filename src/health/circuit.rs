//! The circuit of one provider: its states, the breaker row's counters and how a success
//! or a failure changes them, and which failures count against a provider.

use crate::providers::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Submit,
    Poll,
}

impl Phase {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Phase::Submit => "submit",
            Phase::Poll => "poll",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Phase> {
        match s {
            "submit" => Some(Phase::Submit),
            "poll" => Some(Phase::Poll),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}
/// One provider's breaker row. "Half-open" is not stored: it is an open circuit whose
/// cool-down has passed, so no process has to flip it at the right moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Breaker {
    pub(super) open: bool,
    pub(super) submit_failures: i64,
    pub(super) poll_failures: i64,
    pub(super) opened_until: i64,
    pub(super) probe_until: i64,
    pub(super) closed_at: i64,
}

impl Breaker {
    pub(super) fn circuit(&self, now: i64) -> Circuit {
        match (self.open, now < self.opened_until) {
            (false, _) => Circuit::Closed,
            (true, true) => Circuit::Open,
            (true, false) => Circuit::HalfOpen,
        }
    }

    pub(super) fn failures(&self, phase: Phase) -> i64 {
        match phase {
            Phase::Submit => self.submit_failures,
            Phase::Poll => self.poll_failures,
        }
    }

    pub(super) fn count_failure(&mut self, phase: Phase) {
        match phase {
            Phase::Submit => self.submit_failures += 1,
            Phase::Poll => self.poll_failures += 1,
        }
    }

    /// Whether a success of `phase` changes this row: it ends a failure run, and a submit
    /// closes an open circuit.
    pub(super) fn reset_by_success(&self, phase: Phase) -> bool {
        match phase {
            Phase::Submit => self.open || self.submit_failures > 0,
            Phase::Poll => self.poll_failures > 0,
        }
    }

    /// What the reset UPDATE in `record_success` does to the row.
    pub(super) fn apply_success(&mut self, phase: Phase, now: i64) {
        match phase {
            Phase::Submit => {
                if self.open {
                    self.poll_failures = 0;
                    self.closed_at = now;
                }
                *self = Breaker {
                    open: false,
                    submit_failures: 0,
                    opened_until: 0,
                    probe_until: 0,
                    ..*self
                };
            }
            Phase::Poll => self.poll_failures = 0,
        }
    }
}
/// Whether a failure of this kind says something about the provider. The request's own
/// faults mean the provider answered, which is a success as far as its health goes.
pub(super) fn counts_against(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::Retryable
        | ErrorKind::Timeout
        | ErrorKind::Malformed
        | ErrorKind::Unreadable
        | ErrorKind::Billing
        | ErrorKind::Auth => true,
        // A capacity refusal says the provider is busy, not broken: it marks the provider
        // full (`queue/`) instead of opening its circuit.
        ErrorKind::RateLimited | ErrorKind::ConcurrencyLimited => false,
        ErrorKind::BadRequest | ErrorKind::ContentPolicy | ErrorKind::NotFound => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_circuit_is_half_open_once_its_cool_down_has_passed() {
        let open = Breaker {
            open: true,
            opened_until: 1_000,
            ..Breaker::default()
        };
        assert_eq!(open.circuit(999), Circuit::Open);
        assert_eq!(open.circuit(1_000), Circuit::HalfOpen);
        assert_eq!(Breaker::default().circuit(0), Circuit::Closed);
    }

    #[test]
    fn a_successful_submit_closes_an_open_circuit_but_a_poll_does_not() {
        let open = Breaker {
            open: true,
            submit_failures: 3,
            poll_failures: 2,
            opened_until: 1_000,
            ..Breaker::default()
        };
        let mut polled = open;
        polled.apply_success(Phase::Poll, 2_000);
        assert_eq!(polled.circuit(500), Circuit::Open);
        assert_eq!(polled.poll_failures, 0);
        let mut submitted = open;
        assert!(submitted.reset_by_success(Phase::Submit));
        submitted.apply_success(Phase::Submit, 2_000);
        assert_eq!(submitted.circuit(500), Circuit::Closed);
        assert_eq!(submitted.closed_at, 2_000);
        assert!(!submitted.reset_by_success(Phase::Submit));
    }

    #[test]
    fn only_failures_that_say_something_about_the_provider_count_against_it() {
        assert!(!counts_against(ErrorKind::RateLimited));
        assert!(!counts_against(ErrorKind::ConcurrencyLimited));
        assert!(counts_against(ErrorKind::Auth));
        assert!(!counts_against(ErrorKind::ContentPolicy));
        assert!(!counts_against(ErrorKind::NotFound));
    }
}
