//! The Space's public types: what its callers pass in and get back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::{Clock, SystemClock};
use crate::delivery::HandlerKind;
use crate::limits;
use crate::model::{Counts, DeadReason, DeliveryState, MessageId, MessageState, SubscriberId};
use crate::settings::QueueSettings;

/// How a Space is opened.
#[derive(Debug, Clone)]
pub struct SpaceConfig {
    pub storage: storage::Config,
    /// How often the reclaimer checks whether a checkpoint (and reclaiming the segments
    /// before it) is due.
    pub reclaim_interval: Duration,
    /// How often retention and idempotency windows are swept.
    pub sweep_interval: Duration,
    /// How long an idle delivery lane waits for its next attempt before it ends, and its
    /// connection with it.
    pub lane_idle: Duration,
    /// What subscribers may point at (`endpoints.allow`), checked when one is added; the
    /// handler enforces the same policy on every connection.
    pub endpoint_policy: crate::endpoints::EndpointPolicy,
    /// The wall clock: record times, retention, idempotency windows. Tests set their own.
    pub clock: Arc<dyn Clock>,
}

impl SpaceConfig {
    pub fn new(storage: storage::Config) -> SpaceConfig {
        SpaceConfig {
            storage,
            reclaim_interval: Duration::from_millis(limits::RECLAIM_INTERVAL_MS),
            sweep_interval: Duration::from_millis(limits::SWEEP_INTERVAL_MS),
            lane_idle: Duration::from_millis(limits::LANE_IDLE_MS),
            endpoint_policy: Default::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A new message.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub body: Bytes,
    /// Defaults to `application/octet-stream`.
    pub content_type: Option<String>,
    /// The messages it waits for, in this queue or another of the Space: none, one, or a join
    /// of up to [`PARENTS_MAX`](crate::limits::PARENTS_MAX), each named once.
    pub parents: Vec<MessageId>,
    pub idempotency_key: Option<String>,
    /// Its event type (`Syncbrok-Type`); without one it is `syncbrok.message`.
    pub event_type: Option<String>,
    /// When it is due; `None`, or a time already past, delivers it now. At most
    /// [`DELAY_MAX`](crate::limits::DELAY_MAX) ahead.
    pub deliver_at: Option<DeliverAt>,
    /// The message this one is a copy of: set by [`Space::replay`](crate::Space::replay) with
    /// `as_new`, shown as the copy's `replay_of`.
    pub replay_of: Option<MessageId>,
    /// Its W3C trace context, sent with every attempt (`traceparent`, `tracestate`).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// When a message published for later is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverAt {
    /// This long after it is accepted (`Syncbrok-Delay`).
    After(std::time::Duration),
    /// At this time, unix milliseconds (`Syncbrok-Deliver-At`).
    At(u64),
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub message: NewMessage,
    /// `NewMessage::parents` is ignored in a batch; the parents are named here.
    pub parents: Vec<BatchParent>,
}

/// A parent of a batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchParent {
    /// A message already in the queue.
    Id(MessageId),
    /// An earlier entry of the same batch.
    Index(usize),
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedMessage {
    pub id: MessageId,
    pub parents: crate::model::Parents,
    /// False when an `Idempotency-Key` matched an earlier publish: `id` is that message's.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberInfo {
    pub id: SubscriberId,
    pub endpoint: String,
    pub handler: HandlerKind,
    pub max_in_flight: u32,
    pub has_secret: bool,
    pub batch: crate::delivery::Batching,
    /// The names of its own headers (their values are never shown).
    pub headers: Vec<String>,
    pub state: crate::model::SubscriberState,
    pub rate_limit: Option<crate::model::RateLimit>,
    /// The event types it takes; `None`: every message.
    pub types: Option<Vec<String>>,
    /// Until when (unix ms) the secret a rotation replaced still signs, during its grace.
    pub previous_secret_until_ms: Option<u64>,
    /// How it is doing since the broker started.
    pub in_flight: u32,
    pub consecutive_failures: u32,
    pub last_success_at_ms: Option<u64>,
    pub last_error: Option<String>,
    /// How long its attempts took, since the broker started.
    pub attempt_duration: crate::latency::HistogramSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub settings: QueueSettings,
    pub subscribers: Vec<SubscriberInfo>,
    pub counts: Counts,
    /// Bytes of undelivered messages.
    pub bytes: u64,
    pub oldest_undelivered_age_ms: Option<u64>,
    /// Dead parents removed by retention that the queue no longer remembers (see
    /// `limits::DEAD_REMOVED_RANGES_PER_QUEUE_MAX`).
    /// Publish → first delivery, since the broker started.
    pub first_delivery: crate::latency::HistogramSnapshot,
    /// A parent's completing acknowledgement → its children released, since the broker started.
    pub release: crate::latency::HistogramSnapshot,
    pub forgotten_dead_parents: u64,
    /// Idempotency keys remembered.
    pub idempotency_keys: u64,
    /// Idempotency keys forgotten before their window was over, to stay within
    /// `idempotency.max_keys`, since the broker started.
    pub idempotency_keys_forgotten: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub id: MessageId,
    pub queue: String,
    pub parents: crate::model::Parents,
    pub children: Vec<MessageId>,
    pub state: MessageState,
    pub content_type: String,
    /// Its event type, if it was published with one.
    pub event_type: Option<String>,
    /// When it is due, while it is scheduled (unix ms).
    pub deliver_at_ms: Option<u64>,
    /// The message it is a copy of, for a copy a replay published.
    pub replay_of: Option<MessageId>,
    /// Its W3C trace context, if it was published with one.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub size: u64,
    pub published_at_ms: u64,
    pub deliveries: Vec<DeliveryView>,
}

/// One dead (message, subscriber) pair; `subscriber` is `None` for a message dead with its
/// parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: MessageId,
    pub subscriber: Option<SubscriberId>,
    pub endpoint: Option<String>,
    pub reason: DeadReason,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub dead_at_ms: u64,
}

/// A page of a listing and the cursor of the next one (`None` at the end).
pub type Page<T> = (Vec<T>, Option<MessageId>);

/// A snapshot of the Space's running totals (monotonic counters since open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceTotals {
    pub published: u64,
    pub acked: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Subscribers disabled after `disable_after` of failures.
    pub subscribers_disabled: u64,
    /// Attempts whose message body could not be read back from the log (each is retried
    /// like a failed delivery; a record that fails its checksum is also logged as corruption).
    pub unreadable_bodies: u64,
    /// Attempts under way right now.
    pub in_flight: u64,
    /// Changes of parents that children in other queues wait for, not yet passed on to them.
    pub parents_to_settle: u64,
}

/// One subscriber's view of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub subscriber: SubscriberId,
    pub endpoint: String,
    pub state: DeliveryState,
    /// Requests made, the acknowledged one included.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<u64>,
    pub acked_at_ms: Option<u64>,
}

/// What [`crate::Space::reclaim`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub snapshot_bytes: u64,
    pub segments_deleted: u32,
    pub segments_compacted: u32,
    pub records_moved: u64,
}
