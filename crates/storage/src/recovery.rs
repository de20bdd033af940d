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
    FRAME_HEADER_BYTES, HeaderError, Location, SEGMENT_HEADER_BYTES, Salt, check_segment_header,
    padding, segment_header,
};
use crate::io::{Backend, BackendFile};
use crate::log::{Config, Log, LogInner};
use crate::record::{LostRecord, Record, describe_damaged};
use crate::segment::{
    FIRST_FRAME_OFFSET, ScanError, Scanner, last_nonzero, parse_segment_name, preallocate, probe,
    segment_name, zero_range,
};
use crate::writer::{
    CHECKPOINT_FILE, CHECKPOINT_FILE_BYTES, Inbox, PREALLOC_FILE, Shared, Writer,
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
            let f = backend
                .open(CHECKPOINT_FILE)
                .map_err(io_err(&*backend, CHECKPOINT_FILE))?;
            let mut b = vec![0u8; CHECKPOINT_FILE_BYTES];
            let read = f.len().and_then(|len| {
                if len == CHECKPOINT_FILE_BYTES as u64 {
                    f.read_exact_at(&mut b, 0).map(|()| true)
                } else {
                    Ok(false)
                }
            });
            let valid = read.map_err(io_err(&*backend, CHECKPOINT_FILE))?;
            let at = valid.then(|| decode_checkpoint_pointer(&b)).flatten();
            Some(at.ok_or_else(|| OpenError::Corrupted {
                file: backend.describe(CHECKPOINT_FILE),
                offset: 0,
                reason: "checkpoint pointer is damaged".into(),
            })?)
        } else {
            None
        };

        // Replay needs every segment from the checkpoint's (or the very first) to the last.
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
                if !files.contains_key(&id) {
                    return Err(OpenError::MissingSegment {
                        file: backend.describe(&segment_name(id)),
                        first: first_needed,
                        last,
                    });
                }
            }
        }
        let to_scan: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id >= first_needed)
            .collect();
        let salt = log_salt(&*backend, &files)?;

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
            if let HeaderError::UnsupportedVersion(_) = e {
                return Err(OpenError::Unrecognised {
                    file: self.name(segment),
                    reason: e.to_string(),
                });
            }
            // A segment's header is written and synced before anything is appended to it (the
            // file is all zeros, or empty, until then), so any data after a bad header means
            // the header itself was damaged.
            let frames_after = last_nonzero(&*file, SEGMENT_HEADER_BYTES as u64, len)
                .map_err(io_err(&*self.backend, &name))?
                .is_some();
            if self.is_last(segment) && !frames_after {
                // Created just before the crash: its header never made it to disk.
                self.report.torn_tail = Some(TornTail {
                    file: self.name(segment),
                    offset: 0,
                    bytes_dropped: len,
                    reason: e.to_string(),
                });
                tracing::warn!(file = %self.name(segment), error = %e, "the last segment has no valid header; starting it afresh");
                self.cuts.push((segment, 0, len));
                self.rewrite_last_header = true;
                self.last_data_end = Some(SEGMENT_HEADER_BYTES as u64);
                return Ok(None);
            }
            if !self.config.repair {
                return Err(OpenError::Corrupted {
                    file: self.name(segment),
                    offset: 0,
                    reason: e.to_string(),
                });
            }
            if frames_after {
                // Everything a header holds is known (the segment id from the file name, the
                // salt from the other segments): rewrite it and keep every frame after it.
                tracing::warn!(file = %self.name(segment), error = %e, "repair: rewriting a damaged segment header");
                self.report.repaired.push(LostRange {
                    file: self.name(segment),
                    offset: 0,
                    bytes_dropped: 0,
                    reason: format!("{e}; the header was rewritten, no record was lost"),
                    records: Vec::new(),
                });
                self.rewrite_headers.push(segment);
                return Scanner::new(file, segment, start.max(FIRST_FRAME_OFFSET), self.salt)
                    .map(Some)
                    .map_err(io_err(&*self.backend, &name));
            }
            self.report.repaired.push(LostRange {
                file: self.name(segment),
                offset: 0,
                bytes_dropped: len,
                reason: e.to_string(),
                records: Vec::new(),
            });
            tracing::warn!(file = %self.name(segment), error = %e, "repair: dropping a segment with a damaged header");
            self.cuts.push((segment, 0, len));
            self.rewrite_headers.push(segment);
            if self.is_last(segment) {
                self.last_data_end = Some(SEGMENT_HEADER_BYTES as u64);
            }
            return Ok(None);
        }
        Scanner::new(file, segment, start, self.salt)
            .map(Some)
            .map_err(io_err(&*self.backend, &name))
    }

    /// Handles an invalid frame at `offset` of `segment`.
    ///
    /// Damage below what a sync mark of the segment says was on disk hit synced data: that is
    /// corruption, in any segment. Otherwise, in the last segment, it is the write that was in
    /// progress at the crash (a torn tail, perhaps with some of its sectors on disk): cut off.
    /// In a sealed segment, which was synced before the next one was created, damage is always
    /// corruption. Corruption stops the open, unless `repair` is set: then the damaged bytes up
    /// to the next valid frame are covered with padding, and the loss reported.
    fn damaged(
        &mut self,
        segment: u32,
        mut scanner: Scanner,
        offset: u64,
        reason: String,
        torn_possible: bool,
    ) -> Result<(), OpenError> {
        let file = self.files[&segment].clone();
        let backend = self.backend.clone();
        let io = |e| io_err(&*backend, &segment_name(segment))(e);
        let file_len = scanner.file_len();
        let after = probe(&file, segment, self.salt, offset + 1, file_len).map_err(&io)?;
        let synced = scanner.synced_claim().max(after.synced_claim);
        let name = self.name(segment);
        let data_end = last_nonzero(&*file, offset, file_len)
            .map_err(&io)?
            .map_or(offset, |at| at + 1);
        if torn_possible && self.is_last(segment) && synced <= offset && !after.gave_up {
            let dropped = data_end - offset;
            tracing::warn!(file = %name, offset, bytes_dropped = dropped, %reason, "cutting a torn write off the end of the log");
            self.report.torn_tail = Some(TornTail {
                file: name,
                offset,
                bytes_dropped: dropped,
                reason,
            });
            self.last_data_end = Some(offset);
            self.cuts.push((segment, offset, data_end));
            return Ok(());
        }
        let why = if synced > offset {
            format!("{reason}; a sync mark says byte {synced} was on disk")
        } else if after.gave_up {
            format!("{reason}; the search for the next valid frame gave up")
        } else if torn_possible {
            format!("{reason}; in a sealed segment")
        } else {
            reason
        };
        if !self.config.repair {
            self.failed = Some(format!("{name}: corrupted at byte {offset}"));
            return Err(OpenError::Corrupted {
                file: name,
                offset,
                reason: why,
            });
        }
        // Repair: step over the damage to the next valid frame, at least a frame header on
        // (the damaged frame's own header), or drop the rest of the data.
        let next = match after.next_valid {
            Some(at) if at >= offset + FRAME_HEADER_BYTES as u64 => Some(at),
            Some(_) => probe(
                &file,
                segment,
                self.salt,
                offset + FRAME_HEADER_BYTES as u64,
                file_len,
            )
            .map_err(&io)?
            .next_valid
            .filter(|_| !after.gave_up),
            None => None,
        };
        let until = next.unwrap_or(data_end);
        let records = describe(&*file, offset, until).map_err(&io)?;
        tracing::warn!(file = %name, offset, bytes_dropped = until - offset, reason = %why, lost = ?records, "repair: dropping damaged bytes");
        self.report.repaired.push(LostRange {
            file: name,
            offset,
            bytes_dropped: until - offset,
            reason: why,
            records,
        });
        match next {
            Some(at) => {
                self.pads.push((segment, offset, at));
                scanner.resume_at(at);
                self.scanner = Some(scanner);
            }
            None => {
                if self.is_last(segment) {
                    self.last_data_end = Some(offset);
                }
                self.cuts.push((segment, offset, data_end));
            }
        }
        Ok(())
    }

    /// Replays everything that is left (discarding it) and opens the log for appends.
    pub fn finish(mut self) -> Result<(Log, RecoveryReport), OpenError> {
        for item in self.by_ref() {
            item?;
        }
        if let Some(reason) = self.failed.take() {
            return Err(OpenError::ReplayFailed(reason));
        }
        let backend = self.backend.clone();
        for &(segment, from, to) in &self.cuts {
            let name = segment_name(segment);
            zero_range(&*self.files[&segment], from, to).map_err(io_err(&*backend, &name))?;
        }
        for &(segment, from, to) in &self.pads {
            let name = segment_name(segment);
            let f = &self.files[&segment];
            f.write_all_at(&padding((to - from) as usize, self.salt), from)
                .and_then(|()| f.sync_data())
                .map_err(io_err(&*backend, &name))?;
        }
        for &segment in &self.rewrite_headers {
            let name = segment_name(segment);
            let f = &self.files[&segment];
            f.write_all_at(&segment_header(segment, self.salt), 0)
                .and_then(|()| f.sync_data())
                .map_err(io_err(&*backend, &name))?;
        }
        if self.stale_prealloc {
            backend
                .remove(PREALLOC_FILE)
                .map_err(io_err(&*backend, PREALLOC_FILE))?;
        }
        let (active, active_file) = match self.files.last_key_value() {
            Some((id, f)) => (*id, f.clone()),
            None => {
                let name = segment_name(1);
                let f = if self.config.preallocate {
                    let f = preallocate(&*backend, PREALLOC_FILE, self.config.segment_bytes)
                        .map_err(io_err(&*backend, PREALLOC_FILE))?;
                    backend
                        .rename(PREALLOC_FILE, &name)
                        .map_err(io_err(&*backend, &name))?;
                    f
                } else {
                    backend.create(&name).map_err(io_err(&*backend, &name))?
                };
                self.files.insert(1, f.clone());
                self.last_data_end = Some(SEGMENT_HEADER_BYTES as u64);
                (1, f)
            }
        };
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

        let shared = Arc::new(Shared {
            backend,
            salt: self.salt,
            segments: std::sync::RwLock::new(self.files),
            checkpoint: Mutex::new(self.checkpoint.as_ref().map(|c| c.location)),
            inbox: Inbox::new(self.config.inbox_requests),
            stats: Default::default(),
        });
        let mut writer = Writer {
            shared: shared.clone(),
            salt: self.salt,
            synced_end: active_len,
            // Unknown: the first thing the writer writes is a mark for what recovery synced.
            marked_end: 0,
            fsync: self.config.fsync,
            segment_bytes: self.config.segment_bytes,
            active,
            active_file,
            active_len,
            buf: Vec::new(),
            dirty_since: None,
            poisoned: None,
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

/// The salt of the log in `files`: the one every valid segment header carries (a new one for
/// a new log, or one whose only segment's header was torn). A header of another format version
/// stops the open; so do two different salts.
fn log_salt(
    backend: &dyn Backend,
    files: &BTreeMap<u32, Arc<dyn BackendFile>>,
) -> Result<Salt, OpenError> {
    let mut found: Option<Salt> = None;
    // When no header is valid: the salt under which a segment's first frame checks out.
    let mut guessed: Option<Salt> = None;
    for (&id, file) in files {
        let name = segment_name(id);
        let len = file.len().map_err(io_err(backend, &name))?;
        let mut header = vec![0u8; SEGMENT_HEADER_BYTES.min(len as usize)];
        file.read_exact_at(&mut header, 0)
            .map_err(io_err(backend, &name))?;
        match check_segment_header(&header, id) {
            Ok(salt) => match found {
                None => found = Some(salt),
                Some(f) if f != salt => {
                    return Err(OpenError::Unrecognised {
                        file: backend.describe(&name),
                        reason: "this segment belongs to another log (its salt differs)".into(),
                    });
                }
                Some(_) => {}
            },
            Err(e @ HeaderError::UnsupportedVersion(_)) => {
                return Err(OpenError::Unrecognised {
                    file: backend.describe(&name),
                    reason: format!(
                        "{e}; this data directory was written by another version of syncbrok"
                    ),
                });
            }
            // A damaged header: recovery decides about it when it scans that segment.
            Err(_) => {
                if guessed.is_none() && header.len() == SEGMENT_HEADER_BYTES {
                    guessed = guess_salt(&**file, &header, len).map_err(io_err(backend, &name))?;
                }
            }
        }
    }
    Ok(found.or(guessed).unwrap_or_else(Salt::random))
}

/// The salt of a segment whose header is damaged: its salt field, or that field with one bit
/// flipped, whichever makes the segment's first frame check out.
fn guess_salt(file: &dyn BackendFile, header: &[u8], len: u64) -> std::io::Result<Option<Salt>> {
    use crate::frame::{announced_len, parse_frame};
    let first = SEGMENT_HEADER_BYTES as u64;
    if len < first + FRAME_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut head = [0u8; FRAME_HEADER_BYTES];
    file.read_exact_at(&mut head, first)?;
    let Some(total) = announced_len(&head).filter(|t| first + *t as u64 <= len) else {
        return Ok(None);
    };
    let mut frame = vec![0u8; total];
    file.read_exact_at(&mut frame, first)?;
    let frame = Bytes::from(frame);
    let field = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    let candidates = std::iter::once(field).chain((0..32).map(|bit| field ^ (1 << bit)));
    Ok(candidates
        .map(Salt::new)
        .find(|salt| parse_frame(&frame, *salt).is_ok()))
}

/// What the damaged bytes `[from, to)` of a segment still tell of the records they held.
fn describe(file: &dyn BackendFile, from: u64, to: u64) -> std::io::Result<Vec<LostRecord>> {
    use crate::limits::FRAME_PAYLOAD_BYTES_MAX;
    let len = (to - from).min(u64::from(FRAME_PAYLOAD_BYTES_MAX) + FRAME_HEADER_BYTES as u64);
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, from)?;
    Ok(describe_damaged(&bytes))
}
