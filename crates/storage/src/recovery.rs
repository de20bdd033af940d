//! Opening a log: find the segments, load the latest checkpoint, replay the records after it,
//! cut a torn tail, then start the writer.
//!
//! The rules (also in `docs/format.md`):
//! - Every segment but the last was fsynced before the next one was created, so damage there is
//!   corruption: [`OpenError::Corrupted`] naming file and offset, unless `repair` is set, in
//!   which case the segment is cut at the damage and the loss reported.
//! - The last segment may end in a torn write: from the first invalid frame on, it is cut off
//!   with a warning ([`RecoveryReport::torn_tail`]).
//! - Nothing is changed on disk until [`Recovery::finish`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::OpenError;
use crate::frame::{
    FORMAT_VERSION, Location, SEGMENT_HEADER_BYTES, Salt, check_segment_header, padding,
    padding_sizes, segment_header,
};
use crate::inbox::Inbox;
use crate::io::{Backend, BackendFile};
use crate::log::{Config, Log, LogInner};
use crate::record::{LostRecord, Record};
use crate::segment::{
    FIRST_FRAME_OFFSET, ScanError, Scanner, parse_segment_name, preallocate, segment_name,
    zero_range,
};
use crate::writer::{
    CHECKPOINT_FILE, CHECKPOINT_FILE_BYTES, PREALLOC_FILE, Shared, Writer,
    decode_checkpoint_pointer,
};

/// A record read back during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub location: Location,
    pub record: Record,
    /// Set when compaction copied this record here from an older segment: the broker already
    /// knows the record and should only move its index entry.
    pub relocated_from: Option<Location>,
}

/// The state snapshot recovery starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub location: Location,
    /// The parts given to [`Log::checkpoint`], in order.
    pub parts: Vec<Bytes>,
}

/// Bytes dropped from the end of the last segment: a write that was in progress at the crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: String,
}

/// Bytes that `repair` took out of use: a damaged stretch of a segment, from one valid frame
/// to the next (or to the end of the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    pub file: String,
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: String,
    /// What the damaged bytes still tell of the records they held (kinds, queues, message
    /// ids): a best guess, since the bytes failed their checksum.
    pub records: Vec<LostRecord>,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments on disk after recovery.
    pub segments: usize,
    pub records_replayed: u64,
    pub checkpoint: Option<Location>,
    pub torn_tail: Option<TornTail>,
    pub repaired: Vec<LostRange>,
}

/// A log being recovered: iterate it to replay the records after the checkpoint, then call
/// [`Recovery::finish`] to get the [`Log`].
pub struct Recovery {
    backend: Arc<dyn Backend>,
    config: Config,
    files: BTreeMap<u32, Arc<dyn BackendFile>>,
    /// Segments still to scan, in order.
    to_scan: Vec<u32>,
    next_index: usize,
    /// Where the first scanned segment starts (after the checkpoint parts, or its header).
    first_offset: u64,
    scanner: Option<Scanner>,
    scanning: u32,
    checkpoint: Option<Checkpoint>,
    report: RecoveryReport,
    /// The log's salt, from the segment headers (a new one for a new log).
    salt: Salt,
    /// Ranges to zero in [`Recovery::finish`]: (segment, from, to).
    cuts: Vec<(u32, u64, u64)>,
    /// Damaged ranges between valid frames that repair covers with padding in
    /// [`Recovery::finish`]: (segment, from, to).
    pads: Vec<(u32, u64, u64)>,
    /// Where the valid data of the last segment ends: appends resume there.
    last_data_end: Option<u64>,
    /// A preallocated segment left over by the previous run, to delete.
    stale_prealloc: bool,
    /// The last segment's header must be (re)written: it was torn or never written.
    rewrite_last_header: bool,
    /// Why replay stopped, once it has: the log must not then be opened for appends.
    failed: Option<String>,
    /// Sealed segments whose damaged header repair zeroed: they get a fresh one.
    rewrite_headers: Vec<u32>,
}

mod damage;
mod salt;

/// Reads the checkpoint pointer file; a damaged one is corruption.
fn read_checkpoint_pointer(backend: &dyn Backend) -> Result<Location, OpenError> {
    let f = backend
        .open(CHECKPOINT_FILE)
        .map_err(io_err(backend, CHECKPOINT_FILE))?;
    let mut b = vec![0u8; CHECKPOINT_FILE_BYTES];
    let read = f.len().and_then(|len| {
        if len == CHECKPOINT_FILE_BYTES as u64 {
            f.read_exact_at(&mut b, 0).map(|()| true)
        } else {
            Ok(false)
        }
    });
    let valid = read.map_err(io_err(backend, CHECKPOINT_FILE))?;
    let at = valid.then(|| decode_checkpoint_pointer(&b)).flatten();
    at.ok_or_else(|| OpenError::Corrupted {
        file: backend.describe(CHECKPOINT_FILE),
        offset: 0,
        reason: "checkpoint pointer is damaged".into(),
    })
}

/// Replay needs every segment from the checkpoint's (or the very first) to the last: the first
/// one needed, or which one is missing.
fn check_complete(
    backend: &dyn Backend,
    ids: &[u32],
    pointer: Option<Location>,
) -> Result<u32, OpenError> {
    let first_needed = pointer.map_or(1, |p| p.segment);
    if let Some(p) = pointer
        && ids.last().is_none_or(|&last| p.segment > last)
    {
        return Err(OpenError::MissingSegment {
            file: backend.describe(&segment_name(p.segment)),
            first: p.segment,
            last: p.segment,
        });
    }
    if let Some(&last) = ids.last() {
        for id in first_needed..=last {
            if ids.binary_search(&id).is_err() {
                return Err(OpenError::MissingSegment {
                    file: backend.describe(&segment_name(id)),
                    first: first_needed,
                    last,
                });
            }
        }
    }
    Ok(first_needed)
}

fn io_err(backend: &dyn Backend, name: &str) -> impl FnOnce(std::io::Error) -> OpenError {
    let file = backend.describe(name);
    move |source| OpenError::Io { file, source }
}

impl Log {
    /// Opens the log in `backend`'s directory, creating it if empty. Iterate the returned
    /// [`Recovery`] to replay, then call [`Recovery::finish`].
    pub fn open(backend: Arc<dyn Backend>, config: Config) -> Result<Recovery, OpenError> {
        config.validate().map_err(OpenError::InvalidConfig)?;
        let mut ids = Vec::new();
        let mut has_pointer = false;
        let mut stale_prealloc = false;
        for name in backend.list().map_err(io_err(&*backend, "."))? {
            if let Some(id) = parse_segment_name(&name) {
                if id == 0 {
                    return Err(OpenError::Unrecognised {
                        file: backend.describe(&name),
                        reason: "segment ids start at 1".into(),
                    });
                }
                ids.push(id);
            } else if name == CHECKPOINT_FILE {
                has_pointer = true;
            } else if name == PREALLOC_FILE {
                stale_prealloc = true;
            }
        }
        ids.sort_unstable();

        let mut files = BTreeMap::new();
        for &id in &ids {
            let name = segment_name(id);
            let f = backend.open(&name).map_err(io_err(&*backend, &name))?;
            files.insert(id, f);
        }

        let pointer = if has_pointer {
            Some(read_checkpoint_pointer(&*backend)?)
        } else {
            None
        };
        let first_needed = check_complete(&*backend, &ids, pointer)?;
        let to_scan: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id >= first_needed)
            .collect();
        let salt = salt::log_salt(&*backend, &files)?;

        let mut recovery = Recovery {
            backend,
            config,
            files,
            to_scan,
            next_index: 0,
            first_offset: FIRST_FRAME_OFFSET,
            scanner: None,
            scanning: 0,
            checkpoint: None,
            report: RecoveryReport::default(),
            salt,
            cuts: Vec::new(),
            pads: Vec::new(),
            last_data_end: None,
            stale_prealloc,
            rewrite_last_header: ids.is_empty(),
            failed: None,
            rewrite_headers: Vec::new(),
        };
        if let Some(at) = pointer {
            recovery.load_checkpoint(at)?;
        }
        Ok(recovery)
    }
}

impl Recovery {
    /// The checkpoint replay starts from, if there is one.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    fn name(&self, segment: u32) -> String {
        self.backend.describe(&segment_name(segment))
    }

    fn is_last(&self, segment: u32) -> bool {
        self.to_scan.last() == Some(&segment)
    }

    /// Reads the checkpoint parts at `at` and leaves the scanner just after them.
    fn load_checkpoint(&mut self, at: Location) -> Result<(), OpenError> {
        let file = self.backend.describe(&segment_name(at.segment));
        let corrupted = |offset: u64, reason: String| OpenError::Corrupted {
            file: file.clone(),
            offset,
            reason: format!("checkpoint: {reason}"),
        };
        let len = self.files[&at.segment]
            .len()
            .map_err(io_err(&*self.backend, &segment_name(at.segment)))?;
        if u64::from(at.offset) < SEGMENT_HEADER_BYTES as u64 || u64::from(at.offset) >= len {
            return Err(corrupted(
                u64::from(at.offset),
                format!("the pointer is outside the segment ({len} bytes)"),
            ));
        }
        self.first_offset = u64::from(at.offset);
        let mut parts = Vec::new();
        let mut expected = None;
        while expected != Some(parts.len()) {
            let scanned = match self.next_scanned()? {
                Some(s) => s,
                None => return Err(corrupted(u64::from(at.offset), "parts missing".into())),
            };
            let offset = u64::from(scanned.location.offset);
            match Record::decode(scanned.kind, scanned.payload) {
                Ok(Record::Checkpoint {
                    part,
                    parts: n,
                    state,
                }) if part as usize == parts.len() => {
                    expected = Some(n as usize);
                    parts.push(state);
                }
                Ok(_) => return Err(corrupted(offset, "not a checkpoint part".into())),
                Err(e) => return Err(corrupted(offset, e.to_string())),
            }
        }
        self.report.checkpoint = Some(at);
        self.checkpoint = Some(Checkpoint {
            location: at,
            parts,
        });
        Ok(())
    }

    /// The next frame of the scan, moving across segments, handling torn tails and damage.
    fn next_scanned(&mut self) -> Result<Option<crate::segment::Scanned>, OpenError> {
        loop {
            if self.scanner.is_none() {
                let Some(&segment) = self.to_scan.get(self.next_index) else {
                    return Ok(None);
                };
                self.next_index += 1;
                self.scanning = segment;
                let start = if self.next_index == 1 {
                    self.first_offset
                } else {
                    FIRST_FRAME_OFFSET
                };
                if let Some(scanner) = self.open_segment(segment, start)? {
                    self.scanner = Some(scanner);
                }
                continue;
            }
            let segment = self.scanning;
            let scanner = self.scanner.as_mut().expect("checked above");
            match scanner.next_record() {
                Ok(Some(s)) => return Ok(Some(s)),
                Ok(None) => {
                    let end = scanner.data_end();
                    self.scanner = None;
                    if self.is_last(segment) {
                        self.last_data_end = Some(end);
                    }
                }
                Err(ScanError::Io(e)) => {
                    return Err(io_err(&*self.backend, &segment_name(segment))(e));
                }
                Err(e @ (ScanError::Bad { .. } | ScanError::Malformed { .. })) => {
                    let (offset, reason, torn_possible) = match e {
                        ScanError::Bad { offset, reason } => (offset, reason, true),
                        ScanError::Malformed { offset, reason } => (offset, reason, false),
                        ScanError::Io(_) => unreachable!("matched above"),
                    };
                    let scanner = self.scanner.take().expect("checked above");
                    self.damaged(segment, scanner, offset, reason, torn_possible)?;
                }
            }
        }
    }

    /// Opens a segment for scanning after checking its header; `None` if it holds nothing.
    fn open_segment(&mut self, segment: u32, start: u64) -> Result<Option<Scanner>, OpenError> {
        let file = self.files[&segment].clone();
        let name = segment_name(segment);
        let len = file.len().map_err(io_err(&*self.backend, &name))?;
        let mut header = vec![0u8; SEGMENT_HEADER_BYTES.min(len as usize)];
        file.read_exact_at(&mut header, 0)
            .map_err(io_err(&*self.backend, &name))?;
        let checked = check_segment_header(&header, segment);
        if let Ok(salt) = checked
            && salt != self.salt
        {
            return Err(OpenError::Unrecognised {
                file: self.name(segment),
                reason: "this segment belongs to another log (its salt differs)".into(),
            });
        }
        if let Err(e) = checked {
            return self.bad_header(segment, file, len, start, e);
        }
        Scanner::new(file, segment, start, self.salt)
            .map(Some)
            .map_err(io_err(&*self.backend, &name))
    }

    /// Writes what recovery decided: torn tails and dropped ranges zeroed, padding over
    /// repaired damage, fresh headers, a stale preallocation removed.
    fn write_fixes(&self) -> Result<(), OpenError> {
        let backend = &*self.backend;
        for &(segment, from, to) in &self.cuts {
            let name = segment_name(segment);
            zero_range(&*self.files[&segment], from, to).map_err(io_err(backend, &name))?;
        }
        for &(segment, from, to) in &self.pads {
            let name = segment_name(segment);
            let f = &self.files[&segment];
            let mut at = from;
            for size in padding_sizes((to - from) as usize) {
                f.write_all_at(&padding(size, self.salt), at)
                    .map_err(io_err(backend, &name))?;
                at += size as u64;
            }
            f.sync_data().map_err(io_err(backend, &name))?;
        }
        for &segment in &self.rewrite_headers {
            let name = segment_name(segment);
            let f = &self.files[&segment];
            f.write_all_at(&segment_header(segment, self.salt), 0)
                .and_then(|()| f.sync_data())
                .map_err(io_err(backend, &name))?;
        }
        if self.stale_prealloc {
            backend
                .remove(PREALLOC_FILE)
                .map_err(io_err(backend, PREALLOC_FILE))?;
        }
        Ok(())
    }

    /// The segment appends go to: the last one, or a first one for a new log. A last segment
    /// of an older format version is left as it is and a new one started after it: records
    /// of kinds that version lacks must never sit under its header, where a build that reads
    /// only that version would take them for damage instead of refusing the directory.
    fn active_segment(&mut self) -> Result<(u32, Arc<dyn BackendFile>), OpenError> {
        let Some((id, f)) = self.files.last_key_value() else {
            return self.new_segment(1);
        };
        let (id, f) = (*id, f.clone());
        if self.rewrite_last_header {
            // Its header never made it to disk: it is written afresh, in this version.
            return Ok((id, f));
        }
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        f.read_exact_at(&mut header, 0)
            .map_err(io_err(&*self.backend, &segment_name(id)))?;
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if check_segment_header(&header, id).is_ok() && version < FORMAT_VERSION {
            return self.new_segment(id + 1);
        }
        Ok((id, f))
    }

    /// Creates segment `id`, empty, to append to; its header is written by `finish`.
    fn new_segment(&mut self, id: u32) -> Result<(u32, Arc<dyn BackendFile>), OpenError> {
        let backend = &*self.backend;
        let name = segment_name(id);
        let f = if self.config.preallocate {
            let f = preallocate(backend, PREALLOC_FILE, self.config.segment_bytes)
                .map_err(io_err(backend, PREALLOC_FILE))?;
            backend
                .rename(PREALLOC_FILE, &name)
                .map_err(io_err(backend, &name))?;
            f
        } else {
            backend.create(&name).map_err(io_err(backend, &name))?
        };
        self.files.insert(id, f.clone());
        self.last_data_end = Some(SEGMENT_HEADER_BYTES as u64);
        self.rewrite_last_header = true;
        Ok((id, f))
    }

    /// Replays everything that is left (discarding it) and opens the log for appends.
    pub fn finish(mut self) -> Result<(Log, RecoveryReport), OpenError> {
        for item in self.by_ref() {
            item?;
        }
        if let Some(reason) = self.failed.take() {
            return Err(OpenError::ReplayFailed(reason));
        }
        self.write_fixes()?;
        let backend = self.backend.clone();
        let (active, active_file) = self.active_segment()?;
        let active_name = segment_name(active);
        if self.rewrite_last_header {
            active_file
                .write_all_at(&segment_header(active, self.salt), 0)
                .and_then(|()| active_file.sync_data())
                .and_then(|()| backend.sync_dir())
                .map_err(io_err(&*backend, &active_name))?;
        }
        // What was replayed may still be only in the page cache (a clean restart after a
        // failed fsync, or `fsync: never`): make it durable before the broker acts on it.
        active_file
            .sync_data()
            .map_err(io_err(&*backend, &active_name))?;
        let active_len = match self.last_data_end {
            Some(end) => end,
            None => active_file.len().map_err(io_err(&*backend, &active_name))?,
        };
        self.report.segments = self.files.len();

        // Never more than a segment: that is what a checkpoint and a roll need at most here.
        let reserve_bytes = self.config.reserve_bytes.min(self.config.segment_bytes);
        let reserve = crate::reserve::Reserve::open(backend.clone(), reserve_bytes);
        let shared = Arc::new(Shared {
            full: std::sync::atomic::AtomicBool::new(!reserve.held()),
            backend,
            salt: self.salt,
            segments: std::sync::RwLock::new(self.files),
            checkpoint: Mutex::new(self.checkpoint.as_ref().map(|c| c.location)),
            inbox: Inbox::new(self.config.inbox_requests),
            stats: Default::default(),
            refusing: Default::default(),
        });
        let mut writer = Writer {
            shared: shared.clone(),
            salt: self.salt,
            synced_end: active_len,
            // Unknown: the first thing the writer writes is a mark for what recovery synced.
            marked_end: 0,
            mark_in_buf: None,
            mark_unsynced: false,
            fsync: self.config.fsync,
            segment_bytes: self.config.segment_bytes,
            active,
            active_file,
            active_len,
            buf: Vec::new(),
            dirty_since: None,
            poisoned: None,
            reserve,
            preallocate: self.config.preallocate,
            prepared: Arc::new(Mutex::new(None)),
            preparer: None,
        };
        // What recovery synced is stated at once, before anything else is appended.
        writer.write_mark();
        writer.prepare_next_segment();
        let handle = std::thread::Builder::new()
            .name("syncbrok-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| OpenError::Io {
                file: "writer thread".into(),
                source,
            })?;
        let log = Log::from_inner(LogInner {
            shared,
            writer: Mutex::new(Some(handle)),
        });
        Ok((log, self.report))
    }
}

impl Iterator for Recovery {
    type Item = Result<Replayed, OpenError>;

    /// The next record after the checkpoint, in log order. Checkpoint records are not
    /// replayed. Stops at the first error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed.is_some() {
            return None;
        }
        loop {
            let scanned = match self.next_scanned() {
                Ok(Some(s)) => s,
                Ok(None) => return None,
                Err(e) => {
                    self.failed.get_or_insert_with(|| e.to_string());
                    return Some(Err(e));
                }
            };
            let offset = u64::from(scanned.location.offset);
            match Record::decode(scanned.kind, scanned.payload) {
                Ok(Record::Checkpoint { .. }) => continue,
                Ok(record) => {
                    self.report.records_replayed += 1;
                    return Some(Ok(Replayed {
                        location: scanned.location,
                        record,
                        relocated_from: scanned.relocated_from,
                    }));
                }
                Err(e) => {
                    // The checksum held, so this is not a torn write: a bug or a newer format.
                    let err = OpenError::Corrupted {
                        file: self.name(scanned.location.segment),
                        offset,
                        reason: e.to_string(),
                    };
                    self.failed = Some(err.to_string());
                    return Some(Err(err));
                }
            }
        }
    }
}
