//! Who runs the Space: one task follows this node's leadership, one change at a time, in the
//! order openraft reports it.
//!
//! - **Serving**: on becoming the committed leader of a term, the node confirms its leadership
//!   and waits until every entry committed before it is applied ([`Raft::ensure_linearizable`]),
//!   then opens its Space again as the leader's (the same replay as a restart, from the latest
//!   checkpoint) and starts delivering. Its changes are proposed for that term only.
//! - **Stopping**: when the leadership ends, the Space stops at once (dispatchers first, no
//!   grace; its changes under way fail) and opens again as a follower's.
//! - **A leader cut off from the others stops delivering** once no majority has answered it for
//!   the longest election timeout (the others may have elected a new leader by then; openraft
//!   itself keeps an isolated leader leading). It serves again if a majority answers again
//!   while it still leads the same term.

use std::sync::Arc;
use std::time::Duration;

use openraft::alias::CommittedLeaderIdOf;
use openraft::async_runtime::WatchReceiver;
use openraft::{Raft, ReadPolicy, ServerState};
use space::{Role, Space};
use tokio::sync::mpsc;

use crate::replicator::RaftReplicator;
use crate::state_machine::{Leadership, StateMachine};
use crate::types::TypeConfig;

type C = TypeConfig;

pub(crate) struct Follower {
    pub raft: Raft<C, StateMachine>,
    pub sm: StateMachine,
    /// How long a leader may go without a majority's answer before it stops delivering.
    pub quorum_timeout: Duration,
    /// How often that is checked.
    pub check_every: Duration,
}

/// Where this node stands.
#[derive(Default)]
struct Standing {
    /// The term this node leads, as openraft reported it.
    leading: Option<CommittedLeaderIdOf<C>>,
    /// The proposing end of the Space it runs, while it runs one.
    serving: Option<Arc<RaftReplicator>>,
    /// It leads but does not serve (no majority answered it, or opening failed): it tries
    /// again at each check.
    retry: bool,
}

impl Follower {
    pub async fn follow(self, mut events: mpsc::UnboundedReceiver<Leadership>) {
        let mut standing = Standing::default();
        let mut tick = tokio::time::interval(self.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(Leadership::Start(leader)) => {
                        standing.leading = Some(leader);
                        self.serve(&mut standing, leader).await;
                    }
                    Some(Leadership::Stop) => {
                        standing.leading = None;
                        standing.retry = false;
                        self.stop_serving(&mut standing, "no longer leading").await;
                    }
                    Some(Leadership::Resync) => {
                        if let Some(leader) = standing.leading
                            && standing.serving.is_some()
                        {
                            self.serve(&mut standing, leader).await;
                        }
                    }
                },
                _ = tick.tick() => self.check_quorum(&mut standing).await,
            }
        }
    }

    /// Whether this node leads but no majority answered it for too long. A lone voter is its
    /// own majority.
    fn quorum_lost(&self) -> bool {
        let me = *self.raft.node_id();
        if self.raft.voter_ids().all(|v| v == me) {
            return false;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        m.state == ServerState::Leader
            && m.last_quorum_acked
                .is_some_and(|at| openraft::Instant::elapsed(&*at) > self.quorum_timeout)
    }

    async fn check_quorum(&self, standing: &mut Standing) {
        if standing.serving.is_some() && self.quorum_lost() {
            standing.retry = true;
            self.stop_serving(standing, "no majority answers this leader")
                .await;
        } else if standing.retry
            && standing.serving.is_none()
            && let Some(leader) = standing.leading
            && !self.quorum_lost()
        {
            self.serve(standing, leader).await;
        }
    }

    /// Waits until every entry in this node's log, as it is now, is applied: entries an
    /// earlier Space of this node proposed in this very term (before it lost its majority, or
    /// before a restart that kept the leadership) are then in the log the Space opens on.
    async fn caught_up(&self) -> bool {
        let last = self.raft.metrics().borrow_watched().last_log_index;
        let deadline = tokio::time::Instant::now() + self.quorum_timeout * 4;
        loop {
            let m = self.raft.metrics().borrow_watched().clone();
            if m.state != ServerState::Leader {
                return false;
            }
            if m.last_applied.map(|l| l.index) >= last {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(self.check_every / 4).await;
        }
    }

    async fn serve(&self, standing: &mut Standing, leader: CommittedLeaderIdOf<C>) {
        if standing.serving.is_some() {
            self.stop_serving(standing, "its Space starts again").await;
        }
        // Until it serves, it tries again at each check.
        standing.retry = true;
        let started = std::time::Instant::now();
        // Bounded: a majority lost at this very moment must not hold up the leadership task
        // (a `Stop` may be waiting behind it); the next check tries again.
        let confirmed = tokio::time::timeout(
            self.quorum_timeout * 4,
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await;
        match confirmed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(error = %e, "leadership not confirmed; not serving yet");
                return;
            }
            Err(_) => {
                tracing::info!("leadership not confirmed in time; not serving yet");
                return;
            }
        }
        if !self.caught_up().await {
            tracing::info!("its own log not applied yet; not serving yet");
            return;
        }
        let confirmed_ms = started.elapsed().as_millis() as u64;
        let replicator = Arc::new(RaftReplicator::start(self.raft.clone(), leader));
        match promote(&self.sm, replicator.clone()).await {
            Ok(_) => {
                tracing::info!(
                    confirmed_ms,
                    opened_ms = started.elapsed().as_millis() as u64,
                    "leading: the Space is open and delivering"
                );
                standing.serving = Some(replicator);
                standing.retry = false;
            }
            Err(e) => {
                replicator.stop();
                tracing::error!(error = %e, "cannot open the Space as leader; handing the leadership over");
                let me = *self.raft.node_id();
                if let Some(other) = self.raft.voter_ids().find(|v| *v != me) {
                    let _ = self.raft.trigger().transfer_leader(other).await;
                }
            }
        }
    }

    async fn stop_serving(&self, standing: &mut Standing, why: &str) {
        let Some(replicator) = standing.serving.take() else {
            return;
        };
        tracing::info!(why, "the Space stops");
        replicator.stop();
        if let Err(e) = demote(&self.sm).await {
            tracing::error!(error = %e, "cannot reopen the broker log after leading");
        }
    }
}

/// Opens the Space again as the leader's, under the state machine's lock.
async fn promote(sm: &StateMachine, replicator: Arc<RaftReplicator>) -> Result<Space, String> {
    let mut inner = sm.inner.lock().await;
    inner
        .reopen(Role::Leader(replicator))
        .await
        .map_err(|e| e.to_string())
}

/// Stops the leader's Space at once and opens it again as a follower's.
async fn demote(sm: &StateMachine) -> Result<(), String> {
    let mut inner = sm.inner.lock().await;
    inner
        .reopen(Role::Follower)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
