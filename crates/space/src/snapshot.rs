//! Checkpoint snapshots: the whole durable state of the Space in a compact binary form, so that
//! recovery can start from the latest checkpoint and segments before it can be reclaimed.
//!
//! Layout (little-endian, Storage's codec; drawn in `docs/format.md`): a version, the Space's
//! counters, then each queue as [`crate::queue::QueueState`] writes it. Restoring puts every
//! fact back verbatim (no transition is re-run), so a restore reaches exactly the state that
//! replaying the log would.

use bytes::Bytes;
use storage::codec::{Decoder, Encoder};

use crate::error::SnapshotError;
use crate::queue::QueueState;

/// Version of the snapshot layout written. Version 3 added each subscriber's options, version
/// 4 each queue's event types and each message's, version 5 the further parents of a join,
/// version 6 what each queue knows of parents in other queues, version 7 how far a cluster
/// node had applied the replicated log; a reader takes versions [`VERSION_OLDEST`] to this one
/// and refuses others.
pub const VERSION: u32 = 7;
/// The oldest snapshot layout read.
pub const VERSION_OLDEST: u32 = 2;

/// What the Space keeps outside its queues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub next_queue_number: u32,
    pub next_subscriber: u64,
    /// On a cluster node, the state of its last `ClusterApplied` record (opaque here); empty
    /// elsewhere.
    pub cluster: Bytes,
}

/// Encodes the state of every queue.
pub(crate) fn encode<'a>(
    counters: &Counters,
    queues: impl ExactSizeIterator<Item = &'a QueueState>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    e.u32(VERSION);
    e.u32(counters.next_queue_number);
    e.u64(counters.next_subscriber);
    e.bytes(&counters.cluster);
    e.u32(queues.len() as u32);
    for q in queues {
        q.encode(&mut e);
    }
    buf
}

/// Restores the queues of a snapshot.
pub(crate) fn decode(bytes: Bytes) -> Result<(Counters, Vec<QueueState>), SnapshotError> {
    let mut d = Decoder::new(bytes);
    let version = d.u32()?;
    if !(VERSION_OLDEST..=VERSION).contains(&version) {
        return Err(SnapshotError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let counters = Counters {
        next_queue_number: d.u32()?,
        next_subscriber: d.u64()?,
        cluster: if version >= 7 {
            d.bytes()?
        } else {
            Bytes::new()
        },
    };
    let count = d.count(4 + 4 + 4 + 8)?;
    let mut queues = Vec::with_capacity(count);
    for _ in 0..count {
        queues.push(QueueState::decode(&mut d, version)?);
    }
    d.finish()?;
    Ok((counters, queues))
}

/// Splits an encoded snapshot into checkpoint parts of at most `part_bytes`.
pub(crate) fn parts(snapshot: impl Into<Bytes>, part_bytes: usize) -> Vec<Bytes> {
    let all: Bytes = snapshot.into();
    (0..all.len().max(1))
        .step_by(part_bytes)
        .map(|at| all.slice(at..(at + part_bytes).min(all.len())))
        .collect()
}

/// Joins the parts of a checkpoint.
pub(crate) fn join(parts: &[Bytes]) -> Bytes {
    if let [one] = parts {
        return one.clone();
    }
    let mut all = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        all.extend_from_slice(p);
    }
    Bytes::from(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_join_back_whatever_the_part_size() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for size in [1, 7, 999, 1000, 4096] {
            let p = parts(data.clone(), size);
            assert!(p.iter().all(|x| x.len() <= size));
            assert_eq!(&join(&p)[..], &data[..]);
        }
        assert_eq!(
            parts(Vec::new(), 16).len(),
            1,
            "an empty snapshot is one part"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            vec![],
            vec![2, 0, 0, 0],
            vec![9, 0, 0, 0, 1, 0, 0, 0],
            vec![
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
            ],
        ] {
            assert!(decode(Bytes::from(bytes)).is_err());
        }
    }
}
