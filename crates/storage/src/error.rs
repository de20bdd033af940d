//! Errors, one enum per family of operations. Corruption is always its own variant naming the
//! file and byte offset, so that an operator can find it and decide about `--repair`.

use std::io;

use crate::frame::TooLarge;

/// Opening (recovering) a log failed. [`crate::Log::open`] and the replay change nothing on
/// disk; only [`crate::Recovery::finish`] does (cutting a torn tail, repairs).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `finish` was called after the replay returned an error.
    #[error("replay stopped at an error ({0}); the log cannot be opened for appends")]
    ReplayFailed(String),
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    /// Damage before the tail of the log: not a torn write, so recovery refuses to guess.
    #[error("{file}: corrupted at byte {offset}: {reason}")]
    Corrupted {
        file: String,
        offset: u64,
        reason: String,
    },
    /// A segment between the first needed one and the last one is absent.
    #[error("{file} is missing: segments {first}..={last} must all be present")]
    MissingSegment { file: String, first: u32, last: u32 },
    /// A file in the data directory that looks like ours but is not understood.
    #[error("{file}: {reason}")]
    Unrecognised { file: String, reason: String },
}

/// An append was not made durable (or, for lazy appends, not written).
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The disk is full. Nothing of the append is in the log; appending works again once space
    /// is freed.
    #[error("disk full: {0}")]
    NoSpace(#[source] io::Error),
    /// A write failed for another reason. Nothing of the append is in the log.
    #[error("write failed: {0}")]
    Io(#[source] io::Error),
    /// An earlier fsync failed. After a failed fsync the kernel may have dropped dirty pages, so
    /// the log can no longer promise durability: it refuses appends until it is reopened.
    #[error("the log stopped accepting appends after an fsync failure: {0}")]
    Poisoned(String),
    #[error("the log is closed")]
    Closed,
}

impl AppendError {
    pub(crate) fn from_write(e: io::Error) -> AppendError {
        if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
            AppendError::NoSpace(e)
        } else {
            AppendError::Io(e)
        }
    }

    /// A copy for every waiter of a failed group (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> AppendError {
        match self {
            AppendError::TooLarge(t) => AppendError::TooLarge(*t),
            AppendError::NoSpace(e) => {
                AppendError::NoSpace(io::Error::new(e.kind(), e.to_string()))
            }
            AppendError::Io(e) => AppendError::Io(io::Error::new(e.kind(), e.to_string())),
            AppendError::Poisoned(s) => AppendError::Poisoned(s.clone()),
            AppendError::Closed => AppendError::Closed,
        }
    }
}

/// A read by location failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The segment was deleted or compacted away; the caller holds a stale location.
    #[error("segment {segment} no longer exists")]
    SegmentGone { segment: u32 },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: corrupted record at byte {offset}: {reason}")]
    Corrupted {
        file: String,
        offset: u64,
        reason: String,
    },
}

/// Deleting or compacting a segment failed.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    /// Only segments wholly before the latest checkpoint may go: replay starts there, so the
    /// records they hold are no longer needed to rebuild state.
    #[error(
        "segment {segment} is not before the latest checkpoint (in segment {checkpoint_segment:?})"
    )]
    NotBeforeCheckpoint {
        segment: u32,
        checkpoint_segment: Option<u32>,
    },
    #[error("segment {segment} does not exist")]
    UnknownSegment { segment: u32 },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Append(#[from] AppendError),
}
