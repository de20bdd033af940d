//! The Space's side of a cluster node (see [`crate::replication`]): what the one applying the
//! replicated log asks of it.
//!
//! - On the leader, [`Space::append_committed`] writes a committed entry's records to the log
//!   and hands their locations to the change that proposed them, which applies them.
//! - On a follower, [`Space::apply_committed`] writes them and applies them at once, by the
//!   transitions replay uses, under a change (so a checkpoint sees memory only between
//!   entries).
//! - A snapshot of the replicated state is the checkpoint's snapshot, taken the same way; it
//!   carries the last `ClusterApplied` state, so it says which entry it stands for.

use bytes::Bytes;
use storage::{Location, Record, Replayed};

use super::Space;
use super::journal::Mode;
use super::registry::Registry;
use super::replay::{self, Rebuilt};
use crate::error::JournalError;
use crate::limits::CHECKPOINT_PART_BYTES;
use crate::model::{QueueNumber, SubscriberId};
use crate::queue::QueueState;

/// A follower's registry, as replay's target.
struct Following<'a>(&'a Registry);

impl Rebuilt for Following<'_> {
    fn queue<T>(&mut self, number: QueueNumber, f: impl FnOnce(&mut QueueState) -> T) -> Option<T> {
        let q = self.0.by_number(number)?;
        let mut st = q.lock();
        Some(f(&mut st))
    }

    fn create(&mut self, state: QueueState) {
        self.0.insert(std::sync::Arc::new(super::Queue::new(state)));
    }

    fn delete(&mut self, number: QueueNumber) {
        if let Some(q) = self.0.by_number(number) {
            let name = q.lock().name().clone();
            self.0.remove(&name, number);
        }
    }

    fn saw_queue_number(&mut self, number: QueueNumber) {
        self.0.saw_queue_number(number);
    }

    fn saw_subscriber(&mut self, id: SubscriberId) {
        self.0.saw_subscriber(id);
    }

    fn saw_cluster_state(&mut self, state: Bytes) {
        self.0.set_cluster_state(state);
    }
}

fn last_cluster_state(records: &[Record]) -> Option<Bytes> {
    records.iter().rev().find_map(|r| match r {
        Record::ClusterApplied { state } => Some(state.clone()),
        _ => None,
    })
}

impl Space {
    /// On the leader: writes the records of a committed entry to this node's log and returns
    /// their locations, for the change that proposed them to apply.
    pub async fn append_committed(
        &self,
        records: &[Record],
    ) -> Result<Vec<Location>, JournalError> {
        let locations = self.inner.journal.append_committed(records).await?;
        if let Some(state) = last_cluster_state(records) {
            self.inner.registry.set_cluster_state(state);
        }
        Ok(locations)
    }

    /// On a follower: writes the records of a committed entry to this node's log and applies
    /// them to memory.
    pub async fn apply_committed(&self, records: Vec<Record>) -> Result<(), JournalError> {
        if !matches!(self.inner.journal.mode(), Mode::Follower) {
            return Err(JournalError::Apply(
                "only a follower applies committed records itself".into(),
            ));
        }
        let _change = self.inner.journal.change().await;
        let locations = self.inner.journal.append_committed(&records).await?;
        let mut target = Following(&self.inner.registry);
        for (record, location) in records.into_iter().zip(locations) {
            let replayed = Replayed {
                location,
                record,
                relocated_from: None,
            };
            replay::apply(&mut target, replayed).map_err(|e| JournalError::Apply(e.to_string()))?;
        }
        Ok(())
    }

    /// The last `ClusterApplied` state applied (empty before any).
    pub fn cluster_state(&self) -> Bytes {
        self.inner.registry.cluster_state()
    }

    /// A snapshot of the whole state, as a checkpoint holds it, with the `ClusterApplied`
    /// state it stands for; everything it shows is in the log, synced, when it returns.
    pub async fn cluster_snapshot(&self) -> Result<(Bytes, Bytes), JournalError> {
        let settled = self
            .inner
            .journal
            .settled(|| {
                let queues = self.inner.registry.all();
                let guards: Vec<_> = queues.iter().map(|q| q.lock()).collect();
                let counters = self.inner.registry.counters();
                let snapshot = crate::snapshot::encode(&counters, guards.iter().map(|g| &**g));
                (Bytes::from(snapshot), counters.cluster)
            })
            .await?;
        Ok((*settled).clone())
    }

    /// On a follower: makes `snapshot` (as [`Space::cluster_snapshot`] made it on another node)
    /// this log's latest checkpoint, durably. Memory is not changed: the Space must be opened
    /// again, and then starts from it.
    pub async fn install_checkpoint(&self, snapshot: Bytes) -> Result<(), JournalError> {
        if !matches!(self.inner.journal.mode(), Mode::Follower) {
            return Err(JournalError::Apply(
                "only a follower installs a snapshot".into(),
            ));
        }
        crate::snapshot::decode(snapshot.clone())
            .map_err(|e| JournalError::Apply(format!("an unreadable snapshot: {e}")))?;
        self.inner
            .journal
            .checkpoint(|| crate::snapshot::parts(snapshot.clone(), CHECKPOINT_PART_BYTES))
            .await?;
        Ok(())
    }
}
