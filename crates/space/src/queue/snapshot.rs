//! One queue in a checkpoint snapshot: every durable fact, written and restored verbatim, so
//! that a restore reaches exactly the state replay of the log would (the layout is in
//! `docs/format.md`).

use storage::Location;
use storage::codec::{Decoder, Encoder};

use super::{DeliveryInfo, Meta, QueueState, SubscriberSpec};
use crate::delivery::HandlerKind;
use crate::model::DeadReason;
use crate::scheduler::{RawEntry, Slots};
use crate::settings::QueueSettings;
use crate::snapshot::SnapshotError;

/// A message's code for one subscriber of its fan-out set.
const PENDING: u8 = 0;
const ACKED: u8 = 1;
const DEAD: u8 = 2;

const WAITING: u8 = 1;
const PARENT_DEAD: u8 = 2;

fn dead_code(d: Option<(DeadReason, u64)>) -> (u8, u64) {
    match d {
        None => (0, 0),
        Some((DeadReason::MaxAttempts, at)) => (1, at),
        Some((DeadReason::ParentDead, at)) => (2, at),
    }
}

fn location(e: &mut Encoder<'_>, l: Location) {
    e.u32(l.segment);
    e.u32(l.offset);
    e.u32(l.len);
}

impl QueueState {
    pub(crate) fn encode(&self, e: &mut Encoder<'_>) {
        e.str(&self.name);
        e.u32(self.number);
        e.bytes(&serde_json::to_vec(&self.settings).unwrap_or_default());
        e.u64(self.next_seq);
        e.u32(self.subscribers.len() as u32);
        for (id, s) in &self.subscribers {
            e.u64(*id);
            e.str(&s.spec.endpoint);
            e.str(s.spec.handler.name());
            e.opt_str(&s.spec.secret);
            e.u32(s.spec.max_in_flight);
        }
        let names = self.content_types.all();
        e.u32(names.len() as u32);
        for n in names {
            e.str(n);
        }
        e.u32(self.idempotency.len() as u32);
        for (key, r) in self.idempotency.iter() {
            e.str(key);
            e.uuid(&r.id);
            e.u64(r.body_hash);
            e.u64(r.expires_at_ms);
        }
        e.u64(self.sched.len() as u64);
        for (id, _, meta) in self.sched.iter_from(None) {
            let Some(raw) = self.sched.raw(id) else {
                continue;
            };
            e.uuid(&id);
            location(e, meta.location);
            e.u32(meta.size);
            e.u16(meta.content_type.index());
            e.opt_uuid(&raw.parent);
            e.u8((u8::from(raw.waiting) * WAITING) | (u8::from(raw.parent_dead) * PARENT_DEAD));
            let fanout: Vec<_> = self
                .subscribers
                .iter()
                .filter(|(_, s)| raw.fanout.contains(s.slot))
                .collect();
            e.u32(fanout.len() as u32);
            for (sub, s) in fanout {
                e.u64(*sub);
                e.u8(if raw.acked.contains(s.slot) {
                    ACKED
                } else if raw.dead.contains(s.slot) {
                    DEAD
                } else {
                    PENDING
                });
            }
        }
        e.u32(self.deliveries.len() as u32);
        for ((id, sub), info) in &self.deliveries {
            e.uuid(id);
            e.opt_u64(sub);
            e.u32(info.attempts);
            e.opt_str(&info.last_error);
            e.opt_u64(&info.next_attempt_at_ms);
            e.opt_u64(&info.acked_at_ms);
            let (code, at) = dead_code(info.dead);
            e.u8(code);
            e.u64(at);
        }
        e.u32(self.expiry.by_time.len() as u32);
        for (at, id) in &self.expiry.by_time {
            e.u64(*at);
            e.uuid(id);
        }
        e.u32(self.dead_removed.ranges().len() as u32);
        for (start, end) in self.dead_removed.ranges() {
            e.u64(start);
            e.u64(end);
        }
    }

    pub(crate) fn decode(d: &mut Decoder) -> Result<QueueState, SnapshotError> {
        let name = d.string()?;
        let number = d.u32()?;
        let settings: QueueSettings = serde_json::from_slice(&d.bytes()?)?;
        let mut q = QueueState::new(&name, number, settings);
        q.next_seq = d.u64()?;
        for _ in 0..d.count(8 + 4 + 4 + 1 + 4)? {
            let id = d.u64()?;
            let endpoint = d.string()?;
            let handler_name = d.string()?;
            let handler = HandlerKind::parse(&handler_name)
                .ok_or(SnapshotError::UnknownHandler(handler_name))?;
            let spec = SubscriberSpec {
                endpoint,
                handler,
                secret: d.opt_string()?,
                max_in_flight: d.u32()?,
            };
            q.apply_subscriber_added(id, spec)
                .map_err(|e| SnapshotError::Subscriber(id, e.to_string()))?;
        }
        for _ in 0..d.count(4)? {
            let name = d.string()?;
            q.content_types.intern(&name);
        }
        for _ in 0..d.count(4 + 16 + 8 + 8)? {
            let key = d.string()?;
            let r = super::Remembered {
                id: d.uuid()?,
                body_hash: d.u64()?,
                expires_at_ms: d.u64()?,
            };
            q.idempotency.insert(key, r);
        }
        let count = d.u64()?;
        for _ in 0..count {
            let id = d.uuid()?;
            let meta = Meta {
                location: Location {
                    segment: d.u32()?,
                    offset: d.u32()?,
                    len: d.u32()?,
                },
                size: d.u32()?,
                content_type: super::ContentType::from_index(d.u16()?),
            };
            let parent = d.opt_uuid()?;
            let flags = d.u8()?;
            let (mut fanout, mut acked, mut dead) = (0u64, 0u64, 0u64);
            for _ in 0..d.count(9)? {
                let sub = d.u64()?;
                let code = d.u8()?;
                let Some(s) = q.subscribers.get(&sub) else {
                    return Err(SnapshotError::Inconsistent(format!(
                        "message {id} names subscriber {sub}, which the queue does not have"
                    )));
                };
                let bit = 1u64 << s.slot.index();
                fanout |= bit;
                match code {
                    ACKED => acked |= bit,
                    DEAD => dead |= bit,
                    _ => {}
                }
            }
            q.sched
                .restore(
                    id,
                    RawEntry {
                        meta,
                        parent,
                        fanout: Slots::from_bits(fanout),
                        acked: Slots::from_bits(acked),
                        dead: Slots::from_bits(dead),
                        waiting: flags & WAITING != 0,
                        parent_dead: flags & PARENT_DEAD != 0,
                    },
                )
                .map_err(|e| SnapshotError::Inconsistent(e.to_string()))?;
        }
        q.sched.finish_restore();
        for _ in 0..d.count(16 + 1 + 4 + 1 + 1 + 1 + 1 + 8)? {
            let id = d.uuid()?;
            let sub = d.opt_u64()?;
            let mut info = DeliveryInfo {
                attempts: d.u32()?,
                last_error: d.opt_string()?,
                next_attempt_at_ms: d.opt_u64()?,
                acked_at_ms: d.opt_u64()?,
                dead: None,
            };
            let code = d.u8()?;
            let at = d.u64()?;
            info.dead = match code {
                0 => None,
                1 => Some((DeadReason::MaxAttempts, at)),
                _ => Some((DeadReason::ParentDead, at)),
            };
            if info.dead.is_some() {
                q.dead_letters.insert((id, sub));
            }
            q.deliveries.insert((id, sub), info);
        }
        for _ in 0..d.count(8 + 16)? {
            let at = d.u64()?;
            let id = d.uuid()?;
            q.expiry.schedule(id, at);
        }
        for _ in 0..d.count(16)? {
            let start = d.u64()?;
            let end = d.u64()?;
            q.dead_removed.restore(start, end);
        }
        Ok(q)
    }
}
