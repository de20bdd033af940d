//! Publish, delivery and failure rates over the last minutes, for the overview: the Space's
//! counters sampled every few seconds into a short ring, drawn as a sparkline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maud::{Markup, html};
use space::Space;

/// How often the counters are sampled …
pub const RATE_EVERY: Duration = Duration::from_secs(5);
/// … and how many samples are kept (ten minutes).
pub const RATE_SAMPLES: usize = 121;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at_ms: u64,
    published: u64,
    acked: u64,
    failed: u64,
}

/// Per second between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub published: f64,
    pub acked: f64,
    pub failed: f64,
}

pub(crate) struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// Starts sampling `space` (when a runtime runs; the sampler ends with the last handle).
    pub fn start(space: Space) -> Arc<Rates> {
        let rates = Arc::new(Rates {
            samples: Mutex::new(VecDeque::with_capacity(RATE_SAMPLES)),
        });
        rates.sample(&space);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&rates);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(RATE_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(rates) = weak.upgrade() else { break };
                    rates.sample(&space);
                }
            });
        }
        rates
    }

    fn sample(&self, space: &Space) {
        self.push(Self::now(space));
    }

    fn now(space: &Space) -> Sample {
        let t = space.totals();
        Sample {
            at_ms: space.now_ms(),
            published: t.published,
            acked: t.acked,
            failed: t.failed_attempts,
        }
    }

    fn push(&self, s: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == RATE_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(s);
    }

    /// Rates between successive samples, oldest first, the last one up to now (so that a
    /// page shows what is happening, not what happened up to five seconds ago).
    pub fn series(&self, space: &Space) -> Vec<Rate> {
        let mut samples: Vec<Sample> = {
            let kept = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            kept.iter().copied().collect()
        };
        let now = Self::now(space);
        if samples.last().is_none_or(|s| now.at_ms >= s.at_ms + 1000) {
            samples.push(now);
        }
        Self::between(&samples)
    }

    fn between(samples: &[Sample]) -> Vec<Rate> {
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.at_ms.saturating_sub(a.at_ms)).max(1) as f64 / 1000.0;
                let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
                Rate {
                    published: per(a.published, b.published),
                    acked: per(a.acked, b.acked),
                    failed: per(a.failed, b.failed),
                }
            })
            .collect()
    }
}

/// The three rates as lines over the last minutes.
pub fn sparkline(series: &[Rate]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 90.0;
    let top = series
        .iter()
        .flat_map(|r| [r.published, r.acked, r.failed])
        .fold(1.0_f64, f64::max);
    let step = W / (RATE_SAMPLES - 2) as f64;
    let offset = W - step * series.len().saturating_sub(1) as f64;
    let points = |pick: fn(&Rate) -> f64| {
        series
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "{:.1},{:.1}",
                    offset + i as f64 * step,
                    H - 4.0 - pick(r) / top * (H - 8.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.spark width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) } role="img"
            aria-label="publish, delivery and failure rates over the last ten minutes" {
            polyline.published points=(points(|r| r.published)) {}
            polyline.acked points=(points(|r| r.acked)) {}
            polyline.failed points=(points(|r| r.failed)) {}
        }
        p.legend.muted {
            span.published { "— published" }
            span.acked { "— delivered" }
            span.failed { "— failed attempts" }
            "per second over the last " (RATE_SAMPLES / 12) " minutes; top of the chart "
            (format!("{top:.0}")) "/s"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_between_samples_and_the_ring_is_bounded() {
        let r = Rates {
            samples: Mutex::new(VecDeque::new()),
        };
        for i in 0..RATE_SAMPLES as u64 + 10 {
            r.push(Sample {
                at_ms: i * 5_000,
                published: i * 50,
                acked: i * 25,
                failed: 0,
            });
        }
        let s = Rates::between(
            &r.samples
                .lock()
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
        );
        assert_eq!(s.len(), RATE_SAMPLES - 1);
        assert_eq!(
            s[0],
            Rate {
                published: 10.0,
                acked: 5.0,
                failed: 0.0
            }
        );
    }
}
