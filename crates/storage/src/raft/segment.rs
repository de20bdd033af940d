//! The byte layout of the replicated log's segments:
//!
//! ```text
//! segment: [magic "SBRAFTLG"][version u32][salt u32][first index u64][crc32c u32] entries...
//! entry:   [len u32 LE][crc32c u32 LE][index u64 LE][payload: len bytes]
//!          crc32c is seeded with the log's salt and covers len, index and payload
//! ```
//!
//! Each entry carries its own index, so a segment read back can never be taken for another
//! part of the log, and a torn or stale tail stops at the first entry that does not follow.

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"SBRAFTLG";
/// Version of the segment format.
pub const RAFT_FORMAT_VERSION: u32 = 1;
/// Bytes of a segment header.
pub const HEADER_BYTES: usize = 28;
/// Bytes of an entry's header.
pub const ENTRY_HEADER_BYTES: usize = 16;

/// The file name of the segment whose first entry is `first`.
pub fn name(first: u64) -> String {
    format!("raft-{first:020}.log")
}

/// The first index a segment's file name says, if it is one.
pub fn first_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("raft-")?.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

fn checksum(seed: u32, parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(seed, |crc, p| crc32c::crc32c_append(crc, p))
}

pub fn header(salt: u32, first: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&RAFT_FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&salt.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The salt and first index of a header, or why it is not one.
pub fn read_header(h: &[u8]) -> Result<(u32, u64), String> {
    if h.len() < HEADER_BYTES {
        return Err("shorter than a segment header".into());
    }
    if &h[..8] != MAGIC {
        return Err("not a segment of the replicated log".into());
    }
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if crc32c::crc32c(&h[..24]) != word(24) {
        return Err("segment header checksum mismatch".into());
    }
    let version = word(8);
    if version != RAFT_FORMAT_VERSION {
        return Err(format!("unknown segment format version {version}"));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[16..24]);
    Ok((word(12), u64::from_le_bytes(first)))
}

/// Appends one entry's bytes to `out`.
pub fn write_entry(out: &mut Vec<u8>, salt: u32, index: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let index = index.to_le_bytes();
    let crc = checksum(
        crc32c::crc32c(&salt.to_le_bytes()),
        &[&len, &index, payload],
    );
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(payload);
}

/// The payload length an entry header announces.
pub fn announced_len(h: &[u8]) -> usize {
    u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
}

/// The entry at the start of `buf` if it is whole, checksummed right and has index `index`.
pub fn read_entry(buf: &[u8], salt: u32, index: u64) -> Option<Bytes> {
    if buf.len() < ENTRY_HEADER_BYTES {
        return None;
    }
    let len = announced_len(buf);
    let end = ENTRY_HEADER_BYTES.checked_add(len)?;
    if buf.len() < end {
        return None;
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let seed = crc32c::crc32c(&salt.to_le_bytes());
    if checksum(seed, &[&buf[..4], &buf[8..16], &buf[16..end]]) != crc {
        return None;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&buf[8..16]);
    (u64::from_le_bytes(at) == index).then(|| Bytes::copy_from_slice(&buf[16..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_only_whole_with_their_own_index() {
        let mut out = Vec::new();
        write_entry(&mut out, 7, 42, b"payload");
        assert_eq!(read_entry(&out, 7, 42).as_deref(), Some(&b"payload"[..]));
        assert_eq!(read_entry(&out, 7, 43), None, "another index");
        assert_eq!(read_entry(&out, 8, 42), None, "another log's salt");
        assert_eq!(read_entry(&out[..out.len() - 1], 7, 42), None, "torn");
        let mut flipped = out.clone();
        flipped[20] ^= 1;
        assert_eq!(read_entry(&flipped, 7, 42), None, "damaged");
        assert_eq!(first_of(&name(9)), Some(9));
        assert_eq!(first_of("raft-9.log"), None);
        assert_eq!(read_header(&header(3, 5)), Ok((3, 5)));
    }
}
