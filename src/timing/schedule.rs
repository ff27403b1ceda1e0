//! When to poll a task, given how long its provider's tasks of its group take.
//!
//! Without history every poll waits the provider's interval, as before. With it, the first
//! poll comes at the p10 (few tasks are done sooner, so earlier polls would mostly find
//! them running), later ones come a third of the p10-p90 spread apart at the edges and
//! half that at the p50, where most tasks finish; past the p90 the gap widens again until
//! it is the provider's interval. No gap is ever shorter than the floor
//! (`poller.min_poll_gap_secs`) nor longer than the interval.

use std::time::Duration;

use super::Distribution;

/// How long after acceptance to poll a task first.
pub fn first_poll_after(
    dist: Option<&Distribution>,
    interval: Duration,
    floor: Duration,
) -> Duration {
    match dist {
        None => interval,
        Some(d) => ms(d.p10_ms).max(floor.min(interval)),
    }
}

/// How long to wait for the next poll of a task polled `elapsed` after its acceptance.
pub fn next_poll_after(
    dist: Option<&Distribution>,
    elapsed: Duration,
    interval: Duration,
    floor: Duration,
) -> Duration {
    let Some(d) = dist else {
        return interval;
    };
    let floor = floor.min(interval);
    let t = elapsed.as_millis() as i64;
    let spread = (d.p90_ms - d.p10_ms).max(1);
    let step = spread as f64 / 3.0;
    let gap_ms = if t < d.p10_ms {
        (d.p10_ms - t) as f64
    } else if t < d.p90_ms {
        let off_center = (t - d.p50_ms).abs() as f64 / spread as f64;
        step * (0.5 + off_center)
    } else {
        step + (t - d.p90_ms) as f64 / 2.0
    };
    ms(gap_ms as i64).clamp(floor, interval)
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn dist() -> Distribution {
        Distribution {
            p10_ms: 100_000,
            p50_ms: 120_000,
            p90_ms: 140_000,
        }
    }

    /// The polls of a task that finishes at `done_ms`, until one finds it finished.
    fn polls_until(d: Option<&Distribution>, done_ms: i64, interval: Duration) -> Vec<i64> {
        let mut at = first_poll_after(d, interval, SEC).as_millis() as i64;
        let mut polls = vec![at];
        while at < done_ms {
            let elapsed = Duration::from_millis(at as u64);
            at += next_poll_after(d, elapsed, interval, SEC).as_millis() as i64;
            polls.push(at);
        }
        polls
    }

    #[test]
    fn without_history_every_poll_waits_the_interval() {
        let i = Duration::from_secs(10);
        assert_eq!(first_poll_after(None, i, SEC), i);
        assert_eq!(next_poll_after(None, Duration::from_secs(95), i, SEC), i);
        assert_eq!(polls_until(None, 120_000, i).len(), 12);
    }

    #[test]
    fn the_first_poll_comes_at_the_p10() {
        let d = dist();
        let i = Duration::from_secs(10);
        assert_eq!(first_poll_after(Some(&d), i, SEC), Duration::from_secs(100));
    }

    #[test]
    fn polls_are_densest_around_the_p50_and_bounded_by_floor_and_interval() {
        let d = dist();
        let i = Duration::from_secs(30);
        let at = |s: u64| next_poll_after(Some(&d), Duration::from_secs(s), i, SEC);
        assert!(at(120) < at(105), "{:?} vs {:?}", at(120), at(105));
        assert!(at(120) < at(135));
        assert!(at(120) >= SEC);
        assert!(at(1_000) == i, "never rarer than the interval past the p90");
        let narrow = Distribution {
            p10_ms: 10_000,
            p50_ms: 10_100,
            p90_ms: 10_200,
        };
        assert_eq!(
            next_poll_after(Some(&narrow), Duration::from_millis(10_100), i, SEC),
            SEC,
            "never sooner than the floor"
        );
    }

    #[test]
    fn a_task_finishing_at_the_p50_is_found_in_a_few_polls_soon_after() {
        let d = dist();
        let i = Duration::from_secs(10);
        let polls = polls_until(Some(&d), 120_000, i);
        assert!(polls.len() <= 4, "{polls:?}");
        let late = polls.last().unwrap() - 120_000;
        assert!(late <= 5_000, "{polls:?}");
        // Finishing at the p90 takes no more polls than the fixed interval would.
        let at_p90 = polls_until(Some(&d), 140_000, i);
        assert!(at_p90.len() <= 6, "{at_p90:?}");
    }
}
