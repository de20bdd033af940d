//! The `space` workload: the broker in one process, over real HTTP on loopback.
//!
//! 1. **Delivery**: M messages of S bytes from C concurrent publishers to a queue with K
//!    subscribers, each a loopback HTTP server answering 200 at once. Reported: publishes/s and
//!    deliveries/s, from the first publish to the last delivery.
//! 2. **Backlog**: N messages published with every subscriber down. Reported: RAM per
//!    undelivered message (growth of the process's resident set divided by N).
//! 3. **Restart**: the Space shut down and opened again over that backlog. Reported: the time
//!    from open to ready (replay of the whole log).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use handler::HttpDeliverer;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use space::{HandlerKind, NewMessage, SettingsPatch, Space, SpaceConfig, SubscriberSpec};
use storage::io::FsBackend;

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the benchmark's data (a temporary directory is made inside it).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Messages in the delivery measurement.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Messages in the backlog and restart measurements (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 64)]
    publishers: u64,
    /// Subscribers of the queue.
    #[arg(long, default_value_t = 2)]
    subscribers: u64,
    /// How often the Space's reclaimer looks for a checkpoint to take, in milliseconds.
    #[arg(long, default_value_t = space::limits::RECLAIM_INTERVAL_MS)]
    reclaim_interval_ms: u64,
    /// Also write results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A subscriber that answers 200 at once and counts what it received.
async fn sink() -> BenchResult<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new()))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, count))
}

fn open(dir: &std::path::Path, reclaim_interval_ms: u64) -> BenchResult<Space> {
    let config = SpaceConfig {
        reclaim_interval: Duration::from_millis(reclaim_interval_ms),
        ..SpaceConfig::new(storage::Config::default())
    };
    Ok(Space::open(
        Arc::new(FsBackend::open(dir)?),
        config,
        Arc::new(HttpDeliverer::new()),
    )?
    .0)
}

async fn publish_all(space: &Space, total: u64, publishers: u64, body: Bytes) -> BenchResult<()> {
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let space = space.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while i < total {
                space
                    .publish(
                        "bench",
                        NewMessage {
                            body: body.clone(),
                            content_type: None,
                            parents: Default::default(),
                            idempotency_key: None,
                            ..Default::default()
                        },
                    )
                    .await?;
                i += publishers;
            }
            Ok::<_, space::PublishError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn subscribe(space: &Space, endpoint: String) -> BenchResult<()> {
    space
        .add_subscriber(
            "bench",
            SubscriberSpec {
                endpoint,
                handler: HandlerKind::Webhook,
                secret: None,
                max_in_flight: 64,
                ..Default::default()
            },
        )
        .await?;
    Ok(())
}

pub fn run(args: Args) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.dir)?;
    let body = Bytes::from(vec![b'x'; args.body_bytes]);
    let mut json = Vec::new();
    println!(
        "space benchmark: {} B bodies, {} publishers, {} subscribers, fsync always",
        args.body_bytes, args.publishers, args.subscribers
    );

    // 1. Delivery over loopback HTTP.
    let data = tempfile::tempdir_in(&args.dir)?;
    let (publish_s, deliver_s) = rt.block_on(async {
        let space = open(data.path(), args.reclaim_interval_ms)?;
        space.put_queue("bench", &SettingsPatch::default()).await?;
        let mut counters = Vec::new();
        for _ in 0..args.subscribers {
            let (url, count) = sink().await?;
            subscribe(&space, url).await?;
            counters.push(count);
        }
        let started = Instant::now();
        publish_all(&space, args.messages, args.publishers, body.clone()).await?;
        let publish_s = started.elapsed().as_secs_f64();
        let want = args.messages * args.subscribers;
        let deadline = Instant::now() + Duration::from_secs(600);
        while counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            < want
        {
            if Instant::now() > deadline {
                return Err("deliveries did not finish within 10 minutes".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let deliver_s = started.elapsed().as_secs_f64();
        space.shutdown(Duration::from_secs(5)).await;
        Ok::<_, Box<dyn std::error::Error>>((publish_s, deliver_s))
    })?;
    drop(data);
    let deliveries = (args.messages * args.subscribers) as f64;
    println!(
        "delivery: {} messages → {} deliveries in {:.2} s: {:.0} publishes/s, {:.0} deliveries/s",
        args.messages,
        args.messages * args.subscribers,
        deliver_s,
        args.messages as f64 / publish_s,
        deliveries / deliver_s
    );
    json.push(format!(
        r#"{{"workload":"space","measure":"delivery","messages":{},"subscribers":{},"publishes_per_s":{:.1},"deliveries_per_s":{:.1}}}"#,
        args.messages,
        args.subscribers,
        args.messages as f64 / publish_s,
        deliveries / deliver_s
    ));

    // The raw HTTP limit in the same run: the same number of 1 KiB POSTs, from as many
    // concurrent tasks through the same pooled client, straight to the same kind of servers.
    let raw_per_s = rt.block_on(http_limit(
        args.messages * args.subscribers,
        args.publishers,
        args.subscribers,
        body.clone(),
    ))?;
    println!(
        "http limit: {raw_per_s:.0} plain POSTs/s to {} loopback servers; syncbrok delivers at {:.2}× that, with durable publishes on top",
        args.subscribers,
        deliveries / deliver_s / raw_per_s
    );
    json.push(format!(
        r#"{{"workload":"space","measure":"http_limit","requests_per_s":{raw_per_s:.1},"ratio":{:.3}}}"#,
        deliveries / deliver_s / raw_per_s
    ));

    // 2. Backlog with every subscriber down, 3. restart over it.
    if args.backlog > 0 {
        let data = tempfile::tempdir_in(&args.dir)?;
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            format!("http://{}/hook", l.local_addr()?)
        };
        let (per_message, publish_s) = rt.block_on(async {
            let space = open(data.path(), args.reclaim_interval_ms)?;
            // Retries far apart: the subscribers stay down for the whole run.
            let patch: SettingsPatch = serde_json_patch();
            space.put_queue("bench", &patch).await?;
            for i in 0..args.subscribers {
                subscribe(&space, format!("{down}/{i}")).await?;
            }
            let before = rss_bytes();
            let started = Instant::now();
            publish_all(&space, args.backlog, args.publishers, body.clone()).await?;
            let publish_s = started.elapsed().as_secs_f64();
            let after = rss_bytes();
            space.shutdown(Duration::from_secs(5)).await;
            Ok::<_, Box<dyn std::error::Error>>((
                after.saturating_sub(before) as f64 / args.backlog as f64,
                publish_s,
            ))
        })?;
        println!(
            "backlog: {} messages published in {:.1} s with the subscribers down; RAM per undelivered message: {:.0} bytes",
            args.backlog, publish_s, per_message
        );
        let reopen_s = rt.block_on(async {
            let started = Instant::now();
            let space = open(data.path(), args.reclaim_interval_ms)?;
            let s = started.elapsed().as_secs_f64();
            let undelivered = space.queue_info("bench")?.counts;
            space.shutdown(Duration::from_secs(5)).await;
            let pending = undelivered.ready + undelivered.delivering;
            if pending != args.backlog {
                return Err(
                    format!("{pending} of {} messages back after restart", args.backlog).into(),
                );
            }
            Ok::<_, Box<dyn std::error::Error>>(s)
        })?;
        println!(
            "restart: open to ready with {} undelivered messages in {:.2} s",
            args.backlog, reopen_s
        );
        json.push(format!(
            r#"{{"workload":"space","measure":"backlog","messages":{},"ram_bytes_per_message":{:.1},"restart_s":{:.3}}}"#,
            args.backlog, per_message, reopen_s
        ));
    }
    crate::measure::write_json_lines(args.json.as_deref(), &json)?;
    Ok(())
}

/// POSTs `total` bodies over `concurrency` tasks to `servers` sinks; returns requests/s.
async fn http_limit(total: u64, concurrency: u64, servers: u64, body: Bytes) -> BenchResult<f64> {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    let mut urls = Vec::new();
    let mut counters = Vec::new();
    for _ in 0..servers {
        let (url, count) = sink().await?;
        urls.push(url);
        counters.push(count);
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let client = client.clone();
        let urls = urls.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < total {
                let req = hyper::Request::post(&urls[(i % urls.len() as u64) as usize])
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(body.clone()))?;
                let response = client.request(req).await?;
                http_body_util::BodyExt::collect(response.into_body()).await?;
                i += concurrency;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let received: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    if received != total {
        return Err(format!("the servers got {received} of {total} requests").into());
    }
    Ok(total as f64 / seconds)
}

/// Settings for the backlog: retries a day apart, kept forever.
fn serde_json_patch() -> SettingsPatch {
    SettingsPatch {
        retry: Some(space::settings::RetryPatch {
            max_attempts: Some(0),
            initial_backoff: Some(space::Span::secs(86_400)),
            max_backoff: Some(space::Span::secs(86_400)),
        }),
        ..SettingsPatch::default()
    }
}
