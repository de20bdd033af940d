//! The `scheduled` workload, through the real binary: N messages published for later (each
//! with its own `deliver_at`, spread over a window that starts once publishing is surely
//! done), to a queue with one subscriber that is up. Reported: the broker's resident set per
//! scheduled message (against the same broker before the publish), then, as they fall due,
//! how late each arrives at the subscriber after its due time (p50, p99, max), how many
//! arrived early (there must be none), and the delivery rate over the window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::measure::{BenchResult, Latencies, now_ns, progress, rss_of, stamp_of};
use crate::round::{Spec, publish_concurrently};
use crate::server::Server;
use crate::sink::{Sink, http_client};

#[derive(clap::Args)]
pub struct Args {
    /// Messages published for later (N).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Body size in bytes (at least 20: the due time is written at its start).
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Seconds from the start of publishing to the first due time: publishing must be done by
    /// then.
    #[arg(long, default_value_t = 40)]
    lead_s: u64,
    /// Seconds over which the due times are spread, evenly.
    #[arg(long, default_value_t = 20)]
    spread_s: u64,
    /// Messages per batch publish request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Concurrent batch publishers.
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    #[command(flatten)]
    out: crate::server::Output,
}

/// How late (or early) messages arrive after their due time.
#[derive(Default)]
struct Lateness {
    count: AtomicU64,
    early: AtomicU64,
    late_us: Mutex<Vec<u32>>,
}

impl Lateness {
    /// A delivery arriving now; its body starts with its due time (nanoseconds, this
    /// process's clock).
    fn record(&self, body: &[u8]) {
        let now = now_ns();
        if let Some(due) = stamp_of(body) {
            if now < due {
                self.early.fetch_add(1, Ordering::Relaxed);
            }
            let us = (now.saturating_sub(due) / 1000).min(u64::from(u32::MAX)) as u32;
            if let Ok(mut all) = self.late_us.lock() {
                all.push(us);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(args: Args) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.out.dir)?;
    let binary = args.out.binary();
    let n = args.messages.max(1);
    println!(
        "scheduled: {n} messages × {} B due over {} s, starting {} s after publishing starts; one subscriber; fsync always",
        args.body_bytes, args.spread_s, args.lead_s
    );
    let data_root = tempfile::tempdir_in(&args.out.dir)?;
    let data = data_root.path().join("data");
    let mut json = Vec::new();
    rt.block_on(async {
        let client = http_client();
        let lateness = Arc::new(Lateness::default());
        let observer = lateness.clone();
        let sink = Sink::start(Arc::new(move |body: &[u8]| observer.record(body))).await?;
        let server = Server::start(&binary, &data)?;
        server
            .bench_queue(&client, "{}", std::slice::from_ref(&sink.url), 64, 1)
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let empty_rss = rss_of(server.pid());

        // The same instant on both clocks: the broker's (wall) and this process's, both in ns.
        let (wall0, ns0) = (unix_ns(), now_ns());
        let first_due_ns = ns0 + args.lead_s * 1_000_000_000;
        let spread_ns = args.spread_s * 1_000_000_000;
        let next = Arc::new(AtomicU64::new(0));
        let bar = progress(n, "publishing");
        let spec = Spec {
            messages: n,
            body_bytes: args.body_bytes,
            publishers: args.publishers,
            subscribers: 1,
            batch: args.batch.max(1),
            delivery_batch: 1,
            in_flight: 64,
        };
        let started = Instant::now();
        let (api, publisher_client, publisher_bar) = (server.api(), client.clone(), bar.clone());
        let body_bytes = args.body_bytes.max(crate::measure::STAMP_DIGITS);
        publish_concurrently(&spec, move |count| {
            let (api, client, bar, next) = (
                api.clone(),
                publisher_client.clone(),
                publisher_bar.clone(),
                next.clone(),
            );
            async move {
                let mut json = String::with_capacity(count as usize * (body_bytes + 64));
                json.push_str(r#"{"messages":["#);
                for k in 0..count {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let due_ns = first_due_ns + spread_ns * i / n;
                    // The broker takes whole milliseconds: rounded up, and stamped with the
                    // due time it will go by, in this process's clock.
                    let due_ms = (wall0 + (due_ns - ns0)).div_ceil(1_000_000);
                    let stamp = ns0 + (due_ms * 1_000_000 - wall0);
                    let mut body = format!("{stamp:020}");
                    body.extend(std::iter::repeat_n('x', body_bytes - body.len()));
                    if k > 0 {
                        json.push(',');
                    }
                    json.push_str(&format!(
                        r#"{{"body":"{body}","deliver_at":"{}"}}"#,
                        space::time::rfc3339(due_ms)
                    ));
                }
                json.push_str("]}");
                api.call(
                    &client,
                    hyper::Method::POST,
                    "/v1/queues/bench/messages/batch",
                    json,
                )
                .await?;
                bar.inc(count);
                Ok(())
            }
        })
        .await?;
        let publish_s = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if now_ns() >= first_due_ns {
            return Err(format!(
                "publishing took {publish_s:.1} s, past the first due time: raise --lead-s"
            )
            .into());
        }
        let full_rss = rss_of(server.pid());
        let per_message = full_rss.saturating_sub(empty_rss) as f64 / n as f64;
        let counts = server
            .api()
            .call(&client, hyper::Method::GET, "/v1/queues/bench", String::new())
            .await?;
        let counts: serde_json::Value = serde_json::from_slice(&counts)?;
        let scheduled = counts["counts"]["scheduled"].as_u64().unwrap_or(0);
        println!(
            "  published in {publish_s:.1} s ({:.0} messages/s); {scheduled} scheduled; resident set {:.0} MiB → {:.0} MiB: {per_message:.0} B per scheduled message",
            n as f64 / publish_s,
            empty_rss as f64 / 1048576.0,
            full_rss as f64 / 1048576.0
        );
        if scheduled != n {
            return Err(format!("{scheduled} of {n} messages scheduled").into());
        }
        if lateness.count.load(Ordering::Relaxed) != 0 {
            return Err("a message arrived before any was due".into());
        }

        let bar = progress(n, "falling due");
        let deadline = Instant::now()
            + Duration::from_nanos(first_due_ns.saturating_sub(now_ns()) + spread_ns)
            + Duration::from_secs(120);
        while lateness.count.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {n} delivered two minutes after the last due time",
                    lateness.count.load(Ordering::Relaxed)
                )
                .into());
            }
            bar.set_position(lateness.count.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
        let window_s = (now_ns().saturating_sub(first_due_ns)) as f64 / 1e9;
        let early = lateness.early.load(Ordering::Relaxed);
        let samples = std::mem::take(&mut *lateness.late_us.lock().map_err(|_| "poisoned")?);
        let l = Latencies::from_samples(samples);
        println!(
            "  due → delivered: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {early} early; {:.0} deliveries/s over the {} s window",
            l.p50_us as f64 / 1000.0,
            l.p99_us as f64 / 1000.0,
            l.max_us as f64 / 1000.0,
            n as f64 / window_s,
            args.spread_s
        );
        json.push(format!(
            r#"{{"workload":"scheduled","messages":{n},"body_bytes":{},"publish_per_s":{:.1},"rss_bytes_per_message":{per_message:.1},"late_p50_ms":{:.3},"late_p99_ms":{:.3},"late_max_ms":{:.3},"early":{early}}}"#,
            args.body_bytes,
            n as f64 / publish_s,
            l.p50_us as f64 / 1000.0,
            l.p99_us as f64 / 1000.0,
            l.max_us as f64 / 1000.0,
        ));
        if early != 0 {
            return Err(format!("{early} messages arrived before they were due").into());
        }
        server.kill()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    crate::measure::write_json_lines(args.out.json.as_deref(), &json)?;
    Ok(())
}
