//! Every bound the Space enforces, with its reason. A limit that is not here does not exist:
//! code that needs a bound names one of these. Relations with Storage's limits are checked at
//! compile time at the end of this file.

use storage::limits::{ACKS_PER_RECORD_MAX, RECORD_PAYLOAD_BYTES_MAX};

/// Queue names: `[A-Za-z0-9._-]{1,128}`, so that they are safe in URLs, headers and logs.
pub const QUEUE_NAME_BYTES_MAX: usize = 128;

/// Endpoints: absolute `http`/`https` URLs of at most this many bytes.
pub const ENDPOINT_BYTES_MAX: usize = 2048;

/// Subscribers one queue may have at once: fan-out sets are 64-bit masks of slots, which keeps
/// a message's bookkeeping at a few words whatever its fan-out.
pub const SUBSCRIBERS_PER_QUEUE_MAX: usize = 64;

/// `max_in_flight` of a subscriber when none is given: requests on the wire at once.
pub const MAX_IN_FLIGHT_DEFAULT: u32 = 64;
/// Largest `max_in_flight`: each request on the wire holds a connection and a task.
pub const MAX_IN_FLIGHT_MAX: u32 = 4096;

/// Failed attempts in a row (no ack in between), with as many retries scheduled, after which
/// a subscriber's dispatcher holds new messages back: it sends its retries as they fall due, each
/// making room for one new message as a probe, and the first ack resumes it at once. A
/// subscriber that is down then holds at most this many messages on its retry schedule (plus
/// `max_in_flight` on the wire), instead of every message of a backlog failing at once; a few
/// refused messages among acknowledged ones never hold them, and one that refuses only the
/// messages it is retrying is found by the probes.
pub const FAILURES_TO_HOLD_NEW_MESSAGES: u32 = 64;

/// Idempotency keys longer than this are refused: they are kept in memory for the window.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;

/// Content types longer than this are refused; they are stored with every message.
pub const CONTENT_TYPE_BYTES_MAX: usize = 256;

/// Distinct content types a queue keeps in memory (interned: a message holds a 2-byte index),
/// and as many distinct event types. A message whose content type (or event type) is not among
/// them has it read from the log when it is shown.
pub const CONTENT_TYPES_PER_QUEUE_MAX: usize = 1024;

/// Error texts kept per failed attempt are cut to this length.
pub const ERROR_TEXT_BYTES_MAX: usize = 512;

/// A batch publish holds at most this many messages …
pub const BATCH_MESSAGES_MAX: usize = 1000;
/// … and at most this many bytes of bodies; one batch is one log record.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A subscriber's delivery batch (`batch.max_messages`) holds at most this many messages …
pub const DELIVERY_BATCH_MESSAGES_MAX: u32 = 1000;
/// … and at most `batch.max_bytes` of bodies: by default this many …
pub const DELIVERY_BATCH_BYTES_DEFAULT: u32 = 1024 * 1024;
/// … and never more than this many (a single message larger than `max_bytes` goes alone).
pub const DELIVERY_BATCH_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Largest body the broker can be configured to accept (`limits.max_body`): one message is
/// one log record.
pub const BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// How often retention and idempotency windows are swept.
pub const SWEEP_INTERVAL_MS: u64 = 1000;

/// Messages one `Expired` record names: a sweep that finds more appends several records.
pub const EXPIRED_PER_RECORD_MAX: usize = 4096;

/// How often the reclaimer checks whether a checkpoint is due, by default.
pub const RECLAIM_INTERVAL_MS: u64 = 5000;

/// Sealed segments since the last checkpoint before another is taken.
pub const RECLAIM_SEGMENTS_MIN: usize = 2;

/// Memory for the bodies of the latest messages, so that deliveries need not read them back
/// from the log.
pub const RECENT_BODIES_BYTES: usize = 4 * 1024 * 1024;

/// Checkpoint snapshots are written in parts of at most this size (one record each).
pub const CHECKPOINT_PART_BYTES: usize = 16 * 1024 * 1024;

/// Ids of dead messages removed by retention that a queue remembers, as ranges of sequence
/// numbers (a run of consecutive dead messages is one range): a later child of one is dead at
/// once instead of delivered as if its parent had arrived. Past this many ranges the oldest are
/// forgotten (counted in `/metrics`); a child of a forgotten one goes at once.
pub const DEAD_REMOVED_RANGES_PER_QUEUE_MAX: usize = 1 << 20;

/// The releaser of scheduled messages sleeps until the earliest is due, or a new one is
/// published, but never longer than this: the wall clock may be set forward meanwhile.
pub const RELEASE_CHECK_MAX_MS: u64 = 1000;

/// Entries of the due-time heap left by scheduled messages that are gone (discarded) tolerated
/// beyond twice the scheduled messages before the heap is rebuilt: a rebuild is a pass over
/// the heap, paid for by at least this many publishes.
pub const DUE_STALE_SLACK: u64 = 1024;

/// Scheduled messages released by one `Released` record (the same bound as expiries).
pub const RELEASED_PER_RECORD_MAX: usize = EXPIRED_PER_RECORD_MAX;

/// The feed keeps this many events for a watcher that reads slower than they come; one that
/// falls further behind is told how many it missed. Shared by every watcher.
pub const FEED_EVENTS_BUFFERED: usize = 4096;

/// A `traceparent` is at most this many bytes: 55 for version 00, room for the fields a later
/// version may append.
pub const TRACEPARENT_BYTES_MAX: usize = 512;

/// A `tracestate` is at most this many bytes (the W3C limit is 32 members; 512 bytes is what
/// it recommends passing on).
pub const TRACESTATE_BYTES_MAX: usize = 512;

/// A replay records at most this many messages sent again per record (a subtree may hold
/// more: it takes several records, each applied whole).
pub const REPLAYED_PER_RECORD_MAX: usize = 1000;

/// How far ahead a message may be published for later (`Syncbrok-Delay`,
/// `Syncbrok-Deliver-At`): a scheduled message holds its place in memory (a few bytes, and an
/// entry of the queue's due times) and on disk until then.
pub const DELAY_MAX: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Event types (`Syncbrok-Type`): 1 to this many of `A-Z a-z 0-9 . _ - : /`; they are header
/// values and subscribers' filters match them.
pub const EVENT_TYPE_BYTES_MAX: usize = 128;
/// A subscriber's `types` filter holds at most this many patterns.
pub const TYPE_FILTERS_MAX: usize = 32;
/// The event type of a message published without one (`ce-type`, and what filters match).
pub const EVENT_TYPE_DEFAULT: &str = "syncbrok.message";

/// Reading a message whose record compaction is moving: tries before the read is an error.
pub const RELOCATED_READ_TRIES: u32 = 3;

/// Fixed bytes of a `Published` record besides its body, content type, idempotency key and
/// fan-out list (queue, id, parent, time, length prefixes, option tags).
const PUBLISHED_FIXED_BYTES: usize = 4 + 16 + 17 + 4 + 8 + 1 + 4 + 4;
/// The most a `Published` record adds to its body.
const PUBLISHED_OVERHEAD_MAX: usize = PUBLISHED_FIXED_BYTES
    + CONTENT_TYPE_BYTES_MAX
    + 4
    + IDEMPOTENCY_KEY_BYTES_MAX
    // Attributes: an event type, a due time (each with its option tag).
    + 1
    + 4
    + EVENT_TYPE_BYTES_MAX
    + 9
    + SUBSCRIBERS_PER_QUEUE_MAX * 8
    + storage::FRAME_HEADER_BYTES;

// What crosses into Storage's bounds, checked at compile time.
// The largest single message is one record.
const _: () =
    assert!(BODY_BYTES_CEILING + PUBLISHED_OVERHEAD_MAX <= RECORD_PAYLOAD_BYTES_MAX as usize);
// A whole batch is one record.
const _: () = assert!(
    BATCH_BYTES_MAX + BATCH_MESSAGES_MAX * PUBLISHED_OVERHEAD_MAX
        <= RECORD_PAYLOAD_BYTES_MAX as usize
);
// Gathered acks and expiries fit a record.
const _: () = assert!(ACKS_PER_RECORD_MAX * storage::ACK_BYTES < RECORD_PAYLOAD_BYTES_MAX as usize);
const _: () = assert!(EXPIRED_PER_RECORD_MAX * 16 + 16 < RECORD_PAYLOAD_BYTES_MAX as usize);
// A checkpoint part is one record.
const _: () = assert!(CHECKPOINT_PART_BYTES + 16 < RECORD_PAYLOAD_BYTES_MAX as usize);
// A redrive names at most every subscriber of a queue.
const _: () = assert!(SUBSCRIBERS_PER_QUEUE_MAX <= 64);
const _: () = assert!(CONTENT_TYPES_PER_QUEUE_MAX < u16::MAX as usize - 1);

/// How long a delivery lane waits for its next attempt before it ends (and its channel, the
/// handler's connection, goes with it).
pub const LANE_IDLE_MS: u64 = 90_000;

/// An explanation walks at most this many ancestors of a message (then says `truncated`).
pub const EXPLAIN_DEPTH_MAX: u32 = 64;

/// An explanation lists at most this many blocking ancestors (a walk up joins can fan out).
pub const EXPLAIN_BLOCKERS_MAX: usize = 256;

/// A message waits for at most this many parents (a join): enough for any fan-in a workflow
/// names by hand, few enough that releasing a child costs a bounded look at each parent.
pub const PARENTS_MAX: usize = 16;

/// A lineage goes this many levels up and down by default …
pub const LINEAGE_LEVELS_DEFAULT: u32 = 32;
/// … and at most this many, whatever is asked.
pub const LINEAGE_LEVELS_MAX: u32 = 1000;
/// A lineage holds this many messages by default …
pub const LINEAGE_NODES_DEFAULT: usize = 500;
/// … and at most this many.
pub const LINEAGE_NODES_MAX: usize = 5000;

/// Finding the messages that hold back the most (the dashboard's problems box) looks at most
/// at this many parents of a queue …
pub const BLOCKING_ROOTS_SCAN_MAX: usize = 10_000;
/// … and counts at most this many waiting messages below them.
pub const BLOCKING_ROOTS_COUNT_MAX: usize = 100_000;

/// A subscriber sends at most this many headers of its own …
pub const SUBSCRIBER_HEADERS_MAX: usize = 16;
/// … whose names and values together take at most this many bytes.
pub const SUBSCRIBER_HEADER_BYTES_MAX: usize = 4096;

/// Largest `rate_limit.per_second` of a subscriber: its window keeps an entry per request
/// answered within the last second, so at most this many (16 bytes each).
pub const RATE_LIMIT_PER_SECOND_MAX: u32 = 100_000;

/// Grace period of a secret rotation that names none: a day for receivers to take the new
/// secret.
pub const SECRET_GRACE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Longest grace period of a secret rotation, during which the replaced secret still signs:
/// a receiver has this long to take the new secret.
pub const SECRET_GRACE_MAX: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
