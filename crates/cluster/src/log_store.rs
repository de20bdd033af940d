//! A node's replicated log as openraft's log storage: entries, the vote and the purged and
//! committed positions kept by [`RaftLog`], each entry stored as its JSON. Disk work runs on
//! the blocking pool, one operation at a time in the order openraft issues them (a single
//! lock), so the log's own ordering rules hold; an append reports its entries flushed only
//! after their `fdatasync`.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, Range, RangeBounds};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry as _;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use storage::raft::{RaftEntry, RaftLog, RaftLogError};

use crate::types::TypeConfig;

type C = TypeConfig;

/// The log storage of one node; clones share the log (a clone is its reader).
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<RaftLog>>,
}

fn to_io(e: RaftLogError) -> io::Error {
    match e {
        RaftLogError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> io::Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(io::Error::other)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `RangeBounds` of indexes as a half-open range.
fn half_open(range: &impl RangeBounds<u64>) -> Range<u64> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    start..end
}

impl LogStore {
    pub fn new(log: RaftLog) -> LogStore {
        LogStore {
            log: Arc::new(Mutex::new(log)),
        }
    }

    /// Runs `f` on the log on the blocking pool.
    async fn with_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RaftLog) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut log)
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let range = half_open(&range);
        self.with_log(move |log| {
            log.entries(range)
                .map_err(to_io)?
                .iter()
                .map(|e| decode(&e.payload))
                .collect()
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.with_log(|log| log.vote().map(|v| decode(v)).transpose())
            .await
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        self.with_log(|log| {
            let purged: Option<LogIdOf<C>> = log.purged().map(|(_, id)| decode(id)).transpose()?;
            let last = match (log.first_index(), log.next_index()) {
                (Some(_), Some(next)) => {
                    let entries = log.entries(next - 1..next).map_err(to_io)?;
                    match entries.first() {
                        Some(e) => Some(decode::<EntryOf<C>>(&e.payload)?.log_id()),
                        None => purged,
                    }
                }
                _ => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        self.with_log(move |log| log.save_vote(bytes).map_err(to_io))
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = committed.as_ref().map(encode).transpose()?;
        self.with_log(move |log| log.save_committed(bytes).map_err(to_io))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.with_log(|log| log.committed().map(|c| decode(c)).transpose())
            .await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push(RaftEntry {
                index: e.index(),
                payload: encode(&e)?,
            });
        }
        // Durable when `append` returns: the entries are flushed, and readable, at once.
        match self
            .with_log(move |log| log.append(&encoded).map_err(to_io))
            .await
        {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let keep = last_log_id.map(|id| id.index());
        self.with_log(move |log| log.truncate_after(keep).map_err(to_io))
            .await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let id = encode(&log_id)?;
        let index = log_id.index();
        self.with_log(move |log| log.purge(index, id).map_err(to_io))
            .await
    }
}
