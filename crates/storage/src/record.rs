//! The records of the log: every state change of the broker that must survive a crash.
//!
//! Storage defines the records but gives them no meaning: the Space decides when to write them
//! and how to apply them on replay. Each variant documents what the broker rebuilds from it.
//! Kinds are stable numbers on disk (see `docs/format.md`); new kinds get new numbers.

use bytes::Bytes;
use uuid::Uuid;

use crate::codec::{DecodeError, Decoder, Encoder};

/// A subscriber's id: unique within a Space, never reused.
pub type SubscriberId = u64;

/// Why a delivery was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The subscriber failed `retry.max_attempts` times.
    MaxAttempts,
    /// The parent went dead and the queue's `on_parent_dead` is `dead_letter`.
    ParentDead,
}

impl DeadReason {
    fn to_u8(self) -> u8 {
        match self {
            DeadReason::MaxAttempts => 1,
            DeadReason::ParentDead => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(DeadReason::MaxAttempts),
            2 => Ok(DeadReason::ParentDead),
            v => Err(DecodeError::InvalidValue {
                field: "dead reason",
                value: u64::from(v),
            }),
        }
    }
}

/// Where a parent in another queue stands, as the queue of its child last learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParentState {
    /// Not delivered yet (or not known yet: a child's queue starts from this).
    Open,
    Delivered,
    Dead,
    /// Discarded, delivered and removed, or its queue was deleted: it holds nothing back.
    Gone,
    /// Dead, and removed by retention: it can never be delivered.
    GoneDead,
}

impl ParentState {
    pub fn to_u8(self) -> u8 {
        match self {
            ParentState::Open => 1,
            ParentState::Delivered => 2,
            ParentState::Dead => 3,
            ParentState::Gone => 4,
            ParentState::GoneDead => 5,
        }
    }

    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(ParentState::Open),
            2 => Ok(ParentState::Delivered),
            3 => Ok(ParentState::Dead),
            4 => Ok(ParentState::Gone),
            5 => Ok(ParentState::GoneDead),
            v => Err(DecodeError::InvalidValue {
                field: "parent state",
                value: u64::from(v),
            }),
        }
    }
}

/// A queue's number: given when the queue is created, never reused. Records name queues by
/// number, so that a queue deleted and created again under the same name is a different queue.
pub type QueueNumber = u32;

/// A message accepted by a queue, with its body and the fan-out set fixed at acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub queue: QueueNumber,
    pub id: Uuid,
    /// Its parents, in the order named: none, one, or a join of several (written as kind
    /// `PUBLISHED_EXTENDED`, the first where a single parent goes and the rest after the
    /// attributes).
    pub parents: Vec<Uuid>,
    pub content_type: String,
    /// Unix milliseconds.
    pub published_at_ms: u64,
    /// Remembered for the queue's idempotency window, across restarts.
    pub idempotency_key: Option<String>,
    /// The subscribers the queue had when the message was accepted.
    pub fanout: Vec<SubscriberId>,
    /// What only some messages carry; a message with none is written as kind `PUBLISHED`.
    pub attributes: Attributes,
    pub body: Bytes,
}

/// What a published message may carry besides its fixed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Its event type (`Syncbrok-Type`), if one was given.
    pub event_type: Option<String>,
    /// When it is due (unix milliseconds), if it was published for later.
    pub deliver_at_ms: Option<u64>,
    /// The message it is a copy of, for a copy a replay published (written as kind
    /// `PUBLISHED_EXTENDED`).
    pub replay_of: Option<Uuid>,
    /// Its W3C trace context (`traceparent`, `tracestate`), if the publisher gave one (written
    /// as kind `PUBLISHED_EXTENDED`).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Attributes {
    /// Whether it carries what only kind `PUBLISHED_EXTENDED` has room for.
    pub fn is_extended(&self) -> bool {
        self.replay_of.is_some() || self.traceparent.is_some() || self.tracestate.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.deliver_at_ms.is_none()
            && self.replay_of.is_none()
            && self.traceparent.is_none()
            && self.tracestate.is_none()
    }
}

/// One subscriber's acknowledgement of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub message: Uuid,
    pub subscriber: SubscriberId,
    /// The 1-based number of the attempt that was acknowledged.
    pub attempt: u32,
    /// Unix milliseconds.
    pub acked_at_ms: u64,
}

/// Bytes of one ack in an `Acked` record.
pub const ACK_BYTES: usize = 16 + 8 + 4 + 8;

/// A record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A queue was created; `settings` is the broker's own encoding of its settings.
    QueueCreated {
        queue: QueueNumber,
        name: String,
        settings: Bytes,
    },
    /// A queue's settings changed; `settings` is the full new value, not a delta.
    QueueUpdated {
        queue: QueueNumber,
        settings: Bytes,
    },
    /// A queue and all its messages were deleted.
    QueueDeleted {
        queue: QueueNumber,
    },
    SubscriberAdded {
        queue: QueueNumber,
        subscriber: SubscriberId,
        endpoint: String,
        handler: String,
        /// A `whsec_` secret: stored so signatures survive restarts, never shown by the API.
        secret: Option<String>,
        max_in_flight: u32,
        /// The broker's own encoding of the subscriber's further settings (e.g. batching);
        /// empty when it has none. Records of kind `SUBSCRIBER_ADDED`, written before options
        /// existed, read as having none.
        options: Bytes,
    },
    /// A subscriber's secret or further settings changed (paused, resumed, disabled, a new
    /// secret, a rate limit): both are the full new values, not deltas. Its endpoint, handler
    /// and `max_in_flight` never change.
    SubscriberUpdated {
        queue: QueueNumber,
        subscriber: SubscriberId,
        secret: Option<String>,
        options: Bytes,
    },
    SubscriberRemoved {
        queue: QueueNumber,
        subscriber: SubscriberId,
        /// Unix milliseconds.
        removed_at_ms: u64,
    },
    Published(Published),
    /// Acknowledgements, gathered many to a record.
    Acked {
        acks: Vec<Ack>,
    },
    /// A failed attempt, so attempt counts and the last error survive restarts.
    DeliveryFailed {
        message: Uuid,
        subscriber: SubscriberId,
        /// 1-based number of the attempt that failed.
        attempt: u32,
        error: String,
        /// Unix milliseconds.
        failed_at_ms: u64,
        /// When the next attempt is due (unix milliseconds), if one is scheduled.
        next_attempt_at_ms: Option<u64>,
    },
    /// A delivery was given up: for one subscriber, or for the whole message (`subscriber`
    /// `None`, e.g. [`DeadReason::ParentDead`]).
    DeadLettered {
        message: Uuid,
        subscriber: Option<SubscriberId>,
        reason: DeadReason,
        attempts: u32,
        last_error: Option<String>,
        /// Unix milliseconds.
        dead_at_ms: u64,
    },
    /// A dead message was sent again to the listed subscribers, attempts reset.
    Redriven {
        message: Uuid,
        subscribers: Vec<SubscriberId>,
        /// Unix milliseconds.
        redriven_at_ms: u64,
    },
    /// A message was discarded (its waiting children are released).
    Discarded {
        message: Uuid,
        /// Unix milliseconds.
        discarded_at_ms: u64,
    },
    /// Retention removed these finished messages of a queue.
    Expired {
        queue: QueueNumber,
        messages: Vec<Uuid>,
        /// Unix milliseconds.
        expired_at_ms: u64,
    },
    /// These messages of a queue, published for later, fell due and went to their
    /// subscribers.
    Released {
        queue: QueueNumber,
        messages: Vec<Uuid>,
        /// Unix milliseconds.
        released_at_ms: u64,
    },
    /// A queue learned where a parent in another queue stands (its children there may go, or
    /// die, or keep waiting). Written by the queue of the children, after what changed the
    /// parent is in the log; replay applies it instead of deriving it again, so that every
    /// queue sees its parents change at the same point of the log as it did live.
    ParentSettled {
        queue: QueueNumber,
        parent: Uuid,
        state: ParentState,
        /// Unix milliseconds.
        settled_at_ms: u64,
    },
    /// Delivered messages of a queue were sent again to their subscribers (a replay), in this
    /// order (parents before children).
    Replayed {
        queue: QueueNumber,
        messages: Vec<Uuid>,
        /// Unix milliseconds.
        replayed_at_ms: u64,
    },
    /// One part of a snapshot of the broker's state. Written by [`crate::Log::checkpoint`];
    /// recovery hands the parts of the latest complete checkpoint to the broker and replays only
    /// the records after it. Checkpoint records are never replayed, so appending one with
    /// [`crate::Log::append`] has no effect on recovery.
    Checkpoint {
        part: u32,
        parts: u32,
        state: Bytes,
    },
    /// On a cluster node: how far this log has applied the replicated log, written in the same
    /// batch as the records of the entry it names, so the two never disagree after a crash.
    /// Opaque to storage (the cluster encodes its log position and membership); replay hands it
    /// out like any record and the Space ignores it.
    ClusterApplied {
        state: Bytes,
    },
}

/// Kind numbers of the records. Stable on disk.
pub(crate) mod kind {
    pub const QUEUE_CREATED: u8 = 1;
    pub const QUEUE_UPDATED: u8 = 2;
    pub const QUEUE_DELETED: u8 = 3;
    pub const SUBSCRIBER_ADDED: u8 = 4;
    pub const SUBSCRIBER_REMOVED: u8 = 5;
    pub const PUBLISHED: u8 = 6;
    pub const ACKED: u8 = 7;
    pub const DELIVERY_FAILED: u8 = 8;
    pub const DEAD_LETTERED: u8 = 9;
    pub const REDRIVEN: u8 = 10;
    pub const DISCARDED: u8 = 11;
    pub const CHECKPOINT: u8 = 12;
    pub const EXPIRED: u8 = 13;
    /// `SubscriberAdded` with its options; kind 4 is the same record before options existed,
    /// still read, no longer written.
    pub const SUBSCRIBER_ADDED_WITH_OPTIONS: u8 = 14;
    pub const SUBSCRIBER_UPDATED: u8 = 15;
    /// `Published` with its attributes (an event type, a due time): kind 6 is written for
    /// messages without any.
    pub const PUBLISHED_WITH_ATTRIBUTES: u8 = 16;
    pub const RELEASED: u8 = 17;
    /// `Published` with its attributes, every parent after the first, what it replays and its
    /// trace context: written for a message with more than one parent, a copy a replay made,
    /// or a trace context; kinds 6 and 16 are written for the others.
    pub const PUBLISHED_EXTENDED: u8 = 18;
    pub const PARENT_SETTLED: u8 = 19;
    pub const REPLAYED: u8 = 20;
    pub const CLUSTER_APPLIED: u8 = 21;
    /// The last record kind: kinds from `QUEUE_CREATED` to it are records.
    pub const LAST_RECORD: u8 = CLUSTER_APPLIED;
    /// Framing, not a record: several records appended atomically (one checksum over all).
    pub const BATCH: u8 = 64;
    /// Framing, not a record: a live record copied forward by compaction, with its origin.
    pub const RELOCATED: u8 = 65;
    /// Framing, not a record: how far the segment was synced when this frame was written.
    pub const SYNC_MARK: u8 = 66;
    /// Framing, not a record: bytes repair took out of use.
    pub const PADDING: u8 = 67;
}

/// The name of a record kind, for reports.
pub fn kind_name(k: u8) -> &'static str {
    match k {
        kind::QUEUE_CREATED => "queue created",
        kind::QUEUE_UPDATED => "queue updated",
        kind::QUEUE_DELETED => "queue deleted",
        kind::SUBSCRIBER_ADDED | kind::SUBSCRIBER_ADDED_WITH_OPTIONS => "subscriber added",
        kind::SUBSCRIBER_UPDATED => "subscriber updated",
        kind::SUBSCRIBER_REMOVED => "subscriber removed",
        kind::PUBLISHED | kind::PUBLISHED_WITH_ATTRIBUTES | kind::PUBLISHED_EXTENDED => "published",
        kind::ACKED => "acked",
        kind::DELIVERY_FAILED => "delivery failed",
        kind::DEAD_LETTERED => "dead-lettered",
        kind::REDRIVEN => "redriven",
        kind::DISCARDED => "discarded",
        kind::CHECKPOINT => "checkpoint",
        kind::EXPIRED => "expired",
        kind::RELEASED => "released",
        kind::PARENT_SETTLED => "parent settled",
        kind::REPLAYED => "replayed",
        kind::CLUSTER_APPLIED => "cluster applied",
        kind::BATCH => "batch",
        kind::RELOCATED => "relocated",
        kind::SYNC_MARK => "sync mark",
        kind::PADDING => "padding",
        _ => "unknown",
    }
}

impl Record {
    /// The kind number written in the frame header.
    pub fn kind(&self) -> u8 {
        match self {
            Record::QueueCreated { .. } => kind::QUEUE_CREATED,
            Record::QueueUpdated { .. } => kind::QUEUE_UPDATED,
            Record::QueueDeleted { .. } => kind::QUEUE_DELETED,
            Record::SubscriberAdded { .. } => kind::SUBSCRIBER_ADDED_WITH_OPTIONS,
            Record::SubscriberUpdated { .. } => kind::SUBSCRIBER_UPDATED,
            Record::SubscriberRemoved { .. } => kind::SUBSCRIBER_REMOVED,
            Record::Published(p) if p.parents.len() > 1 || p.attributes.is_extended() => {
                kind::PUBLISHED_EXTENDED
            }
            Record::Published(p) if p.attributes.is_empty() => kind::PUBLISHED,
            Record::Published(_) => kind::PUBLISHED_WITH_ATTRIBUTES,
            Record::Acked { .. } => kind::ACKED,
            Record::DeliveryFailed { .. } => kind::DELIVERY_FAILED,
            Record::DeadLettered { .. } => kind::DEAD_LETTERED,
            Record::Redriven { .. } => kind::REDRIVEN,
            Record::Discarded { .. } => kind::DISCARDED,
            Record::Expired { .. } => kind::EXPIRED,
            Record::Released { .. } => kind::RELEASED,
            Record::ParentSettled { .. } => kind::PARENT_SETTLED,
            Record::Replayed { .. } => kind::REPLAYED,
            Record::Checkpoint { .. } => kind::CHECKPOINT,
            Record::ClusterApplied { .. } => kind::CLUSTER_APPLIED,
        }
    }

    /// Appends the payload (without frame header) to `buf`.
    pub(crate) fn encode_payload(&self, buf: &mut Vec<u8>) {
        let mut e = Encoder::new(buf);
        match self {
            Record::QueueCreated {
                queue,
                name,
                settings,
            } => {
                e.u32(*queue);
                e.str(name);
                e.bytes(settings);
            }
            Record::QueueUpdated { queue, settings } => {
                e.u32(*queue);
                e.bytes(settings);
            }
            Record::QueueDeleted { queue } => e.u32(*queue),
            Record::SubscriberAdded {
                queue,
                subscriber,
                endpoint,
                handler,
                secret,
                max_in_flight,
                options,
            } => {
                e.u32(*queue);
                e.u64(*subscriber);
                e.str(endpoint);
                e.str(handler);
                e.opt_str(secret);
                e.u32(*max_in_flight);
                e.bytes(options);
            }
            Record::SubscriberUpdated {
                queue,
                subscriber,
                secret,
                options,
            } => {
                e.u32(*queue);
                e.u64(*subscriber);
                e.opt_str(secret);
                e.bytes(options);
            }
            Record::SubscriberRemoved {
                queue,
                subscriber,
                removed_at_ms,
            } => {
                e.u32(*queue);
                e.u64(*subscriber);
                e.u64(*removed_at_ms);
            }
            Record::Published(p) => {
                e.u32(p.queue);
                e.uuid(&p.id);
                e.opt_uuid(&p.parents.first().copied());
                e.str(&p.content_type);
                e.u64(p.published_at_ms);
                e.opt_str(&p.idempotency_key);
                e.u64s(&p.fanout);
                let kind = self.kind();
                if kind != kind::PUBLISHED {
                    e.opt_str(&p.attributes.event_type);
                    e.opt_u64(&p.attributes.deliver_at_ms);
                }
                if kind == kind::PUBLISHED_EXTENDED {
                    e.uuids(p.parents.get(1..).unwrap_or(&[]));
                    e.opt_uuid(&p.attributes.replay_of);
                    e.opt_str(&p.attributes.traceparent);
                    e.opt_str(&p.attributes.tracestate);
                }
                // The body goes last so that a reader can find it without decoding the rest.
                e.bytes(&p.body);
            }
            Record::Acked { acks } => {
                e.u32(crate::codec::saturating_u32(acks.len()));
                for a in acks {
                    e.uuid(&a.message);
                    e.u64(a.subscriber);
                    e.u32(a.attempt);
                    e.u64(a.acked_at_ms);
                }
            }
            Record::DeliveryFailed {
                message,
                subscriber,
                attempt,
                error,
                failed_at_ms,
                next_attempt_at_ms,
            } => {
                e.uuid(message);
                e.u64(*subscriber);
                e.u32(*attempt);
                e.str(error);
                e.u64(*failed_at_ms);
                e.opt_u64(next_attempt_at_ms);
            }
            Record::DeadLettered {
                message,
                subscriber,
                reason,
                attempts,
                last_error,
                dead_at_ms,
            } => {
                e.uuid(message);
                e.opt_u64(subscriber);
                e.u8(reason.to_u8());
                e.u32(*attempts);
                e.opt_str(last_error);
                e.u64(*dead_at_ms);
            }
            Record::Redriven {
                message,
                subscribers,
                redriven_at_ms,
            } => {
                e.uuid(message);
                e.u64s(subscribers);
                e.u64(*redriven_at_ms);
            }
            Record::Discarded {
                message,
                discarded_at_ms,
            } => {
                e.uuid(message);
                e.u64(*discarded_at_ms);
            }
            Record::Expired {
                queue,
                messages,
                expired_at_ms: at_ms,
            }
            | Record::Released {
                queue,
                messages,
                released_at_ms: at_ms,
            }
            | Record::Replayed {
                queue,
                messages,
                replayed_at_ms: at_ms,
            } => {
                e.u32(*queue);
                e.u32(crate::codec::saturating_u32(messages.len()));
                for m in messages {
                    e.uuid(m);
                }
                e.u64(*at_ms);
            }
            Record::ParentSettled {
                queue,
                parent,
                state,
                settled_at_ms,
            } => {
                e.u32(*queue);
                e.uuid(parent);
                e.u8(state.to_u8());
                e.u64(*settled_at_ms);
            }
            Record::Checkpoint { part, parts, state } => {
                e.u32(*part);
                e.u32(*parts);
                e.bytes(state);
            }
            Record::ClusterApplied { state } => e.bytes(state),
        }
    }

    /// Decodes a payload of the given kind. Byte fields (bodies, settings, state) are slices of
    /// `payload`, not copies.
    pub(crate) fn decode(kind: u8, payload: Bytes) -> Result<Record, DecodeError> {
        let mut d = Decoder::new(payload);
        let record = match kind {
            kind::QUEUE_CREATED => Record::QueueCreated {
                queue: d.u32()?,
                name: d.string()?,
                settings: d.bytes()?,
            },
            kind::QUEUE_UPDATED => Record::QueueUpdated {
                queue: d.u32()?,
                settings: d.bytes()?,
            },
            kind::QUEUE_DELETED => Record::QueueDeleted { queue: d.u32()? },
            kind::SUBSCRIBER_ADDED | kind::SUBSCRIBER_ADDED_WITH_OPTIONS => {
                Record::SubscriberAdded {
                    queue: d.u32()?,
                    subscriber: d.u64()?,
                    endpoint: d.string()?,
                    handler: d.string()?,
                    secret: d.opt_string()?,
                    max_in_flight: d.u32()?,
                    options: if kind == kind::SUBSCRIBER_ADDED {
                        Bytes::new()
                    } else {
                        d.bytes()?
                    },
                }
            }
            kind::SUBSCRIBER_UPDATED => Record::SubscriberUpdated {
                queue: d.u32()?,
                subscriber: d.u64()?,
                secret: d.opt_string()?,
                options: d.bytes()?,
            },
            kind::SUBSCRIBER_REMOVED => Record::SubscriberRemoved {
                queue: d.u32()?,
                subscriber: d.u64()?,
                removed_at_ms: d.u64()?,
            },
            kind::PUBLISHED | kind::PUBLISHED_WITH_ATTRIBUTES | kind::PUBLISHED_EXTENDED => {
                Record::Published(decode_published(kind, &mut d)?)
            }
            kind::ACKED => {
                let n = d.count(ACK_BYTES)?;
                let mut acks = Vec::with_capacity(n);
                for _ in 0..n {
                    acks.push(Ack {
                        message: d.uuid()?,
                        subscriber: d.u64()?,
                        attempt: d.u32()?,
                        acked_at_ms: d.u64()?,
                    });
                }
                Record::Acked { acks }
            }
            kind::DELIVERY_FAILED => Record::DeliveryFailed {
                message: d.uuid()?,
                subscriber: d.u64()?,
                attempt: d.u32()?,
                error: d.string()?,
                failed_at_ms: d.u64()?,
                next_attempt_at_ms: d.opt_u64()?,
            },
            kind::DEAD_LETTERED => Record::DeadLettered {
                message: d.uuid()?,
                subscriber: d.opt_u64()?,
                reason: DeadReason::from_u8(d.u8()?)?,
                attempts: d.u32()?,
                last_error: d.opt_string()?,
                dead_at_ms: d.u64()?,
            },
            kind::REDRIVEN => Record::Redriven {
                message: d.uuid()?,
                subscribers: d.u64s()?,
                redriven_at_ms: d.u64()?,
            },
            kind::DISCARDED => Record::Discarded {
                message: d.uuid()?,
                discarded_at_ms: d.u64()?,
            },
            kind::EXPIRED | kind::RELEASED | kind::REPLAYED => {
                let queue = d.u32()?;
                let n = d.count(16)?;
                let mut messages = Vec::with_capacity(n);
                for _ in 0..n {
                    messages.push(d.uuid()?);
                }
                let at_ms = d.u64()?;
                match kind {
                    kind::EXPIRED => Record::Expired {
                        queue,
                        messages,
                        expired_at_ms: at_ms,
                    },
                    kind::RELEASED => Record::Released {
                        queue,
                        messages,
                        released_at_ms: at_ms,
                    },
                    _ => Record::Replayed {
                        queue,
                        messages,
                        replayed_at_ms: at_ms,
                    },
                }
            }
            kind::PARENT_SETTLED => Record::ParentSettled {
                queue: d.u32()?,
                parent: d.uuid()?,
                state: ParentState::from_u8(d.u8()?)?,
                settled_at_ms: d.u64()?,
            },
            kind::CHECKPOINT => Record::Checkpoint {
                part: d.u32()?,
                parts: d.u32()?,
                state: d.bytes()?,
            },
            kind::CLUSTER_APPLIED => Record::ClusterApplied { state: d.bytes()? },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        d.finish()?;
        Ok(record)
    }
}

/// Records as one byte string (a count, then each record's kind and payload), to carry the
/// records of one change elsewhere whole: a cluster replicates them in one entry of its log.
/// [`decode_records`] reads them back.
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut payload = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.u32(crate::codec::saturating_u32(records.len()));
    for r in records {
        payload.clear();
        r.encode_payload(&mut payload);
        e.u8(r.kind());
        e.bytes(&payload);
    }
    out
}

/// The records [`encode_records`] wrote; byte fields are slices of `bytes`.
pub fn decode_records(bytes: Bytes) -> Result<Vec<Record>, DecodeError> {
    let mut d = Decoder::new(bytes);
    // Each record takes at least its kind and a payload length.
    let count = d.count(1 + 4)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = d.u8()?;
        records.push(Record::decode(kind, d.bytes()?)?);
    }
    d.finish()?;
    Ok(records)
}

/// A `Published` record of one of its three kinds.
fn decode_published(kind: u8, d: &mut Decoder) -> Result<Published, DecodeError> {
    let queue = d.u32()?;
    let id = d.uuid()?;
    let first = d.opt_uuid()?;
    let content_type = d.string()?;
    let published_at_ms = d.u64()?;
    let idempotency_key = d.opt_string()?;
    let fanout = d.u64s()?;
    let attributes = if kind == kind::PUBLISHED {
        Attributes::default()
    } else {
        Attributes {
            event_type: d.opt_string()?,
            deliver_at_ms: d.opt_u64()?,
            replay_of: None,
            traceparent: None,
            tracestate: None,
        }
    };
    let mut parents: Vec<Uuid> = first.into_iter().collect();
    let mut attributes = attributes;
    if kind == kind::PUBLISHED_EXTENDED {
        parents.extend(d.uuids()?);
        attributes.replay_of = d.opt_uuid()?;
        attributes.traceparent = d.opt_string()?;
        attributes.tracestate = d.opt_string()?;
    }
    Ok(Published {
        queue,
        id,
        parents,
        content_type,
        published_at_ms,
        idempotency_key,
        fanout,
        attributes,
        body: d.bytes()?,
    })
}

mod lost;
pub use lost::{LostRecord, describe_damaged};

#[cfg(test)]
pub(crate) mod tests;
