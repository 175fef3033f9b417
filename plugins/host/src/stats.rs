//! Per-plugin counters and a lock-free latency histogram.
//!
//! The histogram has four sub-buckets per power of two of nanoseconds, so a reported
//! percentile is the upper edge of a bucket at most 19 % above the true value. It also
//! keeps the sum of what it recorded, and gives cumulative counts at any bucket edges a
//! caller chooses ([`LatencyHistogram::cumulative`]: the agent's Prometheus histograms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const SUB_BUCKETS: usize = 4;
const N_BUCKETS: usize = 64 * SUB_BUCKETS;

/// Latency histogram with logarithmic buckets, safe to update from many threads.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..N_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// Cumulative counts of a [`LatencyHistogram`] at chosen edges, as a Prometheus
/// histogram has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CumulativeCounts {
    /// For each edge asked for (nanoseconds, ascending): how many observations are
    /// certainly at or below it (their internal bucket's upper edge is). An observation
    /// whose internal bucket straddles an edge is counted at the next edge, so a count
    /// can be low by the observations within 19 % below its edge, never high.
    pub at_or_below: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Their sum in nanoseconds (saturating).
    pub sum_ns: u64,
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS as u64 {
        return nanos as usize;
    }
    let msb = 63 - nanos.leading_zeros() as usize;
    let sub = ((nanos >> (msb - 2)) & 0b11) as usize;
    (msb * SUB_BUCKETS + sub).min(N_BUCKETS - 1)
}

fn bucket_upper_edge(bucket_idx: usize) -> u64 {
    // Buckets 0..4 hold 0..4 ns exactly; 4..8 are never used (values 4..8 have msb 2).
    if bucket_idx < 2 * SUB_BUCKETS {
        return (bucket_idx as u64).min(SUB_BUCKETS as u64 - 1);
    }
    let msb = bucket_idx / SUB_BUCKETS;
    let sub = (bucket_idx % SUB_BUCKETS) as u64;
    let base = 1u64 << msb;
    base.saturating_add((sub + 1).saturating_mul(base / SUB_BUCKETS as u64))
}

impl LatencyHistogram {
    /// Record one observation.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_of(nanos)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        // Saturating: a sum past 584 years of calls stays at the maximum.
        let _ = self
            .sum_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(nanos))
            });
    }

    /// Cumulative counts at `edges_ns` (ascending), with the total count and sum.
    pub fn cumulative(&self, edges_ns: &[u64]) -> CumulativeCounts {
        let mut at_or_below = vec![0u64; edges_ns.len()];
        let mut count = 0u64;
        for (bucket_idx, bucket) in self.buckets.iter().enumerate() {
            let n_observed = bucket.load(Ordering::Relaxed);
            if n_observed == 0 {
                continue;
            }
            count += n_observed;
            let upper_edge = bucket_upper_edge(bucket_idx);
            for (edge_idx, edge) in edges_ns.iter().enumerate() {
                if upper_edge <= *edge
                    && let Some(slot) = at_or_below.get_mut(edge_idx)
                {
                    *slot += n_observed;
                }
            }
        }
        CumulativeCounts {
            at_or_below,
            count,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// The `quantile` (0.0..=1.0) in nanoseconds, or 0 when nothing was recorded.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * quantile.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (bucket_idx, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper_edge(bucket_idx);
            }
        }
        bucket_upper_edge(N_BUCKETS - 1)
    }
}

/// Live counters of one loaded plugin.
#[derive(Default)]
pub struct PluginStats {
    pub(crate) calls: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) policy_errors: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) memory_exhausted: AtomicU64,
    pub(crate) invalid_outputs: AtomicU64,
    pub(crate) instantiations: AtomicU64,
    pub(crate) log_records: AtomicU64,
    pub(crate) log_dropped: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) latency: LatencyHistogram,
}

/// A copy of a plugin's counters at one moment, for the admin API and `plinthctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned a valid answer.
    pub ok: u64,
    /// Calls where the plugin returned its own `policy-error`.
    pub policy_errors: u64,
    /// Calls that trapped (including stack overflow and exhausted memory).
    pub traps: u64,
    /// Calls stopped at the CPU deadline (epoch or fuel).
    pub timeouts: u64,
    /// Calls that hit the memory limit.
    pub memory_exhausted: u64,
    /// Calls whose output was too large or malformed.
    pub invalid_outputs: u64,
    /// Fresh instances created.
    pub instantiations: u64,
    /// Log records the plugin emitted and the host forwarded.
    pub log_records: u64,
    /// Log records dropped because the plugin exceeded its per-call log budget.
    pub log_dropped: u64,
    /// Decisions the built-in policy made because this plugin's call failed.
    #[serde(default)]
    pub fallbacks: u64,
    /// Median call latency in nanoseconds (bucket upper edge).
    pub p50_ns: u64,
    /// 99th percentile call latency in nanoseconds (bucket upper edge).
    pub p99_ns: u64,
}

impl PluginStats {
    /// Take a snapshot of the counters.
    pub fn snapshot(&self) -> PluginStatsSnapshot {
        PluginStatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            policy_errors: self.policy_errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            memory_exhausted: self.memory_exhausted.load(Ordering::Relaxed),
            invalid_outputs: self.invalid_outputs.load(Ordering::Relaxed),
            instantiations: self.instantiations.load(Ordering::Relaxed),
            log_records: self.log_records.load(Ordering::Relaxed),
            log_dropped: self.log_dropped.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            p50_ns: self.latency.quantile_ns(0.50),
            p99_ns: self.latency.quantile_ns(0.99),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let histogram = LatencyHistogram::default();
        for _ in 0..98 {
            histogram.record(Duration::from_nanos(1_000));
        }
        histogram.record(Duration::from_micros(500));
        histogram.record(Duration::from_micros(500));
        let p50 = histogram.quantile_ns(0.5);
        assert!((1_000..=1_200).contains(&p50), "p50 {p50}");
        let p99 = histogram.quantile_ns(0.99);
        assert!((500_000..=600_000).contains(&p99), "p99 {p99}");
        assert_eq!(LatencyHistogram::default().quantile_ns(0.5), 0);
    }

    #[test]
    fn cumulative_counts_never_count_above_an_edge() {
        let histogram = LatencyHistogram::default();
        for micros in [1u64, 5, 50, 500, 5_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let counts = histogram.cumulative(&[10_000, 100_000, 1_000_000, 10_000_000]);
        assert_eq!(counts.at_or_below, vec![2, 3, 4, 5]);
        assert_eq!(counts.count, 5);
        assert_eq!(counts.sum_ns, 5_556_000);
        // An edge inside an observation's bucket does not count it yet.
        let counts = histogram.cumulative(&[1_000, 1_100]);
        assert_eq!(counts.at_or_below, vec![0, 1]);
    }

    #[test]
    fn bucket_edges_are_monotonic() {
        let mut previous = 0;
        for bucket_idx in 0..N_BUCKETS - 1 {
            let edge = bucket_upper_edge(bucket_idx);
            assert!(edge >= previous, "bucket {bucket_idx}");
            previous = edge;
        }
        for nanos in [5u64, 17, 1_000, 123_456, 9_999_999] {
            assert!(bucket_upper_edge(bucket_of(nanos)) >= nanos, "{nanos}");
        }
    }
}
