//! The Space as the cluster's state machine. Every node applies the committed entries of the
//! replicated log, in order, by writing their records to its own broker log, each entry's
//! records in one batch with a `ClusterApplied` record naming the entry: after a crash the
//! node's log says exactly how far it applied, and openraft applies the rest again from the
//! replicated log.
//!
//! A follower keeps only its log (the [`Local::Passive`] mode). The leader runs the Space on
//! it ([`Local::Live`]): its changes propose their records and apply them to memory once this
//! state machine has written them (see `space::replication`). Switching between the two
//! happens under the state machine's lock, between entries: a node becoming leader first
//! applies every entry committed before its term, then opens the Space from its log (the same
//! replay as a restart); a node losing its leadership stops its Space, whose memory may hold
//! acks that never committed, and goes back to its log alone.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use space::Space;
use storage::io::Backend;
use storage::{Location, Log, Record};
use tokio::sync::Mutex;

use crate::types::{Applied, Command, TypeConfig};

type C = TypeConfig;

/// What this node does with its broker log.
pub(crate) enum Local {
    /// A follower: committed records are written to the log, nothing runs on them.
    Passive(Log),
    /// The leader: the Space runs on the log and writes through it.
    Live(Space),
    /// Between the two (only while the lock is held), or after a failure.
    Closed,
}

/// What a `ClusterApplied` record holds.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
}

pub(crate) struct Inner {
    pub local: Local,
    pub applied: Option<LogIdOf<C>>,
    pub membership: StoredMembershipOf<C>,
    pub backend: Arc<dyn Backend>,
    pub storage: storage::Config,
}

/// The state machine; clones share it.
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) inner: Arc<Mutex<Inner>>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Opens the broker log in `backend` as a follower's, and reads how far it applied.
pub(crate) fn open_passive(
    backend: &Arc<dyn Backend>,
    config: storage::Config,
) -> io::Result<(Log, Option<AppliedState>)> {
    let mut recovery = Log::open(backend.clone(), config).map_err(other)?;
    let mut last = None;
    for item in recovery.by_ref() {
        if let Record::ClusterApplied { state } = item.map_err(other)?.record {
            last = Some(
                serde_json::from_slice(&state)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            );
        }
    }
    let (log, _) = recovery.finish().map_err(other)?;
    Ok((log, last))
}

impl StateMachine {
    /// The state machine over the broker log in `backend`, as a follower's.
    pub fn open(backend: Arc<dyn Backend>, storage: storage::Config) -> io::Result<StateMachine> {
        let (log, last) = open_passive(&backend, storage.clone())?;
        let AppliedState {
            applied,
            membership,
        } = last.unwrap_or_default();
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                local: Local::Passive(log),
                applied,
                membership,
                backend,
                storage,
            })),
        })
    }
}

impl Inner {
    /// Writes one entry's records and the record naming it, as one batch.
    async fn write(&mut self, mut records: Vec<Record>) -> io::Result<Vec<Location>> {
        let state = AppliedState {
            applied: self.applied,
            membership: self.membership.clone(),
        };
        records.push(Record::ClusterApplied {
            state: Bytes::from(serde_json::to_vec(&state).map_err(other)?),
        });
        let mut locations = match &self.local {
            Local::Passive(log) => log.append_lazy(&records).await.map_err(other)?,
            Local::Live(space) => space.append_committed(&records).await.map_err(other)?,
            Local::Closed => return Err(other("the broker log is closed")),
        };
        locations.pop();
        Ok(locations)
    }
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = io::Cursor<Vec<u8>>;

    /// Snapshots are not taken (the snapshot policy is `Never`): the replicated log keeps every
    /// entry, so a follower always catches up from it.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a cluster node takes no snapshots",
        ))
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
            let locations = inner.write(records).await?;
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
        _meta: &SnapshotMetaOf<C>,
        _snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a cluster node takes no snapshots",
        ))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        Ok(None)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}
