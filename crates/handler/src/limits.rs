//! Every bound the Handlers enforce, with its reason.

/// Most of a response body read: the legacy handler needs `true`, the webhook handler
/// reads (and drops) the body so that the connection can be reused.
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Most of an answer to a batch read: room for `{"failed": [...]}` listing every message of
/// the largest batch (1000 ids with a `retry_after` each, ~63 KB) several times over. A 2xx
/// answer longer than this fails the whole batch: failures it may list cannot be read.
pub const BATCH_ANSWER_BYTES_MAX: usize = 256 * 1024;
/// Idle keep-alive connections kept per host; enough for a subscriber's `max_in_flight`.
pub const POOL_IDLE_PER_HOST: usize = 256;
/// Idle connections are closed after this long.
pub const POOL_IDLE_TIMEOUT_S: u64 = 90;
/// Most connections to subscribers open at once, over all of them: each holds a socket and
/// buffers. Past it a new connection waits for one to close (its attempt bounded by the
/// queue's `delivery_timeout`). With 64 subscribers per queue at the default `max_in_flight`
/// of 64, one busy queue fits.
pub const OUTBOUND_CONNECTIONS_MAX: usize = 4096;
