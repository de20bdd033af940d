//! Membership changes on a running cluster, asked of the leader: a node is added as a learner
//! (it receives the log but does not vote), promoted to a voter once it has caught up, or
//! removed. Each is a membership entry of the replicated log (openraft's joint consensus for
//! voters), answered once committed.

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::node::Node;
use crate::types::TypeConfig;

type C = TypeConfig;

/// A membership change that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the membership; it is at `leader` (when known).
    #[error("this node is not the leader")]
    NotLeader { leader: Option<String> },
    /// The change is not allowed as asked (an unknown node, the last voter removed, …).
    #[error("{0}")]
    Refused(String),
    #[error("the change failed: {0}")]
    Failed(String),
}

fn classify(e: RaftError<C, ClientWriteError<C>>) -> MembershipError {
    match e {
        RaftError::APIError(
            ClientWriteError::ForwardToLeader(f) | ClientWriteError::LogEntryDiscarded(f),
        ) => MembershipError::NotLeader {
            leader: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(other) => MembershipError::Refused(other.to_string()),
        RaftError::Fatal(f) => MembershipError::Failed(f.to_string()),
    }
}

impl Node {
    /// Sends the change to the leader without asking openraft first (which logs a request a
    /// follower must forward as an error).
    fn leader_only(&self) -> Result<(), MembershipError> {
        match self.raft().as_leader() {
            Ok(_) => Ok(()),
            Err(f) => Err(MembershipError::NotLeader {
                leader: f.leader_node.map(|n| n.addr),
            }),
        }
    }

    /// Adds node `id`, served at `address` (`http://host:port`), as a learner: it starts
    /// receiving the log at once. Answered once the change is committed, without waiting for
    /// the learner to catch up (its lag shows in the status).
    pub async fn add_learner(&self, id: u64, address: &str) -> Result<(), MembershipError> {
        self.leader_only()?;
        if self.raft().voter_ids().any(|v| v == id) {
            return Err(MembershipError::Refused(format!(
                "node {id} is a voter already"
            )));
        }
        self.raft()
            .add_learner(id, BasicNode::new(address), false)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: u64) -> Result<(), MembershipError> {
        self.leader_only()?;
        if !self.raft().learner_ids().any(|l| l == id) {
            return Err(MembershipError::Refused(format!(
                "node {id} is not a learner"
            )));
        }
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Removes node `id`, voter or learner, from the cluster.
    pub async fn remove(&self, id: u64) -> Result<(), MembershipError> {
        self.leader_only()?;
        let voter = self.raft().voter_ids().any(|v| v == id);
        let learner = self.raft().learner_ids().any(|l| l == id);
        let change = match (voter, learner) {
            (true, _) => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            (false, true) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            (false, false) => {
                return Err(MembershipError::Refused(format!(
                    "node {id} is not in the cluster"
                )));
            }
        };
        self.raft()
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}
