//! Frames and segment headers: the byte layout of the log (drawn in `docs/format.md`).
//!
//! ```text
//! frame:   [len u32 LE][crc32c u32 LE][kind u8][payload: len bytes]
//!          crc32c covers len, kind and payload (every byte but itself)
//! segment: [magic "SYNCBROK"][version u32][segment id u32][crc32c u32][reserved u32] frames...
//! ```

use bytes::Bytes;

use crate::limits::{FRAME_PAYLOAD_BYTES_MAX, RECORD_PAYLOAD_BYTES_MAX};
use crate::record::{Record, kind};

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 9;
/// Bytes of a segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// Bytes of the origin (a [`Location`]) at the front of a relocated frame's payload.
pub(crate) const LOCATION_BYTES: usize = 12;

const SEGMENT_MAGIC: &[u8; 8] = b"SYNCBROK";
/// Version of the segment format. A reader refuses versions it does not know.
pub const FORMAT_VERSION: u32 = 1;

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

fn checksum(len_le: &[u8], kind_and_payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_le), kind_and_payload)
}

/// Writes a frame around a payload that `fill` appends; returns the frame's length.
pub(crate) fn write_frame(out: &mut Vec<u8>, kind: u8, fill: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    out[start + 8] = kind;
    fill(out);
    let payload_len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(&out[start..start + 4], &out[start + 8..]);
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
pub(crate) fn parse_frame(buf: &Bytes) -> Result<Frame, FrameError> {
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
    let computed = checksum(&buf[0..4], &buf[8..total]);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch { stored, computed });
    }
    let kind = buf[8];
    let known = matches!(kind, kind::QUEUE_CREATED..=kind::CHECKPOINT)
        || kind == kind::BATCH
        || kind == kind::RELOCATED;
    if !known {
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
pub(crate) fn encode_unit(records: &[Record]) -> Result<Unit, TooLarge> {
    let mut bytes = Vec::with_capacity(64 + records.len() * 64);
    let mut positions = Vec::with_capacity(records.len());
    match records {
        [one] => {
            let len = write_frame(&mut bytes, one.kind(), |out| one.encode_payload(out));
            positions.push((0, len as u32));
        }
        many => {
            write_frame(&mut bytes, kind::BATCH, |out| {
                for r in many {
                    let at = out.len();
                    let len = write_frame(out, r.kind(), |o| r.encode_payload(o));
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
pub(crate) fn encode_relocated(from: Location, frame: &[u8]) -> Unit {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + LOCATION_BYTES + frame.len());
    write_frame(&mut bytes, kind::RELOCATED, |out| {
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

/// The header at the start of every segment file.
pub(crate) fn segment_header(segment: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&segment.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("segment header is incomplete")]
    Incomplete,
    #[error("not a syncbrok segment (bad magic or checksum)")]
    BadMagicOrChecksum,
    #[error("segment format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("header names segment {found}, the file name says {expected}")]
    WrongSegment { expected: u32, found: u32 },
}

pub(crate) fn check_segment_header(h: &[u8], segment: u32) -> Result<(), HeaderError> {
    if h.len() < SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Incomplete);
    }
    let stored = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    if &h[0..8] != SEGMENT_MAGIC || stored != crc32c::crc32c(&h[0..16]) {
        return Err(HeaderError::BadMagicOrChecksum);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let found = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if found != segment {
        return Err(HeaderError::WrongSegment {
            expected: segment,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record_strategy;
    use proptest::prelude::*;

    proptest! {
        /// Any single flipped bit anywhere in a frame is detected.
        #[test]
        fn every_bit_flip_is_detected(r in record_strategy(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let unit = encode_unit(std::slice::from_ref(&r)).unwrap();
            let mut bytes = unit.bytes.clone();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let parsed = parse_frame(&Bytes::from(bytes));
            prop_assert!(parsed.is_err(), "flip at byte {} bit {} went unnoticed", i, bit);
        }

        #[test]
        fn a_frame_parses_back_to_its_record(r in record_strategy()) {
            let unit = encode_unit(std::slice::from_ref(&r)).unwrap();
            let frame = parse_frame(&Bytes::from(unit.bytes.clone())).unwrap();
            prop_assert_eq!(frame.len, unit.bytes.len());
            prop_assert_eq!(Record::decode(frame.kind, frame.payload).unwrap(), r);
        }

        #[test]
        fn batch_positions_point_at_valid_frames(rs in proptest::collection::vec(record_strategy(), 2..6)) {
            let unit = encode_unit(&rs).unwrap();
            let all = Bytes::from(unit.bytes);
            prop_assert_eq!(parse_frame(&all).unwrap().kind, kind::BATCH);
            for ((at, len), r) in unit.records.iter().zip(&rs) {
                let inner = all.slice(*at as usize..(*at + *len) as usize);
                let f = parse_frame(&inner).unwrap();
                prop_assert_eq!(&Record::decode(f.kind, f.payload).unwrap(), r);
            }
        }
    }

    #[test]
    fn short_and_oversized_frames_are_refused() {
        let unit = encode_unit(&[Record::QueueDeleted { queue: "q".into() }]).unwrap();
        let b = Bytes::from(unit.bytes);
        assert!(matches!(
            parse_frame(&b.slice(..b.len() - 1)),
            Err(FrameError::Incomplete { needed: 1 })
        ));
        let mut huge = b.to_vec();
        huge[0..4].copy_from_slice(&(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
        assert!(matches!(
            parse_frame(&Bytes::from(huge)),
            Err(FrameError::LengthOverLimit { .. })
        ));
        // A zeroed region (a preallocated or torn tail) is never a frame.
        assert!(parse_frame(&Bytes::from(vec![0u8; 64])).is_err());
    }

    #[test]
    fn segment_headers_check_magic_version_and_id() {
        let h = segment_header(7);
        assert_eq!(check_segment_header(&h, 7), Ok(()));
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
}
