//! One round of a workload against one target, as every side-by-side workload runs it: what
//! it runs ([`Spec`]), how it is measured ([`Round`]: first publish to last delivery, the
//! server's peak RSS and CPU, the bench's own CPU), what came out ([`Outcome`]), and the
//! concurrent publishers that drive it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::measure::{BenchResult, Deliveries, Latencies, PeakRss, cpu_of};

/// The workload every target runs.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub messages: u64,
    pub body_bytes: usize,
    pub publishers: u64,
    pub subscribers: u64,
    pub batch: u64,
    /// syncbrok subscribers' `batch.max_messages`.
    pub delivery_batch: u32,
    pub in_flight: u32,
}

impl Spec {
    pub fn deliveries(&self) -> u64 {
        self.messages * self.subscribers
    }
}

/// What one target did in one round.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub target: String,
    pub publishes_per_s: f64,
    pub deliveries_per_s: f64,
    pub latency: Latencies,
    pub peak_rss: u64,
    pub cpu_s: f64,
    /// CPU time of this bench process during the round (publishers, sinks, clients): were it
    /// near the cores available, the bench would be what bounds the figures.
    pub bench_cpu_s: f64,
    /// fdatasync calls of the server during the round (syncbrok's `/metrics`).
    pub fsyncs: Option<u64>,
}

impl Outcome {
    /// The server's CPU time per message published, when its pid is known.
    pub fn cpu_us_per_message(&self, spec: &Spec) -> Option<f64> {
        self.cpu_s
            .is_finite()
            .then(|| self.cpu_s * 1e6 / spec.messages.max(1) as f64)
    }

    pub fn json(&self, spec: &Spec, round: u32) -> String {
        format!(
            r#"{{"workload":"fanout","round":{round},"target":"{}","messages":{},"body_bytes":{},"publishers":{},"subscribers":{},"batch":{},"delivery_batch":{},"publishes_per_s":{:.1},"deliveries_per_s":{:.1},"p50_us":{},"p99_us":{},"max_us":{},"peak_rss_bytes":{},"server_cpu_s":{},"server_cpu_us_per_message":{},"bench_cpu_s":{:.3},"fsyncs":{}}}"#,
            self.target,
            spec.messages,
            spec.body_bytes,
            spec.publishers,
            spec.subscribers,
            spec.batch,
            spec.delivery_batch,
            self.publishes_per_s,
            self.deliveries_per_s,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
            self.peak_rss,
            if self.cpu_s.is_finite() {
                format!("{:.3}", self.cpu_s)
            } else {
                "null".into()
            },
            match self.cpu_us_per_message(spec) {
                Some(us) => format!("{us:.1}"),
                None => "null".into(),
            },
            self.bench_cpu_s,
            self.fsyncs.map_or("null".into(), |n| n.to_string())
        )
    }
}

/// Measures one target's round: from the first publish to the last delivery, with the
/// server's peak resident set and CPU time when its pid is known.
pub struct Round {
    pid: Option<u32>,
    watch: Option<PeakRss>,
    cpu_before: Option<Duration>,
    bench_cpu_before: Duration,
    started: Instant,
    publish_s: Option<f64>,
}

impl Round {
    /// Starts measuring; call right before the first publish.
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            watch: pid.map(PeakRss::watch),
            cpu_before: pid.map(cpu_of),
            bench_cpu_before: cpu_of(std::process::id()),
            started: Instant::now(),
            publish_s: None,
        }
    }

    /// Every publish has been acknowledged.
    pub fn published(&mut self) {
        self.publish_s = Some(self.started.elapsed().as_secs_f64());
    }

    /// Waits for every delivery (failing after [`crate::measure::STALL`] without one), then
    /// sums the round up.
    pub async fn finish(
        self,
        target: &str,
        spec: &Spec,
        deliveries: &Deliveries,
        bar: &ProgressBar,
    ) -> BenchResult<Outcome> {
        deliveries.wait_for(spec.deliveries(), bar).await?;
        let deliver_s = self.started.elapsed().as_secs_f64();
        let publish_s = self.publish_s.unwrap_or(deliver_s);
        let cpu_s = match (self.pid, self.cpu_before) {
            (Some(pid), Some(before)) => (cpu_of(pid) - before).as_secs_f64(),
            _ => f64::NAN,
        };
        let bench_cpu_s = (cpu_of(std::process::id()) - self.bench_cpu_before).as_secs_f64();
        Ok(Outcome {
            target: target.to_string(),
            publishes_per_s: spec.messages as f64 / publish_s,
            deliveries_per_s: deliveries.count() as f64 / deliver_s,
            latency: deliveries.latencies(),
            peak_rss: self.watch.map_or(0, PeakRss::finish),
            cpu_s,
            bench_cpu_s,
            fsyncs: None,
        })
    }
}

/// Runs `publish(n)` (publish `n` messages) from `spec.publishers` concurrent tasks until
/// `spec.messages` have been published. Each publisher is its own task, as separate clients
/// would be: on the multi-threaded runtime they use every core, so the bench's side is not
/// bounded by what one task can drive.
pub async fn publish_concurrently<F, Fut>(spec: &Spec, publish: F) -> BenchResult<()>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BenchResult<()>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let publish = Arc::new(publish);
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..spec.publishers {
        let (next, publish, spec) = (next.clone(), publish.clone(), *spec);
        publishers.spawn(async move {
            loop {
                let first = next.fetch_add(spec.batch, Ordering::Relaxed);
                if first >= spec.messages {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(());
                }
                publish(spec.batch.min(spec.messages - first)).await?;
            }
        });
    }
    // Dropping the set on an error aborts the other publishers.
    while let Some(joined) = publishers.join_next().await {
        joined.map_err(|e| format!("a publisher task failed: {e}"))??;
    }
    Ok(())
}
