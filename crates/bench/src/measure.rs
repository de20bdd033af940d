//! What every side-by-side workload measures with: a clock shared by publishers and
//! subscribers (they live in this process), stamped bodies, latency samples, the resident set
//! of a server process, and progress bars.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Digits of the publish time at the start of every body: nanoseconds since [`epoch`].
pub const STAMP_DIGITS: usize = 20;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A body of `size` bytes (at least [`STAMP_DIGITS`]) that starts with the time it was made,
/// in ASCII so that it also travels as a JSON string in batch publishes.
pub fn stamped_body(size: usize) -> Vec<u8> {
    let mut body = format!("{:0width$}", now_ns(), width = STAMP_DIGITS).into_bytes();
    body.resize(size.max(STAMP_DIGITS), b'x');
    body
}

/// The stamp at the start of a body made by [`stamped_body`].
pub fn stamp_of(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body.get(..STAMP_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// Counts deliveries and keeps the publish → delivery latency of each, in microseconds.
#[derive(Default)]
pub struct Deliveries {
    count: AtomicU64,
    unstamped: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

impl Deliveries {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// One delivery of `body`, arriving now.
    pub fn record(&self, body: &[u8]) {
        let now = now_ns();
        match stamp_of(body) {
            Some(sent) => {
                let us = (now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32;
                if let Ok(mut all) = self.latencies_us.lock() {
                    all.push(us);
                }
            }
            None => {
                self.unstamped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Deliveries whose body did not carry a stamp (a broker that changed the body).
    pub fn unstamped(&self) -> u64 {
        self.unstamped.load(Ordering::Relaxed)
    }

    pub fn latencies(&self) -> Latencies {
        let samples = self
            .latencies_us
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default();
        Latencies::from_samples(samples)
    }

    /// Waits until `want` deliveries have arrived, moving `bar` (see [`wait_for_count`]).
    pub async fn wait_for(&self, want: u64, bar: &ProgressBar) -> BenchResult<()> {
        wait_for_count(|| self.count(), want, bar).await
    }
}

/// A workload fails when no delivery has arrived for this long: a broker that stopped
/// delivering, not a slow one.
pub const STALL: Duration = Duration::from_secs(60);

/// Waits until `count()` reaches `want`, moving `bar`; fails after [`STALL`] without progress.
pub async fn wait_for_count(
    count: impl Fn() -> u64,
    want: u64,
    bar: &ProgressBar,
) -> BenchResult<()> {
    let mut last = (count(), Instant::now());
    loop {
        let now = count();
        bar.set_position(now);
        if now >= want {
            return Ok(());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(
                format!("{now} of {want} deliveries, none for {} s", STALL.as_secs()).into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Percentiles of latency samples in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latencies {
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub samples: usize,
}

impl Latencies {
    pub fn from_samples(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
            samples: samples.len(),
        }
    }
}

/// Resident set of process `pid` in bytes (0 when it cannot be read).
pub fn rss_of(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) that process `pid` has used so far.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(total * 10)
}

/// Samples the resident set of a process every 20 ms until dropped; keeps the peak.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn watch(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_of(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_of(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest resident set seen, in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop_thread();
        self.peak.load(Ordering::Relaxed)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} {elapsed_precise}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Writes results as JSON lines to `path`, when one was asked for (`--json`).
pub fn write_json_lines(path: Option<&std::path::Path>, lines: &[String]) -> std::io::Result<()> {
    if let Some(path) = path {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )?;
    }
    Ok(())
}

/// Median of a non-empty list.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_body_carries_its_time_and_size() {
        let before = now_ns();
        let body = stamped_body(1024);
        assert_eq!(body.len(), 1024);
        let stamp = stamp_of(&body).expect("stamped");
        assert!(stamp >= before && stamp <= now_ns());
        assert_eq!(stamp_of(b"not a stamp at all, clearly"), None);
        assert_eq!(stamp_of(b"123"), None);
    }

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let l = Latencies::from_samples((1..=100).rev().collect());
        assert_eq!(
            (l.p50_us, l.p99_us, l.max_us, l.samples),
            (51, 99, 100, 100)
        );
        assert_eq!(Latencies::from_samples(vec![]).samples, 0);
    }

    #[test]
    fn medians_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn this_process_has_a_resident_set_and_cpu_time() {
        let pid = std::process::id();
        assert!(rss_of(pid) > 0);
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(cpu_of(pid) > Duration::ZERO);
    }
}
