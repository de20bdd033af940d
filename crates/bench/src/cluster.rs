//! The `cluster` workload: syncbrok on its own against a cluster of three `syncbrok serve
//! --cluster` processes on loopback, in the same run, on the fan-out workload (M messages of S
//! bytes from C publishers to the leader, each delivered to K subscribers). Reported per
//! target and round: publish → acknowledgement latency (p50/p99), publishes/s, deliveries/s;
//! then the cluster's ratios to the single node. Then failovers: the leader of a fresh cluster
//! is killed with SIGKILL N times while a publisher keeps publishing; each time, the time
//! from the kill to the first delivery of a message published after it (a new leader elected,
//! caught up, delivering), and the killed node is started again and caught up before the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::measure::{
    BenchResult, Deliveries, Latencies, median, now_ns, progress, stamp_of, stamped_body,
};
use crate::round::{Outcome, Round, Spec, publish_concurrently};
use crate::server::{Api, Server};
use crate::sink::{HttpClient, Sink, http_client};

#[derive(clap::Args)]
pub struct Args {
    /// Messages per target and round (M).
    #[arg(long, default_value_t = 20_000)]
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
    /// Unacknowledged deliveries allowed per subscriber.
    #[arg(long, default_value_t = 64)]
    in_flight: u32,
    /// Rounds over both targets; ratios are reported per round and as medians.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Leader kills measured after the rounds (0 skips them).
    #[arg(long, default_value_t = 20)]
    failovers: u32,
    #[command(flatten)]
    out: crate::server::Output,
}

/// Three nodes' processes and addresses.
struct Cluster {
    nodes: Vec<Option<Server>>,
    listens: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
    binary: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn free_ports(n: usize) -> BenchResult<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect())
}

impl Cluster {
    fn start(binary: &std::path::Path, parent: &std::path::Path) -> BenchResult<Cluster> {
        let dir = tempfile::tempdir_in(parent)?;
        let listens: Vec<String> = free_ports(3)?
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let dirs = (1..=3)
            .map(|n| dir.path().join(format!("node{n}")))
            .collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            listens,
            dirs,
            binary: binary.to_owned(),
            _dir: dir,
        };
        for n in 1..=3 {
            let node = cluster.spawn(n)?;
            cluster.nodes.push(Some(node));
        }
        Ok(cluster)
    }

    fn spawn(&self, n: usize) -> BenchResult<Server> {
        let nodes = self
            .listens
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}=http://{l}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let extra = [
            "--cluster".to_string(),
            "--node-id".into(),
            n.to_string(),
            "--nodes".into(),
            nodes,
            "--cluster-secret".into(),
            "bench-secret".into(),
        ];
        Server::start_with(
            &self.binary,
            &self.dirs[n - 1],
            &self.listens[n - 1],
            &extra,
        )
    }

    fn api(&self, n: usize) -> Api {
        Api {
            base: format!("http://{}", self.listens[n - 1]).into(),
        }
    }

    async fn status(&self, client: &HttpClient, n: usize) -> Option<serde_json::Value> {
        let body = self
            .api(n)
            .call(client, hyper::Method::GET, "/v1/cluster", String::new())
            .await
            .ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// The node that leads and serves, once one does (among those running).
    async fn leader(&self, client: &HttpClient) -> BenchResult<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for n in 1..=3 {
                if self.nodes[n - 1].is_some()
                    && let Some(s) = self.status(client, n).await
                    && s["serving"] == true
                {
                    return Ok(n);
                }
            }
            if Instant::now() > deadline {
                return Err("no node came to lead within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Until node `n` has applied everything the leader has committed.
    async fn caught_up(&self, client: &HttpClient, n: usize) -> BenchResult<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leader = self.leader(client).await?;
            if let (Some(s), Some(l)) = (
                self.status(client, n).await,
                self.status(client, leader).await,
            ) && s["applied"] == l["committed"]
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("node {n} did not catch up within 60 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One target's round, with every publish's time to its acknowledgement.
async fn round(
    spec: &Spec,
    api: Api,
    pids: &[u32],
    target: &str,
    label: &str,
) -> BenchResult<(Outcome, Latencies)> {
    let client = http_client();
    let deliveries = Deliveries::new();
    let mut sinks = Vec::new();
    for _ in 0..spec.subscribers {
        let d = deliveries.clone();
        sinks.push(Sink::start(Arc::new(move |body: &[u8]| d.record(body))).await?);
    }
    let urls: Vec<String> = sinks.iter().map(|s| s.url.clone()).collect();
    api.bench_queue(&client, "{}", &urls, spec.in_flight, 1)
        .await?;
    let acks = Arc::new(Mutex::new(Vec::<u32>::new()));
    // The leader's process: its resident set and CPU time (the others' are not counted).
    let mut measure = Round::start(pids.first().copied());
    let (spec_copy, samples) = (*spec, acks.clone());
    publish_concurrently(spec, move |_| {
        let (api, client, samples) = (api.clone(), client.clone(), samples.clone());
        async move {
            let sent = Instant::now();
            api.publish(&client, stamped_body(spec_copy.body_bytes), None)
                .await?;
            let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            if let Ok(mut all) = samples.lock() {
                all.push(us);
            }
            Ok(())
        }
    })
    .await?;
    measure.published();
    let bar = progress(spec.deliveries(), label);
    let outcome = measure.finish(target, spec, &deliveries, &bar).await?;
    let acked = Latencies::from_samples(acks.lock().map(|a| a.clone()).unwrap_or_default());
    Ok((outcome, acked))
}

fn report(outcome: &Outcome, acked: &Latencies) {
    println!(
        "  {:<8} publish→ack p50 {:>6.2} ms p99 {:>6.2} ms | {:>7.0} publishes/s | {:>7.0} deliveries/s | publish→delivery p50 {:>6.2} ms",
        outcome.target,
        f64::from(acked.p50_us) / 1000.0,
        f64::from(acked.p99_us) / 1000.0,
        outcome.publishes_per_s,
        outcome.deliveries_per_s,
        f64::from(outcome.latency.p50_us) / 1000.0,
    );
}

/// Kills the leader `times` times; returns each kill's time to a new leader's first delivery
/// of a message published after the kill.
async fn failovers(
    binary: &std::path::Path,
    dir: &std::path::Path,
    times: u32,
) -> BenchResult<Vec<Duration>> {
    let mut cluster = Cluster::start(binary, dir)?;
    let client = http_client();
    let leader = cluster.leader(&client).await?;
    // The newest publish stamp delivered.
    let newest = Arc::new(AtomicU64::new(0));
    let seen = newest.clone();
    let sink = Sink::start(Arc::new(move |body: &[u8]| {
        if let Some(stamp) = stamp_of(body) {
            seen.fetch_max(stamp, Ordering::Relaxed);
        }
    }))
    .await?;
    cluster
        .api(leader)
        .bench_queue(&client, "{}", std::slice::from_ref(&sink.url), 64, 1)
        .await?;
    // One publisher, every 2 ms, to whichever node it reaches (a follower answers 307, which
    // counts as a failed publish here: the publisher moves on to the next node).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let apis: Vec<Api> = (1..=3).map(|n| cluster.api(n)).collect();
    let publishing = {
        let (stop, client) = (stop.clone(), client.clone());
        tokio::spawn(async move {
            let mut at = 0;
            while !stop.load(Ordering::Relaxed) {
                if apis[at % 3]
                    .publish(&client, stamped_body(64), None)
                    .await
                    .is_err()
                {
                    at += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut times_taken = Vec::new();
    for i in 0..times {
        let leader = cluster.leader(&client).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(node) = cluster.nodes[leader - 1].take() {
            node.kill()?;
        }
        let killed_ns = now_ns();
        let killed = Instant::now();
        while newest.load(Ordering::Relaxed) <= killed_ns {
            if killed.elapsed() > Duration::from_secs(60) {
                return Err(format!("kill {}: nothing delivered within 60 s", i + 1).into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = killed.elapsed();
        println!(
            "  kill {:>2}: node {leader}, delivering again after {:.0} ms",
            i + 1,
            took.as_secs_f64() * 1000.0
        );
        times_taken.push(took);
        let node = cluster.spawn(leader)?;
        cluster.nodes[leader - 1] = Some(node);
        cluster.caught_up(&client, leader).await?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;
    for node in cluster.nodes.iter_mut() {
        if let Some(n) = node.take() {
            n.kill()?;
        }
    }
    Ok(times_taken)
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
        batch: 1,
        delivery_batch: 1,
        in_flight: args.in_flight,
    };
    let binary = args.out.binary();
    println!(
        "cluster: {} messages × {} B, {} publishers, {} subscribers, {} in flight each; a single node against three nodes on loopback, fsync always",
        spec.messages, spec.body_bytes, spec.publishers, spec.subscribers, spec.in_flight
    );
    let mut json = Vec::new();
    let (mut ack_ratio, mut delivery_ratio) = (Vec::new(), Vec::new());
    for r in 1..=args.rounds {
        println!("round {r}");
        let single = rt.block_on(async {
            let data = tempfile::tempdir_in(&args.out.dir)?;
            let server = Server::start(&binary, &data.path().join("data"))?;
            let result = round(
                &spec,
                server.api(),
                &[server.pid()],
                "single",
                &format!("round {r}: single"),
            )
            .await;
            server.kill()?;
            result
        })?;
        let three = rt.block_on(async {
            let cluster = Cluster::start(&binary, &args.out.dir)?;
            let client = http_client();
            let leader = cluster.leader(&client).await?;
            let pid = cluster.nodes[leader - 1].as_ref().map(Server::pid);
            let result = round(
                &spec,
                cluster.api(leader),
                &pid.into_iter().collect::<Vec<_>>(),
                "3 nodes",
                &format!("round {r}: 3 nodes"),
            )
            .await;
            for node in cluster.nodes.into_iter().flatten() {
                node.kill()?;
            }
            result
        })?;
        report(&single.0, &single.1);
        report(&three.0, &three.1);
        let a = f64::from(three.1.p50_us) / f64::from(single.1.p50_us.max(1));
        let d = three.0.deliveries_per_s / single.0.deliveries_per_s;
        println!("  3 nodes / single: publish→ack p50 ×{a:.2}, deliveries/s ×{d:.2}");
        ack_ratio.push(a);
        delivery_ratio.push(d);
        for (o, acked) in [&single, &three] {
            json.push(format!(
                r#"{{"workload":"cluster","round":{r},"target":"{}","ack_p50_us":{},"ack_p99_us":{},"publishes_per_s":{:.1},"deliveries_per_s":{:.1}}}"#,
                o.target, acked.p50_us, acked.p99_us, o.publishes_per_s, o.deliveries_per_s
            ));
        }
    }
    if args.rounds > 0 {
        println!(
            "median of {} rounds, 3 nodes / single: publish→ack p50 ×{:.2}, deliveries/s ×{:.2}",
            args.rounds,
            median(&mut ack_ratio),
            median(&mut delivery_ratio)
        );
    }
    if args.failovers > 0 {
        println!("failovers: the leader killed {} times", args.failovers);
        let mut taken: Vec<f64> = rt
            .block_on(failovers(&binary, &args.out.dir, args.failovers))?
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let max = taken.iter().copied().fold(0.0, f64::max);
        let med = median(&mut taken);
        println!(
            "failover: kill → first delivery of a message published after it: median {med:.0} ms, max {max:.0} ms"
        );
        json.push(format!(
            r#"{{"workload":"cluster","measure":"failover","kills":{},"median_ms":{med:.1},"max_ms":{max:.1}}}"#,
            args.failovers
        ));
    }
    crate::measure::write_json_lines(args.out.json.as_deref(), &json)?;
    Ok(())
}
