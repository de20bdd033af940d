//! syncbrok's Storage: an append-only log of checksummed records in segment files.
//!
//! - **Exclusive write**: one writer thread owns the active segment and commits appends in
//!   groups, one `pwrite` and at most one `fdatasync` per group ([`FsyncPolicy`]).
//! - **Concurrent read**: records are read by [`Location`] with positional reads, from any
//!   thread, without a lock on the I/O.
//! - **Recovery**: [`Log::open`] replays from the latest checkpoint (or the start), cuts a torn
//!   tail, and refuses corruption elsewhere with its file and offset unless asked to repair.
//! - **Reclaiming space**: [`Log::delete_segment`] and [`Log::copy_live_records`] for segments
//!   before the latest checkpoint; the broker decides what is live.
//!
//! Storage knows nothing of HTTP, queues' rules or delivery: it stores [`Record`]s. The byte
//! format and the assumptions about the disk are in `docs/format.md`.

pub mod codec;
mod error;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod inbox;
pub mod io;
pub mod limits;
mod log;
pub mod raft;
mod record;
mod recovery;
mod reserve;
mod segment;
pub mod sim;
mod writer;

pub use codec::DecodeError;
pub use error::{AppendError, OpenError, ReadError, ReclaimError};
pub use frame::{FORMAT_VERSION, FRAME_HEADER_BYTES, Location, SEGMENT_HEADER_BYTES, TooLarge};
pub use log::{Config, Log, PendingCheckpoint, Relocation, SegmentInfo};
pub use record::{
    ACK_BYTES, Ack, Attributes, DeadReason, LostRecord, ParentState, Published, QueueNumber,
    Record, SubscriberId, decode_records, describe_damaged, encode_records,
};
pub use recovery::{Checkpoint, LostRange, Recovery, RecoveryReport, Replayed, TornTail};
pub use writer::{FsyncPolicy, LogStats};

#[cfg(test)]
mod tests;
