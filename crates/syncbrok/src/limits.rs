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

/// Default `server.max_connections`: open API connections at once. At the cap the server
/// stops accepting until one closes; each connection holds a task and buffers.
pub const MAX_CONNECTIONS_DEFAULT: usize = 4096;
/// Ceiling of `server.max_connections`.
pub const MAX_CONNECTIONS_MAX: usize = 1_000_000;
/// Default `server.header_timeout`: a request's headers (and a TLS handshake) must arrive
/// within it, so a client that sends half a request cannot hold a connection.
pub const HEADER_TIMEOUT_DEFAULT_S: u64 = 10;
/// Default `server.idle_timeout`: a connection that moves no byte for this long is closed.
pub const IDLE_TIMEOUT_DEFAULT_S: u64 = 60;
/// Waits after a failed accept (out of file descriptors, say), doubling up to the maximum:
/// retrying at once would only spin.
pub const ACCEPT_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(5);
pub const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Default `cluster.heartbeat`: how often the leader tells the others it leads.
pub const CLUSTER_HEARTBEAT_DEFAULT_MS: u64 = 50;
/// Default `cluster.election_timeout`: a follower that hears no leader for this long (up to
/// twice as long, at random) starts an election, once the leader's lease (twice this) has run
/// out since its last heartbeat. A dead leader is replaced within about 1–1.2 s (measured:
/// docs/benchmarks.md); six heartbeats must go missing before anyone stands.
pub const CLUSTER_ELECTION_TIMEOUT_DEFAULT_MS: u64 = 300;
/// Segment size of a node's replicated log.
pub const CLUSTER_SEGMENT_BYTES: u64 = storage::raft::RAFT_SEGMENT_BYTES_DEFAULT;
/// The Space's `/metrics` text a cluster node reads before adding its own: far above what a
/// Space of thousands of queues writes.
pub const METRICS_BYTES_MAX: usize = 64 << 20;
/// A node to add (`POST /v1/cluster/nodes`): an id and an address.
pub const NEW_NODE_BYTES_MAX: usize = 4096;
/// Default `cluster.snapshot_entries`: entries of the replicated log between snapshots. Each
/// change is an entry; 20,000 keeps the replicated log to tens of megabytes between snapshots
/// of typical messages, and a snapshot (the whole state) is taken at most that often.
pub const CLUSTER_SNAPSHOT_ENTRIES_DEFAULT: u64 = 20_000;
