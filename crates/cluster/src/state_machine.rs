//! The Space as the cluster's state machine. Every node applies the committed entries of the
//! replicated log, in order, to the Space it runs on its own broker log: each entry's records
//! are written in one batch with a `ClusterApplied` record naming the entry, so after a crash
//! the node's log says exactly how far it applied, and openraft applies the rest again.
//!
//! - A **follower** runs its Space as [`Role::Follower`]: the records are written and applied
//!   to its memory by the transitions replay uses; it serves reads, writes checkpoints and
//!   reclaims its log, and delivers nothing.
//! - The **leader** runs it as [`Role::Leader`]: its changes propose their records, and apply
//!   them once this state machine has written them and answered with their locations.
//!
//! Switching between the two happens under the state machine's lock, between entries: the
//! Space is stopped and opened again on the same log in its new role (the same replay as a
//! restart, from the latest checkpoint).
//!
//! A **snapshot** is the Space's checkpoint snapshot, which carries the `ClusterApplied` state
//! it stands for; building one syncs the broker log first, so the entries it covers may be
//! purged from the replicated log. A follower that installs one makes it its log's latest
//! checkpoint and opens its Space from it.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use openraft::alias::{
    CommittedLeaderIdOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf,
};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use space::{OpenError, Role, Space};
use storage::io::Backend;
use storage::{Location, Record};
use tokio::sync::{Mutex, mpsc, watch};

use crate::types::{Applied, Command, TypeConfig};

type C = TypeConfig;

/// What openraft reported of this node's leadership, or what the state machine found.
pub(crate) enum Leadership {
    Start(CommittedLeaderIdOf<C>),
    Stop,
    /// The leader's log took records its Space did not propose (left over from an earlier
    /// Space of this node in the same term): its memory must be rebuilt from the log.
    Resync,
}

/// Opens the Space on a node's broker log, in a role.
pub type OpenSpace = Arc<dyn Fn(Arc<dyn Backend>, Role) -> Result<Space, OpenError> + Send + Sync>;

/// The Space this node runs, in its role.
pub(crate) enum Local {
    Follower(Space),
    Leader(Space),
    /// Between the two (only while the lock is held), or after a failure to open.
    Closed,
}

/// The Space a node serves from, and whether it leads.
#[derive(Clone)]
pub struct Serving {
    pub space: Space,
    pub leading: bool,
}

/// What a `ClusterApplied` record holds.
#[derive(Default, Serialize, Deserialize)]
struct AppliedState {
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
}

fn parse_state(state: &[u8]) -> io::Result<AppliedState> {
    if state.is_empty() {
        return Ok(AppliedState::default());
    }
    serde_json::from_slice(state).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) struct Inner {
    local: Local,
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    backend: Arc<dyn Backend>,
    open_space: OpenSpace,
    /// The latest snapshot built or installed.
    latest: Option<(SnapshotMetaOf<C>, Bytes)>,
    serving: watch::Sender<Option<Serving>>,
    /// Told when the leader's log takes records its Space did not propose.
    leadership: mpsc::UnboundedSender<Leadership>,
}

/// The state machine; clones share it.
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) inner: Arc<Mutex<Inner>>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Opens the Space on `backend` in `role`, on a blocking thread (it replays the log).
async fn open(open_space: &OpenSpace, backend: &Arc<dyn Backend>, role: Role) -> io::Result<Space> {
    let (open, backend) = (open_space.clone(), backend.clone());
    tokio::task::spawn_blocking(move || open(backend, role))
        .await
        .map_err(other)?
        .map_err(other)
}

impl StateMachine {
    /// The state machine over the broker log in `backend`, a follower's to begin with.
    pub(crate) async fn open(
        backend: Arc<dyn Backend>,
        open_space: OpenSpace,
        serving: watch::Sender<Option<Serving>>,
        leadership: mpsc::UnboundedSender<Leadership>,
    ) -> io::Result<StateMachine> {
        let space = open(&open_space, &backend, Role::Follower).await?;
        let state = parse_state(&space.cluster_state())?;
        serving.send_replace(Some(Serving {
            space: space.clone(),
            leading: false,
        }));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                local: Local::Follower(space),
                applied: state.applied,
                membership: state.membership,
                backend,
                open_space,
                latest: None,
                serving,
                leadership,
            })),
        })
    }
}

impl Inner {
    /// Stops the Space (at once: no grace for deliveries under way) and opens it again in
    /// `role`. On failure to open as leader, it opens as a follower again.
    pub(crate) async fn reopen(&mut self, role: Role) -> io::Result<Space> {
        self.serving.send_replace(None);
        match std::mem::replace(&mut self.local, Local::Closed) {
            Local::Follower(space) | Local::Leader(space) => {
                space.shutdown(std::time::Duration::ZERO).await;
            }
            Local::Closed => {}
        }
        let leading = matches!(role, Role::Leader(_));
        let space = match open(&self.open_space, &self.backend, role).await {
            Ok(space) => space,
            Err(e) if leading => {
                let space = open(&self.open_space, &self.backend, Role::Follower).await?;
                self.set(space, false);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.set(space.clone(), leading);
        Ok(space)
    }

    fn set(&mut self, space: Space, leading: bool) {
        self.serving.send_replace(Some(Serving {
            space: space.clone(),
            leading,
        }));
        self.local = if leading {
            Local::Leader(space)
        } else {
            Local::Follower(space)
        };
    }

    /// Stops the Space for good.
    pub(crate) async fn close(&mut self) {
        if let Some(space) = self.forget() {
            space.shutdown(std::time::Duration::ZERO).await;
        }
    }

    /// Lets go of the Space (stopped already, or about to be by whoever holds it).
    pub(crate) fn forget(&mut self) -> Option<Space> {
        self.serving.send_replace(None);
        match std::mem::replace(&mut self.local, Local::Closed) {
            Local::Follower(space) | Local::Leader(space) => Some(space),
            Local::Closed => None,
        }
    }

    fn space(&self) -> io::Result<&Space> {
        match &self.local {
            Local::Follower(s) | Local::Leader(s) => Ok(s),
            Local::Closed => Err(other("the Space is closed")),
        }
    }

    /// Writes (and on a follower, applies) one entry's records and the record naming it;
    /// `proposed` when this node's Space waits for them.
    async fn write(
        &mut self,
        mut records: Vec<Record>,
        proposed: bool,
    ) -> io::Result<Vec<Location>> {
        let foreign = !proposed && !records.is_empty();
        let state = AppliedState {
            applied: self.applied,
            membership: self.membership.clone(),
        };
        records.push(Record::ClusterApplied {
            state: Bytes::from(serde_json::to_vec(&state).map_err(other)?),
        });
        match &self.local {
            Local::Follower(space) => {
                space.apply_committed(records).await.map_err(other)?;
                Ok(Vec::new())
            }
            Local::Leader(space) => {
                let mut locations = space.append_committed(&records).await.map_err(other)?;
                locations.pop();
                if foreign {
                    tracing::warn!(
                        "the leader's log took records its Space did not propose; the Space starts again from the log"
                    );
                    let _ = self.leadership.send(Leadership::Resync);
                }
                Ok(locations)
            }
            Local::Closed => Err(other("the Space is closed")),
        }
    }
}

/// A snapshot of `space`, with the entry and membership it stands for.
async fn snapshot_of(space: &Space) -> io::Result<(SnapshotMetaOf<C>, Bytes)> {
    let (data, state) = space.cluster_snapshot().await.map_err(other)?;
    let state = parse_state(&state)?;
    let meta = SnapshotMetaOf::<C> {
        last_log_id: state.applied,
        last_membership: state.membership,
    };
    Ok((meta, data))
}

fn snapshot_data(meta: SnapshotMetaOf<C>, data: &Bytes) -> SnapshotOf<C, io::Cursor<Vec<u8>>> {
    SnapshotOf::<C, io::Cursor<Vec<u8>>> {
        meta,
        snapshot: io::Cursor::new(data.to_vec()),
    }
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = io::Cursor<Vec<u8>>;

    /// Runs beside the applying of entries (openraft spawns it): the Space is taken under the
    /// lock, the snapshot without it.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let space = self.inner.lock().await.space()?.clone();
        let (meta, data) = snapshot_of(&space).await?;
        self.inner.lock().await.latest = Some((meta.clone(), data.clone()));
        tracing::info!(
            entry = meta.last_log_id.map_or(0, |l| l.index),
            bytes = data.len(),
            "snapshot built"
        );
        Ok(snapshot_data(meta, &data))
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = io::Cursor<Vec<u8>>;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.inner.lock().await;
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        let mut inner = self.inner.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            let records = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(Command(bytes)) => storage::decode_records(Bytes::from(bytes))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m);
                    Vec::new()
                }
            };
            inner.applied = Some(entry.log_id);
            let locations = inner.write(records, responder.is_some()).await?;
            if let Some(r) = responder {
                r.send(Applied {
                    index: entry.log_id.index,
                    locations,
                });
            }
        }
        Ok(())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = Bytes::from(snapshot.into_inner());
        let mut inner = self.inner.lock().await;
        let Local::Follower(space) = &inner.local else {
            return Err(other("only a follower installs a snapshot"));
        };
        space
            .install_checkpoint(data.clone())
            .await
            .map_err(other)?;
        inner.reopen(Role::Follower).await?;
        inner.applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.latest = Some((meta.clone(), data));
        tracing::info!(
            entry = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot installed"
        );
        Ok(())
    }

    /// The latest snapshot built or installed since the node started (none is built here: on
    /// the leader, changes may be waiting for the very entries this call holds up). When the
    /// replicated log was purged and there is none, openraft builds one as the node starts.
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        let inner = self.inner.lock().await;
        Ok(inner
            .latest
            .as_ref()
            .map(|(meta, data)| snapshot_data(meta.clone(), data)))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}
