//! A small state machine for the cluster's tests: it keeps the commands it applied, and its
//! snapshot is their list. The subject of these tests is the log and the transport; the Space
//! as the cluster's state machine has its own.

#![allow(dead_code)]

use std::io;
use std::sync::Arc;

use futures_util::TryStreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use tokio::sync::Mutex;

use cluster::{Applied, Command, TypeConfig};

type C = TypeConfig;

#[derive(Default)]
pub struct Inner {
    pub last_applied: Option<LogIdOf<C>>,
    pub membership: StoredMembershipOf<C>,
    pub applied: Vec<Vec<u8>>,
    pub snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// Applies commands by keeping them; its snapshot is their list.
#[derive(Clone, Default)]
pub struct Kept(pub Arc<Mutex<Inner>>);

impl RaftSnapshotBuilder<C> for Kept {
    type SnapshotData = io::Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let mut inner = self.0.lock().await;
        let data = serde_json::to_vec(&inner.applied).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
        };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<C, Self::SnapshotData> {
            meta,
            snapshot: io::Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for Kept {
    type SnapshotData = io::Cursor<Vec<u8>>;
    type SnapshotBuilder = Kept;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.0.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        let mut inner = self.0.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            inner.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Command(bytes)) => inner.applied.push(bytes.clone()),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m.clone());
                }
            }
            if let Some(r) = responder {
                r.send(Applied {
                    index: entry.log_id.index,
                    locations: Vec::new(),
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
        let data = snapshot.into_inner();
        let applied = serde_json::from_slice(&data).map_err(io::Error::other)?;
        let mut inner = self.0.lock().await;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.applied = applied;
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        let inner = self.0.lock().await;
        Ok(inner
            .snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<C, Self::SnapshotData> {
                meta: meta.clone(),
                snapshot: io::Cursor::new(data.clone()),
            }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}

impl Kept {
    /// The commands applied so far.
    pub async fn applied(&self) -> Vec<Vec<u8>> {
        self.0.lock().await.applied.clone()
    }
}
