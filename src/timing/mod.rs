//! How long each provider's tasks take and how they end, from omnigate's own store: the
//! completion-time percentiles per provider and group (`model|mode|seconds`) that time the
//! poller's polls and a task's `eta`, and each provider's outcomes after acceptance that
//! routing and `/admin/providers` show. One process per period recomputes both from a
//! bounded read of recent tasks (`compute`) into two shared tables; every process holds
//! the last copy it read ([`Timings`]), so the poll and read paths do no I/O for them.

pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::VideoRequest;
use crate::store::{CompletionTime, FinishedTask, RunningTask, Store, TaskOutcomes};

/// A provider's completion times in one group, accepted to completed (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distribution {
    pub p10_ms: i64,
    pub p50_ms: i64,
    pub p90_ms: i64,
}

/// The group a task's completion time counts in: model, mode and seconds billed.
pub fn timing_key(req: &VideoRequest) -> String {
    format!(
        "{}|{}|{}",
        req.model.as_str(),
        req.mode().as_str(),
        crate::routing::billed_seconds(req)
    )
}

/// This process's copy of the shared figures, as last read from the store.
#[derive(Clone, Default)]
pub struct Timings {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    times: HashMap<(String, String), Distribution>,
    outcomes: HashMap<String, TaskOutcomes>,
}

impl Snapshot {
    /// `provider`'s completed-task rate, once `min_tasks` of its tasks count.
    pub fn completed_rate(&self, provider: &str, min_tasks: u32) -> Option<f64> {
        self.outcomes.get(provider)?.completed_rate(min_tasks)
    }
}

impl Timings {
    /// The figures as last read; holding it costs one reference count.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current()
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `provider`'s completion times for tasks of group `key`, if it has enough history.
    pub fn distribution(&self, provider: &str, key: &str) -> Option<Distribution> {
        self.current()
            .times
            .get(&(provider.to_string(), key.to_string()))
            .copied()
    }

    /// Every provider's outcomes after acceptance over the health window.
    pub fn outcomes(&self) -> HashMap<String, TaskOutcomes> {
        self.current().outcomes.clone()
    }

    /// Reads the shared tables into this process's copy.
    pub async fn load(&self, store: &Store) -> anyhow::Result<()> {
        let times = store
            .completion_times()
            .await?
            .into_iter()
            .map(|t| {
                let d = Distribution {
                    p10_ms: t.p10_ms,
                    p50_ms: t.p50_ms,
                    p90_ms: t.p90_ms,
                };
                ((t.provider, t.timing_key), d)
            })
            .collect();
        let outcomes = store.task_outcomes().await?.into_iter().collect();
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Snapshot { times, outcomes });
        Ok(())
    }
}

/// What `compute` needs to know of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Finished tasks per provider and group the percentiles are taken from.
    pub samples: usize,
    /// Fewer than this and a group has no history.
    pub min_samples: usize,
    /// Outcomes count tasks that finished after this (Unix ms): the health window.
    pub outcomes_since: i64,
    /// `poller.stuck_factor`.
    pub stuck_factor: f64,
}

/// The completion times of every group with enough history among `finished` (newest
/// first; the newest `samples` of each group count).
pub fn completion_times(finished: &[FinishedTask], b: Bounds) -> Vec<CompletionTime> {
    let mut groups: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for t in finished.iter().filter(|t| t.completed) {
        let (Some(key), Some(accepted), Some(done)) =
            (t.timing_key.as_deref(), t.accepted_at, t.completed_at)
        else {
            continue;
        };
        let took = groups.entry((&t.provider, key)).or_default();
        if took.len() < b.samples {
            took.push((done - accepted).max(0));
        }
    }
    let mut times: Vec<CompletionTime> = groups
        .into_iter()
        .filter(|(_, took)| took.len() >= b.min_samples.max(1))
        .map(|((provider, key), mut took)| {
            took.sort_unstable();
            CompletionTime {
                provider: provider.to_string(),
                timing_key: key.to_string(),
                p10_ms: percentile(&took, 0.10),
                p50_ms: percentile(&took, 0.50),
                p90_ms: percentile(&took, 0.90),
                samples: took.len() as i64,
            }
        })
        .collect();
    times.sort_by(|a, b| (&a.provider, &a.timing_key).cmp(&(&b.provider, &b.timing_key)));
    times
}

/// Each provider's outcomes after acceptance among `finished` since `b.outcomes_since`,
/// with the `running` tasks past `stuck_factor` times their group's p90 at `now`.
pub fn outcomes(
    finished: &[FinishedTask],
    running: &[RunningTask],
    times: &[CompletionTime],
    b: Bounds,
    now: i64,
) -> Vec<(String, TaskOutcomes)> {
    let mut by_provider: HashMap<String, TaskOutcomes> = HashMap::new();
    for t in finished.iter().filter(|t| t.updated_at >= b.outcomes_since) {
        let moderated = t.error_code.as_deref() == Some(MODERATION_CODE);
        if !(t.accepted_at.is_some() || moderated) {
            continue;
        }
        let o = by_provider.entry(t.provider.clone()).or_default();
        if t.completed {
            o.completed += 1;
        } else if moderated {
            o.moderated += 1;
        } else {
            o.failed_after_accept += 1;
        }
    }
    let p90: HashMap<(&str, &str), i64> = times
        .iter()
        .map(|t| ((t.provider.as_str(), t.timing_key.as_str()), t.p90_ms))
        .collect();
    for t in running {
        let Some(p90) = t
            .timing_key
            .as_deref()
            .and_then(|k| p90.get(&(t.provider.as_str(), k)))
        else {
            continue;
        };
        if now - t.accepted_at > (*p90 as f64 * b.stuck_factor) as i64 {
            by_provider.entry(t.provider.clone()).or_default().stuck += 1;
        }
    }
    let mut all: Vec<_> = by_provider.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The shortest time past acceptance at which any group's task counts as stuck: older
/// unfinished tasks are the only ones worth reading.
pub fn stuck_after_ms(times: &[CompletionTime], stuck_factor: f64) -> Option<i64> {
    times
        .iter()
        .map(|t| (t.p90_ms as f64 * stuck_factor) as i64)
        .min()
}

/// A content-moderation refusal (`ErrorKind::ContentPolicy`).
const MODERATION_CODE: &str = "content_policy";

/// Nearest rank of `sorted` (ascending, not empty).
fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Unix milliseconds as RFC 3339 in UTC (`2026-12-06T15:46:15Z`).
pub fn rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(provider: &str, took_ms: i64, at: i64) -> FinishedTask {
        FinishedTask {
            provider: provider.into(),
            timing_key: Some("kling-v3-omni|std|5".into()),
            completed: true,
            error_code: None,
            accepted_at: Some(at - took_ms),
            completed_at: Some(at),
            updated_at: at,
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            samples: 100,
            min_samples: 10,
            outcomes_since: 0,
            stuck_factor: 3.0,
        }
    }

    #[test]
    fn percentiles_come_from_the_newest_samples_of_each_group() {
        // Newest first: 100 tasks of 1-100 s, then 50 older ones of 1000 s.
        let mut rows: Vec<_> = (1..=100)
            .map(|s| finished("a", s * 1000, 10_000_000))
            .collect();
        rows.extend((0..50).map(|_| finished("a", 1_000_000, 5_000_000)));
        let times = completion_times(&rows, bounds());
        assert_eq!(times.len(), 1);
        let t = &times[0];
        assert_eq!((t.p10_ms, t.p50_ms, t.p90_ms), (10_000, 50_000, 90_000));
        assert_eq!(t.samples, 100);
    }

    #[test]
    fn a_group_with_too_few_samples_has_no_history() {
        let rows: Vec<_> = (1..=9).map(|s| finished("a", s * 1000, 1_000)).collect();
        assert!(completion_times(&rows, bounds()).is_empty());
    }

    #[test]
    fn outcomes_count_failures_after_acceptance_moderation_and_stuck_tasks() {
        let mut rows: Vec<_> = (1..=10).map(|s| finished("a", s * 1000, 100_000)).collect();
        let mut failed = finished("a", 5_000, 100_000);
        failed.completed = false;
        failed.error_code = Some("generation_failed".into());
        let mut refused = failed.clone();
        refused.accepted_at = None;
        refused.error_code = Some("content_policy".into());
        let mut never_accepted = refused.clone();
        never_accepted.error_code = Some("upstream_unavailable".into());
        rows.extend([failed, refused, never_accepted]);
        let times = completion_times(&rows, bounds());
        let running = [
            RunningTask {
                provider: "a".into(),
                timing_key: Some("kling-v3-omni|std|5".into()),
                accepted_at: 0,
            },
            RunningTask {
                provider: "a".into(),
                timing_key: Some("kling-v3-omni|std|5".into()),
                accepted_at: 90_000,
            },
        ];
        let all = outcomes(&rows, &running, &times, bounds(), 100_000);
        let expected = TaskOutcomes {
            completed: 10,
            failed_after_accept: 1,
            moderated: 1,
            stuck: 1,
        };
        assert_eq!(all, vec![("a".to_string(), expected.clone())]);
        assert_eq!(expected.completed_rate(10), Some(10.0 / 12.0));
        assert_eq!(expected.completed_rate(13), None);
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_485_575_000), "2026-12-05T15:46:15Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
