//! A queue's durable state in a canonical form: what a restart must rebuild, with nothing that
//! depends on how it was built (slots, cursors, attempts under way, hash map order). Live
//! operation, replay of the log and restore from a snapshot must give equal images.

use super::QueueState;
use crate::model::{DeadReason, MessageId, QueueNumber, SubscriberId};
use crate::settings::QueueSettings;

/// One queue's durable state.
/// A subscriber in a [`QueueImage`]: its id and every setting.
pub type SubscriberImage = (SubscriberId, super::SubscriberSpec);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueImage {
    pub name: String,
    pub number: QueueNumber,
    pub settings: QueueSettings,
    pub next_seq: u64,
    pub subscribers: Vec<SubscriberImage>,
    /// (key, message, expiry) of keys still in their window at the image's time.
    pub idempotency: Vec<(String, MessageId, u64)>,
    /// Parents in other queues that children here name, as this queue learned them, by id.
    pub foreign_parents: Vec<(MessageId, crate::model::ParentState)>,
    /// (copy, message it copies) of the copies a replay published, by copy.
    pub replays: Vec<(MessageId, MessageId)>,
    pub messages: Vec<MessageImage>,
    /// (message, subscriber or `None` for the message itself, attempts, last error, next
    /// attempt, acked at, dead reason and time)
    #[allow(clippy::type_complexity)]
    pub deliveries: Vec<(
        MessageId,
        Option<SubscriberId>,
        u32,
        Option<String>,
        Option<u64>,
        Option<u64>,
        Option<(DeadReason, u64)>,
    )>,
    /// (when retention removes it, message)
    pub expiry: Vec<(u64, MessageId)>,
    /// Ranges of sequences of dead messages retention removed.
    pub dead_removed: Vec<(u64, u64)>,
}

/// One message's durable state. (Its state as the API shows it also depends on attempts under
/// way, which are not durable: it is derived from these fields.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageImage {
    pub id: MessageId,
    pub parents: crate::model::Parents,
    pub content_type: Option<String>,
    /// `None` without one (or when the queue's table was full).
    pub event_type: Option<String>,
    pub size: u32,
    pub location: storage::Location,
    /// Subscribers of its fan-out set, with whether each acknowledged it or gave up.
    pub fanout: Vec<(SubscriberId, bool, bool)>,
    pub waiting: bool,
    /// Held for its due time, and when that is.
    pub scheduled: Option<u64>,
    pub parent_dead: bool,
}

impl QueueState {
    pub fn image(&self, now_ms: u64) -> QueueImage {
        let subscribers = self
            .subscribers
            .iter()
            .map(|(id, s)| (*id, s.spec.clone()))
            .collect();
        let mut idempotency: Vec<_> = self
            .idempotency
            .iter()
            .filter(|(_, r)| r.expires_at_ms > now_ms)
            .map(|(k, r)| (k.clone(), r.id, r.expires_at_ms))
            .collect();
        idempotency.sort();
        // The due time of each scheduled message (the earliest, should one be listed twice).
        let mut due: std::collections::HashMap<MessageId, u64> = std::collections::HashMap::new();
        for (at, id) in self.due.iter() {
            let e = due.entry(id).or_insert(at);
            *e = (*e).min(at);
        }
        let messages = self
            .sched
            .iter_from(None)
            .filter_map(|(id, _, meta)| {
                let raw = self.sched.raw(id)?;
                let fanout = self
                    .subscribers
                    .iter()
                    .filter(|(_, s)| raw.fanout.contains(s.slot))
                    .map(|(sub, s)| (*sub, raw.acked.contains(s.slot), raw.dead.contains(s.slot)))
                    .collect();
                Some(MessageImage {
                    id,
                    parents: raw.parents.clone(),
                    content_type: self
                        .content_type_name(meta.content_type)
                        .map(|n| n.to_string()),
                    event_type: self
                        .event_type_name(meta.event_type)
                        .flatten()
                        .map(|n| n.to_string()),
                    size: meta.size,
                    location: meta.location,
                    fanout,
                    waiting: raw.waiting,
                    scheduled: raw.scheduled.then(|| due.get(&id).copied().unwrap_or(0)),
                    parent_dead: raw.parent_dead,
                })
            })
            .collect();
        let mut deliveries: Vec<_> = self
            .deliveries
            .iter()
            .map(|((m, s), i)| {
                (
                    *m,
                    *s,
                    i.attempts,
                    i.last_error.clone(),
                    i.next_attempt_at_ms,
                    i.acked_at_ms,
                    i.dead,
                )
            })
            .collect();
        deliveries.sort_by_key(|d| (d.0, d.1));
        QueueImage {
            name: self.name.to_string(),
            number: self.number,
            settings: self.settings,
            next_seq: self.next_seq,
            subscribers,
            idempotency,
            foreign_parents: {
                let mut f = self.foreign_parents();
                f.sort_unstable_by_key(|(p, _)| *p);
                f
            },
            replays: {
                let mut r: Vec<_> = self.replays.iter().map(|(c, o)| (*c, *o)).collect();
                r.sort_unstable();
                r
            },
            messages,
            deliveries,
            expiry: self.expiry.by_time.iter().copied().collect(),
            dead_removed: self.dead_removed.ranges().collect(),
        }
    }
}
