//! syncbrok's cluster: one Raft group (openraft) for the whole Space. So far: a node's
//! replicated log ([`storage::raft::RaftLog`]) as openraft's log storage ([`LogStore`]),
//! checked by openraft's own storage conformance suite, and the peer transport over HTTP
//! ([`Peers`], [`peer_routes`]). The Space as the state machine and the `serve --cluster` mode
//! come next.

mod log_store;
mod peer;
mod types;

pub use log_store::LogStore;
pub use peer::{PEER_BODY_BYTES_MAX, Peers, SECRET_HEADER, peer_routes};
pub use types::{Applied, Command, TypeConfig};
