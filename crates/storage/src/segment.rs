//! Segment files: their names, and a sequential scanner that reads one segment in large windows
//! and yields its records one by one, flattening batch and relocation frames.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::frame::{
    FRAME_HEADER_BYTES, LOCATION_BYTES, Location, SEGMENT_HEADER_BYTES, SYNC_MARK_BYTES, Salt,
    announced_len, is_known_kind, parse_frame, read_sync_mark,
};
use crate::io::BackendFile;
use crate::limits::{FRAME_PAYLOAD_BYTES_MAX, RESYNC_CHECKED_BYTES_MAX, SCAN_WINDOW_BYTES};
use crate::record::kind;

/// File name of a segment: its id, zero-padded so that names sort in log order.
pub(crate) fn segment_name(segment: u32) -> String {
    format!("{segment:010}.log")
}

/// The id in a segment file name, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One record found by a scan.
#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    pub location: Location,
    pub kind: u8,
    pub payload: Bytes,
    /// The record's own frame (header and payload), for compaction to copy.
    pub frame: Bytes,
    /// Where compaction found this record before copying it here.
    pub relocated_from: Option<Location>,
}

/// Why a scan stopped before the end of the segment.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// The bytes at `offset` (a top-level frame) are not a valid frame: in the last segment,
    /// a torn write.
    Bad {
        offset: u64,
        reason: String,
    },
    /// The frame at `offset` passed its checksum but its contents are malformed: never a torn
    /// write, always corruption (or a bug).
    Malformed {
        offset: u64,
        reason: String,
    },
    Io(io::Error),
}

/// Reads the records of one segment from a starting offset to its end.
pub(crate) struct Scanner {
    file: Arc<dyn BackendFile>,
    segment: u32,
    salt: Salt,
    /// The highest end a sync mark seen so far says was on disk.
    synced_claim: u64,
    file_len: u64,
    /// Offset of the next top-level frame.
    pos: u64,
    window: Bytes,
    window_start: u64,
    /// Records of the last top-level frame not yet handed out.
    pending: VecDeque<Scanned>,
    /// The end-of-data mark (zeros to the end of the file) was found at `pos`.
    ended: bool,
}

impl Scanner {
    /// A scanner starting at `offset` (after the segment header, or at a checkpoint).
    pub(crate) fn new(
        file: Arc<dyn BackendFile>,
        segment: u32,
        offset: u64,
        salt: Salt,
    ) -> io::Result<Scanner> {
        let file_len = file.len()?;
        Ok(Scanner {
            file,
            segment,
            salt,
            synced_claim: 0,
            file_len,
            pos: offset,
            window: Bytes::new(),
            window_start: 0,
            pending: VecDeque::new(),
            ended: false,
        })
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Where the valid data ends once the scan has returned `None`.
    pub(crate) fn data_end(&self) -> u64 {
        self.pos
    }

    /// The highest end that a sync mark seen so far says was on disk: damage below it hit
    /// data that had been synced, so it is corruption, never a torn write.
    pub(crate) fn synced_claim(&self) -> u64 {
        self.synced_claim
    }

    /// Goes on scanning at `offset` (a valid frame found past damage that repair steps over).
    pub(crate) fn resume_at(&mut self, offset: u64) {
        self.pending.clear();
        self.ended = false;
        self.pos = offset;
    }

    /// Makes sure `[at, at + len)` is inside the window, reading a new window if not.
    fn ensure(&mut self, at: u64, len: usize) -> io::Result<()> {
        let window_end = self.window_start + self.window.len() as u64;
        if at >= self.window_start && at + len as u64 <= window_end {
            return Ok(());
        }
        let available = (self.file_len - at) as usize;
        let size = len.max(SCAN_WINDOW_BYTES).min(available);
        // The previous window is reused when nothing read from it is still held (the usual
        // case: records are applied and dropped as they come): a fresh 8 MiB buffer per window
        // costs page faults, and an allocator that returns freed memory at once pays them
        // again for every window.
        let mut buf = match std::mem::take(&mut self.window).try_into_mut() {
            Ok(mut reused) => {
                reused.clear();
                reused.resize(size, 0);
                reused
            }
            Err(_) => bytes::BytesMut::zeroed(size),
        };
        self.file.read_exact_at(&mut buf, at)?;
        self.window = buf.freeze();
        self.window_start = at;
        Ok(())
    }

    fn bad(&self, reason: impl Into<String>) -> ScanError {
        ScanError::Bad {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> ScanError {
        ScanError::Malformed {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    /// The next record, `None` at the clean end of the segment. Sync marks and padding are
    /// stepped over.
    pub(crate) fn next_record(&mut self) -> Result<Option<Scanned>, ScanError> {
        loop {
            if let Some(s) = self.pending.pop_front() {
                return Ok(Some(s));
            }
            if self.pos == self.file_len || self.ended {
                return Ok(None);
            }
            self.next_frame()?;
        }
    }

    /// Reads the top-level frame at `pos`, queues the records it holds and moves past it.
    fn next_frame(&mut self) -> Result<(), ScanError> {
        let remaining = self.file_len - self.pos;
        let head = (FRAME_HEADER_BYTES as u64).min(remaining) as usize;
        self.ensure(self.pos, head).map_err(ScanError::Io)?;
        let rel = (self.pos - self.window_start) as usize;
        if self.window[rel..rel + head].iter().all(|&b| b == 0) {
            // No frame header is all zeros (kinds start at 1): this is the end-of-data mark of a
            // preallocated segment, valid only if nothing but zeros follows.
            return match last_nonzero(&*self.file, self.pos, self.file_len)
                .map_err(ScanError::Io)?
            {
                None => {
                    self.ended = true;
                    Ok(())
                }
                Some(at) => Err(self.bad(format!("data at byte {at} after a zeroed frame header"))),
            };
        }
        if remaining < FRAME_HEADER_BYTES as u64 {
            return Err(self.bad(format!(
                "{remaining} bytes at the end are too few for a frame header"
            )));
        }
        self.ensure(self.pos, FRAME_HEADER_BYTES)
            .map_err(ScanError::Io)?;
        let rel = (self.pos - self.window_start) as usize;
        let Some(total) = announced_len(&self.window[rel..]) else {
            return Err(self.bad("frame length is over the limit"));
        };
        if total as u64 > remaining {
            return Err(self.bad(format!(
                "frame of {total} bytes runs past the end of the file ({remaining} bytes left)"
            )));
        }
        self.ensure(self.pos, total).map_err(ScanError::Io)?;
        let rel = (self.pos - self.window_start) as usize;
        let bytes = self.window.slice(rel..rel + total);
        let salt = self.salt;
        let frame = parse_frame(&bytes, salt).map_err(|e| self.bad(e.to_string()))?;
        let frame_offset = self.pos;
        let location = |rel_offset: usize, len: usize| Location {
            segment: self.segment,
            offset: (frame_offset + rel_offset as u64) as u32,
            len: len as u32,
        };
        match frame.kind {
            kind::BATCH => {
                if frame.payload.is_empty() {
                    return Err(self.malformed("empty batch"));
                }
                let mut rel_offset = FRAME_HEADER_BYTES;
                let mut rest = frame.payload.clone();
                while !rest.is_empty() {
                    let inner = parse_frame(&rest, salt)
                        .map_err(|e| self.malformed(format!("inside a batch: {e}")))?;
                    if is_framing(inner.kind) {
                        return Err(self.malformed("a batch holds a framing record"));
                    }
                    self.pending.push_back(Scanned {
                        location: location(rel_offset, inner.len),
                        kind: inner.kind,
                        payload: inner.payload,
                        frame: rest.slice(..inner.len),
                        relocated_from: None,
                    });
                    rel_offset += inner.len;
                    rest = rest.slice(inner.len..);
                }
            }
            kind::RELOCATED => {
                if frame.payload.len() < LOCATION_BYTES {
                    return Err(self.malformed("relocation frame too short"));
                }
                let from = Location::decode(&frame.payload[..LOCATION_BYTES]);
                let rest = frame.payload.slice(LOCATION_BYTES..);
                let inner = parse_frame(&rest, salt)
                    .map_err(|e| self.malformed(format!("inside a relocation: {e}")))?;
                if inner.len != rest.len() || is_framing(inner.kind) {
                    return Err(self.malformed("malformed relocation frame"));
                }
                self.pending.push_back(Scanned {
                    location: location(FRAME_HEADER_BYTES + LOCATION_BYTES, inner.len),
                    kind: inner.kind,
                    payload: inner.payload,
                    frame: rest,
                    relocated_from: Some(from),
                });
            }
            kind::SYNC_MARK => match read_sync_mark(&frame.payload) {
                Some((segment, end)) if segment == self.segment && end <= frame_offset => {
                    self.synced_claim = self.synced_claim.max(end);
                }
                _ => return Err(self.malformed("sync mark of another segment or past itself")),
            },
            kind::PADDING => {}
            k => self.pending.push_back(Scanned {
                location: location(0, frame.len),
                kind: k,
                payload: frame.payload.clone(),
                frame: bytes,
                relocated_from: None,
            }),
        }
        self.pos += total as u64;
        Ok(())
    }
}

/// Frames that carry no broker record of their own.
fn is_framing(k: u8) -> bool {
    matches!(
        k,
        kind::BATCH | kind::RELOCATED | kind::SYNC_MARK | kind::PADDING
    )
}

/// Searches `[from, end)` of a segment, byte by byte, for the first valid frame (checked
/// against the log's salt, so bytes of a message body never pass for one). Bounded by
/// [`RESYNC_CHECKED_BYTES_MAX`] bytes checksummed: `None` past it, as when there is none.
pub(crate) fn next_valid_frame(
    file: &dyn BackendFile,
    salt: Salt,
    from: u64,
    end: u64,
) -> io::Result<Option<u64>> {
    let mut budget = RESYNC_CHECKED_BYTES_MAX;
    find_frame(file, salt, from, end, &mut budget)
}

/// The highest end that any sync mark of `segment` in `[from, end)` claims was on disk. Marks
/// have a fixed size and shape, so the search is linear and cheap whatever the bytes (a full
/// search for frames over high-entropy data is not).
pub(crate) fn sync_claims(
    file: &dyn BackendFile,
    segment: u32,
    salt: Salt,
    from: u64,
    end: u64,
) -> io::Result<u64> {
    let mark = SYNC_MARK_BYTES;
    let mut claim = 0;
    let mut window = vec![0u8; SCAN_WINDOW_BYTES];
    let mut base = from;
    while base < end {
        let n = ((end - base) as usize).min(window.len());
        file.read_exact_at(&mut window[..n], base)?;
        let last = n.saturating_sub(mark - 1);
        for i in 0..last {
            let w = &window[i..i + mark];
            if w[8] != kind::SYNC_MARK
                || w[0..4] != ((mark - FRAME_HEADER_BYTES) as u32).to_le_bytes()
            {
                continue;
            }
            let at = base + i as u64;
            if let Ok(f) = parse_frame(&Bytes::copy_from_slice(w), salt)
                && let Some((seg, synced)) = read_sync_mark(&f.payload)
                && seg == segment
                && synced <= at
            {
                claim = claim.max(synced);
            }
        }
        if last == 0 || n < window.len() {
            break;
        }
        base += last as u64;
    }
    Ok(claim)
}

/// The offset of the first valid top-level frame in `[from, end)`, if there is one.
fn find_frame(
    file: &dyn BackendFile,
    salt: Salt,
    from: u64,
    end: u64,
    budget: &mut u64,
) -> io::Result<Option<u64>> {
    let mut window = vec![0u8; SCAN_WINDOW_BYTES];
    let mut base = from;
    while base < end {
        let n = ((end - base) as usize).min(window.len());
        file.read_exact_at(&mut window[..n], base)?;
        // Candidates whose header fits in this window; the next window starts at the first
        // one that did not.
        let last = n.saturating_sub(FRAME_HEADER_BYTES - 1);
        for i in 0..last {
            let h = &window[i..i + FRAME_HEADER_BYTES];
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let offset = base + i as u64;
            let total = FRAME_HEADER_BYTES as u64 + u64::from(len);
            if !is_known_kind(h[8]) || len > FRAME_PAYLOAD_BYTES_MAX || offset + total > end {
                continue;
            }
            if *budget < total {
                *budget = 0;
                return Ok(None);
            }
            *budget -= total;
            let bytes = if i + total as usize <= n {
                Bytes::copy_from_slice(&window[i..i + total as usize])
            } else {
                let mut b = vec![0u8; total as usize];
                file.read_exact_at(&mut b, offset)?;
                Bytes::from(b)
            };
            if parse_frame(&bytes, salt).is_ok() {
                return Ok(Some(offset));
            }
        }
        if last == 0 {
            break;
        }
        base += last as u64;
    }
    Ok(None)
}

/// The offset of the last byte in `[from, to)` that is not zero, if any.
pub(crate) fn last_nonzero(file: &dyn BackendFile, from: u64, to: u64) -> io::Result<Option<u64>> {
    let mut found = None;
    let mut buf = vec![0u8; SCAN_WINDOW_BYTES];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            found = Some(at + i as u64);
        }
        at += n as u64;
    }
    Ok(found)
}

/// Zeroes `[from, to)` where it is not zero already, then syncs: cutting a torn tail off a
/// preallocated segment without giving its blocks back.
pub(crate) fn zero_range(file: &dyn BackendFile, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 1024 * 1024;
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(CHUNK);
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            file.write_all_at(&zeros[..n], at)?;
        }
        at += n as u64;
    }
    file.sync_data()
}

/// Creates a zero-filled file of `bytes` under `name` and syncs it, so that appends into it
/// overwrite allocated blocks: `fdatasync` then has no file size or extent change to journal,
/// which makes each one markedly cheaper (measured in `docs/benchmarks.md`).
pub(crate) fn preallocate(
    backend: &dyn crate::io::Backend,
    name: &str,
    bytes: u64,
) -> io::Result<Arc<dyn BackendFile>> {
    const CHUNK: usize = 1024 * 1024;
    let file = backend.create(name)?;
    let zeros = vec![0u8; CHUNK];
    let mut at = 0;
    while at < bytes {
        let n = ((bytes - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()?;
    Ok(file)
}

/// The offset of the first frame in a segment.
pub(crate) const FIRST_FRAME_OFFSET: u64 = SEGMENT_HEADER_BYTES as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse_back() {
        assert_eq!(segment_name(7), "0000000007.log");
        assert_eq!(parse_segment_name("0000000007.log"), Some(7));
        assert_eq!(parse_segment_name(&segment_name(u32::MAX)), Some(u32::MAX));
        assert_eq!(parse_segment_name("7.log"), None);
        assert_eq!(parse_segment_name("000000000x.log"), None);
        assert_eq!(parse_segment_name("0000000007.tmp"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
