//! Latency histograms the broker keeps while it runs (not durable: they start empty at each
//! start): publish → first delivery and parent acknowledgement → child release per queue,
//! attempt duration per subscriber. Fixed buckets, observed without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from half a millisecond (a local subscriber) to
/// five minutes (a message that went through retries).
pub const BUCKETS_S: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Counts per bucket (not cumulative; the last one is past every bound) and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
}

/// What a histogram holds at one moment, as Prometheus shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Observations at most `BUCKETS_S[i]`, cumulative, one per bound.
    pub cumulative: Vec<u64>,
    pub count: u64,
    /// The sum of the observations in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// The bound of the bucket holding the `q` quantile (0 < q ≤ 1): "at most this long" for
    /// that share of the observations; `None` with no observations, or past the last bound.
    pub fn quantile_bound_s(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let i = self.cumulative.iter().position(|&n| n >= rank)?;
        Some(BUCKETS_S[i])
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS_S.partition_point(|&bound| bound < s);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(BUCKETS_S.len());
        let mut running = 0;
        for c in &self.counts[..BUCKETS_S.len()] {
            running += c.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.counts[BUCKETS_S.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A queue's latencies.
#[derive(Debug, Default)]
pub struct QueueLatency {
    /// From a message's publish (its id's time) to its first acknowledgement by a subscriber.
    pub first_delivery: Histogram,
    /// From the acknowledgement that completes a parent arriving to each of its waiting
    /// children being released (ready to go): the causal hop's own cost (the journal's write
    /// of the ack included).
    pub release: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_the_snapshot_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300)); // ≤ 0.5 ms
        h.observe(Duration::from_millis(1)); // ≤ 1 ms: a bound is inclusive
        h.observe(Duration::from_millis(7)); // ≤ 10 ms
        h.observe(Duration::from_secs(900)); // past every bound
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(&s.cumulative[..5], &[1, 2, 2, 2, 3]);
        assert_eq!(*s.cumulative.last().unwrap(), 3);
        assert_eq!(s.sum_us, 300 + 1_000 + 7_000 + 900_000_000);
        assert_eq!(s.quantile_bound_s(0.5), Some(0.001));
        assert_eq!(s.quantile_bound_s(0.75), Some(0.01));
        assert_eq!(s.quantile_bound_s(1.0), None, "past the last bound");
        assert_eq!(Histogram::default().snapshot().quantile_bound_s(0.5), None);
    }
}
