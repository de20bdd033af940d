//! Message ids: UUIDv7 whose random part carries the queue's number and a per-queue sequence.
//!
//! ```text
//!  48 bits unix ms | ver 7 | 12 bits zero | var 10 | 20 bits queue number | 42 bits sequence
//! ```
//!
//! Because the broker assigns every id, a queue can tell from an id alone whether it ever issued
//! it: the queue number matches and the sequence is below the next one. A parent that is no
//! longer held (delivered and removed by retention, discarded) is then told apart from one that
//! never existed, in constant memory.

use uuid::Uuid;

use crate::model::MessageId;

/// Bits of the sequence: 4.4 × 10¹² messages per queue.
pub const SEQUENCE_BITS: u32 = 42;
/// Bits of the queue number: about a million queues created over the Space's life.
pub const QUEUE_NUMBER_BITS: u32 = 20;

pub const SEQUENCE_MAX: u64 = (1 << SEQUENCE_BITS) - 1;
pub const QUEUE_NUMBER_MAX: u32 = (1 << QUEUE_NUMBER_BITS) - 1;

/// Builds the id of the `sequence`-th message of queue `queue_number`, published at `unix_ms`.
pub fn message_id(unix_ms: u64, queue_number: u32, sequence: u64) -> MessageId {
    debug_assert!(queue_number <= QUEUE_NUMBER_MAX && sequence <= SEQUENCE_MAX);
    let mut b = [0u8; 16];
    b[0..6].copy_from_slice(&unix_ms.to_be_bytes()[2..8]);
    b[6] = 0x70;
    let tail = (0b10u64 << 62) | (u64::from(queue_number) << SEQUENCE_BITS) | sequence;
    b[8..16].copy_from_slice(&tail.to_be_bytes());
    Uuid::from_bytes(b)
}

/// The queue number and sequence inside an id, if it has the shape of one syncbrok issues.
pub fn parts(id: MessageId) -> Option<(u32, u64)> {
    let b = id.as_bytes();
    if b[6] != 0x70 || b[7] != 0 || b[8] >> 6 != 0b10 {
        return None;
    }
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&b[8..16]);
    let tail = u64::from_be_bytes(tail) & ((1 << 62) - 1);
    Some(((tail >> SEQUENCE_BITS) as u32, tail & SEQUENCE_MAX))
}

/// Unix milliseconds in an id (its publish time).
pub fn unix_ms(id: MessageId) -> u64 {
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..8].copy_from_slice(&b[0..6]);
    u64::from_be_bytes(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_and_give_back_their_parts() {
        let id = message_id(1_700_000_000_123, 42, 7);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(parts(id), Some((42, 7)));
        assert_eq!(unix_ms(id), 1_700_000_000_123);
        let max = message_id(u64::from(u32::MAX), QUEUE_NUMBER_MAX, SEQUENCE_MAX);
        assert_eq!(parts(max), Some((QUEUE_NUMBER_MAX, SEQUENCE_MAX)));
        assert_eq!(
            parts(Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef)),
            None
        );
    }

    #[test]
    fn ids_of_one_queue_sort_by_publish_time_then_sequence() {
        let a = message_id(1000, 1, 5);
        let b = message_id(1000, 1, 6);
        let c = message_id(1001, 1, 2);
        assert!(a < b && b < c);
    }
}
