//! The `joins` workload, through the real binary: D diamonds of six messages each — a root,
//! four children of the root, and a last message — published in batches (`parent_index`,
//! `parent_indexes`), to a queue with two subscribers that answer at once.
//!
//! Two shapes, alternated round by round in one run so that both see the same machine:
//! - **tree**: the last message has one parent (the first child): five edges per diamond;
//! - **join**: the last message waits for all four children: eight edges per diamond.
//!
//! Reported per shape: deliveries/s from the first publish to the last delivery (median of
//! the rounds) and their ratio; how many messages any subscriber received before one of their
//! parents (there must be none); and, with the subscribers down, the broker's resident set
//! per undelivered message and what each extra parent of a join costs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::measure::{BenchResult, median, progress, rss_of};
use crate::round::{Spec, publish_concurrently};
use crate::server::Server;
use crate::sink::{HttpClient, Sink, http_client, reserve_port};

#[derive(clap::Args)]
pub struct Args {
    /// Diamonds per round (six messages each).
    #[arg(long, default_value_t = 5_000)]
    diamonds: u64,
    /// Rounds per shape, alternated.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Diamonds published with the subscribers down, for the memory figures (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Diamonds per batch publish request.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent batch publishers.
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    #[command(flatten)]
    out: crate::server::Output,
}

const SUBSCRIBERS: usize = 2;
const MESSAGES_PER_DIAMOND: u64 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Tree,
    Join,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Tree => "tree",
            Shape::Join => "join",
        }
    }

    /// The batch entries of diamond `d`, whose root is entry `at` of the batch: bodies say
    /// which diamond and which place in it.
    fn entries(self, d: u64, at: u64, json: &mut String) {
        let last = match self {
            Shape::Tree => format!(r#""parent_index":{}"#, at + 1),
            Shape::Join => format!(
                r#""parent_indexes":[{},{},{},{}]"#,
                at + 1,
                at + 2,
                at + 3,
                at + 4
            ),
        };
        json.push_str(&format!(r#"{{"body":"{d} 0"}}"#));
        for k in 1..=4 {
            json.push_str(&format!(r#",{{"body":"{d} {k}","parent_index":{at}}}"#));
        }
        json.push_str(&format!(r#",{{"body":"{d} 5",{last}}}"#));
    }

    /// The places in a diamond that must have arrived before place `k`.
    fn parents_of(self, k: u8) -> &'static [u8] {
        match (self, k) {
            (_, 0) => &[],
            (_, 1..=4) => &[0],
            (Shape::Tree, _) => &[1],
            (Shape::Join, _) => &[1, 2, 3, 4],
        }
    }
}

/// What one subscriber received, per diamond: a bit per place.
#[derive(Default)]
struct Arrivals {
    seen: Mutex<HashMap<u64, u8>>,
    count: AtomicU64,
    out_of_order: AtomicU64,
}

impl Arrivals {
    fn record(&self, shape: Shape, body: &[u8]) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let text = std::str::from_utf8(body).unwrap_or("");
        let Some((d, k)) = text
            .split_once(' ')
            .and_then(|(d, k)| Some((d.parse::<u64>().ok()?, k.parse::<u8>().ok()?)))
        else {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let bits = seen.entry(d).or_default();
        if shape.parents_of(k).iter().any(|p| *bits & (1 << p) == 0) {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        *bits |= 1 << k;
    }
}

/// Publishes `diamonds` diamonds of `shape` to queue `bench`, `batch` diamonds per request.
async fn publish(
    server: &Server,
    client: &HttpClient,
    shape: Shape,
    diamonds: u64,
    args: &Args,
) -> BenchResult<()> {
    let spec = Spec {
        messages: diamonds,
        body_bytes: 0,
        publishers: args.publishers,
        subscribers: SUBSCRIBERS as u64,
        batch: args.batch.clamp(1, 1000 / MESSAGES_PER_DIAMOND),
        delivery_batch: 1,
        in_flight: 64,
    };
    let next = Arc::new(AtomicU64::new(0));
    let (api, client) = (server.api(), client.clone());
    publish_concurrently(&spec, move |count| {
        let (api, client, next) = (api.clone(), client.clone(), next.clone());
        async move {
            let mut json = String::from(r#"{"messages":["#);
            for k in 0..count {
                if k > 0 {
                    json.push(',');
                }
                shape.entries(
                    next.fetch_add(1, Ordering::Relaxed),
                    k * MESSAGES_PER_DIAMOND,
                    &mut json,
                );
            }
            json.push_str("]}");
            api.call(
                &client,
                hyper::Method::POST,
                "/v1/queues/bench/messages/batch",
                json,
            )
            .await?;
            Ok(())
        }
    })
    .await
}

/// One round of one shape on a fresh broker: deliveries/s and messages out of order.
async fn round(shape: Shape, args: &Args, data: &std::path::Path) -> BenchResult<(f64, u64)> {
    let client = http_client();
    let mut sinks = Vec::new();
    let mut arrivals = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let a = Arc::new(Arrivals::default());
        let observer = a.clone();
        sinks.push(Sink::start(Arc::new(move |body: &[u8]| observer.record(shape, body))).await?);
        arrivals.push(a);
    }
    let server = Server::start(&args.out.binary(), data)?;
    let urls: Vec<String> = sinks.iter().map(|s| s.url.clone()).collect();
    server.bench_queue(&client, "{}", &urls, 64, 1).await?;
    let want = args.diamonds * MESSAGES_PER_DIAMOND;
    let started = Instant::now();
    publish(&server, &client, shape, args.diamonds, args).await?;
    let bar = progress(want * SUBSCRIBERS as u64, shape.name());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got: u64 = arrivals
            .iter()
            .map(|a| a.count.load(Ordering::Relaxed))
            .sum();
        bar.set_position(got);
        if got >= want * SUBSCRIBERS as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{shape:?}: {got} deliveries after five minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.finish_and_clear();
    let per_s = (want * SUBSCRIBERS as u64) as f64 / started.elapsed().as_secs_f64();
    let out_of_order = arrivals
        .iter()
        .map(|a| a.out_of_order.load(Ordering::Relaxed))
        .sum();
    server.kill()?;
    Ok((per_s, out_of_order))
}

/// The broker's resident set per undelivered message, with its subscribers down.
async fn backlog(shape: Shape, args: &Args, data: &std::path::Path) -> BenchResult<f64> {
    let client = http_client();
    let server = Server::start(&args.out.binary(), data)?;
    let down: Vec<String> = (0..SUBSCRIBERS)
        .map(|_| reserve_port().map(|a| format!("http://{a}/hook")))
        .collect::<BenchResult<_>>()?;
    server.bench_queue(&client, "{}", &down, 64, 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_of(server.pid());
    publish(&server, &client, shape, args.backlog, args).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_of(server.pid());
    server.kill()?;
    Ok(after.saturating_sub(before) as f64 / (args.backlog * MESSAGES_PER_DIAMOND) as f64)
}

pub fn run(args: Args) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.out.dir)?;
    println!(
        "joins: {} diamonds × 6 messages, {SUBSCRIBERS} subscribers, {} rounds per shape, alternated; fsync always",
        args.diamonds, args.rounds
    );
    let root = tempfile::tempdir_in(&args.out.dir)?;
    let mut json = Vec::new();
    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut violations = 0;
    rt.block_on(async {
        for r in 0..args.rounds {
            for shape in [Shape::Tree, Shape::Join] {
                let data = root.path().join(format!("{}-{r}", shape.name()));
                let (per_s, out_of_order) = round(shape, &args, &data).await?;
                println!(
                    "  round {r} {:<4}: {per_s:>9.0} deliveries/s, {out_of_order} before a parent",
                    shape.name()
                );
                json.push(format!(
                    r#"{{"workload":"joins","round":{r},"shape":"{}","diamonds":{},"deliveries_per_s":{per_s:.1},"out_of_order":{out_of_order}}}"#,
                    shape.name(),
                    args.diamonds
                ));
                rates.entry(shape.name()).or_default().push(per_s);
                violations += out_of_order;
            }
        }
        let tree = median(rates.get_mut("tree").map_or(&mut [][..], |v| &mut v[..]));
        let join = median(rates.get_mut("join").map_or(&mut [][..], |v| &mut v[..]));
        println!(
            "  median: tree {tree:.0}/s, join {join:.0}/s: join/tree {:.2}",
            join / tree
        );
        if args.backlog > 0 {
            let tree_b = backlog(Shape::Tree, &args, &root.path().join("backlog-tree")).await?;
            let join_b = backlog(Shape::Join, &args, &root.path().join("backlog-join")).await?;
            // Three extra parents per diamond of six messages.
            let per_parent = (join_b - tree_b) * MESSAGES_PER_DIAMOND as f64 / 3.0;
            println!(
                "  undelivered, subscribers down ({} messages): tree {tree_b:.0} B/message, join {join_b:.0} B/message: {per_parent:.0} B per extra parent",
                args.backlog * MESSAGES_PER_DIAMOND
            );
            json.push(format!(
                r#"{{"workload":"joins","backlog_messages":{},"tree_rss_bytes_per_message":{tree_b:.1},"join_rss_bytes_per_message":{join_b:.1},"bytes_per_extra_parent":{per_parent:.1}}}"#,
                args.backlog * MESSAGES_PER_DIAMOND
            ));
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    crate::measure::write_json_lines(args.out.json.as_deref(), &json)?;
    if violations > 0 {
        return Err(format!("{violations} messages arrived before a parent").into());
    }
    Ok(())
}
