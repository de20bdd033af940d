//! Checkpoint snapshots: the whole live state of the Space in a compact binary form, so that
//! recovery can start from the latest checkpoint and segments before it can be reclaimed.
//!
//! Layout (little-endian, storage's codec): a version, the Space's counters, then per queue its
//! name, number, settings (JSON), next sequence, subscribers, idempotency keys, messages in
//! publish order with their per-subscriber outcomes, attempt details and retention deadlines.
//! Restoring replays these facts through the same transitions as live operation.

use std::collections::BTreeMap;

use bytes::Bytes;
use storage::codec::{DecodeError, Decoder, Encoder};
use storage::{DeadReason, Location};

use crate::delivery::HandlerKind;
use crate::queue::{DeliveryInfo, Meta, QueueState, Remembered, SubscriberSpec};
use crate::scheduler::{DeliveryState, MessageId, SubscriberId};
use crate::settings::QueueSettings;

const VERSION: u32 = 1;

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    #[error("snapshot is malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot has unreadable settings: {0}")]
    Settings(#[from] serde_json::Error),
}

/// What the Space keeps outside its queues.
pub(crate) struct Counters {
    pub next_queue_number: u32,
    pub next_subscriber: u64,
}

fn location(e: &mut Encoder<'_>, l: Location) {
    e.u32(l.segment);
    e.u32(l.offset);
    e.u32(l.len);
}

fn opt_u64(e: &mut Encoder<'_>, v: Option<u64>) {
    match v {
        None => e.u8(0),
        Some(x) => {
            e.u8(1);
            e.u64(x);
        }
    }
}

fn read_opt_u64(d: &mut Decoder) -> Result<Option<u64>, DecodeError> {
    Ok(if d.bool()? { Some(d.u64()?) } else { None })
}

fn reason_code(r: DeadReason) -> u8 {
    match r {
        DeadReason::MaxAttempts => 1,
        DeadReason::ParentDead => 2,
    }
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
    e.u32(queues.len() as u32);
    for q in queues {
        e.str(&q.name);
        e.u32(q.number);
        e.bytes(&serde_json::to_vec(&q.settings).unwrap_or_default());
        e.u64(q.next_seq);
        e.u32(q.subscribers.len() as u32);
        for (id, s) in &q.subscribers {
            e.u64(*id);
            e.str(&s.spec.endpoint);
            e.str(s.spec.handler.name());
            e.opt_str(&s.spec.secret);
            e.u32(s.spec.max_in_flight);
        }
        e.u32(q.idempotency.len() as u32);
        for (key, r) in q.idempotency.iter() {
            e.str(key);
            e.uuid(&r.id);
            e.u64(r.body_hash);
            e.u64(r.expires_at_ms);
        }
        e.u64(q.sched.len() as u64);
        for (id, _, meta) in q.sched.iter_from(None) {
            e.uuid(&id);
            location(&mut e, meta.location);
            e.u32(meta.size);
            e.opt_uuid(&q.sched.parent(id));
            let mut fanout = Vec::new();
            for (sub, s) in &q.subscribers {
                if let Some(state) = q.sched.delivery_state(id, s.slot) {
                    let code = match state {
                        DeliveryState::Acked => 1,
                        DeliveryState::Dead => 2,
                        DeliveryState::Pending | DeliveryState::InFlight => 0,
                    };
                    fanout.push((*sub, code));
                }
            }
            e.u32(fanout.len() as u32);
            for (sub, code) in fanout {
                e.u64(sub);
                e.u8(code);
            }
        }
        e.u32(q.deliveries.len() as u32);
        for ((id, sub), info) in &q.deliveries {
            e.uuid(id);
            opt_u64(&mut e, *sub);
            e.u32(info.attempts);
            e.opt_str(&info.last_error);
            opt_u64(&mut e, info.next_attempt_at_ms);
            opt_u64(&mut e, info.acked_at_ms);
            match info.dead {
                None => e.u8(0),
                Some((reason, at)) => {
                    e.u8(reason_code(reason));
                    e.u64(at);
                }
            }
        }
        e.u32(q.expiry.len() as u32);
        for (at, id) in &q.expiry {
            e.u64(*at);
            e.uuid(id);
        }
    }
    buf
}

/// One restored message, before it is applied.
struct Message {
    id: MessageId,
    meta: Meta,
    parent: Option<MessageId>,
    fanout: Vec<(SubscriberId, u8)>,
}

/// Restores the queues of a snapshot.
pub(crate) fn decode(
    bytes: Bytes,
) -> Result<(Counters, BTreeMap<String, QueueState>), SnapshotError> {
    let mut d = Decoder::new(bytes);
    let version = d.u32()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let counters = Counters {
        next_queue_number: d.u32()?,
        next_subscriber: d.u64()?,
    };
    let mut queues = BTreeMap::new();
    for _ in 0..d.u32()? {
        let name = d.string()?;
        let number = d.u32()?;
        let settings: QueueSettings = serde_json::from_slice(&d.bytes()?)?;
        let mut q = QueueState::new(&name, number, settings);
        let next_seq = d.u64()?;
        for _ in 0..d.u32()? {
            let id = d.u64()?;
            let spec = SubscriberSpec {
                endpoint: d.string()?,
                handler: HandlerKind::parse(&d.string()?).unwrap_or(HandlerKind::Webhook),
                secret: d.opt_string()?,
                max_in_flight: d.u32()?.max(1),
            };
            if let Err(e) = crate::space::add_subscriber_state(&mut q, id, spec) {
                tracing::error!(queue = %name, subscriber = id, error = %e, "subscriber in the snapshot could not be restored");
            }
        }
        for _ in 0..d.u32()? {
            let key = d.string()?;
            let r = Remembered {
                id: d.uuid()?,
                body_hash: d.u64()?,
                expires_at_ms: d.u64()?,
            };
            q.idempotency.insert(key, r);
        }
        let count = d.u64()?;
        let mut messages = Vec::new();
        for _ in 0..count {
            let id = d.uuid()?;
            let meta = Meta {
                location: Location {
                    segment: d.u32()?,
                    offset: d.u32()?,
                    len: d.u32()?,
                },
                size: d.u32()?,
            };
            let parent = d.opt_uuid()?;
            let n = d.u32()? as usize;
            if d.remaining() < n.saturating_mul(9) {
                return Err(DecodeError::Truncated {
                    at: 0,
                    needed: n * 9,
                }
                .into());
            }
            let mut fanout = Vec::with_capacity(n);
            for _ in 0..n {
                fanout.push((d.u64()?, d.u8()?));
            }
            messages.push(Message {
                id,
                meta,
                parent,
                fanout,
            });
        }
        let mut deliveries = Vec::new();
        for _ in 0..d.u32()? {
            let id = d.uuid()?;
            let sub = read_opt_u64(&mut d)?;
            let mut info = DeliveryInfo {
                attempts: d.u32()?,
                last_error: d.opt_string()?,
                next_attempt_at_ms: read_opt_u64(&mut d)?,
                acked_at_ms: read_opt_u64(&mut d)?,
                dead: None,
            };
            info.dead = match d.u8()? {
                0 => None,
                1 => Some((DeadReason::MaxAttempts, d.u64()?)),
                _ => Some((DeadReason::ParentDead, d.u64()?)),
            };
            deliveries.push(((id, sub), info));
        }
        let mut expiry = Vec::new();
        for _ in 0..d.u32()? {
            expiry.push((d.u64()?, d.uuid()?));
        }

        // Apply in publish order (the sequence inside the id), so that parents come first.
        messages.sort_by_key(|m| crate::ids::parts(m.id).map_or(0, |(_, seq)| seq));
        let mut wake = Vec::new();
        for m in messages {
            let fanout: Vec<SubscriberId> = m.fanout.iter().map(|(s, _)| *s).collect();
            q.insert_published(m.id, m.parent, &fanout, m.meta, 0, &mut wake);
            for (sub, code) in &m.fanout {
                match code {
                    1 => q.ack(m.id, *sub, 0, &mut wake),
                    2 => q.gave_up(m.id, *sub, 0, None, 0, &mut wake),
                    _ => {}
                }
            }
        }
        q.next_seq = q.next_seq.max(next_seq);
        q.deliveries = deliveries.into_iter().collect();
        q.expiry = expiry.into_iter().collect();
        queues.insert(name, q);
    }
    d.finish()?;
    Ok((counters, queues))
}

/// Splits an encoded snapshot into checkpoint parts of at most `part_bytes`.
pub(crate) fn parts(snapshot: Vec<u8>, part_bytes: usize) -> Vec<Bytes> {
    let all = Bytes::from(snapshot);
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
