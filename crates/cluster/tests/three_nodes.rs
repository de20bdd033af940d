//! Three nodes on loopback, each with its replicated log on disk and its server, talking over
//! the peer transport: they elect a leader, replicate commands to every node, elect another
//! when the leader stops, and the stopped node, restarted from its log, catches up. A request
//! without the cluster's secret is refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Kept;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config, Raft, RaftMetrics};

use cluster::{Command, LogStore, Peers, TypeConfig, peer_routes};
use storage::raft::RaftLog;

const SECRET: &str = "a-shared-cluster-secret";

struct Node {
    id: u64,
    raft: Raft<TypeConfig, Kept>,
    sm: Kept,
    server: tokio::task::JoinHandle<()>,
}

fn config() -> Arc<Config> {
    Arc::new(
        Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Config::default()
        }
        .validate()
        .unwrap(),
    )
}

/// Starts node `id` on `listener` over the log in `dir` (kept across restarts).
async fn start(id: u64, dir: &std::path::Path, listener: tokio::net::TcpListener) -> Node {
    let backend = storage::io::FsBackend::open(dir).unwrap();
    let log = LogStore::new(RaftLog::open(Arc::new(backend), 1 << 20).unwrap());
    let sm = Kept::default();
    let raft = Raft::new(
        id,
        config(),
        Peers::new(Some(SECRET.into())),
        log,
        sm.clone(),
    )
    .await
    .unwrap();
    let routes = peer_routes(raft.clone(), Some(SECRET.into()));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, routes).await;
    });
    Node {
        id,
        raft,
        sm,
        server,
    }
}

async fn stop(node: Node) {
    node.server.abort();
    let _ = node.server.await;
    node.raft.shutdown().await.unwrap();
}

/// Writes a command through `node`, the leader. Just elected, it may refuse until a majority
/// has acknowledged its term (its lease): it is asked again, for up to 10 s.
async fn write(node: &Node, i: u8) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.raft.client_write(Command(vec![i])).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("write {i}: {e}"),
        }
    }
}

/// What a node says of itself now (copied out: the watch is not held across an await).
fn metrics(n: &Node) -> RaftMetrics<TypeConfig> {
    n.raft.metrics().borrow_watched().clone()
}

/// The node among `nodes` that leads them, once one does.
async fn leader_among(nodes: &[&Node], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(n) = nodes.iter().find(|n| metrics(n).state.is_leader()) {
            return n.id;
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn applied_everywhere(nodes: &[&Node], want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes {
        while n.sm.applied().await.len() < want {
            assert!(
                Instant::now() < deadline,
                "node {} applied {:?}",
                n.id,
                n.sm.applied().await.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(
            id,
            BasicNode {
                addr: format!("http://{}", l.local_addr().unwrap()),
            },
        );
        listeners.push(l);
    }
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(start(i as u64 + 1, dirs[i].path(), l).await);
    }
    nodes[0].raft.initialize(members.clone()).await.unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all, Duration::from_secs(10)).await;

    // A peer without the secret is refused.
    let refused = tokio::task::spawn_blocking({
        let addr = members[&leader].addr.trim_start_matches("http://").to_owned();
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /cluster/raft/vote HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        }
    })
    .await
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let on = |id: u64, nodes: &[Node]| nodes.iter().position(|n| n.id == id).unwrap();
    for i in 0..10u8 {
        write(&nodes[on(leader, &nodes)], i).await;
    }
    applied_everywhere(&nodes.iter().collect::<Vec<_>>(), 10).await;

    // The leader stops: the two others elect one among them and go on.
    let stopped_at = on(leader, &nodes);
    let old = nodes.remove(stopped_at);
    let old_dir = dirs[(old.id - 1) as usize].path().to_owned();
    let old_addr = members[&old.id].addr.clone();
    let stopped = Instant::now();
    stop(old).await;
    let rest: Vec<&Node> = nodes.iter().collect();
    let new_leader = leader_among(&rest, Duration::from_secs(10)).await;
    let failover = stopped.elapsed();
    assert_ne!(new_leader, leader);
    for i in 10..20u8 {
        write(&nodes[on(new_leader, &nodes)], i).await;
    }
    applied_everywhere(&nodes.iter().collect::<Vec<_>>(), 20).await;

    // The old leader comes back on its log and address, and catches up.
    let listener = tokio::net::TcpListener::bind(old_addr.trim_start_matches("http://"))
        .await
        .unwrap();
    nodes.push(start(leader, &old_dir, listener).await);
    applied_everywhere(&nodes.iter().collect::<Vec<_>>(), 20).await;
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    for n in &nodes {
        assert_eq!(n.sm.applied().await, want, "node {} applied in order", n.id);
    }
    let voters: BTreeSet<u64> = metrics(&nodes[0])
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));
    eprintln!("failover: a new leader {failover:?} after the old one stopped");
    for n in nodes {
        stop(n).await;
    }
}
