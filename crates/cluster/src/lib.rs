//! syncbrok's cluster: one Raft group (openraft) for the whole Space. So far, the first part:
//! a node's replicated log ([`storage::raft::RaftLog`]) as openraft's log storage
//! ([`LogStore`]), checked by openraft's own storage conformance suite. The Space as the
//! state machine, the peer transport and the `serve --cluster` mode come next.

mod log_store;
mod types;

pub use log_store::LogStore;
pub use types::{Applied, Command, TypeConfig};
