//! The writer: one OS thread that owns the active segment ("exclusive write").
//!
//! Appenders encode their records on their own thread and queue the bytes in the inbox. The
//! writer takes everything queued (up to [`WRITE_BATCH_BYTES_MAX`]), writes it with one `pwrite`,
//! runs one `fdatasync` if any append in the group asked for durability, and then completes every
//! waiter of the group. While an fsync runs, new appends pile up in the inbox and share the next
//! one: that is group commit, and it is why durable appends scale with concurrency.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::AppendError;
use crate::frame::{
    Location, SEGMENT_HEADER_BYTES, Salt, Unit, encode_unit, segment_header, write_sync_mark,
};
use crate::inbox::{AppendReply, Inbox, Request, Wait, WriterWait, lock};
use crate::io::{Backend, BackendFile};
use crate::limits::{LAZY_SYNC_DELAY_MS, WRITE_BATCH_BYTES_MAX};
use crate::record::Record;
use crate::segment::segment_name;

/// Name of the next segment while it is being preallocated, before the roll renames it.
pub(crate) const PREALLOC_FILE: &str = "prealloc.tmp";

/// Name of the file that points at the latest complete checkpoint.
pub(crate) const CHECKPOINT_FILE: &str = "CHECKPOINT";
const CHECKPOINT_TMP_FILE: &str = "CHECKPOINT.tmp";
const CHECKPOINT_MAGIC: &[u8; 8] = b"SBCHKPT1";
/// Bytes of the checkpoint pointer file: magic, location, crc32c.
pub(crate) const CHECKPOINT_FILE_BYTES: usize = 8 + 12 + 4;

pub(crate) fn encode_checkpoint_pointer(at: Location) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_FILE_BYTES);
    out.extend_from_slice(CHECKPOINT_MAGIC);
    at.encode(&mut out);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_checkpoint_pointer(b: &[u8]) -> Option<Location> {
    if b.len() != CHECKPOINT_FILE_BYTES || &b[..8] != CHECKPOINT_MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
    (stored == crc32c::crc32c(&b[..20])).then(|| Location::decode(&b[8..20]))
}

/// When appended data is made durable (`storage.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A durable append completes only after an fsync covering it; concurrent appends share
    /// one fsync (group commit).
    Always,
    /// Appends complete once written; the writer fsyncs at most this long after a write.
    /// A crash may lose the last interval.
    Interval(Duration),
    /// Appends complete once written; the OS decides when data reaches the disk. Segments are
    /// still synced when sealed and on close.
    Never,
}

/// The segments every reader can see, by id. Readers clone an `Arc` under a short read lock and
/// do their I/O without any lock.
pub(crate) type SegmentMap = RwLock<BTreeMap<u32, Arc<dyn BackendFile>>>;

/// What the writer shares with the [`crate::Log`] handles.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    /// The log's salt (see [`Salt`]).
    pub salt: Salt,
    pub segments: SegmentMap,
    pub checkpoint: Mutex<Option<Location>>,
    pub inbox: Inbox,
    pub stats: Counters,
    /// Why the writer refuses every append from now on, once it does (see `Writer::poisoned`).
    pub refusing: std::sync::OnceLock<String>,
    /// The disk was found full and the reserve is not made again yet (see `reserve.rs`).
    pub full: std::sync::atomic::AtomicBool,
}

/// Running totals kept by the writer, read by [`crate::Log::stats`] (metrics, benchmarks).
#[derive(Default)]
pub(crate) struct Counters {
    pub writes: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub rolls: AtomicU64,
}

/// A snapshot of the writer's running totals since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// `pwrite` calls: one per group commit (plus one per segment roll mid-group).
    pub writes: u64,
    pub bytes: u64,
    /// `fdatasync` calls on segments; appends per sync shows group commit at work.
    pub syncs: u64,
    pub rolls: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> LogStats {
        LogStats {
            writes: self.writes.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            rolls: self.rolls.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    pub(crate) fn checkpoint(&self) -> Option<Location> {
        *lock(&self.checkpoint)
    }
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    /// The log's salt: sync marks and gathered acks are framed here.
    pub salt: Salt,
    /// How far the active segment is known to be on disk (its length at the last fsync).
    pub synced_end: u64,
    /// The highest `synced_end` a sync mark written in the active segment states.
    pub marked_end: u64,
    /// The claim of the sync mark in `buf`, if there is one: it counts once written.
    pub mark_in_buf: Option<u64>,
    /// A sync mark was written since the last fsync.
    pub mark_unsynced: bool,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub active: u32,
    pub active_file: Arc<dyn BackendFile>,
    /// Bytes of the active segment written so far.
    pub active_len: u64,
    /// Reused buffer for one group's write.
    pub buf: Vec<u8>,
    /// When unsynced data was first written, if there is any.
    pub dirty_since: Option<Instant>,
    /// Set after an fsync failure; every later request fails with it.
    pub poisoned: Option<String>,
    /// Disk kept back for what frees space once the disk is full.
    pub reserve: crate::reserve::Reserve,
    /// Zero-fill the next segment ahead of the roll (see [`crate::segment::preallocate`]).
    pub preallocate: bool,
    /// The next segment, zero-filled and synced, once the preparing thread is done.
    pub prepared: Arc<Mutex<Option<Arc<dyn BackendFile>>>>,
    /// The preparing thread, joined before the writer exits: it holds the backend (and so the
    /// data directory's lock).
    pub preparer: Option<std::thread::JoinHandle<()>>,
}

struct CloseInboxOnExit(Arc<Shared>);

impl Drop for CloseInboxOnExit {
    fn drop(&mut self) {
        self.0.inbox.close();
        let queued = std::mem::take(&mut lock(&self.0.inbox.state).requests);
        drop(queued);
    }
}

/// A request of the current group, waiting for the group's write and sync.
enum Pending {
    Append {
        locations: Vec<Location>,
        wait: Wait,
        reply: AppendReply,
    },
    Checkpoint {
        locations: Vec<Location>,
        reply: AppendReply,
    },
    Sync {
        reply: oneshot::Sender<Result<(), AppendError>>,
    },
    /// Gathered acks: nobody waits for them.
    Acks,
}

impl Pending {
    fn needs_sync(&self, fsync: FsyncPolicy) -> bool {
        match self {
            Pending::Acks => false,
            Pending::Append { wait, .. } => match wait {
                Wait::Written => false,
                Wait::Policy => fsync == FsyncPolicy::Always,
                Wait::Synced => true,
            },
            Pending::Checkpoint { .. } | Pending::Sync { .. } => true,
        }
    }

    fn fail(self, e: &AppendError) {
        match self {
            Pending::Append { reply, .. } | Pending::Checkpoint { reply, .. } => {
                let _ = reply.send(Err(e.duplicate()));
            }
            Pending::Sync { reply } => {
                let _ = reply.send(Err(e.duplicate()));
            }
            Pending::Acks => {
                tracing::warn!(error = %e, "gathered acks could not be written; their messages will be sent again after a restart");
            }
        }
    }
}

impl Writer {
    /// The writer thread's loop: runs until the inbox is closed and drained.
    pub(crate) fn run(mut self) {
        // However the writer stops (even by a panic), appenders must not wait forever: close
        // the inbox and drop what is queued, which completes every waiter with `Closed`.
        let _closer = CloseInboxOnExit(self.shared.clone());
        while let Some((batch, deadline_passed)) = self.next_batch() {
            let slots = batch.iter().filter(|r| r.holds_slot()).count();
            self.shared.inbox.slots.add_permits(slots);
            self.process(batch);
            if deadline_passed {
                // The sync that was due covers this batch too: what waited for the deadline
                // (lazy acks above all) is durable with it.
                self.sync_if_dirty();
            }
        }
        if let Some(preparer) = self.preparer.take() {
            let _ = preparer.join();
        }
    }

    /// Waits for the next group of requests; `None` once the inbox is closed and drained.
    /// The flag says a sync deadline has passed: the caller syncs right after the group, so
    /// that sustained load (an inbox that never empties) cannot put off the sync for ever.
    ///
    /// The writer takes whatever is queued the moment it is free, without waiting for more.
    /// Appenders completed by one fsync come back while the next one runs, so they settle into
    /// two cohorts that alternate, each sharing one fsync. Waiting for the returning cohort
    /// to make one big group was measured and lost: fewer appends per second and higher
    /// latency (see `docs/benchmarks.md`).
    fn next_batch(&mut self) -> Option<(Vec<Request>, bool)> {
        let shared = self.shared.clone();
        let inbox = &shared.inbox;
        let mut st = lock(&inbox.state);
        loop {
            let due = self.sync_deadline().is_some_and(|d| Instant::now() >= d);
            if !st.requests.is_empty() {
                return Some((take_batch(&mut st.requests), due));
            }
            if due {
                drop(st);
                self.sync_if_dirty();
                st = lock(&inbox.state);
                continue;
            }
            if st.closed {
                drop(st);
                self.sync_if_dirty();
                self.seal_with_mark();
                return None;
            }
            match self.sync_deadline() {
                None => {
                    st.writer_waiting = WriterWait::Indefinitely;
                    st = inbox.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                Some(deadline) => {
                    st.writer_waiting = WriterWait::Until(deadline);
                    let left = deadline.saturating_duration_since(Instant::now());
                    st = inbox
                        .wake
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            st.writer_waiting = WriterWait::Busy;
        }
    }

    /// When written-but-unsynced data must be synced by, if there is any.
    fn sync_deadline(&self) -> Option<Instant> {
        if self.poisoned.is_some() {
            // Nothing can be synced any more; waiting for a deadline would spin.
            return None;
        }
        let since = self.dirty_since?;
        match self.fsync {
            FsyncPolicy::Always => Some(since + Duration::from_millis(LAZY_SYNC_DELAY_MS)),
            FsyncPolicy::Interval(d) => Some(since + d),
            FsyncPolicy::Never => None,
        }
    }

    fn sync_if_dirty(&mut self) {
        if self.dirty_since.is_some() && self.poisoned.is_none() {
            match self.sync() {
                Ok(()) => self.write_mark(),
                Err(e) => tracing::error!(error = %e, "background fsync of the log failed"),
            }
        }
    }

    /// Whether `request` may go ahead. While the disk is full, what frees space (and a
    /// checkpoint, which reclaiming needs) goes, in the room the reserve leaves once released;
    /// an ordinary append goes only if the reserve can be made again (space is back).
    fn admits(&mut self, request: &Request) -> bool {
        if !self.shared.full.load(Ordering::Relaxed) {
            return true;
        }
        let frees = match request {
            Request::Sync { .. } => return true,
            Request::Append { frees, .. } => *frees,
            Request::Checkpoint { .. } | Request::Acks(_) => true,
        };
        if frees {
            self.reserve.release();
            return true;
        }
        if self.reserve.restore() {
            self.shared.full.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Notes that a write failed for want of space: the log is full until the reserve is made
    /// again.
    fn note_failure(&self, e: &AppendError) {
        if matches!(e, AppendError::NoSpace(_)) {
            self.shared.full.store(true, Ordering::Relaxed);
        }
    }

    /// From now on every append is refused with `why`; readers see it in `Shared::refusing`.
    fn poison(&mut self, why: String) {
        let _ = self.shared.refusing.set(why.clone());
        self.poisoned = Some(why);
    }

    fn sync(&mut self) -> Result<(), AppendError> {
        if let Some(p) = &self.poisoned {
            return Err(AppendError::Poisoned(p.clone()));
        }
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        match self.active_file.sync_data() {
            Ok(()) => {
                self.dirty_since = None;
                self.synced_end = self.active_len;
                self.mark_unsynced = false;
                Ok(())
            }
            Err(e) => {
                let msg = format!(
                    "fsync of {} failed: {e}",
                    self.shared.backend.describe(&segment_name(self.active))
                );
                tracing::error!("{msg}; refusing further appends");
                self.poison(msg.clone());
                Err(AppendError::Poisoned(msg))
            }
        }
    }

    /// Right after an fsync: writes a sync mark stating what it covered, without syncing it and
    /// without marking the segment dirty. A mark lost in a power loss only costs precision (the
    /// write it covered may then be taken for a torn one), and syncing it would only make a new
    /// mark due. If the write fails, the next group carries the mark.
    pub(crate) fn write_mark(&mut self) {
        if self.poisoned.is_some() || self.synced_end <= self.marked_end {
            return;
        }
        self.buf.clear();
        self.push_mark();
        let dirty = self.dirty_since;
        if let Err(e) = self.write_buf() {
            tracing::warn!(error = %e, "could not write a sync mark");
        }
        self.dirty_since = dirty;
    }

    /// Puts a sync mark for `synced_end` into the group's buffer; it counts once written.
    fn push_mark(&mut self) {
        write_sync_mark(&mut self.buf, self.salt, self.active, self.synced_end);
        self.mark_in_buf = Some(self.synced_end);
    }

    /// Ends the active segment with a synced mark for all its data, so that damage anywhere in
    /// it reads as corruption once it is sealed (a roll) or the log is closed.
    fn seal_with_mark(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if self.synced_end > self.marked_end {
            self.buf.clear();
            self.push_mark();
            if let Err(e) = self.write_buf() {
                tracing::warn!(error = %e, "could not write the final sync mark of a segment");
                return;
            }
        }
        if self.mark_unsynced
            && let Err(e) = self.sync()
        {
            tracing::warn!(error = %e, "could not sync the final sync mark of a segment");
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        let mut group: Vec<Pending> = Vec::with_capacity(batch.len());
        self.buf.clear();
        if self.synced_end > self.marked_end && self.poisoned.is_none() {
            self.push_mark();
        }
        for request in batch {
            if let Some(p) = &self.poisoned {
                Pending::from_request(request).fail(&AppendError::Poisoned(p.clone()));
                continue;
            }
            if !self.admits(&request) {
                Pending::from_request(request).fail(&AppendError::NoSpace(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "the disk is full; what is left is kept for deletions, expiries and reclaiming",
                )));
                continue;
            }
            match request {
                Request::Sync { reply } => group.push(Pending::Sync { reply }),
                Request::Append {
                    units, wait, reply, ..
                } => match self.stage(&units, &mut group) {
                    Ok(locations) => group.push(Pending::Append {
                        locations,
                        wait,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Request::Checkpoint { units, reply } => match self.stage(&units, &mut group) {
                    Ok(locations) => group.push(Pending::Checkpoint { locations, reply }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Request::Acks(acks) => {
                    let count = acks.len();
                    let staged = encode_unit(&[Record::Acked { acks }], self.salt)
                        .map_err(AppendError::from)
                        .and_then(|unit| self.stage(std::slice::from_ref(&unit), &mut group));
                    match staged {
                        Ok(_) => group.push(Pending::Acks),
                        Err(e) => {
                            tracing::warn!(error = %e, acks = count, "gathered acks could not be written; their messages will be sent again after a restart");
                        }
                    }
                }
            }
        }
        self.commit(group);
    }

    /// Adds a request's units to the group's buffer, rolling to a new segment when the active
    /// one is full. Returns the locations of the request's records.
    ///
    /// Only checkpoints and compaction send several units in one request; their units may land
    /// in two segments, and if a roll fails halfway, the units already written are harmless
    /// (a checkpoint nothing points at, copies of records that still exist).
    fn stage(
        &mut self,
        units: &[Unit],
        group: &mut Vec<Pending>,
    ) -> Result<Vec<Location>, AppendError> {
        let mut locations = Vec::with_capacity(units.iter().map(|u| u.records.len()).sum());
        for unit in units {
            let used = self.active_len + self.buf.len() as u64;
            let full = used + unit.bytes.len() as u64 > self.segment_bytes;
            if full && used > SEGMENT_HEADER_BYTES as u64 {
                self.flush_and_roll(group)?;
            }
            let offset = self.active_len + self.buf.len() as u64;
            self.buf.extend_from_slice(&unit.bytes);
            for (at, len) in &unit.records {
                locations.push(Location {
                    segment: self.active,
                    offset: (offset + u64::from(*at)) as u32,
                    len: *len,
                });
            }
        }
        Ok(locations)
    }

    /// Writes and syncs what is buffered (completing the waiters of the group so far), then
    /// starts a new segment.
    fn flush_and_roll(&mut self, group: &mut Vec<Pending>) -> Result<(), AppendError> {
        let finished = std::mem::take(group);
        if let Err(e) = self.write_buf().and_then(|()| self.sync()) {
            for p in finished {
                p.fail(&e);
            }
            return Err(e);
        }
        self.complete(finished);
        self.seal_with_mark();
        self.roll()
    }

    /// Writes the buffer at the end of the active segment. On failure the segment is cut back,
    /// so that no part of the failed write is ever read or recovered.
    fn write_buf(&mut self) -> Result<(), AppendError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active_file.write_all_at(&self.buf, self.active_len) {
            self.buf.clear();
            self.mark_in_buf = None;
            if let Err(cut) = self.active_file.set_len(self.active_len) {
                let msg = format!("could not cut back a failed write ({e}): {cut}");
                tracing::error!("{msg}; refusing further appends");
                self.poison(msg);
            }
            let e = AppendError::from_write(e);
            self.note_failure(&e);
            return Err(e);
        }
        let stats = &self.shared.stats;
        stats.writes.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.active_len += self.buf.len() as u64;
        self.buf.clear();
        if let Some(claim) = self.mark_in_buf.take() {
            self.marked_end = claim;
            self.mark_unsynced = true;
        }
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Starts the next segment. The previous one was synced by the caller, so that only the
    /// last segment can ever hold a torn write.
    fn roll(&mut self) -> Result<(), AppendError> {
        let next = self
            .active
            .checked_add(1)
            .ok_or_else(|| AppendError::Io(std::io::Error::other("segment ids exhausted")))?;
        let name = segment_name(next);
        let prepared = lock(&self.prepared).take();
        let backend = self.shared.backend.clone();
        let salt = self.salt;
        let created = (|| {
            let file = match prepared {
                Some(file) => {
                    backend.rename(PREALLOC_FILE, &name)?;
                    file
                }
                None => backend.create(&name)?,
            };
            file.write_all_at(&segment_header(next, salt), 0)?;
            file.sync_data()?;
            backend.sync_dir()?;
            Ok::<_, std::io::Error>(file)
        })();
        match created {
            Ok(file) => {
                self.shared
                    .segments
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(next, file.clone());
                self.active = next;
                self.active_file = file;
                self.active_len = SEGMENT_HEADER_BYTES as u64;
                self.synced_end = self.active_len;
                self.marked_end = self.active_len;
                self.mark_in_buf = None;
                self.mark_unsynced = false;
                self.dirty_since = None;
                self.shared.stats.rolls.fetch_add(1, Ordering::Relaxed);
                self.prepare_next_segment();
                Ok(())
            }
            Err(e) => {
                // The half-made segment must be gone for good before anything more is appended
                // here: were it to survive a crash, this segment would count as sealed and an
                // unsynced tail in it as corruption.
                let removed = match backend.remove(&name) {
                    Err(r) if r.kind() != std::io::ErrorKind::NotFound => Err(r),
                    _ => backend.sync_dir(),
                };
                if let Err(cleanup) = removed {
                    let msg = format!("could not remove a half-made {name} ({e}): {cleanup}");
                    tracing::error!("{msg}; refusing further appends");
                    self.poison(msg);
                }
                let e = AppendError::from_write(e);
                self.note_failure(&e);
                Err(e)
            }
        }
    }

    /// Zero-fills the next segment on a helper thread, so that the roll finds it ready and
    /// the writer never stalls on it. If it is not ready in time, the roll creates a plain file.
    pub(crate) fn prepare_next_segment(&mut self) {
        if !self.preallocate || lock(&self.prepared).is_some() {
            return;
        }
        if let Some(running) = self.preparer.take() {
            if !running.is_finished() {
                self.preparer = Some(running);
                return;
            }
            let _ = running.join();
        }
        let backend = self.shared.backend.clone();
        let bytes = self.segment_bytes;
        let prepared = self.prepared.clone();
        let spawned = std::thread::Builder::new()
            .name("syncbrok-log-prealloc".into())
            .spawn(move || {
                match crate::segment::preallocate(&*backend, PREALLOC_FILE, bytes) {
                    Ok(file) => *lock(&prepared) = Some(file),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not preallocate the next segment; it will grow as written");
                        let _ = backend.remove(PREALLOC_FILE);
                    }
                }
            });
        self.preparer = spawned.ok();
    }

    /// Writes the group, syncs if any member needs it, and completes every waiter.
    fn commit(&mut self, group: Vec<Pending>) {
        if let Err(e) = self.write_buf() {
            for p in group {
                p.fail(&e);
            }
            return;
        }
        let needs_sync = group.iter().any(|p| p.needs_sync(self.fsync));
        if needs_sync {
            // Lazy appends do not wait for the fsync.
            let (lazy, rest): (Vec<_>, Vec<_>) =
                group.into_iter().partition(|p| !p.needs_sync(self.fsync));
            self.complete(lazy);
            if let Err(e) = self.sync() {
                for p in rest {
                    p.fail(&e);
                }
                return;
            }
            self.write_mark();
            self.complete(rest);
        } else {
            self.complete(group);
        }
    }

    /// Completes waiters whose data is written (and synced if they asked).
    fn complete(&mut self, group: Vec<Pending>) {
        for p in group {
            match p {
                Pending::Append {
                    locations, reply, ..
                } => {
                    let _ = reply.send(Ok(locations));
                }
                Pending::Sync { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Pending::Acks => {}
                Pending::Checkpoint { locations, reply } => {
                    let result = match locations.first() {
                        Some(first) => self.point_checkpoint_at(*first).map(|()| locations),
                        None => Err(AppendError::Io(std::io::Error::other(
                            "a checkpoint needs at least one part",
                        ))),
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Replaces the checkpoint pointer atomically: temporary file, fsync, rename, directory sync.
    fn point_checkpoint_at(&mut self, at: Location) -> Result<(), AppendError> {
        let backend = &self.shared.backend;
        let written = (|| {
            let tmp = backend.create(CHECKPOINT_TMP_FILE)?;
            tmp.write_all_at(&encode_checkpoint_pointer(at), 0)?;
            tmp.sync_data()?;
            backend.rename(CHECKPOINT_TMP_FILE, CHECKPOINT_FILE)?;
            backend.sync_dir()
        })();
        written.map_err(AppendError::from_write)?;
        *lock(&self.shared.checkpoint) = Some(at);
        Ok(())
    }
}

impl Pending {
    /// A request that will not be staged, only failed.
    fn from_request(request: Request) -> Pending {
        match request {
            Request::Append { wait, reply, .. } => Pending::Append {
                locations: Vec::new(),
                wait,
                reply,
            },
            Request::Checkpoint { reply, .. } => Pending::Checkpoint {
                locations: Vec::new(),
                reply,
            },
            Request::Sync { reply } => Pending::Sync { reply },
            Request::Acks(_) => Pending::Acks,
        }
    }
}

/// Takes queued requests up to [`WRITE_BATCH_BYTES_MAX`] bytes (always at least one).
fn take_batch(queue: &mut VecDeque<Request>) -> Vec<Request> {
    let mut batch = Vec::with_capacity(queue.len().min(1024));
    let mut bytes = 0;
    while let Some(r) = queue.front() {
        let b = r.bytes();
        if !batch.is_empty() && bytes + b > WRITE_BATCH_BYTES_MAX {
            break;
        }
        bytes += b;
        batch.extend(queue.pop_front());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_pointers_roundtrip_and_detect_damage() {
        let at = Location {
            segment: 3,
            offset: 1024,
            len: 77,
        };
        let mut b = encode_checkpoint_pointer(at);
        assert_eq!(decode_checkpoint_pointer(&b), Some(at));
        b[10] ^= 0x40;
        assert_eq!(decode_checkpoint_pointer(&b), None);
        assert_eq!(decode_checkpoint_pointer(&b[..5]), None);
    }
}
