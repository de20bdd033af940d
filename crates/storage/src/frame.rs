//! Frames and segment headers: the byte layout of the log (drawn in `docs/format.md`).
//!
//! ```text
//! frame:   [len u32 LE][crc32c u32 LE][kind u8][payload: len bytes]
//!          crc32c is seeded with the log's salt and covers len, kind and payload
//! segment: [magic "SYNCBROK"][version u32][segment id u32][salt u32][crc32c u32] frames...
//! ```
//!
//! Besides records, four framing kinds exist: a batch (several records, one checksum), a
//! relocated record (a compacted copy with its origin), a sync mark (how far the segment was
//! known to be on disk when it was written) and padding (bytes that repair took out of use).

use bytes::Bytes;

use crate::limits::{FRAME_PAYLOAD_BYTES_MAX, RECORD_PAYLOAD_BYTES_MAX};
use crate::record::{Record, kind};

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 9;
/// Bytes of a segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// Bytes of the origin (a [`Location`]) at the front of a relocated frame's payload.
pub(crate) const LOCATION_BYTES: usize = 12;
/// Bytes of a sync mark's payload: the segment id and the synced end.
const SYNC_MARK_PAYLOAD_BYTES: usize = 4 + 8;
/// Bytes of a whole sync mark frame.
pub(crate) const SYNC_MARK_BYTES: usize = FRAME_HEADER_BYTES + SYNC_MARK_PAYLOAD_BYTES;

const SEGMENT_MAGIC: &[u8; 8] = b"SYNCBROK";
/// Version of the segment format written. A reader refuses versions it does not know, in any
/// segment: an unknown version is never taken for a torn header. Version 3 added record kind
/// 14 (a subscriber with options): a build that knows only version 2 would take such a record
/// for damage, so it must refuse these segments instead. Version 4 added kind 15 (a
/// subscriber updated), version 5 kinds 16 and 17 (a message with attributes, messages
/// released at their due time), version 6 kinds 18 to 20 (a message with several parents or a
/// replay's copy, a parent in another queue settled, messages replayed), for the same reason.
pub const FORMAT_VERSION: u32 = 6;
/// The oldest segment format this build reads (it reads every version up to
/// [`FORMAT_VERSION`]; version 2 segments simply hold no records of the newer kinds).
pub const FORMAT_VERSION_OLDEST: u32 = 2;

/// A random value chosen when a log is created, written in every segment header and mixed into
/// every frame checksum. Bytes that a client sent (a message body) can therefore never pass for
/// a frame of this log, even when recovery searches damaged data for the next valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt {
    value: u32,
    /// The CRC32C state after the salt: every frame checksum starts from it.
    seed: u32,
}

impl Salt {
    pub(crate) fn new(value: u32) -> Salt {
        Salt {
            value,
            seed: crc32c::crc32c(&value.to_le_bytes()),
        }
    }

    pub(crate) fn value(&self) -> u32 {
        self.value
    }

    /// A fresh salt from the operating system's randomness (through std's hash seeds).
    pub(crate) fn random() -> Salt {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        );
        Salt::new(h.finish() as u32)
    }
}

/// Where a record lives: its frame's segment, offset and length (header included).
///
/// 12 bytes, so the broker's index can afford one per live message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Location {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    pub(crate) fn decode(b: &[u8]) -> Location {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Location {
            segment: word(0),
            offset: word(4),
            len: word(8),
        }
    }
}

/// Why the bytes at some position are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame runs past the end of the data ({needed} bytes missing)")]
    Incomplete { needed: usize },
    #[error("frame length {len} is over the limit of {FRAME_PAYLOAD_BYTES_MAX} bytes")]
    LengthOverLimit { len: u32 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

fn checksum(salt: Salt, len_le: &[u8], kind_and_payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(salt.seed, len_le), kind_and_payload)
}

/// Whether `kind` is one a frame of this format may have.
pub(crate) fn is_known_kind(k: u8) -> bool {
    matches!(k, kind::QUEUE_CREATED..=kind::LAST_RECORD)
        || matches!(
            k,
            kind::BATCH | kind::RELOCATED | kind::SYNC_MARK | kind::PADDING
        )
}

/// Writes a frame around a payload that `fill` appends; returns the frame's length.
pub(crate) fn write_frame(
    out: &mut Vec<u8>,
    salt: Salt,
    kind: u8,
    fill: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    out[start + 8] = kind;
    fill(out);
    let payload_len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(salt, &out[start..start + 4], &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// A frame checked against its checksum.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub kind: u8,
    pub payload: Bytes,
    /// Header plus payload.
    pub len: usize,
}

/// Checks and splits the frame at the start of `buf`. `buf` may extend past the frame.
pub(crate) fn parse_frame(buf: &Bytes, salt: Salt) -> Result<Frame, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Incomplete {
            needed: FRAME_HEADER_BYTES - buf.len(),
        });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameError::LengthOverLimit { len });
    }
    let total = FRAME_HEADER_BYTES + len as usize;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let computed = checksum(salt, &buf[0..4], &buf[8..total]);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch { stored, computed });
    }
    let kind = buf[8];
    if !is_known_kind(kind) {
        return Err(FrameError::UnknownKind(kind));
    }
    Ok(Frame {
        kind,
        payload: buf.slice(FRAME_HEADER_BYTES..total),
        len: total,
    })
}

/// Reads the frame length announced by a header, if the header is complete and sane; used to
/// size a read before the whole frame is in memory.
pub(crate) fn announced_len(header: &[u8]) -> Option<usize> {
    if header.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    (len <= FRAME_PAYLOAD_BYTES_MAX).then_some(FRAME_HEADER_BYTES + len as usize)
}

/// One contiguous piece of an append: a single top-level frame, plus where the records inside
/// it sit (offset from the frame's start, frame length). The writer never splits a unit across
/// segments, so everything in a unit survives a crash together or not at all.
#[derive(Debug)]
pub(crate) struct Unit {
    pub bytes: Vec<u8>,
    pub records: Vec<(u32, u32)>,
}

/// Why records cannot be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the records encode to {bytes} bytes; one append holds at most {RECORD_PAYLOAD_BYTES_MAX}")]
pub struct TooLarge {
    pub bytes: usize,
}

/// Encodes records into one unit: a plain frame for one record, a batch frame (one checksum
/// over all) for several, so that an append is atomic on recovery.
pub(crate) fn encode_unit(records: &[Record], salt: Salt) -> Result<Unit, TooLarge> {
    let mut bytes = Vec::with_capacity(64 + records.len() * 64);
    let mut positions = Vec::with_capacity(records.len());
    match records {
        [one] => {
            let len = write_frame(&mut bytes, salt, one.kind(), |out| one.encode_payload(out));
            positions.push((0, len as u32));
        }
        many => {
            write_frame(&mut bytes, salt, kind::BATCH, |out| {
                for r in many {
                    let at = out.len();
                    let len = write_frame(out, salt, r.kind(), |o| r.encode_payload(o));
                    positions.push((at as u32, len as u32));
                }
            });
        }
    }
    let payload = bytes.len() - FRAME_HEADER_BYTES;
    if payload > RECORD_PAYLOAD_BYTES_MAX as usize {
        return Err(TooLarge { bytes: payload });
    }
    Ok(Unit {
        bytes,
        records: positions,
    })
}

/// Wraps an existing record frame, found at `from`, so that compaction can copy it forward.
pub(crate) fn encode_relocated(from: Location, frame: &[u8], salt: Salt) -> Unit {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + LOCATION_BYTES + frame.len());
    write_frame(&mut bytes, salt, kind::RELOCATED, |out| {
        from.encode(out);
        out.extend_from_slice(frame);
    });
    Unit {
        bytes,
        records: vec![(
            (FRAME_HEADER_BYTES + LOCATION_BYTES) as u32,
            frame.len() as u32,
        )],
    }
}

/// A sync mark: segment `segment` was on disk up to byte `synced_end` before this frame was
/// written. Recovery uses the highest mark to tell damage in synced data (corruption) from a
/// write that never finished (a torn tail).
pub(crate) fn write_sync_mark(out: &mut Vec<u8>, salt: Salt, segment: u32, synced_end: u64) {
    write_frame(out, salt, kind::SYNC_MARK, |o| {
        o.extend_from_slice(&segment.to_le_bytes());
        o.extend_from_slice(&synced_end.to_le_bytes());
    });
}

/// The (segment, synced end) a sync mark's payload states, if it has the right size.
pub(crate) fn read_sync_mark(payload: &[u8]) -> Option<(u32, u64)> {
    if payload.len() != SYNC_MARK_PAYLOAD_BYTES {
        return None;
    }
    let mut segment = [0u8; 4];
    segment.copy_from_slice(&payload[..4]);
    let mut end = [0u8; 8];
    end.copy_from_slice(&payload[4..]);
    Some((u32::from_le_bytes(segment), u64::from_le_bytes(end)))
}

/// The sizes of the padding frames that cover `total` bytes (at least a frame header): as few
/// as can be, none over the largest frame a reader accepts, none under a frame header.
pub(crate) fn padding_sizes(total: usize) -> Vec<usize> {
    let max = FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX as usize;
    let mut sizes = Vec::new();
    let mut left = total;
    while left > 0 {
        let mut this = left.min(max);
        if left - this > 0 && left - this < FRAME_HEADER_BYTES {
            this -= FRAME_HEADER_BYTES;
        }
        sizes.push(this);
        left -= this;
    }
    sizes
}

/// A padding frame of exactly `total` bytes (at least a frame header, at most the largest
/// frame: see [`padding_sizes`]): what repair writes over damaged bytes between two valid
/// frames, so that the scan steps over them.
pub(crate) fn padding(total: usize, salt: Salt) -> Vec<u8> {
    debug_assert!(total >= FRAME_HEADER_BYTES);
    let mut out = Vec::with_capacity(total);
    write_frame(&mut out, salt, kind::PADDING, |o| {
        o.resize(total, 0);
    });
    out
}

/// The header at the start of every segment file.
pub(crate) fn segment_header(segment: u32, salt: Salt) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&segment.to_le_bytes());
    h[16..20].copy_from_slice(&salt.value.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("segment header is incomplete")]
    Incomplete,
    #[error("not a syncbrok segment (bad magic or checksum)")]
    BadMagicOrChecksum,
    #[error(
        "segment format version {0} is not supported (this build reads versions {FORMAT_VERSION_OLDEST} to {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("header names segment {found}, the file name says {expected}")]
    WrongSegment { expected: u32, found: u32 },
}

/// Checks a segment header; returns the log's salt it carries.
pub(crate) fn check_segment_header(h: &[u8], segment: u32) -> Result<Salt, HeaderError> {
    if h.len() < SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Incomplete);
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagicOrChecksum);
    }
    // The version is read before the checksum: a header of another version may lay out (and
    // checksum) its fields differently, and must be refused as such, never as damage.
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let stored = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if stored != crc32c::crc32c(&h[0..20]) {
        return Err(HeaderError::BadMagicOrChecksum);
    }
    let found = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if found != segment {
        return Err(HeaderError::WrongSegment {
            expected: segment,
            found,
        });
    }
    Ok(Salt::new(u32::from_le_bytes([h[16], h[17], h[18], h[19]])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record_strategy;
    use proptest::prelude::*;

    fn salt() -> Salt {
        Salt::new(7)
    }

    proptest! {
        /// Any single flipped bit anywhere in a frame is detected.
        #[test]
        fn every_bit_flip_is_detected(r in record_strategy(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let unit = encode_unit(std::slice::from_ref(&r), salt()).unwrap();
            let mut bytes = unit.bytes.clone();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let parsed = parse_frame(&Bytes::from(bytes), salt());
            prop_assert!(parsed.is_err(), "flip at byte {} bit {} went unnoticed", i, bit);
        }

        #[test]
        fn a_frame_parses_back_to_its_record(r in record_strategy()) {
            let unit = encode_unit(std::slice::from_ref(&r), salt()).unwrap();
            let frame = parse_frame(&Bytes::from(unit.bytes.clone()), salt()).unwrap();
            prop_assert_eq!(frame.len, unit.bytes.len());
            prop_assert_eq!(Record::decode(frame.kind, frame.payload).unwrap(), r);
        }

        #[test]
        fn batch_positions_point_at_valid_frames(rs in proptest::collection::vec(record_strategy(), 2..6)) {
            let unit = encode_unit(&rs, salt()).unwrap();
            let all = Bytes::from(unit.bytes);
            prop_assert_eq!(parse_frame(&all, salt()).unwrap().kind, kind::BATCH);
            for ((at, len), r) in unit.records.iter().zip(&rs) {
                let inner = all.slice(*at as usize..(*at + *len) as usize);
                let f = parse_frame(&inner, salt()).unwrap();
                prop_assert_eq!(&Record::decode(f.kind, f.payload).unwrap(), r);
            }
        }
    }

    #[test]
    fn short_and_oversized_frames_are_refused() {
        let unit = encode_unit(&[Record::QueueDeleted { queue: 1 }], salt()).unwrap();
        let b = Bytes::from(unit.bytes);
        assert!(matches!(
            parse_frame(&b.slice(..b.len() - 1), salt()),
            Err(FrameError::Incomplete { needed: 1 })
        ));
        let mut huge = b.to_vec();
        huge[0..4].copy_from_slice(&(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
        assert!(matches!(
            parse_frame(&Bytes::from(huge), salt()),
            Err(FrameError::LengthOverLimit { .. })
        ));
        // A zeroed region (a preallocated or torn tail) is never a frame.
        assert!(parse_frame(&Bytes::from(vec![0u8; 64]), salt()).is_err());
    }

    #[test]
    fn segment_headers_check_magic_version_and_id() {
        let h = segment_header(7, salt());
        assert_eq!(check_segment_header(&h, 7), Ok(Salt::new(7)));
        assert_eq!(
            check_segment_header(&h, 8),
            Err(HeaderError::WrongSegment {
                expected: 8,
                found: 7
            })
        );
        assert_eq!(
            check_segment_header(&h[..10], 7),
            Err(HeaderError::Incomplete)
        );
        let mut bad = h;
        bad[3] ^= 1;
        assert_eq!(
            check_segment_header(&bad, 7),
            Err(HeaderError::BadMagicOrChecksum)
        );
    }

    #[test]
    fn a_frame_of_another_log_is_refused() {
        let r = Record::QueueDeleted { queue: 1 };
        let unit = encode_unit(std::slice::from_ref(&r), Salt::new(1)).unwrap();
        let b = Bytes::from(unit.bytes);
        assert!(parse_frame(&b, Salt::new(1)).is_ok());
        assert!(matches!(
            parse_frame(&b, Salt::new(2)),
            Err(FrameError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn another_version_is_refused_as_such_never_as_damage() {
        let mut h = segment_header(3, salt());
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            check_segment_header(&h, 3),
            Err(HeaderError::UnsupportedVersion(1))
        );
        h[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            check_segment_header(&h, 3),
            Err(HeaderError::UnsupportedVersion(FORMAT_VERSION + 1))
        );
    }

    /// Segments of the previous version (before record kind 14) are still read.
    #[test]
    fn a_segment_of_the_oldest_version_read_is_accepted() {
        let mut h = segment_header(3, salt());
        h[8..12].copy_from_slice(&FORMAT_VERSION_OLDEST.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..20]);
        h[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(check_segment_header(&h, 3), Ok(salt()));
    }

    #[test]
    fn sync_marks_and_padding_have_their_exact_size() {
        let mut mark = Vec::new();
        write_sync_mark(&mut mark, salt(), 4, 1 << 40);
        assert_eq!(mark.len(), SYNC_MARK_BYTES);
        let f = parse_frame(&Bytes::from(mark), salt()).unwrap();
        assert_eq!(f.kind, kind::SYNC_MARK);
        assert_eq!(read_sync_mark(&f.payload), Some((4, 1 << 40)));
        for total in [FRAME_HEADER_BYTES, 10, 4096] {
            let pad = padding(total, salt());
            assert_eq!(pad.len(), total);
            assert_eq!(
                parse_frame(&Bytes::from(pad), salt()).unwrap().kind,
                kind::PADDING
            );
        }
    }
}
