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

/// A message accepted by a queue, with its body and the fan-out set fixed at acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub queue: String,
    pub id: Uuid,
    pub parent: Option<Uuid>,
    pub content_type: String,
    /// Unix milliseconds.
    pub published_at_ms: u64,
    /// Remembered for the queue's idempotency window, across restarts.
    pub idempotency_key: Option<String>,
    /// The subscribers the queue had when the message was accepted.
    pub fanout: Vec<SubscriberId>,
    pub body: Bytes,
}

/// One subscriber's acknowledgement of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub message: Uuid,
    pub subscriber: SubscriberId,
    /// Unix milliseconds.
    pub acked_at_ms: u64,
}

/// A record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A queue was created; `settings` is the broker's own encoding of its settings.
    QueueCreated {
        queue: String,
        settings: Bytes,
    },
    /// A queue's settings changed; `settings` is the full new value, not a delta.
    QueueUpdated {
        queue: String,
        settings: Bytes,
    },
    /// A queue and all its messages were deleted.
    QueueDeleted {
        queue: String,
    },
    SubscriberAdded {
        queue: String,
        subscriber: SubscriberId,
        endpoint: String,
        handler: String,
        /// A `whsec_` secret: stored so signatures survive restarts, never shown by the API.
        secret: Option<String>,
        max_in_flight: u32,
    },
    SubscriberRemoved {
        queue: String,
        subscriber: SubscriberId,
    },
    Published(Published),
    /// Acknowledgements, batched: losing one only causes a redelivery.
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
    /// One part of a snapshot of the broker's state. Written by [`crate::Log::checkpoint`];
    /// recovery hands the parts of the latest complete checkpoint to the broker and replays only
    /// the records after it. Checkpoint records are never replayed, so appending one with
    /// [`crate::Log::append`] has no effect on recovery.
    Checkpoint {
        part: u32,
        parts: u32,
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
    /// Framing, not a record: several records appended atomically (one checksum over all).
    pub const BATCH: u8 = 64;
    /// Framing, not a record: a live record copied forward by compaction, with its origin.
    pub const RELOCATED: u8 = 65;
}

impl Record {
    /// The kind number written in the frame header.
    pub fn kind(&self) -> u8 {
        match self {
            Record::QueueCreated { .. } => kind::QUEUE_CREATED,
            Record::QueueUpdated { .. } => kind::QUEUE_UPDATED,
            Record::QueueDeleted { .. } => kind::QUEUE_DELETED,
            Record::SubscriberAdded { .. } => kind::SUBSCRIBER_ADDED,
            Record::SubscriberRemoved { .. } => kind::SUBSCRIBER_REMOVED,
            Record::Published(_) => kind::PUBLISHED,
            Record::Acked { .. } => kind::ACKED,
            Record::DeliveryFailed { .. } => kind::DELIVERY_FAILED,
            Record::DeadLettered { .. } => kind::DEAD_LETTERED,
            Record::Redriven { .. } => kind::REDRIVEN,
            Record::Discarded { .. } => kind::DISCARDED,
            Record::Checkpoint { .. } => kind::CHECKPOINT,
        }
    }

    /// Appends the payload (without frame header) to `buf`.
    pub(crate) fn encode_payload(&self, buf: &mut Vec<u8>) {
        let mut e = Encoder::new(buf);
        match self {
            Record::QueueCreated { queue, settings } | Record::QueueUpdated { queue, settings } => {
                e.str(queue);
                e.bytes(settings);
            }
            Record::QueueDeleted { queue } => e.str(queue),
            Record::SubscriberAdded {
                queue,
                subscriber,
                endpoint,
                handler,
                secret,
                max_in_flight,
            } => {
                e.str(queue);
                e.u64(*subscriber);
                e.str(endpoint);
                e.str(handler);
                e.opt_str(secret);
                e.u32(*max_in_flight);
            }
            Record::SubscriberRemoved { queue, subscriber } => {
                e.str(queue);
                e.u64(*subscriber);
            }
            Record::Published(p) => {
                e.str(&p.queue);
                e.uuid(&p.id);
                e.opt_uuid(&p.parent);
                e.str(&p.content_type);
                e.u64(p.published_at_ms);
                e.opt_str(&p.idempotency_key);
                e.u64s(&p.fanout);
                // The body goes last so that a reader can find it without decoding the rest.
                e.bytes(&p.body);
            }
            Record::Acked { acks } => {
                e.u32(crate::codec::saturating_u32(acks.len()));
                for a in acks {
                    e.uuid(&a.message);
                    e.u64(a.subscriber);
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
                match next_attempt_at_ms {
                    None => e.u8(0),
                    Some(t) => {
                        e.u8(1);
                        e.u64(*t);
                    }
                }
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
                match subscriber {
                    None => e.u8(0),
                    Some(s) => {
                        e.u8(1);
                        e.u64(*s);
                    }
                }
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
            Record::Checkpoint { part, parts, state } => {
                e.u32(*part);
                e.u32(*parts);
                e.bytes(state);
            }
        }
    }

    /// Decodes a payload of the given kind. Byte fields (bodies, settings, state) are slices of
    /// `payload`, not copies.
    pub(crate) fn decode(kind: u8, payload: Bytes) -> Result<Record, DecodeError> {
        let mut d = Decoder::new(payload);
        let record = match kind {
            kind::QUEUE_CREATED => Record::QueueCreated {
                queue: d.string()?,
                settings: d.bytes()?,
            },
            kind::QUEUE_UPDATED => Record::QueueUpdated {
                queue: d.string()?,
                settings: d.bytes()?,
            },
            kind::QUEUE_DELETED => Record::QueueDeleted { queue: d.string()? },
            kind::SUBSCRIBER_ADDED => Record::SubscriberAdded {
                queue: d.string()?,
                subscriber: d.u64()?,
                endpoint: d.string()?,
                handler: d.string()?,
                secret: d.opt_string()?,
                max_in_flight: d.u32()?,
            },
            kind::SUBSCRIBER_REMOVED => Record::SubscriberRemoved {
                queue: d.string()?,
                subscriber: d.u64()?,
            },
            kind::PUBLISHED => Record::Published(Published {
                queue: d.string()?,
                id: d.uuid()?,
                parent: d.opt_uuid()?,
                content_type: d.string()?,
                published_at_ms: d.u64()?,
                idempotency_key: d.opt_string()?,
                fanout: d.u64s()?,
                body: d.bytes()?,
            }),
            kind::ACKED => {
                let n = d.u32()? as usize;
                const ACK_BYTES: usize = 16 + 8 + 8;
                if d.remaining() < n.saturating_mul(ACK_BYTES) {
                    return Err(DecodeError::Truncated {
                        at: 4,
                        needed: n.saturating_mul(ACK_BYTES) - d.remaining(),
                    });
                }
                let mut acks = Vec::with_capacity(n);
                for _ in 0..n {
                    acks.push(Ack {
                        message: d.uuid()?,
                        subscriber: d.u64()?,
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
                next_attempt_at_ms: if d.bool()? { Some(d.u64()?) } else { None },
            },
            kind::DEAD_LETTERED => Record::DeadLettered {
                message: d.uuid()?,
                subscriber: if d.bool()? { Some(d.u64()?) } else { None },
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
            kind::CHECKPOINT => Record::Checkpoint {
                part: d.u32()?,
                parts: d.u32()?,
                state: d.bytes()?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        d.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid_strategy() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn bytes_strategy() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    /// Any record, with small fields: shared with the log's property tests.
    pub(crate) fn record_strategy() -> impl Strategy<Value = Record> {
        let text = "[a-z0-9._-]{0,12}";
        prop_oneof![
            (text, bytes_strategy())
                .prop_map(|(queue, settings)| Record::QueueCreated { queue, settings }),
            (text, bytes_strategy())
                .prop_map(|(queue, settings)| Record::QueueUpdated { queue, settings }),
            text.prop_map(|queue| Record::QueueDeleted { queue }),
            (
                text,
                any::<u64>(),
                text,
                text,
                proptest::option::of(text),
                any::<u32>()
            )
                .prop_map(
                    |(queue, subscriber, endpoint, handler, secret, max_in_flight)| {
                        Record::SubscriberAdded {
                            queue,
                            subscriber,
                            endpoint,
                            handler,
                            secret,
                            max_in_flight,
                        }
                    }
                ),
            (text, any::<u64>())
                .prop_map(|(queue, subscriber)| Record::SubscriberRemoved { queue, subscriber }),
            (
                text,
                uuid_strategy(),
                proptest::option::of(uuid_strategy()),
                text,
                any::<u64>(),
                proptest::option::of(text),
                proptest::collection::vec(any::<u64>(), 0..4),
                bytes_strategy()
            )
                .prop_map(
                    |(queue, id, parent, content_type, published_at_ms, key, fanout, body)| {
                        Record::Published(Published {
                            queue,
                            id,
                            parent,
                            content_type,
                            published_at_ms,
                            idempotency_key: key,
                            fanout,
                            body,
                        })
                    }
                ),
            proptest::collection::vec(
                (uuid_strategy(), any::<u64>(), any::<u64>()).prop_map(|(m, s, t)| Ack {
                    message: m,
                    subscriber: s,
                    acked_at_ms: t
                }),
                0..4
            )
            .prop_map(|acks| Record::Acked { acks }),
            (
                uuid_strategy(),
                any::<u64>(),
                any::<u32>(),
                text,
                any::<u64>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(message, subscriber, attempt, error, at, next)| {
                    Record::DeliveryFailed {
                        message,
                        subscriber,
                        attempt,
                        error,
                        failed_at_ms: at,
                        next_attempt_at_ms: next,
                    }
                }),
            (
                uuid_strategy(),
                proptest::option::of(any::<u64>()),
                prop_oneof![Just(DeadReason::MaxAttempts), Just(DeadReason::ParentDead)],
                any::<u32>(),
                proptest::option::of(text),
                any::<u64>()
            )
                .prop_map(|(message, subscriber, reason, attempts, last_error, at)| {
                    Record::DeadLettered {
                        message,
                        subscriber,
                        reason,
                        attempts,
                        last_error,
                        dead_at_ms: at,
                    }
                }),
            (
                uuid_strategy(),
                proptest::collection::vec(any::<u64>(), 0..4),
                any::<u64>()
            )
                .prop_map(|(message, subscribers, at)| Record::Redriven {
                    message,
                    subscribers,
                    redriven_at_ms: at
                }),
            (uuid_strategy(), any::<u64>()).prop_map(|(message, at)| Record::Discarded {
                message,
                discarded_at_ms: at
            }),
            (any::<u32>(), any::<u32>(), bytes_strategy())
                .prop_map(|(part, parts, state)| Record::Checkpoint { part, parts, state }),
        ]
    }

    fn roundtrip(r: &Record) -> Result<Record, DecodeError> {
        let mut buf = Vec::new();
        r.encode_payload(&mut buf);
        Record::decode(r.kind(), Bytes::from(buf))
    }

    proptest! {
        #[test]
        fn every_record_kind_roundtrips(r in record_strategy()) {
            prop_assert_eq!(roundtrip(&r)?, r);
        }

        /// Cutting a payload short never decodes to a record, and never panics.
        #[test]
        fn truncated_payloads_are_refused(r in record_strategy(), cut in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            r.encode_payload(&mut buf);
            if !buf.is_empty() {
                let keep = cut.index(buf.len());
                prop_assert!(Record::decode(r.kind(), Bytes::from(buf[..keep].to_vec())).is_err());
            }
        }

        /// Arbitrary bytes under any kind decode or fail cleanly.
        #[test]
        fn garbage_never_panics(kind in any::<u8>(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Record::decode(kind, Bytes::from(raw));
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(kind::ACKED, Bytes::from(buf.clone())),
            Err(DecodeError::Truncated { .. })
        ));
        let mut redriven = vec![0u8; 16];
        redriven.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(kind::REDRIVEN, Bytes::from(redriven)),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_kinds_and_trailing_bytes_are_refused() {
        assert_eq!(
            Record::decode(200, Bytes::new()),
            Err(DecodeError::UnknownKind(200))
        );
        let mut buf = Vec::new();
        Record::QueueDeleted { queue: "q".into() }.encode_payload(&mut buf);
        buf.push(0);
        assert_eq!(
            Record::decode(kind::QUEUE_DELETED, Bytes::from(buf)),
            Err(DecodeError::TrailingBytes { trailing: 1 })
        );
    }
}
