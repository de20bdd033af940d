//! [`Log`]: the handle the broker holds. Appends go to the writer thread; reads go straight to
//! the segment files by location; reclaiming space deletes or compacts old segments.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::{AppendError, ReadError, ReclaimError};
use crate::frame::{FRAME_HEADER_BYTES, Location, encode_relocated, encode_unit, parse_frame};
use crate::inbox::{Request, Wait};
use crate::limits::{
    FRAME_PAYLOAD_BYTES_MAX, FSYNC_INTERVAL_MS_MAX, INBOX_REQUESTS_DEFAULT, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
use crate::record::{Ack, Record, kind};
use crate::segment::{FIRST_FRAME_OFFSET, ScanError, Scanner, segment_name};
use crate::writer::{FsyncPolicy, LogStats, Shared};

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// Target size of a segment; the writer rolls to a new one before passing it.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Drop damaged parts of sealed segments instead of refusing to open (reported in
    /// [`crate::RecoveryReport::repaired`]).
    pub repair: bool,
    /// Append requests that may wait for the writer before appenders are held back.
    pub inbox_requests: usize,
    /// Zero-fill each segment before it is used (one segment ahead, on a helper thread), so
    /// that fsyncs need not journal file growth. Costs one segment of disk in advance.
    pub preallocate: bool,
    /// Disk kept back for freeing space on a full disk (see [`Log::append_freeing`]), at most
    /// a segment; 0 keeps none.
    pub reserve_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            fsync: FsyncPolicy::Always,
            repair: false,
            inbox_requests: INBOX_REQUESTS_DEFAULT,
            preallocate: true,
            reserve_bytes: crate::limits::RESERVE_BYTES_DEFAULT,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.inbox_requests == 0 || self.inbox_requests > tokio::sync::Semaphore::MAX_PERMITS {
            return Err("inbox_requests must be at least 1".into());
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && (d.is_zero() || d > Duration::from_millis(FSYNC_INTERVAL_MS_MAX))
        {
            return Err(format!(
                "fsync interval {d:?} is outside (0, {FSYNC_INTERVAL_MS_MAX} ms]"
            ));
        }
        Ok(())
    }
}

/// A segment as seen by [`Log::segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u32,
    pub bytes: u64,
}

/// A record moved by compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relocation {
    pub from: Location,
    pub to: Location,
}

/// The open log. Cheap to clone; the writer thread stops when the last clone is dropped or
/// [`Log::close`] is called.
#[derive(Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

pub(crate) struct LogInner {
    pub shared: Arc<Shared>,
    pub writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        self.shared.inbox.close();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Log {
    pub(crate) fn from_inner(inner: LogInner) -> Log {
        Log {
            inner: Arc::new(inner),
        }
    }

    /// Whether the writer waits for a sync deadline (and nothing else): what the tests of
    /// acks riding with a due sync start from.
    #[cfg(test)]
    pub(crate) fn writer_waits_for_a_deadline(&self) -> bool {
        matches!(
            crate::inbox::lock(&self.shared().inbox.state).writer_waiting,
            crate::inbox::WriterWait::Until(_)
        )
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The log's salt, for tests that forge frames of this log.
    #[cfg(test)]
    pub(crate) fn salt(&self) -> crate::frame::Salt {
        self.shared().salt
    }

    /// Appends records atomically (all are recovered, or none) and returns their locations once
    /// the fsync policy is met: on disk for `always`.
    pub async fn append(&self, records: &[Record]) -> Result<Vec<Location>, AppendError> {
        self.append_with(records, Wait::Policy, false).await
    }

    /// [`Log::append`] for records that let space go (a deletion, a discard, an expiry, a
    /// dead letter): on a full disk they may use the reserve, which ordinary appends may not.
    pub async fn append_freeing(&self, records: &[Record]) -> Result<Vec<Location>, AppendError> {
        self.append_with(records, Wait::Policy, true).await
    }

    /// [`Log::append_lazy`] for records that let space go (see [`Log::append_freeing`]).
    pub async fn append_lazy_freeing(
        &self,
        records: &[Record],
    ) -> Result<Vec<Location>, AppendError> {
        self.append_with(records, Wait::Written, true).await
    }

    /// Whether the disk was found full and the log has not made its reserve again: ordinary
    /// appends are refused meanwhile, and reclaiming should run.
    pub fn storage_full(&self) -> bool {
        self.shared()
            .full
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends records without waiting for an fsync (acks, failures: losing one in a crash only
    /// causes a redelivery). They are synced with the next durable append, within
    /// [`crate::limits::LAZY_SYNC_DELAY_MS`] otherwise.
    pub async fn append_lazy(&self, records: &[Record]) -> Result<Vec<Location>, AppendError> {
        self.append_with(records, Wait::Written, false).await
    }

    async fn append_with(
        &self,
        records: &[Record],
        wait: Wait,
        frees: bool,
    ) -> Result<Vec<Location>, AppendError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let unit = encode_unit(records, self.shared().salt)?;
        self.request(|reply| Request::Append {
            units: vec![unit],
            wait,
            frees,
            reply,
        })
        .await
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, AppendError>>) -> Request,
    ) -> Result<T, AppendError> {
        let (reply, done) = oneshot::channel();
        self.shared().inbox.submit(make(reply)).await?;
        done.await.map_err(|_| AppendError::Closed)?
    }

    /// Queues an acknowledgement behind everything appended so far, without waiting: the writer
    /// gathers consecutive acks into one `Acked` record and writes it lazily (synced with the next
    /// durable append, or within [`crate::limits::LAZY_SYNC_DELAY_MS`]). Because the ack is
    /// queued at once, it reaches the log before any append made after this call, and a
    /// [`Log::sync`] made after it covers it.
    pub fn append_ack(&self, ack: Ack) -> Result<(), AppendError> {
        self.shared().inbox.push_ack(ack)
    }

    /// Makes everything appended so far durable.
    pub async fn sync(&self) -> Result<(), AppendError> {
        self.request(|reply| Request::Sync { reply }).await
    }

    /// Writes a snapshot of the broker's state, in parts, and makes it the latest checkpoint:
    /// the next recovery hands these parts back and replays only what was appended after them.
    /// Returns the checkpoint's location. Segments wholly before it may then be reclaimed.
    pub async fn checkpoint(&self, parts: Vec<Bytes>) -> Result<Location, AppendError> {
        self.submit_checkpoint(parts).await?.written().await
    }

    /// Queues a checkpoint's records behind everything appended so far and returns without
    /// waiting for them to be written: anything appended (or any ack queued) after this call
    /// lands after the checkpoint. [`PendingCheckpoint::written`] waits for it to be durable.
    pub async fn submit_checkpoint(
        &self,
        parts: Vec<Bytes>,
    ) -> Result<PendingCheckpoint, AppendError> {
        let parts = if parts.is_empty() {
            vec![Bytes::new()]
        } else {
            parts
        };
        let count = u32::try_from(parts.len())
            .map_err(|_| AppendError::Io(std::io::Error::other("too many checkpoint parts")))?;
        let units = parts
            .into_iter()
            .enumerate()
            .map(|(i, state)| {
                encode_unit(
                    &[Record::Checkpoint {
                        part: i as u32,
                        parts: count,
                        state,
                    }],
                    self.shared().salt,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, done) = oneshot::channel();
        self.shared()
            .inbox
            .submit(Request::Checkpoint { units, reply })
            .await?;
        Ok(PendingCheckpoint { done })
    }

    /// Why the log refuses every append (after a failed fsync, or a failed write it could
    /// not cut back), if it does: until the broker restarts, nothing more can be made durable.
    pub fn refusing_writes(&self) -> Option<String> {
        self.shared().refusing.get().cloned()
    }

    /// The writer's running totals since the log was opened.
    pub fn stats(&self) -> LogStats {
        self.shared().stats.snapshot()
    }

    /// The latest durable checkpoint, if any.
    pub fn checkpoint_location(&self) -> Option<Location> {
        self.shared().checkpoint()
    }

    /// Reads the record at a location. Needs no lock beyond a lookup of the segment's file
    /// handle; safe to call from any number of threads while appends go on.
    pub fn read(&self, at: Location) -> Result<Record, ReadError> {
        let file = self
            .shared()
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&at.segment)
            .cloned()
            .ok_or(ReadError::SegmentGone {
                segment: at.segment,
            })?;
        let name = || self.shared().backend.describe(&segment_name(at.segment));
        let corrupted = |reason: String| ReadError::Corrupted {
            file: name(),
            offset: u64::from(at.offset),
            reason,
        };
        // A location is broker input: never allocate more than a frame can be.
        if at.len as usize > FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX as usize
            || (at.len as usize) < FRAME_HEADER_BYTES
        {
            return Err(corrupted(format!(
                "location length {} is not a frame's",
                at.len
            )));
        }
        let mut buf = vec![0u8; at.len as usize];
        file.read_exact_at(&mut buf, u64::from(at.offset))
            .map_err(|source| ReadError::Io {
                file: name(),
                source,
            })?;
        let frame = parse_frame(&Bytes::from(buf), self.shared().salt)
            .map_err(|e| corrupted(e.to_string()))?;
        let framing = matches!(
            frame.kind,
            kind::BATCH | kind::RELOCATED | kind::SYNC_MARK | kind::PADDING
        );
        if frame.len != at.len as usize || framing {
            return Err(corrupted(format!(
                "location does not hold one record (frame of {} bytes, kind {})",
                frame.len, frame.kind
            )));
        }
        Record::decode(frame.kind, frame.payload).map_err(|e| corrupted(e.to_string()))
    }

    /// Segments in log order with their sizes.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let files: Vec<_> = self
            .shared()
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        files
            .into_iter()
            .map(|(id, f)| SegmentInfo {
                id,
                bytes: f.len().unwrap_or(0),
            })
            .collect()
    }

    fn check_reclaimable(&self, segment: u32) -> Result<(), ReclaimError> {
        let checkpoint = self.shared().checkpoint().map(|c| c.segment);
        match checkpoint {
            Some(c) if segment < c => {}
            _ => {
                return Err(ReclaimError::NotBeforeCheckpoint {
                    segment,
                    checkpoint_segment: checkpoint,
                });
            }
        }
        let known = self
            .shared()
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&segment);
        if !known {
            return Err(ReclaimError::UnknownSegment { segment });
        }
        Ok(())
    }

    /// Deletes a segment the broker knows holds no live record. Only segments before the latest
    /// checkpoint may be deleted. Readers already holding the file finish their reads; later
    /// reads of its locations get [`ReadError::SegmentGone`].
    pub fn delete_segment(&self, segment: u32) -> Result<(), ReclaimError> {
        self.check_reclaimable(segment)?;
        let shared = self.shared();
        let name = segment_name(segment);
        shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&segment);
        let io = |source| ReclaimError::Io {
            file: shared.backend.describe(&name),
            source,
        };
        shared.backend.remove(&name).map_err(io)?;
        shared.backend.sync_dir().map_err(io)?;
        Ok(())
    }

    /// Compaction, first half: copies the records of a segment that `is_live` keeps to the head
    /// of the log and makes the copies durable. Returns where each kept record went. The
    /// broker then points its index at the copies and deletes the segment with
    /// [`Log::delete_segment`]; in that order, a reader always finds the record at one place or
    /// the other. On replay, the broker sees each copy with `relocated_from` set.
    ///
    /// Reads the segment with blocking I/O: call it from a background task that may block.
    ///
    /// Apply the returned moves before the next [`Log::checkpoint`]: a snapshot taken between
    /// the copy and the update would hold old locations, and replay from it would not see the
    /// copies (they precede it).
    pub async fn copy_live_records(
        &self,
        segment: u32,
        mut is_live: impl FnMut(Location, &Record) -> bool,
    ) -> Result<Vec<Relocation>, ReclaimError> {
        self.check_reclaimable(segment)?;
        let shared = self.shared();
        let file = shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&segment)
            .cloned()
            .ok_or(ReclaimError::UnknownSegment { segment })?;
        let name = shared.backend.describe(&segment_name(segment));
        let mut scanner =
            Scanner::new(file, segment, FIRST_FRAME_OFFSET, shared.salt).map_err(|source| {
                ReclaimError::Io {
                    file: name.clone(),
                    source,
                }
            })?;
        let mut froms = Vec::new();
        let mut units = Vec::new();
        loop {
            let scanned = match scanner.next_record() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(ScanError::Io(source)) => {
                    return Err(ReclaimError::Io { file: name, source });
                }
                Err(
                    ScanError::Bad { offset, reason } | ScanError::Malformed { offset, reason },
                ) => {
                    return Err(ReadError::Corrupted {
                        file: name,
                        offset,
                        reason,
                    }
                    .into());
                }
            };
            let record = Record::decode(scanned.kind, scanned.payload).map_err(|e| {
                ReadError::Corrupted {
                    file: name.clone(),
                    offset: u64::from(scanned.location.offset),
                    reason: e.to_string(),
                }
            })?;
            // Old checkpoints are never needed again: replay starts at the latest one.
            if matches!(record, Record::Checkpoint { .. }) || !is_live(scanned.location, &record) {
                continue;
            }
            froms.push(scanned.location);
            units.push(encode_relocated(
                scanned.location,
                &scanned.frame,
                shared.salt,
            ));
        }
        let tos = if units.is_empty() {
            Vec::new()
        } else {
            self.request(|reply| Request::Append {
                units,
                wait: Wait::Synced,
                frees: true,
                reply,
            })
            .await?
        };
        Ok(froms
            .into_iter()
            .zip(tos)
            .map(|(from, to)| Relocation { from, to })
            .collect())
    }

    /// Stops the writer after it has written and synced everything queued. Appends still
    /// running on other clones fail with [`AppendError::Closed`].
    pub fn close(self) {
        self.inner.shared.inbox.close();
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// A checkpoint queued for the writer (see [`Log::submit_checkpoint`]).
#[must_use = "a checkpoint is the latest only once written"]
pub struct PendingCheckpoint {
    done: oneshot::Receiver<Result<Vec<Location>, AppendError>>,
}

impl PendingCheckpoint {
    /// Waits until the checkpoint is durable and the latest; returns its location.
    pub async fn written(self) -> Result<Location, AppendError> {
        let locations = self.done.await.map_err(|_| AppendError::Closed)??;
        locations
            .first()
            .copied()
            .ok_or_else(|| AppendError::Io(std::io::Error::other("empty checkpoint")))
    }
}
