//! The journal: the only way the Space writes its log. It holds the log and the gate, and
//! hands out what the rules that span publish, delivery, checkpoints and reclaiming need:
//!
//! - **A change holds the gate from its append to its effect in memory.** Appends go through
//!   a [`Change`], which holds the gate (shared) until it is dropped, after the change is
//!   applied. A checkpoint takes the gate exclusively: the snapshot then shows memory exactly
//!   as the records before it left it.
//! - **Acks are queued in the order they are applied.** An ack is applied to memory first (a
//!   child waiting for it is released without waiting for the disk), then queued to the log at
//!   once, behind everything appended before ([`Change::ack`]). Any append or sync made later
//!   comes after it in the log.
//! - **Segments go only after what made them dead is durable.** Deleting a segment takes a
//!   [`Settled`] proof: what is live was decided with every change held off, and then the log
//!   was synced, acks included. No message can then come back after a crash with its record
//!   gone.
//! - **On a cluster node, records are committed before they are written here.** On the
//!   leader ([`Mode::Leader`]) every append is proposed to the replicated log and resolves once
//!   committed and written to this log by the one that applies the replicated log
//!   ([`Journal::append_committed`]); acks too, and they are applied only then, like every
//!   other record. A follower ([`Mode::Follower`]) makes no change of its own: its log and its
//!   memory follow the replicated log's committed records only.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use storage::{Ack, Location, Log, LogStats, ReadError, Record, Relocation, SegmentInfo};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::error::JournalError;
use crate::replication::Replicator;

pub(crate) struct Journal {
    log: Log,
    gate: RwLock<()>,
    mode: Mode,
}

/// Whose records this log takes.
pub enum Mode {
    /// A broker on its own: its changes, appended here.
    Single,
    /// A cluster's leader: its changes, once the replicated log committed them.
    Leader(Arc<dyn Replicator>),
    /// A cluster's follower: the records the replicated log committed, nothing else.
    Follower,
}

/// One change under way: it may append, and memory may be changed under it; no checkpoint is
/// taken until it is dropped.
pub(crate) struct Change<'a> {
    journal: &'a Journal,
    _gate: RwLockReadGuard<'a, ()>,
}

/// How an append waits, on a single node.
#[derive(Clone, Copy)]
enum Wait {
    Durable,
    Lazy,
    DurableFreeing,
    LazyFreeing,
}

/// A value computed with every change held off, after which the log was synced: everything
/// applied to memory before the value was computed is durable.
pub(crate) struct Settled<T>(T);

impl<T> Deref for Settled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl Journal {
    pub fn new(log: Log, mode: Mode) -> Journal {
        Journal {
            log,
            gate: RwLock::new(()),
            mode,
        }
    }

    /// Starts a change.
    pub async fn change(&self) -> Change<'_> {
        Change {
            journal: self,
            _gate: self.gate.read().await,
        }
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn is_replicated(&self) -> bool {
        !matches!(self.mode, Mode::Single)
    }

    /// Writes records the replicated log committed, in its order (on a cluster node, by the one
    /// that applies it). Takes no gate: on the leader, the change that proposed them holds it;
    /// a follower takes a change around this and the records' application.
    pub async fn append_committed(
        &self,
        records: &[Record],
    ) -> Result<Vec<Location>, JournalError> {
        Ok(self.log.append_lazy(records).await?)
    }

    async fn write(&self, records: &[Record], wait: Wait) -> Result<Vec<Location>, JournalError> {
        match &self.mode {
            Mode::Leader(r) => return Ok(r.propose(records.to_vec()).await?),
            Mode::Follower => return Err(crate::replication::ReplicationError::NotLeader.into()),
            Mode::Single => {}
        }
        Ok(match wait {
            Wait::Durable => self.log.append(records).await?,
            Wait::Lazy => self.log.append_lazy(records).await?,
            Wait::DurableFreeing => self.log.append_freeing(records).await?,
            Wait::LazyFreeing => self.log.append_lazy_freeing(records).await?,
        })
    }

    /// Writes a checkpoint of what `snapshot` returns, taken with every change held off, and
    /// makes it the one recovery starts from. Returns its location. Changes are held off only
    /// until the checkpoint is queued for the writer (what they append comes after it), not
    /// while it is written.
    pub async fn checkpoint(
        &self,
        snapshot: impl FnOnce() -> Vec<Bytes>,
    ) -> Result<Location, JournalError> {
        let pending = {
            let _exclusive = self.gate.write().await;
            let parts = snapshot();
            self.log.submit_checkpoint(parts).await?
        };
        Ok(pending.written().await?)
    }

    /// Computes `f` with every change held off, then syncs the log.
    pub async fn settled<T>(&self, f: impl FnOnce() -> T) -> Result<Settled<T>, JournalError> {
        let value = {
            let _exclusive = self.gate.write().await;
            f()
        };
        // Queued behind every record, and every ack, of the changes applied before `f` ran.
        self.log.sync().await?;
        Ok(Settled(value))
    }

    /// Copies the records of `segment` that `is_live` keeps to the head of the log, durably.
    /// Only segments before the latest checkpoint.
    pub async fn copy_live_records<T>(
        &self,
        segment: u32,
        _settled: &Settled<T>,
        is_live: impl FnMut(Location, &Record) -> bool,
    ) -> Result<Vec<Relocation>, storage::ReclaimError> {
        self.log.copy_live_records(segment, is_live).await
    }

    /// Deletes a segment that held nothing live when `settled` was computed (or whose live
    /// records were copied forward and repointed since).
    pub fn delete_segment<T>(
        &self,
        segment: u32,
        _settled: &Settled<T>,
    ) -> Result<(), storage::ReclaimError> {
        self.log.delete_segment(segment)
    }

    /// Reads the record at a location.
    pub fn read(&self, at: Location) -> Result<Record, ReadError> {
        self.log.read(at)
    }

    pub fn refusing_writes(&self) -> Option<String> {
        self.log.refusing_writes()
    }

    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.log.segments()
    }

    /// The disk was found full and the log has not made its reserve again.
    pub fn storage_full(&self) -> bool {
        self.log.storage_full()
    }

    pub fn checkpoint_location(&self) -> Option<Location> {
        self.log.checkpoint_location()
    }

    /// Syncs everything appended, then stops the writer.
    pub async fn close(&self) {
        if let Err(e) = self.log.sync().await {
            tracing::error!(error = %e, "final sync of the log failed");
        }
        self.log.clone().close();
    }
}

impl Change<'_> {
    /// Appends records atomically; returns once the fsync policy is met (on disk for
    /// `always`).
    pub async fn append(&self, records: &[Record]) -> Result<Vec<Location>, JournalError> {
        self.journal.write(records, Wait::Durable).await
    }

    /// Appends records without waiting for an fsync: what losing costs only a redelivery or a
    /// repeated attempt (failures, dead letters, expiries). They are synced with the next
    /// durable append, or within 50 ms.
    pub async fn append_lazy(&self, records: &[Record]) -> Result<Vec<Location>, JournalError> {
        self.journal.write(records, Wait::Lazy).await
    }

    /// [`Change::append`] for a change that lets space go (a deletion, a discard): on a full
    /// disk it may use the log's reserve, which publishes may not.
    pub async fn append_freeing(&self, records: &[Record]) -> Result<Vec<Location>, JournalError> {
        self.journal.write(records, Wait::DurableFreeing).await
    }

    /// [`Change::append_lazy`] for a change that lets space go (an expiry, a dead letter).
    pub async fn append_lazy_freeing(
        &self,
        records: &[Record],
    ) -> Result<Vec<Location>, JournalError> {
        self.journal.write(records, Wait::LazyFreeing).await
    }

    /// Queues an ack whose effect was just applied (call it under the queue's lock, right
    /// after applying it). A broker on its own only: a cluster node appends acks, then applies
    /// them, like any record.
    pub fn ack(&self, ack: Ack) {
        if self.journal.is_replicated() {
            debug_assert!(false, "an ack applied before it was committed");
            tracing::error!(message = %ack.message, "an ack applied before it was committed was dropped");
            return;
        }
        if let Err(e) = self.journal.log.append_ack(ack) {
            tracing::warn!(error = %e, message = %ack.message, "could not queue an ack for the log; the message will be sent again after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::sim::SimDisk;

    fn open(disk: &SimDisk) -> (Log, Vec<Record>) {
        let mut recovery = Log::open(Arc::new(disk.clone()), storage::Config::default()).unwrap();
        let records = recovery
            .by_ref()
            .map(|r| r.unwrap().record)
            .collect::<Vec<_>>();
        (recovery.finish().unwrap().0, records)
    }

    /// What reclaiming relies on: an ack applied (and queued) before a settled value is
    /// computed is on disk once the value is, so a segment deleted on the strength of it
    /// cannot come back owed after a power loss.
    #[tokio::test]
    async fn an_ack_queued_before_a_settled_value_is_durable_with_it() {
        let disk = SimDisk::new(3);
        let journal = Journal::new(open(&disk).0, Mode::Single);
        let ack = Ack {
            message: uuid::Uuid::from_u128(7),
            subscriber: 1,
            attempt: 1,
            acked_at_ms: 5,
        };
        {
            let change = journal.change().await;
            change.ack(ack);
        }
        let settled = journal.settled(|| "live").await.unwrap();
        assert_eq!(*settled, "live");
        disk.crash();
        drop(journal);
        disk.restart();
        let (_, records) = open(&disk);
        assert_eq!(records, vec![Record::Acked { acks: vec![ack] }]);
    }

    /// A checkpoint waits for changes under way: it sees memory only between changes.
    #[tokio::test]
    async fn a_checkpoint_waits_for_the_changes_under_way() {
        let disk = SimDisk::new(4);
        let journal = Arc::new(Journal::new(open(&disk).0, Mode::Single));
        let change = journal.change().await;
        let j = journal.clone();
        let checkpoint =
            tokio::spawn(async move { j.checkpoint(|| vec![Bytes::from_static(b"s")]).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !checkpoint.is_finished(),
            "taken while a change was under way"
        );
        drop(change);
        checkpoint.await.unwrap().unwrap();
    }
}
