//! Every bound Storage enforces, with its default and the reason for it.
//!
//! A limit that is not here does not exist: code that needs a bound names one of these.

/// Largest encoded payload of one appended record, or of all records of one atomic append
/// together, in bytes.
///
/// Bounds the memory a reader allocates for a single record, and lets recovery reject a garbage
/// length field before reading it. It must hold the broker's largest record: a 64 MiB body
/// (the ceiling of `limits.max_body`) plus its headers, or a 16 MiB publish batch.
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = 96 * 1024 * 1024;

/// Largest payload of any frame on disk: a record plus the wrapper compaction puts around it
/// (a 12-byte origin and the record's own 9-byte frame header), rounded up.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = RECORD_PAYLOAD_BYTES_MAX + 64;

/// Default target size of a segment before the writer rolls to a new one.
///
/// Large enough that rolls (two fsyncs and a directory sync) are rare, small enough that
/// reclaiming a segment by deletion or compaction frees space in useful steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Smallest configurable segment size. Tests use it to force frequent rolls.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;

/// Largest configurable segment size. Offsets inside a segment are `u32`, and one frame may
/// overshoot the target by up to its own size, so the target stays far below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Most bytes the writer gathers into one write (and so one fsync) before it stops draining its
/// inbox. Bounds the write buffer and the latency added to the first append of a group.
/// A single frame larger than this is written on its own.
pub const WRITE_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Longest `fsync: interval` accepted: the most data a crash may lose is this long's worth.
pub const FSYNC_INTERVAL_MS_MAX: u64 = 60 * 60 * 1000;

/// Default number of append requests that may wait in the writer's inbox. When it is full,
/// appenders wait (back-pressure) instead of buffering without bound.
pub const INBOX_REQUESTS_DEFAULT: usize = 4096;

/// With `fsync: always`, appends that did not ask for durability (acks) are synced at most this
/// long after they were written, even if no durable append comes along to carry them.
pub const LAZY_SYNC_DELAY_MS: u64 = 50;

/// Most acks one `Acked` record holds. Acks queued for the writer are gathered into records
/// of up to this many (36 bytes each): one frame and one checksum for many deliveries.
pub const ACKS_PER_RECORD_MAX: usize = 4096;

/// Most bytes repair checksums while it searches damaged data for the next valid frame to
/// resume at. Candidates are rare in real damage; the bound keeps bytes crafted to look like
/// frame headers from making the search quadratic. Past it, the rest of the segment's data is
/// dropped. (Telling a torn write from corruption needs no such search: it looks for sync
/// marks only, in one linear pass.)
pub const RESYNC_CHECKED_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Default size of the disk reserve (see `reserve.rs`): room for the checkpoint and the
/// records that free space once the disk is full. A checkpoint larger than this (about a
/// hundred thousand messages held per MiB) may still fail on a full disk.
pub const RESERVE_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;

/// While the disk is full, how often an ordinary append may try to make the reserve again
/// (each try writes it whole).
pub const RESERVE_RETRY_MS: u64 = 1000;

/// Size of the read window used when scanning a segment during recovery and compaction.
/// Large sequential reads keep replay near disk/page-cache bandwidth.
pub const SCAN_WINDOW_BYTES: usize = 8 * 1024 * 1024;

// Relations between the limits, checked at compile time.
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MAX + (FRAME_PAYLOAD_BYTES_MAX as u64) * 2 < u32::MAX as u64);
const _: () = assert!(WRITE_BATCH_BYTES_MAX <= SCAN_WINDOW_BYTES);
const _: () = assert!(
    ACKS_PER_RECORD_MAX * crate::record::ACK_BYTES + 4 <= RECORD_PAYLOAD_BYTES_MAX as usize
);
