//! How the leader's Space proposes its records: one entry per change, each only while this
//! node still leads the term it was elected for (`with_leader`). A change waits for its entry
//! to be applied here before it applies it; changes that do not commute are ordered by the
//! Space's own locks (the second proposes only once the first is applied), so the order in
//! which concurrent proposals reach openraft needs no keeping here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::Raft;
use openraft::alias::CommittedLeaderIdOf;
use openraft::impls::ProgressResponder;
use space::{Proposal, ReplicationError, Replicator};
use storage::Record;

use crate::state_machine::StateMachine;
use crate::types::{Command, TypeConfig};

type C = TypeConfig;

/// The proposing end of the leader's Space for one term.
pub(crate) struct RaftReplicator {
    raft: Raft<C, StateMachine>,
    leader: CommittedLeaderIdOf<C>,
    /// Cleared when the term's leadership ends: nothing more is proposed.
    leading: Arc<AtomicBool>,
}

impl RaftReplicator {
    /// Proposes for the term `leader` names.
    pub fn start(raft: Raft<C, StateMachine>, leader: CommittedLeaderIdOf<C>) -> RaftReplicator {
        RaftReplicator {
            raft,
            leader,
            leading: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The term is over: what is proposed from now on fails at once.
    pub fn stop(&self) {
        self.leading.store(false, Ordering::Release);
    }
}

impl Replicator for RaftReplicator {
    fn propose(&self, records: Vec<Record>) -> Proposal {
        let (raft, leader, leading) = (self.raft.clone(), self.leader, self.leading.clone());
        Box::pin(async move {
            if !leading.load(Ordering::Acquire) {
                return Err(ReplicationError::NotLeader);
            }
            let (responder, answer) = ProgressResponder::complete_only();
            let command = Command(storage::encode_records(&records));
            raft.write(command)
                .with_leader(leader)
                .responder(responder)
                .await
                .map_err(|e| ReplicationError::Failed(e.to_string()))?;
            match answer.await {
                Ok(Ok(written)) => Ok(written.data.locations),
                Ok(Err(
                    openraft::errors::ClientWriteError::ForwardToLeader(_)
                    | openraft::errors::ClientWriteError::LogEntryDiscarded(_),
                ))
                | Err(_) => Err(ReplicationError::NotLeader),
                Ok(Err(e)) => Err(ReplicationError::Failed(e.to_string())),
            }
        })
    }
}
