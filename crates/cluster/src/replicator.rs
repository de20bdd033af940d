//! How the leader's Space proposes its records: one entry per change, submitted to openraft in
//! the order the Space proposed them (one channel, one task submitting), each only while this
//! node still leads the term it was elected for. A change waits for its entry to be applied
//! here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::Raft;
use openraft::alias::{CommittedLeaderIdOf, WriteResponderOf};
use openraft::impls::ProgressResponder;
use space::{Proposal, ReplicationError, Replicator};
use storage::Record;
use tokio::sync::mpsc;

use crate::state_machine::StateMachine;
use crate::types::{Command, TypeConfig};

type C = TypeConfig;

struct Submission {
    command: Command,
    responder: Option<WriteResponderOf<C>>,
}

/// The proposing end of the leader's Space for one term.
pub(crate) struct RaftReplicator {
    submit: mpsc::UnboundedSender<Submission>,
    /// Cleared when the term's leadership ends: nothing more is proposed.
    leading: Arc<AtomicBool>,
}

impl RaftReplicator {
    /// Starts submitting for the term `leader` names.
    pub fn start(raft: Raft<C, StateMachine>, leader: CommittedLeaderIdOf<C>) -> RaftReplicator {
        let (submit, mut queue) = mpsc::unbounded_channel::<Submission>();
        let leading = Arc::new(AtomicBool::new(true));
        let still = leading.clone();
        tokio::spawn(async move {
            while let Some(s) = queue.recv().await {
                if !still.load(Ordering::Acquire) {
                    // Dropping the responder tells the proposer.
                    continue;
                }
                let mut write = raft.write(s.command).with_leader(leader);
                if let Some(r) = s.responder {
                    write = write.responder(r);
                }
                if let Err(e) = write.await {
                    tracing::error!(error = %e, "the replicated log stopped");
                    still.store(false, Ordering::Release);
                }
            }
        });
        RaftReplicator { submit, leading }
    }

    /// The term is over: what is proposed from now on fails at once.
    pub fn stop(&self) {
        self.leading.store(false, Ordering::Release);
    }

    fn submit(&self, records: &[Record], responder: Option<WriteResponderOf<C>>) -> bool {
        self.leading.load(Ordering::Acquire)
            && self
                .submit
                .send(Submission {
                    command: Command(storage::encode_records(records)),
                    responder,
                })
                .is_ok()
    }
}

impl Replicator for RaftReplicator {
    fn propose(&self, records: Vec<Record>) -> Proposal {
        let (responder, answer) = ProgressResponder::complete_only();
        let submitted = self.submit(&records, Some(responder));
        Box::pin(async move {
            if !submitted {
                return Err(ReplicationError::NotLeader);
            }
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
