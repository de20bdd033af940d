//! The defaults of `syncbrok serve` that are not a library's (each library's bounds live in
//! its own `limits` module), with their reasons.

/// The API listens on loopback unless told otherwise: nothing is exposed by accident.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:10000";
/// Data directory, relative to where the broker starts.
pub const DATA_DIR_DEFAULT: &str = "./syncbrok-data";
/// How long deliveries under way may finish on SIGTERM or Ctrl-C.
pub const SHUTDOWN_GRACE_DEFAULT_S: u64 = 10;
/// `storage.fsync: interval` without `fsync_interval`: at most this much is lost in a power
/// loss.
pub const FSYNC_INTERVAL_DEFAULT_MS: u64 = 10;
