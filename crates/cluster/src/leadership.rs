//! Who runs the Space: one task follows this node's leadership, one change at a time, in the
//! order openraft reports it.
//!
//! - **Serving**: on becoming the committed leader of a term, the node confirms its leadership
//!   and waits until every entry committed before it is applied to its broker log
//!   ([`Raft::ensure_linearizable`]), then opens the Space on that log (the same replay as a
//!   restart) and starts delivering. Its changes are proposed for that term only.
//! - **Stopping**: when the leadership ends, the Space stops at once (dispatchers first, no
//!   grace; its memory may hold acks that never committed) and the node keeps its log alone.
//! - **A leader cut off from the others stops delivering** once no majority has answered it for
//!   the longest election timeout (the others may have elected a new leader by then; openraft
//!   itself keeps an isolated leader leading). It serves again if a majority answers again
//!   while it still leads the same term.

use std::sync::Arc;
use std::time::Duration;

use openraft::alias::CommittedLeaderIdOf;
use openraft::async_runtime::WatchReceiver;
use openraft::{Raft, ReadPolicy, ServerState};
use space::Space;
use tokio::sync::{mpsc, watch};

use crate::node::OpenSpace;
use crate::replicator::RaftReplicator;
use crate::state_machine::{Local, StateMachine, open_passive};
use crate::types::TypeConfig;

type C = TypeConfig;

/// What openraft reported of this node's leadership.
pub(crate) enum Leadership {
    Start(CommittedLeaderIdOf<C>),
    Stop,
}

pub(crate) struct Follower {
    pub raft: Raft<C, StateMachine>,
    pub sm: StateMachine,
    pub open_space: OpenSpace,
    pub live: watch::Sender<Option<Space>>,
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
    /// It stopped serving for want of a majority (and may serve again with one).
    cut_off: bool,
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
                        standing.cut_off = false;
                        self.serve(&mut standing, leader).await;
                    }
                    Some(Leadership::Stop) => {
                        standing.leading = None;
                        standing.cut_off = false;
                        self.stop_serving(&mut standing, "no longer leading").await;
                    }
                },
                _ = tick.tick() => self.check_quorum(&mut standing).await,
            }
        }
    }

    /// Whether this node leads but no majority answered it for too long.
    fn quorum_lost(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.state == ServerState::Leader
            && m.last_quorum_acked
                .is_some_and(|at| openraft::Instant::elapsed(&*at) > self.quorum_timeout)
    }

    async fn check_quorum(&self, standing: &mut Standing) {
        if standing.serving.is_some() && self.quorum_lost() {
            standing.cut_off = true;
            self.stop_serving(standing, "no majority answers this leader")
                .await;
        } else if standing.cut_off
            && standing.serving.is_none()
            && let Some(leader) = standing.leading
            && !self.quorum_lost()
        {
            standing.cut_off = false;
            self.serve(standing, leader).await;
        }
    }

    async fn serve(&self, standing: &mut Standing, leader: CommittedLeaderIdOf<C>) {
        if standing.serving.is_some() {
            self.stop_serving(standing, "a new term").await;
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            tracing::info!(error = %e, "leadership not confirmed; not serving");
            return;
        }
        let confirmed_ms = started.elapsed().as_millis() as u64;
        let replicator = Arc::new(RaftReplicator::start(self.raft.clone(), leader));
        match promote(&self.sm, &self.open_space, replicator.clone()).await {
            Ok(space) => {
                tracing::info!(
                    confirmed_ms,
                    opened_ms = started.elapsed().as_millis() as u64,
                    "leading: the Space is open and delivering"
                );
                standing.serving = Some(replicator);
                self.live.send_replace(Some(space));
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
        self.live.send_replace(None);
        if let Err(e) = demote(&self.sm).await {
            tracing::error!(error = %e, "cannot reopen the broker log after leading");
        }
    }
}

/// Opens the Space on the broker log (as a restart does), under the state machine's lock.
async fn promote(
    sm: &StateMachine,
    open_space: &OpenSpace,
    replicator: Arc<RaftReplicator>,
) -> Result<Space, String> {
    let mut inner = sm.inner.lock().await;
    let Local::Passive(log) = std::mem::replace(&mut inner.local, Local::Closed) else {
        return Err("the broker log is not open".into());
    };
    log.sync().await.map_err(|e| e.to_string())?;
    log.close();
    let backend = inner.backend.clone();
    let open = open_space.clone();
    let opened = tokio::task::spawn_blocking(move || open(backend, replicator))
        .await
        .map_err(|e| e.to_string())?;
    match opened {
        Ok(space) => {
            inner.local = Local::Live(space.clone());
            Ok(space)
        }
        Err(e) => {
            let (log, _) =
                open_passive(&inner.backend, inner.storage.clone()).map_err(|e| e.to_string())?;
            inner.local = Local::Passive(log);
            Err(e.to_string())
        }
    }
}

/// Stops the Space at once and keeps the broker log alone.
async fn demote(sm: &StateMachine) -> Result<(), String> {
    let mut inner = sm.inner.lock().await;
    if let Local::Live(space) = std::mem::replace(&mut inner.local, Local::Closed) {
        space.shutdown(Duration::ZERO).await;
    }
    if matches!(inner.local, Local::Closed) {
        let backend = inner.backend.clone();
        let storage = inner.storage.clone();
        let (log, _) = tokio::task::spawn_blocking(move || open_passive(&backend, storage))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        inner.local = Local::Passive(log);
    }
    Ok(())
}
