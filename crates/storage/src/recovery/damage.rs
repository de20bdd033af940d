//! Damage found while recovering: a bad segment header, or an invalid frame. Each is a torn
//! write to cut off, or corruption that stops the open (or that repair steps over).

use std::sync::Arc;

use super::{LostRange, Recovery, TornTail, io_err};
use crate::error::OpenError;
use crate::frame::{FRAME_HEADER_BYTES, HeaderError, SEGMENT_HEADER_BYTES};
use crate::frame::{Salt, announced_len, parse_frame};
use crate::io::BackendFile;
use crate::record::{LostRecord, describe_damaged};
use crate::segment::{
    FIRST_FRAME_OFFSET, Scanner, last_nonzero, next_valid_frame, segment_name, sync_claims,
};

impl Recovery {
    /// A segment whose header is not valid (and not of another version). A segment's header is
    /// written and synced before anything is appended to it (the file is all zeros, or empty,
    /// until then), so a last segment with nothing after its bad header was created just before
    /// a crash and is started afresh; any data after a bad header means the header itself was
    /// damaged: corruption, which repair fixes by writing the header again.
    pub(super) fn bad_header(
        &mut self,
        segment: u32,
        file: Arc<dyn BackendFile>,
        len: u64,
        start: u64,
        e: HeaderError,
    ) -> Result<Option<Scanner>, OpenError> {
        let name = segment_name(segment);
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
        Ok(None)
    }

    /// Handles an invalid frame at `offset` of `segment`.
    ///
    /// Damage below what a sync mark of the segment says was on disk hit synced data: that is
    /// corruption, in any segment. Otherwise, in the last segment, it is the write that was in
    /// progress at the crash (a torn tail, perhaps with some of its sectors on disk): cut off.
    /// In a sealed segment, which was synced before the next one was created, damage is always
    /// corruption. Corruption stops the open, unless `repair` is set: then the damaged bytes up
    /// to the next valid frame are covered with padding, and the loss reported.
    pub(super) fn damaged(
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
        let marks_after =
            sync_claims(&*file, segment, self.salt, offset + 1, file_len).map_err(&io)?;
        let synced = scanner.synced_claim().max(marks_after);
        let name = self.name(segment);
        let data_end = last_nonzero(&*file, offset, file_len)
            .map_err(&io)?
            .map_or(offset, |at| at + 1);
        if torn_possible && self.is_last(segment) && synced <= offset {
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
        let next = next_frame_after_damage(&*file, self.salt, offset, file_len).map_err(&io)?;
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
}

/// Where repair resumes after the damaged frame at `offset`: right after it, if its length
/// still reads true (a valid frame starts exactly there: the damage hit its payload or
/// checksum, so no frame inside it is taken for one of its own); else the next valid frame at
/// least a frame header on; `None` if there is none (the rest of the data goes).
fn next_frame_after_damage(
    file: &dyn BackendFile,
    salt: Salt,
    offset: u64,
    file_len: u64,
) -> std::io::Result<Option<u64>> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    if offset + FRAME_HEADER_BYTES as u64 <= file_len {
        file.read_exact_at(&mut head, offset)?;
        if let Some(total) = announced_len(&head)
            && total > FRAME_HEADER_BYTES
        {
            let at = offset + total as u64;
            if at + FRAME_HEADER_BYTES as u64 <= file_len && frame_at(file, salt, at, file_len)? {
                return Ok(Some(at));
            }
        }
    }
    let from = offset + FRAME_HEADER_BYTES as u64;
    next_valid_frame(file, salt, from, file_len)
}

/// Whether a valid frame starts at `at`.
fn frame_at(file: &dyn BackendFile, salt: Salt, at: u64, file_len: u64) -> std::io::Result<bool> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    file.read_exact_at(&mut head, at)?;
    let Some(total) = announced_len(&head).filter(|t| at + *t as u64 <= file_len) else {
        return Ok(false);
    };
    let mut frame = vec![0u8; total];
    file.read_exact_at(&mut frame, at)?;
    Ok(parse_frame(&bytes::Bytes::from(frame), salt).is_ok())
}

/// What the damaged bytes `[from, to)` of a segment still tell of the records they held.
pub(super) fn describe(
    file: &dyn BackendFile,
    from: u64,
    to: u64,
) -> std::io::Result<Vec<LostRecord>> {
    use crate::limits::FRAME_PAYLOAD_BYTES_MAX;
    let len = (to - from).min(u64::from(FRAME_PAYLOAD_BYTES_MAX) + FRAME_HEADER_BYTES as u64);
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, from)?;
    Ok(describe_damaged(&bytes))
}
