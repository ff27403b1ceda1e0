//! The capacity bench's figures, from what the fakes saw and what the creates were
//! answered: utilization, dispatch latency, fairness, tasks accepted twice.

use std::collections::HashMap;

use super::fake::Seen;
use super::Created;

pub(super) fn key_of(label: &str) -> &str {
    label.split('-').next().unwrap_or_default()
}

// What the fakes saw, read for the figures.

pub(super) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The first instant `seen`'s provider ran `cap` tasks, if it ever did.
pub(super) fn first_full(seen: &Seen) -> Option<f64> {
    let mut events: Vec<(f64, i32)> = seen
        .tasks
        .iter()
        .flat_map(|t| [(t.start, 1), (t.end, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut running = 0;
    for (at, step) in events {
        running += step;
        if running >= seen.cap as i32 {
            return Some(at);
        }
    }
    None
}

/// The fraction of `seen`'s cap busy between `from` and `to`.
pub(super) fn utilization(seen: &Seen, from: f64, to: f64) -> f64 {
    if to <= from || seen.cap == 0 {
        return f64::NAN;
    }
    let busy: f64 = seen
        .tasks
        .iter()
        .map(|t| (t.end.min(to) - t.start.max(from)).max(0.0))
        .sum();
    busy / (seen.cap as f64 * (to - from))
}

/// Dispatch latencies (ms) at one provider: each moment omnigate learned a task there
/// ended, no later than `until` (while tasks waited), paired with the next create to
/// arrive there that no earlier moment took.
pub(super) fn dispatch_latencies(seen: &Seen, from: f64, until: f64) -> Vec<f64> {
    let mut learned: Vec<f64> = seen
        .tasks
        .iter()
        .filter_map(|t| t.learned)
        .filter(|l| *l >= from && *l <= until)
        .collect();
    learned.sort_by(f64::total_cmp);
    let mut creates = seen.creates.clone();
    creates.sort_by(f64::total_cmp);
    let mut next = 0;
    let mut out = Vec::new();
    for l in learned {
        while next < creates.len() && creates[next] < l {
            next += 1;
        }
        let Some(c) = creates.get(next) else { break };
        out.push((c - l) * 1000.0);
        next += 1;
    }
    out
}

/// How long after a task ended omnigate learned it (ms).
pub(super) fn learn_lags(seen: &Seen) -> Vec<f64> {
    seen.tasks
        .iter()
        .filter_map(|t| t.learned.map(|l| (l - t.end) * 1000.0))
        .collect()
}

/// Each task's start (by label) at either provider, the first if several.
pub(super) fn starts(seens: &[&Seen]) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for t in seens.iter().flat_map(|s| &s.tasks) {
        let e = out.entry(t.label.clone()).or_insert(t.start);
        *e = e.min(t.start);
    }
    out
}

/// Labels the fakes accepted more than once.
pub(super) fn accepted_twice(seens: &[&Seen]) -> usize {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in seens.iter().flat_map(|s| &s.tasks) {
        *count.entry(&t.label).or_default() += 1;
    }
    count.values().filter(|n| **n > 1).count()
}

/// Starts per key in the window where all of `keys` had tasks waiting: from the last of
/// their first waits to the first of their last waiting task's starts.
pub(super) struct Fairness {
    pub(super) window: (f64, f64),
    pub(super) starts: Vec<usize>,
}

impl Fairness {
    pub(super) fn measure(
        keys: &[&str],
        created: &[Created],
        started: &HashMap<String, f64>,
    ) -> Fairness {
        let mut from = f64::MIN;
        let mut to = f64::MAX;
        for key in keys {
            let waited: Vec<&Created> = created
                .iter()
                .filter(|c| c.waited && key_of(&c.label) == *key)
                .collect();
            let first = waited.iter().map(|c| c.at).fold(f64::MAX, f64::min);
            let last = waited
                .iter()
                .filter_map(|c| started.get(&c.label))
                .fold(f64::MIN, |a, b| a.max(*b));
            from = from.max(first);
            to = to.min(last);
        }
        let starts = keys
            .iter()
            .map(|key| {
                started
                    .iter()
                    .filter(|(label, at)| key_of(label) == *key && **at > from && **at <= to)
                    .count()
            })
            .collect();
        Fairness {
            window: (from, to),
            starts,
        }
    }

    /// Jain's index of the keys' starts: 1 when equal, 1/n when one key had them all.
    pub(super) fn jain(&self) -> f64 {
        let sum: f64 = self.starts.iter().map(|&s| s as f64).sum();
        let squares: f64 = self.starts.iter().map(|&s| (s as f64).powi(2)).sum();
        sum * sum / (self.starts.len() as f64 * squares)
    }

    /// The share furthest from an equal one, as a signed fraction of the equal share.
    pub(super) fn worst_share(&self) -> f64 {
        let sum: f64 = self.starts.iter().map(|&s| s as f64).sum();
        let equal = sum / self.starts.len() as f64;
        self.starts
            .iter()
            .map(|&s| s as f64 / equal - 1.0)
            .fold(0.0, |w: f64, d| if d.abs() > w.abs() { d } else { w })
    }

    pub(super) fn cell(&self) -> String {
        let starts: Vec<String> = self.starts.iter().map(|s| s.to_string()).collect();
        format!(
            "{} in {:.1}-{:.1} s",
            starts.join(" / "),
            self.window.0,
            self.window.1
        )
    }
}
