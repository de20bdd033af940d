//! Three real `syncbrok serve --cluster` processes on loopback, two subscriber servers, and
//! publishers sending parented chains to whichever node they reach (following its `307` to
//! the leader). The leader is killed with SIGKILL in the middle of it; later the old leader is
//! started again on its data. In the end:
//! - every publish answered 201 reached both subscribers;
//! - no child reached a subscriber before its parent had reached both;
//! - a new leader delivered soon after the kill;
//! - the restarted node caught up from its replicated log.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

const PUBLISHERS: usize = 4;
const CHAIN: usize = 5;
const SECRET: &str = "cluster-test-secret";

/// One cluster at a time: each is three or four processes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// (message id, subscriber, arrival number, when)
type Arrivals = Arc<Mutex<Vec<(String, usize, u64, Instant)>>>;
/// (message id, parent id)
type Accepted = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One request; a `307` is followed once (to the leader).
async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(StatusCode, Bytes)> {
    common::call_following(client, method, url, headers, body, Duration::from_secs(5)).await
}

/// A subscriber that records each arrival with a number shared by both, and acknowledges it.
async fn subscriber(n: usize, clock: Arc<AtomicU64>, arrivals: Arrivals) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (clock, arrivals) = (clock.clone(), arrivals.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (clock, arrivals) = (clock.clone(), arrivals.clone());
                        async move {
                            if let Some(id) = req.headers().get("webhook-id") {
                                let id = id.to_str().unwrap_or_default().to_owned();
                                let at = clock.fetch_add(1, Ordering::SeqCst);
                                arrivals.lock().unwrap().push((id, n, at, Instant::now()));
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// Free loopback ports for the nodes (each node must know every address before it starts).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Cluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

impl Cluster {
    /// `--nodes` for the first `count` nodes.
    fn nodes_flag(&self, count: usize) -> String {
        self.ports[..count]
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=http://127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn new(nodes: usize) -> Cluster {
        Cluster::with_config(nodes, "")
    }

    /// A cluster whose nodes read `extra` in their configuration file.
    fn with_config(nodes: usize, extra: &str) -> Cluster {
        let cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            ports: free_ports(nodes),
        };
        // Small broker segments: a node opens its log again on each change of leadership.
        std::fs::File::create(cluster.dir.path().join("syncbrok.yml"))
            .unwrap()
            .write_all(format!("storage:\n  segment_bytes: 1048576\n{extra}").as_bytes())
            .unwrap();
        cluster
    }

    fn log_of(&self, node: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{node}.log"))).unwrap_or_default()
    }

    fn url(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[node - 1])
    }

    /// Starts node `node` (1-based) of the first three, and waits for it to listen.
    fn start(&self, node: usize) -> Broker {
        self.start_among(node, 3)
    }

    /// Starts node `node` knowing the first `count` nodes.
    fn start_among(&self, node: usize, count: usize) -> Broker {
        let config = self.dir.path().join("syncbrok.yml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_syncbrok"));
        command
            .args(["serve", "--cluster", "--node-id", &node.to_string()])
            .args(["--nodes", &self.nodes_flag(count)])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[node - 1])])
            .arg("--data")
            .arg(self.dir.path().join(format!("node{node}")))
            .arg("--config")
            .arg(&config)
            .env("SYNCBROK_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "info,openraft=warn");
        let log = self.dir.path().join(format!("node{node}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        command.stderr(Stdio::from(file));
        let started =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| common::start(command)));
        started.unwrap_or_else(|_| {
            panic!(
                "node {node} did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }
}

/// The status of a GET answered by this node itself (a follower's read), not followed.
async fn read_here(client: &HttpClient, url: &str) -> (StatusCode, Value) {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn status(client: &HttpClient, url: &str) -> Option<Value> {
    let (code, body) = call(client, Method::GET, &format!("{url}/v1/cluster"), &[], "").await?;
    (code == StatusCode::OK)
        .then(|| serde_json::from_slice(&body).ok())
        .flatten()
}

/// The node (1-based) that leads and serves, once one does.
async fn serving_leader(client: &HttpClient, cluster: &Cluster, alive: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for &n in alive {
            if let Some(s) = status(client, &cluster.url(n)).await
                && s["serving"] == true
            {
                return n;
            }
        }
        assert!(Instant::now() < deadline, "no node came to lead and serve");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes chains to the nodes in turn; records what was answered 201. A chain goes on only
/// from an acknowledged parent.
async fn publisher(n: usize, urls: Vec<String>, stop: Arc<AtomicBool>, accepted: Accepted) {
    let client = client();
    let mut prev: Option<String> = None;
    let mut length = 0;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if length == CHAIN {
            prev = None;
            length = 0;
        }
        let mut headers = vec![("content-type", "text/plain")];
        if let Some(p) = &prev {
            headers.push(("syncbrok-parent", p.as_str()));
        }
        i += 1;
        let base = &urls[(n + i as usize) % urls.len()];
        let body = format!("publisher {n} message {i}");
        match call(
            &client,
            Method::POST,
            &format!("{base}/v1/queues/chains/messages"),
            &headers,
            &body,
        )
        .await
        {
            Some((StatusCode::CREATED, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                let id = v["id"].as_str().unwrap().to_owned();
                accepted.lock().unwrap().push((id.clone(), prev.clone()));
                prev = Some(id);
                length += 1;
            }
            // A node down, no leader yet, or killed under it: whether it was stored is
            // unknown; start a new chain.
            _ => {
                prev = None;
                length = 0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_message_and_breaks_no_chain() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::new(3);
    let mut nodes: HashMap<usize, Broker> = HashMap::new();
    for n in 1..=3 {
        nodes.insert(n, cluster.start(n));
    }
    let http = client();
    let leader = serving_leader(&http, &cluster, &[1, 2, 3]).await;

    let clock = Arc::new(AtomicU64::new(0));
    let arrivals: Arrivals = Arc::default();
    let mut sinks = Vec::new();
    for n in 0..2 {
        sinks.push(subscriber(n, clock.clone(), arrivals.clone()).await);
    }
    // Created through a follower: the redirect takes it to the leader.
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let settings =
        r#"{"retry": {"max_attempts": 0, "initial_backoff": "5ms", "max_backoff": "50ms"}}"#;
    let (code, body) = call(
        &http,
        Method::PUT,
        &format!("{}/v1/queues/chains", cluster.url(follower)),
        &[("content-type", "application/json")],
        settings,
    )
    .await
    .unwrap();
    assert_eq!(code, StatusCode::CREATED, "{body:?}");
    for s in &sinks {
        let (code, body) = call(
            &http,
            Method::POST,
            &format!("{}/v1/queues/chains/subscribers", cluster.url(follower)),
            &[("content-type", "application/json")],
            &format!(r#"{{"endpoint": "{s}", "max_in_flight": 16}}"#),
        )
        .await
        .unwrap();
        assert_eq!(code, StatusCode::CREATED, "{body:?}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Accepted = Arc::default();
    let urls: Vec<String> = (1..=3).map(|n| cluster.url(n)).collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|n| tokio::spawn(publisher(n, urls.clone(), stop.clone(), accepted.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The leader dies mid-stream.
    let old = nodes.remove(&leader).unwrap();
    tokio::task::spawn_blocking(move || old.kill9())
        .await
        .unwrap();
    let killed_at = Instant::now();
    let before_kill = accepted.lock().unwrap().len();
    let alive: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let new_leader = serving_leader(&http, &cluster, &alive).await;
    assert_ne!(new_leader, leader);
    // The first message acknowledged after the kill, and when it arrived.
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivering_after = loop {
        let published_after: Vec<String> = accepted.lock().unwrap()[before_kill..]
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        let first = arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _, _, at)| *at > killed_at && published_after.contains(id))
            .map(|(_, _, _, at)| *at)
            .min();
        if let Some(at) = first {
            break at - killed_at;
        }
        assert!(
            Instant::now() < deadline,
            "nothing published after the kill was delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The old leader comes back and catches up from its replicated log.
    let back = cluster.start(leader);
    nodes.insert(leader, back);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for p in publishers {
        p.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lead = status(&http, &cluster.url(new_leader)).await.unwrap();
        let old = status(&http, &cluster.url(leader)).await;
        if let Some(ref old) = old
            && old["applied"] == lead["committed"]
            && old["leader"] == lead["node"]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up: {old:?} vs {lead}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let accepted = accepted.lock().unwrap().clone();
    // The restarted node serves reads from its own Space: it knows the queue and its
    // subscribers.
    let (code, queue) =
        read_here(&http, &format!("{}/v1/queues/chains", cluster.url(leader))).await;
    assert_eq!(code, StatusCode::OK, "a follower's read: {queue}");
    assert_eq!(
        queue["subscribers"].as_array().map(Vec::len),
        Some(2),
        "{queue}"
    );
    assert!(
        accepted.len() > before_kill && before_kill > 0,
        "too little was published: {before_kill} before the kill, {} in all",
        accepted.len()
    );
    let first_arrivals = || {
        let mut first: HashMap<(String, usize), u64> = HashMap::new();
        for (id, sink, at, _) in arrivals.lock().unwrap().iter() {
            first.entry((id.clone(), *sink)).or_insert(*at);
        }
        first
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let first = first_arrivals();
        let missing: Vec<_> = accepted
            .iter()
            .filter(|(id, _)| {
                !(first.contains_key(&(id.clone(), 0)) && first.contains_key(&(id.clone(), 1)))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages never reached both subscribers, e.g. {:?}",
            missing.len(),
            accepted.len(),
            missing[0]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first_arrivals();
    let mut checked = 0;
    for (id, parent) in &accepted {
        let Some(p) = parent else { continue };
        let parent_done = first[&(p.clone(), 0)].max(first[&(p.clone(), 1)]);
        let child_first = first[&(id.clone(), 0)].min(first[&(id.clone(), 1)]);
        assert!(
            child_first > parent_done,
            "{id} reached a subscriber before its parent {p} had reached both"
        );
        checked += 1;
    }
    let total = arrivals.lock().unwrap().len();
    println!(
        "leader {leader} killed, {new_leader} delivering {} ms later; {} acknowledged messages all delivered to both subscribers ({total} deliveries, {} duplicates); {checked} parent orders checked",
        delivering_after.as_millis(),
        accepted.len(),
        total - first.len()
    );
    assert!(
        delivering_after < Duration::from_secs(5),
        "a new leader took {delivering_after:?} to deliver"
    );
    for (_, node) in nodes {
        tokio::task::spawn_blocking(move || node.terminate())
            .await
            .unwrap();
    }
}

/// The CLI against `url`: its JSON output, or why it failed.
fn cli_json(url: &str, args: &[&str]) -> Value {
    let (ok, out, err) = common::cli(url, args, "");
    assert!(ok, "syncbrok {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_through_any_node_and_every_node_reports_its_metrics() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::new(4);
    let mut nodes: Vec<Broker> = (1..=3).map(|n| cluster.start(n)).collect();
    let http = client();
    let leader = serving_leader(&http, &cluster, &[1, 2, 3]).await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let via = cluster.url(follower);

    // Node 4 starts knowing the others, and joins as a learner, then as a voter: the CLI asks
    // a follower, which sends it to the leader.
    nodes.push(cluster.start_among(4, 4));
    let address = cluster.url(4);
    let added = tokio::task::spawn_blocking({
        let via = via.clone();
        move || cli_json(&via, &["cluster", "add-node", "4", &address])
    })
    .await
    .unwrap();
    let four = added["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 4);
    assert_eq!(
        four.map(|n| n["voter"].clone()),
        Some(Value::Bool(false)),
        "{added}"
    );
    let promoted = tokio::task::spawn_blocking({
        let via = via.clone();
        move || cli_json(&via, &["cluster", "promote", "4"])
    })
    .await
    .unwrap();
    let voters = promoted["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["voter"] == true)
        .count();
    assert_eq!(voters, 4, "{promoted}");
    // The new voter holds the log: its status says it follows the leader, caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&http, &cluster.url(4)).await.unwrap();
        let lead = status(&http, &cluster.url(leader)).await.unwrap();
        if s["leader"] == leader && s["applied"] == lead["committed"] {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 did not catch up: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Adding it again is refused; removing it leaves three voters.
    let (ok, _, err) = tokio::task::spawn_blocking({
        let via = via.clone();
        let address = cluster.url(4);
        move || common::cli(&via, &["cluster", "add-node", "4", &address], "")
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("voter already"), "{err}");
    let removed = tokio::task::spawn_blocking({
        let via = via.clone();
        move || cli_json(&via, &["cluster", "remove-node", "4"])
    })
    .await
    .unwrap();
    let left: Vec<u64> = removed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(left, vec![1, 2, 3], "{removed}");

    // Every node reports the cluster in its metrics, and its Space's.
    for n in 1..=3 {
        let (code, body) = call(
            &http,
            Method::GET,
            &format!("{}/metrics", cluster.url(n)),
            &[],
            "",
        )
        .await
        .unwrap();
        assert_eq!(code, StatusCode::OK);
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\nsyncbrok_cluster_term "), "{text}");
        let serving = if n == leader { 1 } else { 0 };
        assert!(
            text.contains(&format!("\nsyncbrok_cluster_leader {serving}\n")),
            "node {n}: {text}"
        );
        // A follower runs its Space too (for reads): its log's metrics are there.
        assert!(text.contains("syncbrok_log_fsyncs_total"), "node {n}");
    }
    // SIGTERM: each node stops cleanly (exit 0), its Space stopped once, no error logged.
    for (n, node) in (1..).zip(nodes) {
        let stopped = tokio::task::spawn_blocking(move || node.terminate())
            .await
            .unwrap();
        assert!(stopped.success(), "node {n}: {stopped}");
        let log = cluster.log_of(n);
        assert!(!log.contains(" ERROR "), "node {n} logged an error:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_from_a_snapshot() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::with_config(3, "cluster:\n  snapshot_entries: 40\n");
    let mut nodes: HashMap<usize, Broker> = (1..=3).map(|n| (n, cluster.start(n))).collect();
    let http = client();
    let leader = serving_leader(&http, &cluster, &[1, 2, 3]).await;
    let behind = (1..=3).find(|n| *n != leader).unwrap();
    let base = cluster.url(leader);
    let json = [("content-type", "application/json")];
    // Delivered messages are kept an hour (each is delivered at once: no subscriber), so that
    // every node can be asked about each.
    let (code, _) = call(
        &http,
        Method::PUT,
        &format!("{base}/v1/queues/far"),
        &json,
        r#"{"retention": {"delivered": "1h"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, StatusCode::CREATED);

    // One node goes down; the others take 200 messages, and snapshots, and drop old entries.
    let down = nodes.remove(&behind).unwrap();
    tokio::task::spawn_blocking(move || down.kill9())
        .await
        .unwrap();
    let mut last = String::new();
    for i in 0..200 {
        let (code, body) = call(
            &http,
            Method::POST,
            &format!("{base}/v1/queues/far/messages"),
            &[],
            &format!("message {i}"),
        )
        .await
        .unwrap();
        assert_eq!(code, StatusCode::CREATED, "{body:?}");
        last = serde_json::from_slice::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let lead = status(&http, &base).await.unwrap();
    assert!(
        lead["purged"].as_u64().unwrap() > 0,
        "nothing purged: {lead}"
    );

    // Back, it is sent a snapshot (the entries it lacks are gone) and catches up.
    nodes.insert(behind, cluster.start(behind));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lead = status(&http, &base).await.unwrap();
        if let Some(s) = status(&http, &cluster.url(behind)).await
            && s["applied"] == lead["committed"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "node {behind} did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.log_of(behind).contains("snapshot installed"),
        "node {behind} caught up without a snapshot: {}",
        cluster.log_of(behind)
    );
    let (code, queue) = read_here(&http, &format!("{}/v1/queues/far", cluster.url(behind))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(queue["counts"]["delivered"], 200, "{queue}");
    let (code, _) = read_here(
        &http,
        &format!("{}/v1/queues/far/messages/{last}", cluster.url(behind)),
    )
    .await;
    assert_eq!(code, StatusCode::OK);

    // It can lead: the others stop, it and one other elect it or the other, and the state holds.
    let old = nodes.remove(&leader).unwrap();
    tokio::task::spawn_blocking(move || old.kill9())
        .await
        .unwrap();
    let alive: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let new_leader = serving_leader(&http, &cluster, &alive).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let queue = loop {
        let (code, queue) =
            read_here(&http, &format!("{}/v1/queues/far", cluster.url(new_leader))).await;
        if code == StatusCode::OK {
            break queue;
        }
        // The API is put in place just after the node says it serves.
        assert!(Instant::now() < deadline, "{code}: {queue}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(queue["counts"]["delivered"], 200, "{queue}");
    for (_, node) in nodes {
        tokio::task::spawn_blocking(move || node.terminate())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_one_keeps_serving() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::new(1);
    let node = cluster.start_among(1, 1);
    let http = client();
    serving_leader(&http, &cluster, &[1]).await;
    // Longer than a leader may go without a majority's answer: its own is enough.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = status(&http, &cluster.url(1)).await.unwrap();
    assert_eq!(s["serving"], true, "{s}");
    let (code, _) = call(
        &http,
        Method::PUT,
        &format!("{}/v1/queues/one", cluster.url(1)),
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(code, StatusCode::CREATED);
    tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
}
