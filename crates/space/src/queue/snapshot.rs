//! One queue in a checkpoint snapshot: every durable fact, written and restored verbatim, so
//! that a restore reaches exactly the state replay of the log would (the layout is in
//! `docs/format.md`).

use storage::Location;
use storage::codec::{Decoder, Encoder};

use super::{DeliveryInfo, Interned, Meta, QueueState, SubscriberSpec};
use crate::delivery::HandlerKind;
use crate::error::SnapshotError;
use crate::model::{DeadReason, MessageId, Parents};
use crate::scheduler::{RawEntry, Slots};
use crate::settings::QueueSettings;

/// A message's code for one subscriber of its fan-out set.
const PENDING: u8 = 0;
const ACKED: u8 = 1;
const DEAD: u8 = 2;

const WAITING: u8 = 1;
const PARENT_DEAD: u8 = 2;
const SCHEDULED: u8 = 4;
/// The message has more than one parent: the others follow the flags (version 5).
const JOIN: u8 = 8;

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
            e.bytes(&s.spec.options());
        }
        for names in [self.content_types.all(), self.event_types.all()] {
            e.u32(names.len() as u32);
            for n in names {
                e.str(n);
            }
        }
        e.u32(self.idempotency.len() as u32);
        for (key, r) in self.idempotency.iter() {
            e.str(key);
            e.uuid(&r.id);
            e.u64(r.body_hash);
            e.u64(r.expires_at_ms);
        }
        let mut foreign = self.foreign_parents();
        foreign.sort_unstable_by_key(|(p, _)| *p);
        e.u32(foreign.len() as u32);
        for (parent, state) in foreign {
            e.uuid(&parent);
            e.u8(state.to_u8());
        }
        let mut replays: Vec<_> = self.replays.iter().map(|(c, o)| (*c, *o)).collect();
        replays.sort_unstable();
        e.u32(replays.len() as u32);
        for (copy, of) in replays {
            e.uuid(&copy);
            e.uuid(&of);
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
            e.u16(meta.event_type.index());
            let parents = raw.parents.as_slice();
            e.opt_uuid(&parents.first().copied());
            e.u8((u8::from(raw.waiting) * WAITING)
                | (u8::from(raw.parent_dead) * PARENT_DEAD)
                | (u8::from(raw.scheduled) * SCHEDULED)
                | (u8::from(parents.len() > 1) * JOIN));
            if parents.len() > 1 {
                e.uuids(&parents[1..]);
            }
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
        let mut due: Vec<(u64, MessageId)> = self
            .due
            .iter()
            .filter(|(_, id)| self.sched.raw(*id).is_some_and(|r| r.scheduled))
            .collect();
        due.sort_unstable();
        e.u32(due.len() as u32);
        for (at, id) in due {
            e.u64(at);
            e.uuid(&id);
        }
        e.u32(self.dead_removed.ranges().len() as u32);
        for (start, end) in self.dead_removed.ranges() {
            e.u64(start);
            e.u64(end);
        }
        e.u64(self.dead_removed.forgotten());
    }

    /// Decodes a queue of a snapshot of layout `version` (2: subscribers without options).
    pub(crate) fn decode(d: &mut Decoder, version: u32) -> Result<QueueState, SnapshotError> {
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
            let secret = d.opt_string()?;
            let max_in_flight = d.u32()?;
            let options = if version >= 3 {
                d.bytes()?
            } else {
                bytes::Bytes::new()
            };
            let spec =
                SubscriberSpec::from_record(endpoint, handler, secret, max_in_flight, &options)
                    .map_err(|e| SnapshotError::Subscriber(id, e.to_string()))?;
            q.apply_subscriber_added(id, spec)
                .map_err(|e| SnapshotError::Subscriber(id, e.to_string()))?;
        }
        for _ in 0..d.count(4)? {
            let name = d.string()?;
            q.content_types.intern(&name);
        }
        if version >= 4 {
            for _ in 0..d.count(4)? {
                let name = d.string()?;
                q.event_types.intern(&name);
            }
        }
        for _ in 0..d.count(4 + 16 + 8 + 8)? {
            let key = d.string()?;
            let r = super::Remembered {
                id: d.uuid()?,
                body_hash: d.u64()?,
                expires_at_ms: d.u64()?,
            };
            q.idempotency.insert(key, r, u64::MAX);
        }
        if version >= 6 {
            for _ in 0..d.count(16 + 1)? {
                let parent = d.uuid()?;
                let state = crate::model::ParentState::from_u8(d.u8()?)?;
                q.sched.restore_foreign(parent, state);
            }
            for _ in 0..d.count(16 + 16)? {
                let copy = d.uuid()?;
                let of = d.uuid()?;
                q.replays.insert(copy, of);
            }
        }
        for _ in 0..d.u64()? {
            q.decode_message(d, version)?;
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
        if version >= 4 {
            for _ in 0..d.count(8 + 16)? {
                let at = d.u64()?;
                let id = d.uuid()?;
                q.due.push(at, id);
            }
        }
        for _ in 0..d.count(16)? {
            let start = d.u64()?;
            let end = d.u64()?;
            q.dead_removed.restore(start, end);
        }
        q.dead_removed.restore_forgotten(d.u64()?);
        Ok(q)
    }

    /// One message of a snapshot of layout `version`, put back as it was.
    fn decode_message(&mut self, d: &mut Decoder, version: u32) -> Result<(), SnapshotError> {
        let id = d.uuid()?;
        let meta = Meta {
            location: Location {
                segment: d.u32()?,
                offset: d.u32()?,
                len: d.u32()?,
            },
            size: d.u32()?,
            content_type: Interned::from_index(d.u16()?),
            event_type: if version >= 4 {
                Interned::from_index(d.u16()?)
            } else {
                Interned::NONE
            },
        };
        let mut parents: Vec<MessageId> = d.opt_uuid()?.into_iter().collect();
        let flags = d.u8()?;
        if version >= 5 && flags & JOIN != 0 {
            parents.extend(d.uuids()?);
        }
        let parents = Parents::new(&parents).map_err(|p| {
            SnapshotError::Inconsistent(format!("message {id} names parent {p} twice"))
        })?;
        let (mut fanout, mut acked, mut dead) = (0u64, 0u64, 0u64);
        for _ in 0..d.count(9)? {
            let sub = d.u64()?;
            let code = d.u8()?;
            let Some(s) = self.subscribers.get(&sub) else {
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
        self.sched
            .restore(
                id,
                RawEntry {
                    meta,
                    parents,
                    fanout: Slots::from_bits(fanout),
                    acked: Slots::from_bits(acked),
                    dead: Slots::from_bits(dead),
                    waiting: flags & WAITING != 0,
                    scheduled: flags & SCHEDULED != 0,
                    parent_dead: flags & PARENT_DEAD != 0,
                },
            )
            .map_err(|e| SnapshotError::Inconsistent(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use storage::codec::{Decoder, Encoder};
    use storage::{Ack, Location, Published};

    use super::*;
    use crate::model::OnParentDead;

    fn published(number: u32, seq: u64, parent: Option<u64>, key: Option<&str>) -> Published {
        Published {
            queue: number,
            id: crate::ids::message_id(1_000 + seq, number, seq),
            parents: parent
                .map(|p| crate::ids::message_id(1_000 + p, number, p))
                .into_iter()
                .collect(),
            content_type: ["text/plain", "application/json"][seq as usize % 2].into(),
            published_at_ms: 1_000 + seq,
            idempotency_key: key.map(str::to_owned),
            fanout: vec![1, 2],
            attributes: Default::default(),
            body: Bytes::from(vec![b'x'; seq as usize]),
        }
    }

    fn at(n: u32) -> Location {
        Location {
            segment: 1,
            offset: 24 + n * 100,
            len: 100,
        }
    }

    /// A queue with a message in every state a snapshot must keep apart: waiting, dead with
    /// its parent (decided under a policy since changed), acked by one and given up by the
    /// other, failed with a retry scheduled, finished and due for removal, and a dead parent
    /// retention removed.
    fn queue_in_every_state() -> QueueState {
        let mut settings = QueueSettings {
            on_parent_dead: OnParentDead::DeadLetter,
            ..QueueSettings::default()
        };
        settings.retention.delivered = crate::Span::secs(60);
        let mut q = QueueState::new("q", 3, settings);
        let spec = |e: &str, max_messages| SubscriberSpec {
            endpoint: e.into(),
            handler: HandlerKind::Webhook,
            secret: Some("whsec_c2VjcmV0".into()),
            max_in_flight: 5,
            batch: crate::delivery::Batching {
                max_messages,
                max_bytes: 4096,
            },
            headers: vec![("authorization".into(), "Bearer s3cret".into())],
            ..Default::default()
        };
        q.apply_subscriber_added(1, spec("http://a/", 1)).unwrap();
        q.apply_subscriber_added(2, spec("http://b/", 50)).unwrap();
        let mut wake = Vec::new();
        let ps: Vec<Published> = vec![
            published(3, 0, None, Some("k0")),
            published(3, 1, Some(0), None),
            published(3, 2, None, None),
            published(3, 3, Some(2), None),
            published(3, 4, None, None),
            published(3, 5, None, None),
        ];
        for (n, p) in ps.iter().enumerate() {
            q.apply_published(p, at(n as u32), &mut wake);
        }
        let ack = |p: &Published, sub| Ack {
            message: p.id,
            subscriber: sub,
            attempt: 2,
            acked_at_ms: 2_000,
        };
        // 0: acked by 1, given up by 2 → dead; its child 1 dies with it (dead_letter).
        q.apply_ack(&ack(&ps[0], 1), &mut wake);
        q.apply_dead_lettered(ps[0].id, 2, 3, Some("HTTP 500"), 2_100, &mut wake);
        // 2: failed once, retry scheduled; its child 3 waits.
        q.apply_failed(ps[2].id, 1, 1, "HTTP 503", Some(9_000));
        // 4: delivered, kept by retention.
        q.apply_ack(&ack(&ps[4], 1), &mut wake);
        q.apply_ack(&ack(&ps[4], 2), &mut wake);
        // 5: dead, then removed by retention.
        q.apply_dead_lettered(ps[5].id, 1, 3, None, 2_200, &mut wake);
        q.apply_dead_lettered(ps[5].id, 2, 3, None, 2_200, &mut wake);
        q.apply_expired(&[ps[5].id], 3_000, &mut wake);
        // The policy changes: what it decided before must stay as it was.
        settings.on_parent_dead = OnParentDead::Wait;
        q.apply_settings(settings, &mut Vec::new());

        // As if earlier dead parents had been forgotten to stay within the limit.
        q.dead_removed.restore_forgotten(7);
        q
    }

    #[test]
    fn a_queue_comes_back_from_its_snapshot_exactly() {
        let q = queue_in_every_state();
        let ps: Vec<Published> = (0..6).map(|seq| published(3, seq, None, None)).collect();
        let mut buf = Vec::new();
        q.encode(&mut Encoder::new(&mut buf));
        let restored = QueueState::decode(
            &mut Decoder::new(Bytes::from(buf)),
            crate::snapshot::VERSION,
        )
        .unwrap();
        assert_eq!(restored.image(0), q.image(0));
        assert_eq!(restored.counts(), q.counts());
        assert_eq!(restored.undelivered_bytes(), q.undelivered_bytes());
        assert_eq!(
            restored.state_of_message(ps[1].id),
            Some(crate::MessageState::Dead)
        );
        assert_eq!(
            restored.state_of_message(ps[3].id),
            Some(crate::MessageState::Waiting)
        );
        assert!(restored.is_dead_removed(ps[5].id));
        assert_eq!(restored.forgotten_dead_parents(), 7);
    }

    /// Writes a whole snapshot of this queue as a seed for the `snapshot` fuzz target, into
    /// `$SYNCBROK_FUZZ_SEEDS/snapshot/` (run by `scripts/fuzz.sh`).
    #[test]
    #[ignore = "writes fuzz seeds; run by scripts/fuzz.sh"]
    fn write_fuzz_seed() {
        let Ok(dir) = std::env::var("SYNCBROK_FUZZ_SEEDS") else {
            return;
        };
        let dir = std::path::Path::new(&dir).join("snapshot");
        std::fs::create_dir_all(&dir).unwrap();
        let q = queue_in_every_state();
        let counters = crate::snapshot::Counters {
            next_queue_number: 4,
            next_subscriber: 3,
            cluster: bytes::Bytes::new(),
        };
        let bytes = crate::snapshot::encode(&counters, [&q].into_iter());
        std::fs::write(dir.join("seed-every-state"), bytes).unwrap();
    }
}

#[cfg(test)]
mod older_layouts {
    use bytes::Bytes;
    use storage::codec::{Decoder, Encoder};

    use super::*;

    /// A queue with one subscriber in the layout of snapshot version 2 (subscribers without
    /// options), written field by field.
    fn version_2_queue() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf);
        e.str("q");
        e.u32(4);
        e.bytes(&serde_json::to_vec(&QueueSettings::default()).unwrap());
        e.u64(0);
        e.u32(1);
        e.u64(9);
        e.str("http://a/");
        e.str("webhook");
        e.opt_str(&None);
        e.u32(8);
        e.u32(0); // content types
        e.u32(0); // idempotency keys
        e.u64(0); // messages
        e.u32(0); // deliveries
        e.u32(0); // expiry
        e.u32(0); // dead removed
        e.u64(0); // forgotten
        buf
    }

    #[test]
    fn a_version_2_queue_reads_with_default_subscriber_options() {
        let mut d = Decoder::new(Bytes::from(version_2_queue()));
        let q = QueueState::decode(&mut d, 2).unwrap();
        d.finish().unwrap();
        let image = q.image(0);
        assert_eq!(
            image.subscribers,
            vec![(
                9,
                SubscriberSpec {
                    endpoint: "http://a/".to_owned(),
                    max_in_flight: 8,
                    ..SubscriberSpec::default()
                }
            )]
        );
        // Read as version 3, the same bytes lack the subscriber's options.
        let mut d = Decoder::new(Bytes::from(version_2_queue()));
        assert!(
            QueueState::decode(&mut d, 3)
                .and_then(|_| Ok(d.finish()?))
                .is_err()
        );
    }
}
