//! A cluster node: its replicated log, the state machine over its broker log, its peers, and
//! the Space it runs while it leads.
//!
//! Who runs the Space is decided in `leadership.rs`; whoever serves the API watches
//! [`Node::serving`].

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use serde::Serialize;

/// Entries sent to a peer in one request.
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// How long sending or installing a snapshot may take.
const SNAPSHOT_SEND_TIMEOUT_MS: u64 = 60_000;
use storage::io::Backend;
use storage::raft::RaftLog;
use tokio::sync::{mpsc, watch};

use crate::leadership::Follower;
use crate::log_store::LogStore;
use crate::peer::Peers;
pub use crate::state_machine::OpenSpace;
use crate::state_machine::{Leadership, Serving, StateMachine};
use crate::types::TypeConfig;

type C = TypeConfig;

/// A node's place in the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    pub node_id: u64,
    /// Every voter of the first membership, this node included: id → `http://host:port`.
    pub nodes: BTreeMap<u64, String>,
    /// Sent with, and required of, every peer request.
    pub secret: Option<Arc<str>>,
    pub heartbeat: Duration,
    /// Elections start after a random wait in this range without a leader's heartbeat.
    pub election_timeout: (Duration, Duration),
    /// Segment size of the replicated log.
    pub segment_bytes: u64,
    /// A snapshot is taken after this many entries; the replicated log then keeps the last
    /// [`ClusterConfig::entries_kept`] before it (for a follower a little behind), and drops
    /// the rest.
    pub snapshot_entries: u64,
    pub entries_kept: u64,
}

/// Could not start a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("node {0} is not among the cluster's nodes")]
    NotAMember(u64),
    #[error("the replicated log: {0}")]
    Log(#[from] storage::raft::RaftLogError),
    #[error("the broker log: {0}")]
    Broker(#[source] io::Error),
    #[error("the Raft configuration: {0}")]
    Config(String),
    #[error("Raft: {0}")]
    Raft(String),
}

/// A running node.
pub struct Node {
    raft: Raft<C, StateMachine>,
    config: ClusterConfig,
    sm: StateMachine,
    serving: watch::Receiver<Option<Serving>>,
    _leadership: openraft::WatchChangeHandle<C>,
}

impl Node {
    /// Starts node `config.node_id` on its replicated log (`raft_backend`) and its broker log
    /// (`broker_backend`, on which `open_space` opens the Space). The node with the smallest
    /// id starts a new cluster of `nodes` when its log is empty.
    pub async fn start(
        config: ClusterConfig,
        raft_backend: Arc<dyn Backend>,
        broker_backend: Arc<dyn Backend>,
        open_space: OpenSpace,
    ) -> Result<Node, StartError> {
        if !config.nodes.contains_key(&config.node_id) {
            return Err(StartError::NotAMember(config.node_id));
        }
        let raft_config = Config {
            cluster_name: "syncbrok".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
            max_in_snapshot_log_to_keep: config.entries_kept,
            // Entries per request to a peer: a few large messages stay within what a peer
            // takes in one request.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // A snapshot goes whole, in one request: time enough for a large one.
            install_snapshot_timeout: SNAPSHOT_SEND_TIMEOUT_MS,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let log = LogStore::new(RaftLog::open(raft_backend, config.segment_bytes)?);
        let (set_serving, serving) = watch::channel(None);
        let (events, queue) = mpsc::unbounded_channel();
        let sm = StateMachine::open(broker_backend, open_space, set_serving, events.clone())
            .await
            .map_err(StartError::Broker)?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Peers::new(config.secret.clone()),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let (starting, stopping) = (events.clone(), events);
        let leadership = raft.on_leader_change(
            move |leader| {
                let _ = starting.send(Leadership::Start(leader));
                async {}
            },
            move |_| {
                let _ = stopping.send(Leadership::Stop);
                async {}
            },
        );
        let follower = Follower {
            raft: raft.clone(),
            sm: sm.clone(),
            quorum_timeout: config.election_timeout.1,
            check_every: config.heartbeat,
        };
        tokio::spawn(follower.follow(queue));

        let first = config.nodes.keys().next().copied();
        if first == Some(config.node_id)
            && !raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        {
            let members: BTreeMap<u64, BasicNode> = config
                .nodes
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!(error = %e, "could not start the cluster (another node did?)");
            }
        }
        Ok(Node {
            raft,
            config,
            sm,
            serving,
            _leadership: leadership,
        })
    }

    /// The Space this node serves from (the leader's, or a follower's for reads); `None` while
    /// it switches.
    pub fn serving(&self) -> watch::Receiver<Option<Serving>> {
        self.serving.clone()
    }

    pub fn raft(&self) -> &Raft<C, StateMachine> {
        &self.raft
    }

    /// Resolves when Raft stops for good on an error it cannot get past (the replicated log or
    /// the broker log failing): this node can then do nothing but report it. Never resolves
    /// for a stop asked for ([`Node::shutdown`]).
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            let state = metrics.borrow_watched().running_state.clone();
            match state {
                Err(openraft::error::Fatal::Stopped) => std::future::pending::<()>().await,
                Err(fatal) => return fatal.to_string(),
                Ok(()) => {}
            }
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The secret peers send and require.
    pub fn secret(&self) -> Option<Arc<str>> {
        self.config.secret.clone()
    }

    /// The address of the leader, when one is known and it is not this node.
    pub fn leader_address(&self) -> Option<String> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        if leader == self.config.node_id {
            return None;
        }
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// What `GET /v1/cluster` shows.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let index = |l: Option<&openraft::alias::LogIdOf<C>>| l.map_or(0, |l| l.index);
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref();
        let membership = m.membership_config.membership();
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                // Only the leader knows what the others hold.
                let matched_index = match matched {
                    None => None,
                    Some(_) if *id == m.id => Some(last),
                    Some(r) => r.get(id).map(|l| index(l.as_ref())),
                };
                NodeStatus {
                    id: *id,
                    address: node.addr.clone(),
                    voter: membership.voter_ids().any(|v| v == *id),
                    matched: matched_index,
                    lag: matched_index.map(|i| last.saturating_sub(i)),
                }
            })
            .collect();
        ClusterStatus {
            node: m.id,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Candidate => "candidate",
                ServerState::Follower => "follower",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            leader: m.current_leader,
            leader_address: m
                .current_leader
                .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone())),
            term: m.current_term,
            last_log_index: last,
            committed: index(m.cluster_committed.as_ref()),
            applied: index(m.last_applied.as_ref()),
            snapshot: index(m.snapshot.as_ref()),
            purged: index(m.purged.as_ref()),
            serving: self.serving.borrow().as_ref().is_some_and(|s| s.leading),
            nodes,
        }
    }

    /// Stops the node: the leader's Space first, letting deliveries under way finish for up to
    /// `grace` (their acks still commit), then Raft; a follower's Raft first (no entry then
    /// comes to a closed Space), then its Space. Each Space is stopped once.
    pub async fn shutdown(&self, grace: Duration) {
        let serving = self.serving.borrow().clone();
        let stop_raft = async {
            if let Err(e) = self.raft.shutdown().await {
                tracing::warn!(error = %e, "Raft did not stop cleanly");
            }
        };
        match serving {
            Some(s) if s.leading => {
                s.space.shutdown(grace).await;
                stop_raft.await;
                self.sm.inner.lock().await.forget();
            }
            _ => {
                stop_raft.await;
                self.sm.inner.lock().await.close().await;
            }
        }
    }
}

/// What `GET /v1/cluster` shows of the cluster, as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    pub leader: Option<u64>,
    pub leader_address: Option<String>,
    pub term: u64,
    /// The last entry in this node's replicated log, the last known committed, the last
    /// applied to its broker log.
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    /// The entry the latest snapshot stands for, and the last entry dropped from the replicated
    /// log (entries up to it are only in snapshots).
    pub snapshot: u64,
    pub purged: u64,
    /// Whether this node runs the Space as the leader (it leads, and has caught up).
    pub serving: bool,
    pub nodes: Vec<NodeStatus>,
}

/// A node of the membership.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    /// The last entry the leader knows this node holds, and how far behind the leader's log
    /// that is (only on the leader).
    pub matched: Option<u64>,
    pub lag: Option<u64>,
}

impl ClusterStatus {
    /// The status as Prometheus metrics (text format), to follow the node's own `/metrics`.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP syncbrok_cluster_{name} {help}\n# TYPE syncbrok_cluster_{name} gauge\nsyncbrok_cluster_{name} {value}"
            );
        };
        gauge("term", "The Raft term this node is in.", self.term);
        gauge(
            "leader",
            "1 if this node leads and runs the Space, else 0.",
            u64::from(self.serving),
        );
        gauge(
            "last_log_index",
            "The last entry in this node's replicated log.",
            self.last_log_index,
        );
        gauge(
            "commit_index",
            "The last entry known committed.",
            self.committed,
        );
        gauge(
            "applied_index",
            "The last entry written to this node's broker log.",
            self.applied,
        );
        let lagging: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.lag.map(|lag| (n.id, lag)))
            .collect();
        if self.state == "leader" && !lagging.is_empty() {
            let _ = writeln!(
                out,
                "# HELP syncbrok_cluster_node_lag_entries How far each node's log is behind the leader's (on the leader).\n# TYPE syncbrok_cluster_node_lag_entries gauge"
            );
            for (id, lag) in lagging {
                let _ = writeln!(
                    out,
                    "syncbrok_cluster_node_lag_entries{{node=\"{id}\"}} {lag}"
                );
            }
        }
        out
    }
}
