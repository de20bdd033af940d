//! The replicated log of a cluster node: entries addressed by index, each made durable
//! (`fdatasync`) before [`RaftLog::append`] returns, an uncommitted suffix cut off by
//! [`RaftLog::truncate_after`], a prefix given up by [`RaftLog::purge`] once a snapshot holds
//! it, and the vote kept durably beside them. Entries are opaque bytes: the consensus layer
//! encodes its own (term, membership changes, the broker's records).
//!
//! On disk (its own directory): segments `raft-{first index:020}.log` (layout in [`segment`]),
//! `raft-meta` (vote, purged position; replaced atomically) and `raft-committed` (a hint).
//! Every change is ordered on disk as it is made: an append is synced before the next change,
//! a truncation is synced before any later append, the purged position is durable before a
//! segment is deleted, and segments are deleted from the end backwards, so a crash leaves no
//! hole and no stale entry after a newer one.

mod meta;
mod segment;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::io::{Backend, BackendFile};
pub use meta::Meta;
pub use segment::RAFT_FORMAT_VERSION;
use segment::{ENTRY_HEADER_BYTES, HEADER_BYTES};

/// A new segment is started once the current one holds this many bytes.
pub const RAFT_SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// The largest entry payload (a batch of records with its bodies).
pub const RAFT_ENTRY_BYTES_MAX: usize = 256 << 20;

/// One entry: its index and what the consensus layer stored in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftEntry {
    pub index: u64,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Damage that is not a torn write at the end of the log.
    #[error("{file}: corrupted at byte {offset}: {reason}")]
    Corrupted {
        file: String,
        offset: u64,
        reason: String,
    },
    /// Entries must follow the log without a gap.
    #[error("entry {got} does not follow the log (expected {expected})")]
    Gap { expected: u64, got: u64 },
    #[error("entry {index} has {bytes} bytes, more than {RAFT_ENTRY_BYTES_MAX}")]
    TooLarge { index: u64, bytes: usize },
    /// A write failed part way and could not be undone: nothing more is written until the
    /// node restarts and recovers.
    #[error("the replicated log refuses writes after a failed write: {0}")]
    Refusing(String),
}

struct Segment {
    first: u64,
    name: String,
    file: Arc<dyn BackendFile>,
    len: u64,
    /// Where each entry starts: entry `first + i` at `offsets[i]`.
    offsets: Vec<u64>,
}

impl Segment {
    /// One past its last entry.
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Everything it holds (or would hold first) is at or below `index`.
    fn all_at_or_below(&self, index: u64) -> bool {
        self.first <= index && self.end() <= index + 1
    }
}

pub struct RaftLog {
    backend: Arc<dyn Backend>,
    salt: u32,
    meta: Meta,
    committed: Option<Bytes>,
    segments: Vec<Segment>,
    segment_bytes: u64,
    refusing: Option<String>,
}

fn io_error(file: &str) -> impl FnOnce(std::io::Error) -> RaftLogError + '_ {
    move |source| RaftLogError::Io {
        file: file.to_owned(),
        source,
    }
}

fn corrupted(file: &str, offset: u64, reason: impl Into<String>) -> RaftLogError {
    RaftLogError::Corrupted {
        file: file.to_owned(),
        offset,
        reason: reason.into(),
    }
}

impl RaftLog {
    /// Opens the log in `backend` (creating it when the directory holds none), cutting a torn
    /// tail off the last segment.
    pub fn open(backend: Arc<dyn Backend>, segment_bytes: u64) -> Result<RaftLog, RaftLogError> {
        let names = backend.list().map_err(io_error("."))?;
        if names.iter().any(|n| n == meta::META_ASIDE) {
            backend
                .remove(meta::META_ASIDE)
                .map_err(io_error(meta::META_ASIDE))?;
        }
        let mut firsts: Vec<(u64, String)> = names
            .iter()
            .filter_map(|n| segment::first_of(n).map(|f| (f, n.clone())))
            .collect();
        firsts.sort_unstable();
        let (salt, meta) = match Meta::read(&backend).map_err(|e| corrupted(meta::META, 0, e))? {
            Some(found) => found,
            None if firsts.is_empty() => {
                let salt = crate::frame::Salt::random().value();
                let meta = Meta::default();
                meta.write(&backend, salt).map_err(io_error(meta::META))?;
                (salt, meta)
            }
            None => return Err(corrupted(meta::META, 0, "segments without their raft-meta")),
        };
        let committed = meta::read_committed(&backend, salt);
        let mut log = RaftLog {
            backend,
            salt,
            meta,
            committed,
            segments: Vec::with_capacity(firsts.len()),
            segment_bytes: segment_bytes.max(HEADER_BYTES as u64 + 1),
            refusing: None,
        };
        let count = firsts.len();
        for (i, (first, name)) in firsts.into_iter().enumerate() {
            if let Some(s) = log.recover_segment(first, name, i + 1 == count)? {
                log.segments.push(s);
            }
        }
        log.drop_purged_segments()?;
        log.check_contiguous()?;
        Ok(log)
    }

    /// Reads one segment back: its entries up to the first that is not whole (the end of a
    /// torn write, cut off when it is the last segment; damage otherwise).
    fn recover_segment(
        &self,
        first: u64,
        name: String,
        last: bool,
    ) -> Result<Option<Segment>, RaftLogError> {
        let file = self.backend.open(&name).map_err(io_error(&name))?;
        let len = file.len().map_err(io_error(&name))?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, 0).map_err(io_error(&name))?;
        match segment::read_header(&buf) {
            Ok((salt, f)) if salt == self.salt && f == first => {}
            // A segment is created (header synced) before anything goes in it: the last one
            // with no header whole was being created, and holds nothing acknowledged.
            Err(_) if last && len < 2 * HEADER_BYTES as u64 => {
                self.backend.remove(&name).map_err(io_error(&name))?;
                self.backend.sync_dir().map_err(io_error(&name))?;
                return Ok(None);
            }
            Ok(_) => return Err(corrupted(&name, 0, "header of another log or position")),
            Err(why) => return Err(corrupted(&name, 0, why)),
        }
        let mut offsets = Vec::new();
        let mut at = HEADER_BYTES;
        while let Some(payload) =
            segment::read_entry(&buf[at..], self.salt, first + offsets.len() as u64)
        {
            offsets.push(at as u64);
            at += ENTRY_HEADER_BYTES + payload.len();
        }
        if at < buf.len() {
            if !last {
                return Err(corrupted(
                    &name,
                    at as u64,
                    "an entry that is not whole, before the last segment",
                ));
            }
            tracing::warn!(file = %name, offset = at, "cutting a torn write off the replicated log");
            file.set_len(at as u64).map_err(io_error(&name))?;
            file.sync_data().map_err(io_error(&name))?;
        }
        Ok(Some(Segment {
            first,
            name,
            file,
            len: at as u64,
            offsets,
        }))
    }

    /// Deletes the segments wholly at or below the purged index: after a purge, and at open
    /// (a purge that crashed before deleting).
    fn drop_purged_segments(&mut self) -> Result<(), RaftLogError> {
        let Some((purged, _)) = self.meta.purged else {
            return Ok(());
        };
        let mut removed = false;
        while self
            .segments
            .first()
            .is_some_and(|s| s.all_at_or_below(purged))
        {
            let s = self.segments.remove(0);
            self.backend.remove(&s.name).map_err(io_error(&s.name))?;
            removed = true;
        }
        if removed {
            self.backend.sync_dir().map_err(io_error("."))?;
        }
        Ok(())
    }

    fn check_contiguous(&self) -> Result<(), RaftLogError> {
        for pair in self.segments.windows(2) {
            if pair[1].first != pair[0].end() {
                return Err(corrupted(
                    &pair[1].name,
                    0,
                    format!("a gap: the segment before ends at entry {}", pair[0].end()),
                ));
            }
        }
        if let (Some((purged, _)), Some(s)) = (&self.meta.purged, self.segments.first())
            && s.first > purged + 1
        {
            return Err(corrupted(
                &s.name,
                0,
                format!("a gap after the purged entry {purged}"),
            ));
        }
        Ok(())
    }

    /// The index the next appended entry must have; `None` for a log that never held one.
    pub fn next_index(&self) -> Option<u64> {
        match self.segments.iter().rev().find(|s| !s.offsets.is_empty()) {
            Some(s) => Some(s.end()),
            None => self.meta.purged.as_ref().map(|(i, _)| i + 1),
        }
    }

    /// The first index held (entries below were purged); `None` when the log holds none.
    pub fn first_index(&self) -> Option<u64> {
        let purged_next = self.meta.purged.as_ref().map_or(0, |(i, _)| i + 1);
        let first = self.segments.iter().find(|s| !s.offsets.is_empty())?.first;
        let end = self.next_index()?;
        let first = first.max(purged_next);
        (first < end).then_some(first)
    }

    pub fn vote(&self) -> Option<&Bytes> {
        self.meta.vote.as_ref()
    }

    /// The last purged index and the log id the caller gave with it.
    pub fn purged(&self) -> Option<&(u64, Bytes)> {
        self.meta.purged.as_ref()
    }

    pub fn committed(&self) -> Option<&Bytes> {
        self.committed.as_ref()
    }

    fn refuse_if_broken(&self) -> Result<(), RaftLogError> {
        match &self.refusing {
            Some(why) => Err(RaftLogError::Refusing(why.clone())),
            None => Ok(()),
        }
    }

    /// Saves the vote durably: once this returns, a crash keeps it.
    pub fn save_vote(&mut self, vote: Bytes) -> Result<(), RaftLogError> {
        self.refuse_if_broken()?;
        let mut next = self.meta.clone();
        next.vote = Some(vote);
        next.write(&self.backend, self.salt)
            .map_err(io_error(meta::META))?;
        self.meta = next;
        Ok(())
    }

    /// Saves the committed position as a hint (not synced).
    pub fn save_committed(&mut self, committed: Option<Bytes>) -> Result<(), RaftLogError> {
        meta::write_committed(&self.backend, self.salt, &committed)
            .map_err(io_error(meta::COMMITTED))?;
        self.committed = committed;
        Ok(())
    }

    /// Appends entries that follow the log, and makes them durable (one `fdatasync` for all).
    pub fn append(&mut self, entries: &[RaftEntry]) -> Result<(), RaftLogError> {
        self.refuse_if_broken()?;
        let Some(head) = entries.first() else {
            return Ok(());
        };
        let first = self.next_index().unwrap_or(head.index);
        let mut buf = Vec::new();
        let mut at = Vec::with_capacity(entries.len());
        for (expected, e) in (first..).zip(entries) {
            if e.index != expected {
                return Err(RaftLogError::Gap {
                    expected,
                    got: e.index,
                });
            }
            if e.payload.len() > RAFT_ENTRY_BYTES_MAX {
                return Err(RaftLogError::TooLarge {
                    index: e.index,
                    bytes: e.payload.len(),
                });
            }
            at.push(buf.len() as u64);
            segment::write_entry(&mut buf, self.salt, e.index, &e.payload);
        }
        let fits = self.segments.last().is_some_and(|s| {
            s.end() == head.index
                && (s.offsets.is_empty() || s.len + buf.len() as u64 <= self.segment_bytes)
        });
        if !fits {
            self.start_segment(head.index)?;
        }
        let Some(s) = self.segments.last_mut() else {
            return Err(RaftLogError::Refusing("no segment to append to".into()));
        };
        let written = s
            .file
            .write_all_at(&buf, s.len)
            .and_then(|()| s.file.sync_data());
        if let Err(e) = written {
            // Cut what may have been written, so that nothing of it can be read back later.
            if let Err(undo) = s.file.set_len(s.len).and_then(|()| s.file.sync_data()) {
                self.refusing = Some(format!("{}: {undo}", s.name));
            }
            return Err(io_error(&s.name)(e));
        }
        s.offsets.extend(at.into_iter().map(|o| s.len + o));
        s.len += buf.len() as u64;
        Ok(())
    }

    /// A new segment whose first entry will be `first`; an empty last segment that cannot take
    /// it goes first.
    fn start_segment(&mut self, first: u64) -> Result<(), RaftLogError> {
        if self.segments.last().is_some_and(|s| s.offsets.is_empty())
            && let Some(s) = self.segments.pop()
        {
            // Gone for good before another segment appears: the two never coexist on disk.
            self.backend.remove(&s.name).map_err(io_error(&s.name))?;
            self.backend.sync_dir().map_err(io_error(&s.name))?;
        }
        let name = segment::name(first);
        let file = self.backend.create(&name).map_err(io_error(&name))?;
        let header = segment::header(self.salt, first);
        file.write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.backend.sync_dir())
            .map_err(io_error(&name))?;
        self.segments.push(Segment {
            first,
            name,
            file,
            len: HEADER_BYTES as u64,
            offsets: Vec::new(),
        });
        Ok(())
    }

    /// Removes every entry after `keep` (all of them for `None`), durably, from the end
    /// backwards: each removal is durable before the next change, so a crash never leaves a
    /// later segment behind a cut one.
    pub fn truncate_after(&mut self, keep: Option<u64>) -> Result<(), RaftLogError> {
        self.refuse_if_broken()?;
        let from = keep.map_or(0, |k| k + 1);
        while let Some(s) = self.segments.last_mut() {
            if s.first >= from && !(s.offsets.is_empty() && s.first == from) {
                let name = s.name.clone();
                self.backend
                    .remove(&name)
                    .and_then(|()| self.backend.sync_dir())
                    .map_err(io_error(&name))?;
                self.segments.pop();
                continue;
            }
            if s.end() > from {
                let cut = s.offsets[(from - s.first) as usize];
                s.file
                    .set_len(cut)
                    .and_then(|()| s.file.sync_data())
                    .map_err(io_error(&s.name))?;
                s.offsets.truncate((from - s.first) as usize);
                s.len = cut;
            }
            break;
        }
        Ok(())
    }

    /// Gives up every entry up to `index` (its log id `id`, kept to be told back): the purged
    /// position is durable first, then whole segments below it are deleted. `index` may be past
    /// the last entry (a snapshot installed from the leader): the log then continues after it.
    pub fn purge(&mut self, index: u64, id: Bytes) -> Result<(), RaftLogError> {
        self.refuse_if_broken()?;
        if self.meta.purged.as_ref().is_some_and(|(p, _)| *p >= index) {
            return Ok(());
        }
        let mut next = self.meta.clone();
        next.purged = Some((index, id));
        next.write(&self.backend, self.salt)
            .map_err(io_error(meta::META))?;
        self.meta = next;
        self.drop_purged_segments()
    }

    /// The entries held in `range`, in order (fewer at either end when it reaches past what
    /// the log holds).
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<RaftEntry>, RaftLogError> {
        let (Some(first), Some(end)) = (self.first_index(), self.next_index()) else {
            return Ok(Vec::new());
        };
        let (start, stop) = (range.start.max(first), range.end.min(end));
        let mut out = Vec::with_capacity(stop.saturating_sub(start) as usize);
        for index in start..stop {
            out.push(self.read(index)?);
        }
        Ok(out)
    }

    fn read(&self, index: u64) -> Result<RaftEntry, RaftLogError> {
        let at = self.segments.partition_point(|s| s.first <= index);
        let s = at
            .checked_sub(1)
            .map(|i| &self.segments[i])
            .filter(|s| index < s.end())
            .ok_or(RaftLogError::Gap {
                expected: index,
                got: index,
            })?;
        let offset = s.offsets[(index - s.first) as usize];
        let mut header = [0u8; ENTRY_HEADER_BYTES];
        s.file
            .read_exact_at(&mut header, offset)
            .map_err(io_error(&s.name))?;
        let mut buf = vec![0u8; ENTRY_HEADER_BYTES + segment::announced_len(&header)];
        s.file
            .read_exact_at(&mut buf, offset)
            .map_err(io_error(&s.name))?;
        let payload = segment::read_entry(&buf, self.salt, index).ok_or_else(|| {
            corrupted(
                &s.name,
                offset,
                format!("entry {index} no longer reads whole"),
            )
        })?;
        Ok(RaftEntry { index, payload })
    }
}
