//! Bounds of the Space, each with its reason.

/// Queue names: `[A-Za-z0-9._-]{1,128}` (SPEC §4), so they are safe in URLs and logs.
pub const QUEUE_NAME_BYTES_MAX: usize = 128;
/// Endpoints: absolute http(s) URLs of at most this many bytes (SPEC §4).
pub const ENDPOINT_BYTES_MAX: usize = 2048;
/// `max_in_flight` per subscriber: each in-flight attempt holds a connection and a task.
pub const MAX_IN_FLIGHT_DEFAULT: u32 = 64;
pub const MAX_IN_FLIGHT_MAX: u32 = 4096;
/// Idempotency keys longer than this are refused: they are kept in memory for the window.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Content types longer than this are refused; they are stored with every message.
pub const CONTENT_TYPE_BYTES_MAX: usize = 256;
/// Error texts kept per failed attempt are cut to this length.
pub const ERROR_TEXT_BYTES_MAX: usize = 512;
/// A batch publish holds at most this many messages (SPEC §4) …
pub const BATCH_MESSAGES_MAX: usize = 1000;
/// … and at most this many bytes of bodies (SPEC §4); one batch is one log record.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How often retention and idempotency windows are swept.
pub const SWEEP_INTERVAL_MS: u64 = 1000;
/// How often the reclaimer checks whether a checkpoint is due, by default.
pub const RECLAIM_INTERVAL_MS: u64 = 5000;
/// Sealed segments since the last checkpoint before another is taken.
pub const RECLAIM_SEGMENTS_MIN: usize = 2;
/// Memory for the bodies of the latest messages, so that deliveries need not read them
/// back from the log.
pub const RECENT_BODIES_BYTES: usize = 4 * 1024 * 1024;
/// Acks per log record when gathered acks are appended (32 bytes each).
pub const ACKS_PER_RECORD_MAX: usize = 4096;
/// Checkpoint snapshots are written in parts of at most this size (one record each).
pub const CHECKPOINT_PART_BYTES: usize = 16 * 1024 * 1024;
