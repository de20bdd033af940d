//! Segment files: their names, and a sequential scanner that reads one segment in large windows
//! and yields its records one by one, flattening batch and relocation frames.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::frame::{
    FRAME_HEADER_BYTES, LOCATION_BYTES, Location, SEGMENT_HEADER_BYTES, announced_len, parse_frame,
};
use crate::io::BackendFile;
use crate::limits::SCAN_WINDOW_BYTES;
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
    ) -> io::Result<Scanner> {
        let file_len = file.len()?;
        Ok(Scanner {
            file,
            segment,
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

    /// The next record, `None` at the clean end of the segment.
    pub(crate) fn next_record(&mut self) -> Result<Option<Scanned>, ScanError> {
        if let Some(s) = self.pending.pop_front() {
            return Ok(Some(s));
        }
        if self.pos == self.file_len || self.ended {
            return Ok(None);
        }
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
                    Ok(None)
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
        let frame = parse_frame(&bytes).map_err(|e| self.bad(e.to_string()))?;
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
                    let inner = parse_frame(&rest)
                        .map_err(|e| self.malformed(format!("inside a batch: {e}")))?;
                    if inner.kind == kind::BATCH || inner.kind == kind::RELOCATED {
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
                let inner = parse_frame(&rest)
                    .map_err(|e| self.malformed(format!("inside a relocation: {e}")))?;
                if inner.len != rest.len()
                    || inner.kind == kind::BATCH
                    || inner.kind == kind::RELOCATED
                {
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
            k => self.pending.push_back(Scanned {
                location: location(0, frame.len),
                kind: k,
                payload: frame.payload.clone(),
                frame: bytes,
                relocated_from: None,
            }),
        }
        self.pos += total as u64;
        Ok(self.pending.pop_front())
    }
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
