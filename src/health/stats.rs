//! Outcome statistics: this process's one-second buckets, the other processes' totals as
//! last read, the window counts drawn from both, and the latency histograms.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::circuit::Phase;
use super::report::LatencyPercentiles;
use super::shared::Stored;

/// Length of a statistics bucket.
const BUCKET_MS: i64 = 1000;
/// Latencies below this are kept exactly; above, to 7 significant bits (at most 1/64 low).
const EXACT_LATENCY_MS: i64 = 128;

/// (provider, phase, bucket start in Unix ms)
pub(super) type BucketKey = (String, Phase, i64);

/// This process's picture of every provider's health.
#[derive(Default)]
pub(super) struct View {
    /// This process's own outcomes: the truth for them, written out by each flush.
    pub(super) own: HashMap<BucketKey, Bucket>,
    /// Own buckets changed since they were last written.
    pub(super) dirty: HashSet<BucketKey>,
    /// Every other process's buckets, as last read.
    pub(super) others: HashMap<BucketKey, Counts>,
    /// Breaker rows as last read, or as this process last wrote them.
    pub(super) breakers: HashMap<String, Stored>,
    /// When `others` and `breakers` were last read (Unix ms); None before the first read.
    pub(super) refreshed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) ok: i64,
    pub(super) failed: i64,
}

impl Counts {
    pub(super) fn add(&mut self, other: Counts) {
        self.ok += other.ok;
        self.failed += other.failed;
    }

    pub(super) fn total(&self) -> i64 {
        self.ok + self.failed
    }

    pub(super) fn success_rate(&self) -> Option<f64> {
        (self.total() > 0).then(|| self.ok as f64 / self.total() as f64)
    }
}

/// One process's outcomes of one provider and phase in one second.
#[derive(Debug, Clone, Default)]
pub(super) struct Bucket {
    pub(super) counts: Counts,
    pub(super) latency_sum_ms: i64,
    /// Latency (binned, see [`latency_bin`]) to how many outcomes took it.
    pub(super) latencies: BTreeMap<i64, i64>,
}

/// The histogram bin of a latency: exact below [`EXACT_LATENCY_MS`], else its 7 most
/// significant bits, so a histogram stays small however many outcomes it holds.
pub(super) fn latency_bin(ms: i64) -> i64 {
    if ms < EXACT_LATENCY_MS {
        return ms.max(0);
    }
    let drop = 64 - ms.leading_zeros() as i64 - 7;
    (ms >> drop) << drop
}

pub(super) fn bucket_start(at: i64) -> i64 {
    at - at.rem_euclid(BUCKET_MS)
}

/// Nearest-rank percentile of a histogram.
pub(super) fn percentile(hist: &BTreeMap<i64, i64>, p: f64) -> Option<i64> {
    let n: i64 = hist.values().sum();
    if n == 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
    let mut seen = 0;
    hist.iter().find_map(|(&v, &c)| {
        seen += c;
        (seen >= rank).then_some(v)
    })
}

pub(super) fn percentiles(hist: &BTreeMap<i64, i64>) -> LatencyPercentiles {
    LatencyPercentiles {
        p50: percentile(hist, 0.50),
        p95: percentile(hist, 0.95),
    }
}

/// A histogram as stored: `ms:count` pairs joined by commas.
pub(super) fn encode_hist(hist: &BTreeMap<i64, i64>) -> String {
    let pairs: Vec<String> = hist.iter().map(|(v, c)| format!("{v}:{c}")).collect();
    pairs.join(",")
}

pub(super) fn decode_hist_into(text: &str, hist: &mut BTreeMap<i64, i64>) {
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        if let Some((v, c)) = pair.split_once(':') {
            if let (Ok(v), Ok(c)) = (v.parse::<i64>(), c.parse::<i64>()) {
                *hist.entry(v).or_default() += c;
            }
        }
    }
}

impl View {
    /// Every process's outcomes of the buckets that started at or after `since`, for the
    /// given provider (all when None) and phase (both when None).
    pub(super) fn counts(&self, provider: &str, phase: Option<Phase>, since: i64) -> Counts {
        let wanted = |(p, ph, start): &BucketKey| {
            p == provider && phase.is_none_or(|want| want == *ph) && *start >= since
        };
        let mut total = Counts::default();
        for (key, bucket) in &self.own {
            if wanted(key) {
                total.add(bucket.counts);
            }
        }
        for (key, counts) in &self.others {
            if wanted(key) {
                total.add(*counts);
            }
        }
        total
    }

    /// Window counts of every provider with outcomes in the window.
    pub(super) fn windows(&self, since: i64) -> HashMap<String, Counts> {
        let mut out: HashMap<String, Counts> = HashMap::new();
        let own = self.own.iter().map(|(k, b)| (k, b.counts));
        let others = self.others.iter().map(|(k, c)| (k, *c));
        for ((provider, _, start), counts) in own.chain(others) {
            if *start >= since {
                match out.get_mut(provider) {
                    Some(c) => c.add(counts),
                    None => {
                        out.insert(provider.clone(), counts);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: impl IntoIterator<Item = i64>) -> BTreeMap<i64, i64> {
        let mut h = BTreeMap::new();
        for v in values {
            *h.entry(latency_bin(v)).or_default() += 1;
        }
        h
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_latencies() {
        let p = percentiles(&hist((1..=20).rev().map(|i| i * 10)));
        assert_eq!((p.p50, p.p95), (Some(100), Some(190)));
        assert_eq!(
            percentiles(&hist([7])),
            LatencyPercentiles {
                p50: Some(7),
                p95: Some(7)
            }
        );
        assert_eq!(percentiles(&BTreeMap::new()), LatencyPercentiles::default());
    }

    #[test]
    fn latency_bins_are_exact_when_small_and_at_most_a_64th_low_above() {
        assert_eq!(latency_bin(0), 0);
        assert_eq!(latency_bin(127), 127);
        assert_eq!(latency_bin(129), 128);
        for ms in [200, 1_234, 30_001, 299_999] {
            let bin = latency_bin(ms);
            assert!(
                bin <= ms && (ms - bin) as f64 / ms as f64 <= 1.0 / 64.0,
                "{ms} -> {bin}"
            );
        }
    }

    #[test]
    fn a_histogram_reads_back_what_was_written() {
        let h = hist([5, 5, 300, 1_000]);
        let mut back = BTreeMap::new();
        decode_hist_into(&encode_hist(&h), &mut back);
        decode_hist_into("", &mut back);
        assert_eq!(back, h);
    }

    #[test]
    fn buckets_start_on_whole_seconds() {
        assert_eq!(bucket_start(1_700_000_000_999), 1_700_000_000_000);
        assert_eq!(bucket_start(1_700_000_001_000), 1_700_000_001_000);
    }
}
