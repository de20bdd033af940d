//! Every bound the Frontends enforce, with its reason. Relations with the Space's bounds are
//! checked at compile time at the end of this file.

/// Default `limits.max_body`: bodies up to 1 MiB.
pub const MAX_BODY_DEFAULT: usize = 1024 * 1024;
/// Ceiling of `limits.max_body`: one message is one log record.
pub const MAX_BODY_CEILING: usize = space::limits::BODY_BYTES_CEILING;
/// JSON bodies of the other calls (settings, subscribers) are small.
pub const JSON_BODY_MAX: usize = 64 * 1024;
/// A batch's JSON: 16 MiB of bodies, base64 (4/3) and some framing.
pub const BATCH_JSON_BYTES_MAX: usize = 24 * 1024 * 1024;
/// Bearer tokens shorter than this are refused: they could be guessed.
pub const TOKEN_BYTES_MIN: usize = 16;
/// Page sizes of listings.
pub const PAGE_DEFAULT: usize = 100;
/// Watchers of a queue's events (`GET …/events`) at once, over all queues: each holds a
/// connection and a place in the feed; more are refused with 503.
pub const WATCHERS_MAX: usize = 64;
/// A quiet events stream carries a comment this often, so that a proxy, or the server's idle
/// cut-off (`server.idle_timeout`, default 60 s) when it is longer, does not take it for dead.
pub const EVENTS_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);
pub const PAGE_MAX: usize = 1000;
/// Default `server.body_timeout`: a request's body must arrive whole this long after its
/// headers, so a client dripping a body cannot hold a connection and its buffer for ever.
pub const BODY_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a client should wait after a 503 while the broker recovers.
pub const RETRY_AFTER_RECOVERING_S: u64 = 1;
/// How long a client should wait after a 429 before publishing again.
pub const RETRY_AFTER_QUEUE_FULL_S: u64 = 1;

const _: () = assert!(MAX_BODY_DEFAULT <= MAX_BODY_CEILING);
// A batch of the Space's largest size, base64-encoded, fits the JSON bound.
const _: () = assert!(space::limits::BATCH_BYTES_MAX / 3 * 4 < BATCH_JSON_BYTES_MAX);
const _: () = assert!(PAGE_DEFAULT <= PAGE_MAX);

/// The largest form the dashboard takes (settings, an action); a test message's form may be
/// larger, up to three times `limits.max_body` (its body, form-encoded).
pub const UI_FORM_BYTES_MAX: usize = 256 * 1024;
