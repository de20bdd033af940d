//! syncbrok's cluster: one Raft group (openraft) for the whole Space.
//!
//! - [`LogStore`]: a node's replicated log ([`storage::raft::RaftLog`]) as openraft's log
//!   storage, checked by openraft's own storage conformance suite;
//! - [`StateMachine`]: the broker log every node writes committed records to, and the Space the
//!   leader runs on it;
//! - [`Node`]: a running node, its leadership followed, its status;
//! - [`Peers`], [`peer_routes`]: the peer transport over HTTP.

mod leadership;
mod log_store;
mod membership;
mod node;
mod peer;
mod replicator;
mod state_machine;
mod types;

pub use log_store::LogStore;
pub use membership::MembershipError;
pub use node::{ClusterConfig, ClusterStatus, Node, NodeStatus, OpenSpace, StartError};
pub use peer::{PEER_BODY_BYTES_MAX, Peers, SECRET_HEADER, peer_routes};
pub use state_machine::{Serving, StateMachine};
pub use types::{Applied, Command, TypeConfig};
