//! Round trips and refusals of every record kind.

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
        (any::<u32>(), text, bytes_strategy()).prop_map(|(queue, name, settings)| {
            Record::QueueCreated {
                queue,
                name,
                settings,
            }
        }),
        (any::<u32>(), bytes_strategy())
            .prop_map(|(queue, settings)| Record::QueueUpdated { queue, settings }),
        any::<u32>().prop_map(|queue| Record::QueueDeleted { queue }),
        (
            any::<u32>(),
            any::<u64>(),
            text,
            text,
            proptest::option::of(text),
            any::<u32>(),
            bytes_strategy(),
        )
            .prop_map(
                |(queue, subscriber, endpoint, handler, secret, max_in_flight, options)| {
                    Record::SubscriberAdded {
                        queue,
                        subscriber,
                        endpoint,
                        handler,
                        secret,
                        max_in_flight,
                        options,
                    }
                }
            ),
        (
            any::<u32>(),
            any::<u64>(),
            proptest::option::of(text),
            bytes_strategy()
        )
            .prop_map(|(queue, subscriber, secret, options)| {
                Record::SubscriberUpdated {
                    queue,
                    subscriber,
                    secret,
                    options,
                }
            }),
        (any::<u32>(), uuid_strategy(), 1u8..=5, any::<u64>()).prop_map(
            |(queue, parent, state, at)| {
                Record::ParentSettled {
                    queue,
                    parent,
                    state: ParentState::from_u8(state).unwrap(),
                    settled_at_ms: at,
                }
            }
        ),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(queue, subscriber, at)| {
            Record::SubscriberRemoved {
                queue,
                subscriber,
                removed_at_ms: at,
            }
        }),
        (
            any::<u32>(),
            uuid_strategy(),
            proptest::collection::vec(uuid_strategy(), 0..4),
            text,
            any::<u64>(),
            proptest::option::of(text),
            proptest::collection::vec(any::<u64>(), 0..4),
            (
                proptest::option::of(text),
                proptest::option::of(any::<u64>()),
                proptest::option::of(uuid_strategy()),
                proptest::option::of(text),
                proptest::option::of(text)
            ),
            bytes_strategy()
        )
            .prop_map(
                |(queue, id, parents, content_type, published_at_ms, key, fanout, attrs, body)| {
                    Record::Published(Published {
                        queue,
                        id,
                        parents,
                        content_type,
                        published_at_ms,
                        idempotency_key: key,
                        fanout,
                        attributes: Attributes {
                            event_type: attrs.0,
                            deliver_at_ms: attrs.1,
                            replay_of: attrs.2,
                            traceparent: attrs.3,
                            tracestate: attrs.4,
                        },
                        body,
                    })
                }
            ),
        proptest::collection::vec(
            (uuid_strategy(), any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(m, s, n, t)| {
                Ack {
                    message: m,
                    subscriber: s,
                    attempt: n,
                    acked_at_ms: t,
                }
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
        (
            any::<u32>(),
            proptest::collection::vec(uuid_strategy(), 0..4),
            any::<u64>()
        )
            .prop_map(|(queue, messages, at)| Record::Expired {
                queue,
                messages,
                expired_at_ms: at
            }),
        (
            any::<u32>(),
            proptest::collection::vec(uuid_strategy(), 0..4),
            any::<u64>()
        )
            .prop_map(|(queue, messages, at)| Record::Released {
                queue,
                messages,
                released_at_ms: at
            }),
        (
            any::<u32>(),
            proptest::collection::vec(uuid_strategy(), 0..4),
            any::<u64>()
        )
            .prop_map(|(queue, messages, at)| Record::Replayed {
                queue,
                messages,
                replayed_at_ms: at
            }),
        (any::<u32>(), any::<u32>(), bytes_strategy())
            .prop_map(|(part, parts, state)| Record::Checkpoint { part, parts, state }),
        bytes_strategy().prop_map(|state| Record::ClusterApplied { state }),
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

    /// A change's records carried elsewhere come back as they were; cut short, they are refused.
    #[test]
    fn record_lists_roundtrip(records in proptest::collection::vec(record_strategy(), 0..6), cut in any::<proptest::sample::Index>()) {
        let bytes = super::encode_records(&records);
        prop_assert_eq!(super::decode_records(Bytes::from(bytes.clone()))?, records);
        let cut = cut.index(bytes.len());
        prop_assert!(super::decode_records(Bytes::copy_from_slice(&bytes[..cut])).is_err());
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
    Record::QueueDeleted { queue: 1 }.encode_payload(&mut buf);
    buf.push(0);
    assert_eq!(
        Record::decode(kind::QUEUE_DELETED, Bytes::from(buf)),
        Err(DecodeError::TrailingBytes { trailing: 1 })
    );
}

/// A subscriber record written before options existed (kind 4) still reads, as a subscriber
/// without options; new records carry theirs under kind 14.
#[test]
fn subscriber_records_without_options_still_read() {
    let mut old = Vec::new();
    old.extend_from_slice(&7u32.to_le_bytes());
    old.extend_from_slice(&3u64.to_le_bytes());
    for s in ["http://a/", "webhook"] {
        old.extend_from_slice(&(s.len() as u32).to_le_bytes());
        old.extend_from_slice(s.as_bytes());
    }
    old.push(0);
    old.extend_from_slice(&64u32.to_le_bytes());
    let want = Record::SubscriberAdded {
        queue: 7,
        subscriber: 3,
        endpoint: "http://a/".into(),
        handler: "webhook".into(),
        secret: None,
        max_in_flight: 64,
        options: Bytes::new(),
    };
    assert_eq!(
        Record::decode(kind::SUBSCRIBER_ADDED, Bytes::from(old.clone())),
        Ok(want.clone())
    );
    assert_eq!(want.kind(), kind::SUBSCRIBER_ADDED_WITH_OPTIONS);
    // Under the new kind, the same bytes lack their options.
    assert!(Record::decode(kind::SUBSCRIBER_ADDED_WITH_OPTIONS, Bytes::from(old)).is_err());
}

/// A message with one parent or none keeps kind 6 (or 16 with attributes), byte for byte as
/// before joins existed; only a join or a replay's copy is kind 18, which an older build
/// refuses by the segment's version instead of misreading it.
#[test]
fn only_a_join_or_a_copy_is_written_as_kind_18() {
    let one = Uuid::from_u128(1);
    let two = Uuid::from_u128(2);
    let published = |parents: Vec<Uuid>, event_type: Option<&str>| {
        Record::Published(Published {
            queue: 1,
            id: Uuid::from_u128(9),
            parents,
            content_type: "text/plain".into(),
            published_at_ms: 5,
            idempotency_key: None,
            fanout: vec![1],
            attributes: Attributes {
                event_type: event_type.map(str::to_owned),
                deliver_at_ms: None,
                replay_of: None,
                traceparent: None,
                tracestate: None,
            },
            body: Bytes::from_static(b"x"),
        })
    };
    assert_eq!(published(vec![], None).kind(), kind::PUBLISHED);
    assert_eq!(published(vec![one], None).kind(), kind::PUBLISHED);
    assert_eq!(
        published(vec![one], Some("t")).kind(),
        kind::PUBLISHED_WITH_ATTRIBUTES
    );
    let join = published(vec![one, two], None);
    assert_eq!(join.kind(), kind::PUBLISHED_EXTENDED);
    assert_eq!(roundtrip(&join).unwrap(), join);
    // The single-parent layout is unchanged: the parent right after the id.
    let mut buf = Vec::new();
    published(vec![one], None).encode_payload(&mut buf);
    assert_eq!(buf[4 + 16], 1, "an optional id follows");
    assert_eq!(&buf[4 + 17..4 + 33], one.as_bytes());
}
