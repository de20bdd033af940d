//! The `recovery` and `backlog` workloads, through the real binary: N messages published (in
//! batches over HTTP) to a queue whose K subscribers are down. Reported: the broker's resident
//! set per undelivered message and the data directory's size; then `kill -9` and a restart,
//! timed from spawning the process to the API being served (recovery done), with the resident
//! set again and a check that all N messages are still owed; then, for `backlog`, the
//! subscribers come up and the drain rate is measured.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::measure::{BenchResult, Deliveries, progress, rss_of, stamped_body};
use crate::round::{Spec, publish_concurrently};
use crate::server::Server;
use crate::sink::{Sink, http_client, reserve_port};

#[derive(clap::Args)]
pub struct Common {
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Subscribers (K), down while publishing.
    #[arg(long, default_value_t = 2)]
    subscribers: u64,
    /// Messages per batch publish request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Concurrent batch publishers.
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    #[command(flatten)]
    out: crate::server::Output,
}

#[derive(clap::Args)]
pub struct RecoveryArgs {
    /// Undelivered messages to recover (N).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
pub struct BacklogArgs {
    /// Messages published with the subscribers down (N).
    #[arg(long, default_value_t = 10_000_000)]
    messages: u64,
    #[command(flatten)]
    common: Common,
}

pub fn recovery(args: RecoveryArgs) -> BenchResult<()> {
    run(args.messages, &args.common, false)
}

pub fn backlog(args: BacklogArgs) -> BenchResult<()> {
    run(args.messages, &args.common, true)
}

/// Bytes under `dir`, recursively.
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            // Allocated blocks, not the apparent size: preallocated segments count in full.
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Messages still owed to someone: waiting, ready or being delivered.
async fn undelivered(server: &Server, client: &crate::sink::HttpClient) -> BenchResult<u64> {
    let answer = server
        .call(
            client,
            hyper::Method::GET,
            "/v1/queues/bench",
            String::new(),
        )
        .await?;
    let queue: serde_json::Value = serde_json::from_slice(&answer)?;
    let counts = &queue["counts"];
    Ok(["waiting", "ready", "delivering"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap_or(0))
        .sum())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn run(messages: u64, args: &Common, drain: bool) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.out.dir)?;
    let binary = args.out.binary();
    let workload = if drain { "backlog" } else { "recovery" };
    println!(
        "{workload}: {messages} messages × {} B in batches of {}, {} subscribers down; syncbrok with fsync always",
        args.body_bytes, args.batch, args.subscribers
    );
    let data_root = tempfile::tempdir_in(&args.out.dir)?;
    let data = data_root.path().join("data");
    let mut json = Vec::new();
    rt.block_on(async {
        let client = http_client();
        let down: Vec<_> = (0..args.subscribers)
            .map(|_| reserve_port())
            .collect::<Result<_, _>>()?;
        let urls: Vec<String> = down.iter().map(|a| format!("http://{a}/hook")).collect();

        let server = Server::start(&binary, &data)?;
        // Retries never give up, and come back within a second once the subscribers are up.
        server
            .bench_queue(
                &client,
                r#"{"retry":{"max_attempts":0,"initial_backoff":"100ms","max_backoff":"1s"}}"#,
                &urls,
                64,
                1,
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let empty_rss = rss_of(server.pid());

        let bar = progress(messages, "publishing");
        let spec = Spec {
            messages,
            body_bytes: args.body_bytes,
            publishers: args.publishers,
            subscribers: args.subscribers,
            batch: args.batch.max(1),
            delivery_batch: 1,
            in_flight: 64,
        };
        let started = Instant::now();
        let (api, publisher_client, publisher_bar) = (server.api(), client.clone(), bar.clone());
        let body_bytes = spec.body_bytes;
        publish_concurrently(&spec, move |n| {
            let (api, client, bar) = (api.clone(), publisher_client.clone(), publisher_bar.clone());
            async move {
                let bodies: Vec<Vec<u8>> = (0..n).map(|_| stamped_body(body_bytes)).collect();
                api.publish_batch(&client, &bodies).await?;
                bar.inc(n);
                Ok(())
            }
        })
        .await?;
        let publish_s = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let full_rss = rss_of(server.pid());
        let disk = disk_usage(&data);
        let per_message = full_rss.saturating_sub(empty_rss) as f64 / messages as f64;
        println!(
            "  published in {publish_s:.1} s ({:.0} messages/s); resident set {:.0} MiB → {:.0} MiB: {per_message:.0} B per undelivered message; data directory {:.0} MiB",
            messages as f64 / publish_s,
            mib(empty_rss),
            mib(full_rss),
            mib(disk)
        );

        server.kill()?;
        let server = Server::start(&binary, &data)?;
        let ready_s = server.start_to_ready.as_secs_f64();
        let after_rss = rss_of(server.pid());
        let owed = undelivered(&server, &client).await?;
        let per_message_after = after_rss.saturating_sub(empty_rss) as f64 / messages as f64;
        println!(
            "  kill -9, restart: ready in {ready_s:.2} s with {owed} undelivered; resident set {:.0} MiB: {per_message_after:.0} B per undelivered message",
            mib(after_rss)
        );
        if owed != messages {
            return Err(format!("{owed} of {messages} messages owed after the restart").into());
        }
        json.push(format!(
            r#"{{"workload":"{workload}","messages":{messages},"body_bytes":{},"subscribers":{},"publish_per_s":{:.1},"rss_bytes_per_message":{per_message:.1},"disk_bytes":{disk},"restart_to_ready_s":{ready_s:.3},"rss_bytes_per_message_after_restart":{per_message_after:.1}}}"#,
            args.body_bytes,
            args.subscribers,
            messages as f64 / publish_s
        ));

        if drain {
            let deliveries = Deliveries::new();
            let mut sinks = Vec::new();
            let started = Instant::now();
            for addr in &down {
                let deliveries = deliveries.clone();
                sinks.push(
                    Sink::start_at(*addr, Arc::new(move |body: &[u8]| deliveries.record(body)))
                        .await?,
                );
            }
            let want = messages * args.subscribers;
            let bar = progress(want, "draining");
            deliveries
                .wait_for(want, &bar)
                .await?;
            bar.finish_and_clear();
            let drain_s = started.elapsed().as_secs_f64();
            println!(
                "  subscribers up: {want} deliveries in {drain_s:.1} s: {:.0} deliveries/s",
                want as f64 / drain_s
            );
            json.push(format!(
                r#"{{"workload":"backlog","measure":"drain","deliveries":{want},"seconds":{drain_s:.3},"deliveries_per_s":{:.1}}}"#,
                want as f64 / drain_s
            ));
        }
        server.kill()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    crate::measure::write_json_lines(args.out.json.as_deref(), &json)?;
    Ok(())
}
