//! A Space whose changes are replicated (a cluster node). Every record a change writes goes
//! to the replicated log first; it reaches this node's own log only once a majority holds it,
//! written there by whoever applies the replicated log in order
//! ([`crate::Space::append_committed`]). The change then goes on as on a single node: it applies
//! its records to memory and answers. So an answered change is on a majority of nodes, and
//! every node's own log holds committed records only, in the replicated log's order.

use std::future::Future;
use std::pin::Pin;

use storage::{Ack, Location, Record};

/// What a Space needs of the replicated log (implemented by the cluster).
pub trait Replicator: Send + Sync + 'static {
    /// Proposes the records of one change. Resolves once they are committed and written to
    /// this node's own log, with their locations there.
    fn propose(&self, records: Vec<Record>) -> Proposal;

    /// Proposes an ack already applied to memory, without waiting: it is ordered after every
    /// change proposed before it and before every change proposed after it. An ack that never
    /// commits (the node lost its leadership) means a redelivery by the next leader.
    fn propose_ack(&self, ack: Ack);
}

/// A proposal on its way to being committed.
pub type Proposal = Pin<Box<dyn Future<Output = Result<Vec<Location>, ReplicationError>> + Send>>;

/// A proposal did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicationError {
    /// This node is no longer the leader (or not yet): the change may or may not commit under
    /// the next leader, which the client learns by reading or by retrying with its key.
    #[error("this node is not the cluster's leader")]
    NotLeader,
    #[error("the replicated log failed: {0}")]
    Failed(String),
}
