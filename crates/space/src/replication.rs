//! A Space whose changes are replicated (a cluster node). Every record a change writes goes
//! to the replicated log first; it reaches this node's own log only once a majority holds it,
//! written there by whoever applies the replicated log in order
//! ([`crate::Space::append_committed`]). The change then goes on as on a single node: it applies
//! its records to memory and answers. So an answered change is on a majority of nodes, every
//! node's own log holds committed records only, in the replicated log's order, and the leader's
//! memory never runs ahead of the replicated log (acks included: a child is released once its
//! parent's ack is committed).
//!
//! A follower's Space makes no change of its own ([`crate::Role::Follower`]): the records the
//! replicated log commits are written to its log and applied to its memory by the transitions
//! replay uses ([`crate::Space::apply_committed`]); it serves reads.

use std::future::Future;
use std::pin::Pin;

use storage::{Location, Record};

/// What a Space needs of the replicated log (implemented by the cluster).
pub trait Replicator: Send + Sync + 'static {
    /// Proposes the records of one change. Resolves once they are committed and written to
    /// this node's own log, with their locations there.
    fn propose(&self, records: Vec<Record>) -> Proposal;
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

/// How a cluster node's Space takes part.
pub enum Role {
    /// It leads: it delivers, and proposes its changes through the replicator.
    Leader(std::sync::Arc<dyn Replicator>),
    /// It follows: it applies what the leader's changes committed, and serves reads.
    Follower,
}
