//! The `fanout` workload, side by side: M messages of S bytes from C concurrent publishers,
//! each delivered to K subscribers that acknowledge every one, against each target in turn in
//! one run, for several rounds. Reported per target: publishes/s, deliveries/s (first publish
//! to last delivery), publish → delivery latency p50/p99/max, the server's peak resident set
//! and the CPU time it used; then the ratios of syncbrok to each other target, per round and
//! their median.
//!
//! Targets:
//! - `syncbrok`: the real binary (`fsync: always`), publishes over its HTTP API (one message per
//!   request, or `--batch` per batch request), K webhook subscribers on loopback.
//! - `http-limit`: no broker; each publisher POSTs every message straight to the K subscriber
//!   servers with the same client. The ceiling for any broker that pushes over HTTP here.
//! - `nats`, `rabbitmq`: see `peers.rs`.

use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::try_join_all;
use indicatif::ProgressBar;

use crate::measure::{BenchResult, Deliveries, cpu_of, median, progress, stamped_body};
use crate::peers::{Nats, Rabbit};
use crate::round::{Outcome, Round, Spec, publish_concurrently};
use crate::server::Server;
use crate::sink::{Sink, http_client, send};

#[derive(clap::Args)]
pub struct Args {
    /// Targets, in the order each round runs them: syncbrok, http-limit, nats, rabbitmq.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "syncbrok,http-limit",
        value_parser = ["syncbrok", "http-limit", "nats", "rabbitmq"]
    )]
    targets: Vec<String>,
    /// Messages per target and round (M).
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Body size in bytes (S).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Concurrent publishers (C).
    #[arg(long, default_value_t = 64)]
    publishers: u64,
    /// Subscribers, each receiving every message (K).
    #[arg(long, default_value_t = 2)]
    subscribers: u64,
    /// Messages per publish request (syncbrok's batch publish; for the peers, that many
    /// publishes in flight before waiting for their acknowledgements).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Messages per delivery request to each syncbrok subscriber (its `batch.max_messages`;
    /// above 1, CloudEvents batches of what is ready). The other targets deliver one by one.
    #[arg(long, default_value_t = 1)]
    delivery_batch: u32,
    /// Unacknowledged deliveries allowed per subscriber: syncbrok's `max_in_flight`, NATS's
    /// `max_ack_pending`, RabbitMQ's prefetch.
    #[arg(long, default_value_t = 64)]
    in_flight: u32,
    /// Rounds over all targets; ratios are reported per round and as medians.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// NATS server URL (JetStream enabled).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The NATS server's pid, for its resident set and CPU time.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// RabbitMQ URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq_url: String,
    /// The RabbitMQ server's (Erlang VM's) pid, for its resident set and CPU time.
    #[arg(long)]
    rabbitmq_pid: Option<u32>,
    /// Seconds syncbrok is left idle after its last round, to measure its idle CPU (0 skips).
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    #[command(flatten)]
    out: crate::server::Output,
}

/// The server's fdatasync calls since it started, from its `/metrics`.
async fn fsyncs_of(server: &Server, client: &crate::sink::HttpClient) -> BenchResult<u64> {
    let text = server
        .call(client, hyper::Method::GET, "/metrics", String::new())
        .await?;
    std::str::from_utf8(&text)?
        .lines()
        .find_map(|l| l.strip_prefix("syncbrok_log_fsyncs_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no syncbrok_log_fsyncs_total in /metrics".into())
}

/// Counts deliveries at `K` sinks.
async fn sinks(k: u64, deliveries: &Arc<Deliveries>) -> BenchResult<Vec<Sink>> {
    let mut sinks = Vec::new();
    for _ in 0..k {
        let deliveries = deliveries.clone();
        sinks.push(Sink::start(Arc::new(move |body: &[u8]| deliveries.record(body))).await?);
    }
    Ok(sinks)
}

async fn syncbrok(
    spec: &Spec,
    binary: &std::path::Path,
    dir: &std::path::Path,
    idle: Duration,
    bar: &ProgressBar,
) -> BenchResult<(Outcome, Option<f64>)> {
    let data = tempfile::tempdir_in(dir)?;
    let server = Server::start(binary, &data.path().join("data"))?;
    let client = http_client();
    let deliveries = Deliveries::new();
    let sinks = sinks(spec.subscribers, &deliveries).await?;
    let urls: Vec<String> = sinks.iter().map(|s| s.url.clone()).collect();
    server
        .bench_queue(&client, "{}", &urls, spec.in_flight, spec.delivery_batch)
        .await?;

    let pid = server.pid();
    let fsyncs_before = fsyncs_of(&server, &client).await?;
    let mut measure = Round::start(Some(pid));
    let (api, publisher_client, spec_copy) = (server.api(), client.clone(), *spec);
    publish_concurrently(spec, move |n| {
        let (api, client, spec) = (api.clone(), publisher_client.clone(), spec_copy);
        async move {
            if n == 1 && spec.batch == 1 {
                api.publish(&client, stamped_body(spec.body_bytes), None)
                    .await?;
            } else {
                let bodies: Vec<Vec<u8>> = (0..n).map(|_| stamped_body(spec.body_bytes)).collect();
                api.publish_batch(&client, &bodies).await?;
            }
            Ok(())
        }
    })
    .await?;
    measure.published();
    let mut outcome = measure.finish("syncbrok", spec, &deliveries, bar).await?;
    outcome.fsyncs = Some(fsyncs_of(&server, &client).await? - fsyncs_before);
    if deliveries.unstamped() > 0 {
        return Err(format!("{} deliveries lost their stamp", deliveries.unstamped()).into());
    }
    // Idle: nothing to deliver, nothing to publish.
    let idle_cpu = if idle > Duration::ZERO {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = cpu_of(pid);
        tokio::time::sleep(idle).await;
        Some((cpu_of(pid) - before).as_secs_f64() / idle.as_secs_f64())
    } else {
        None
    };
    server.kill()?;
    Ok((outcome, idle_cpu))
}

/// No broker: each publisher POSTs every message straight to the K subscribers, each request
/// built by syncbrok's own webhook handler (the same headers syncbrok sends), with the same
/// client the publishers use.
async fn http_limit(spec: &Spec, bar: &ProgressBar) -> BenchResult<Outcome> {
    let client = http_client();
    let deliveries = Deliveries::new();
    let sinks = sinks(spec.subscribers, &deliveries).await?;
    let urls: Arc<[Arc<str>]> = sinks.iter().map(|s| Arc::from(s.url.as_str())).collect();
    let queue: Arc<str> = Arc::from("bench");
    let mut measure = Round::start(None);
    let spec_copy = *spec;
    publish_concurrently(spec, move |n| {
        let (client, urls, queue, spec) = (client.clone(), urls.clone(), queue.clone(), spec_copy);
        async move {
            for _ in 0..n {
                let body = Bytes::from(stamped_body(spec.body_bytes));
                let message = uuid::Uuid::now_v7();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                try_join_all(urls.iter().enumerate().map(|(k, url)| {
                    let attempt = space::Attempt {
                        message,
                        queue: queue.clone(),
                        subscriber: k as u64 + 1,
                        endpoint: url.clone(),
                        handler: space::HandlerKind::Webhook,
                        secret: None,
                        previous_secret: None,
                        body: body.clone(),
                        content_type: "application/octet-stream".into(),
                        event_type: None,
                        parents: Default::default(),
                        trace: None,
                        published_at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
                        number: 1,
                        headers: Default::default(),
                    };
                    let client = &client;
                    async move {
                        let request = handler::webhook_request(&attempt, now.as_secs())?;
                        let (status, _) = send(client, request).await?;
                        if !status.is_success() {
                            return Err(format!("a sink answered {status}").into());
                        }
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    }
                }))
                .await?;
            }
            Ok(())
        }
    })
    .await?;
    measure.published();
    measure.finish("http-limit", spec, &deliveries, bar).await
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn ms(us: u32) -> String {
    format!("{:.2}", f64::from(us) / 1000.0)
}

fn print_table(spec: &Spec, outcomes: &[Outcome]) {
    println!(
        "  {:<11} {:>11} {:>13} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}",
        "target",
        "publishes/s",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "peak RSS",
        "CPU s",
        "CPU µs/msg",
        "bench CPU s"
    );
    for o in outcomes {
        println!(
            "  {:<11} {:>11.0} {:>13.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11.1}",
            o.target,
            o.publishes_per_s,
            o.deliveries_per_s,
            ms(o.latency.p50_us),
            ms(o.latency.p99_us),
            ms(o.latency.max_us),
            mib(o.peak_rss),
            if o.cpu_s.is_finite() {
                format!("{:.1}", o.cpu_s)
            } else {
                "-".into()
            },
            o.cpu_us_per_message(spec)
                .map_or("-".into(), |us| format!("{us:.0}")),
            o.bench_cpu_s
        );
    }
}

pub fn run(args: Args) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.out.dir)?;
    let spec = Spec {
        messages: args.messages,
        body_bytes: args.body_bytes,
        publishers: args.publishers,
        subscribers: args.subscribers,
        batch: args.batch.max(1),
        delivery_batch: args.delivery_batch.max(1),
        in_flight: args.in_flight,
    };
    let binary = args.out.binary();
    let nats = Nats {
        url: args.nats_url.clone(),
        pid: args.nats_pid,
    };
    let rabbit = Rabbit {
        url: args.rabbitmq_url.clone(),
        pid: args.rabbitmq_pid,
    };
    println!(
        "fanout: {} messages × {} B, {} publishers, {} subscribers, {} per publish, {} in flight per subscriber, syncbrok delivering up to {} per request; syncbrok with fsync always",
        spec.messages,
        spec.body_bytes,
        spec.publishers,
        spec.subscribers,
        spec.batch,
        spec.in_flight,
        spec.delivery_batch
    );
    let mut json = Vec::new();
    // The disk's own durable-write rate, for scale: what one fsync per publish would allow.
    let disk_rate = crate::storage_bench::fdatasync_rate(&args.out.dir, spec.body_bytes, 2.0)
        .map_err(|e| e.to_string())?;
    println!(
        "this disk: {disk_rate:.0} fdatasync/s of one {} B write each",
        spec.body_bytes
    );
    json.push(format!(
        r#"{{"workload":"fanout","measure":"disk","fdatasync_per_s":{disk_rate:.1}}}"#
    ));
    let mut rounds: Vec<Vec<Outcome>> = Vec::new();
    let mut idle_cpu = None;
    for round in 1..=args.rounds {
        let mut outcomes = Vec::new();
        for target in &args.targets {
            let bar = progress(spec.deliveries(), &format!("round {round}: {target}"));
            let last_round = round == args.rounds;
            let outcome = rt.block_on(async {
                match target.as_str() {
                    "syncbrok" => {
                        let idle = if last_round {
                            Duration::from_secs(args.idle_seconds)
                        } else {
                            Duration::ZERO
                        };
                        let (outcome, idle) =
                            syncbrok(&spec, &binary, &args.out.dir, idle, &bar).await?;
                        if idle.is_some() {
                            idle_cpu = idle;
                        }
                        Ok(outcome)
                    }
                    "http-limit" => http_limit(&spec, &bar).await,
                    "nats" => nats.fanout(&spec, round, &bar).await,
                    "rabbitmq" => rabbit.fanout(&spec, round, &bar).await,
                    other => Err(format!("unknown target {other:?}").into()),
                }
            });
            bar.finish_and_clear();
            let outcome = outcome.map_err(|e| format!("{target}: {e}"))?;
            json.push(outcome.json(&spec, round));
            outcomes.push(outcome);
        }
        println!("round {round}:");
        print_table(&spec, &outcomes);
        if let Some(n) = outcomes.iter().find_map(|o| o.fsyncs) {
            println!(
                "  syncbrok: {n} fsyncs for {} publish requests ({:.1} requests per fsync)",
                spec.messages.div_ceil(spec.batch),
                spec.messages.div_ceil(spec.batch) as f64 / n.max(1) as f64
            );
        }
        rounds.push(outcomes);
    }

    // Ratios of syncbrok to each other target, per round, then their medians.
    let of = |outcomes: &[Outcome], name: &str| outcomes.iter().find(|o| o.target == name).cloned();
    if args.targets.iter().any(|t| t == "syncbrok") {
        println!("syncbrok ÷ target (median of {} rounds):", rounds.len());
        for other in args.targets.iter().filter(|t| *t != "syncbrok") {
            let mut deliveries = Vec::new();
            let mut p99 = Vec::new();
            let mut rss = Vec::new();
            let mut cpu = Vec::new();
            for outcomes in &rounds {
                if let (Some(s), Some(o)) = (of(outcomes, "syncbrok"), of(outcomes, other)) {
                    if let (Some(a), Some(b)) =
                        (s.cpu_us_per_message(&spec), o.cpu_us_per_message(&spec))
                    {
                        cpu.push(a / b);
                    }
                    deliveries.push(s.deliveries_per_s / o.deliveries_per_s);
                    p99.push(f64::from(s.latency.p99_us) / f64::from(o.latency.p99_us.max(1)));
                    if o.peak_rss > 0 {
                        rss.push(s.peak_rss as f64 / o.peak_rss as f64);
                    }
                }
            }
            let (d, p, r, c) = (
                median(&mut deliveries),
                median(&mut p99),
                median(&mut rss),
                median(&mut cpu),
            );
            let times = |x: f64| {
                if x.is_finite() {
                    format!("{x:.2}×")
                } else {
                    "-".into()
                }
            };
            let json_number = |x: f64| {
                if x.is_finite() {
                    format!("{x:.3}")
                } else {
                    "null".into()
                }
            };
            println!(
                "  vs {other:<11} deliveries/s {d:.2}×   p99 latency {p:.2}×   peak RSS {}   server CPU per message {}",
                times(r),
                times(c)
            );
            json.push(format!(
                r#"{{"workload":"fanout","ratio_of":"syncbrok","to":"{other}","batch":{},"delivery_batch":{},"deliveries":{d:.3},"p99":{p:.3},"peak_rss":{},"cpu_per_message":{}}}"#,
                spec.batch,
                spec.delivery_batch,
                json_number(r),
                json_number(c)
            ));
        }
    }
    if let Some(idle) = idle_cpu {
        println!(
            "syncbrok idle for {} s after its last round: {:.2} % of a core",
            args.idle_seconds,
            idle * 100.0
        );
        json.push(format!(
            r#"{{"workload":"fanout","measure":"idle_cpu","seconds":{},"core_fraction":{idle:.5}}}"#,
            args.idle_seconds
        ));
    }
    crate::measure::write_json_lines(args.out.json.as_deref(), &json)?;
    Ok(())
}
