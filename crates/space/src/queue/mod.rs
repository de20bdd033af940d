//! The in-memory state of one queue, and the transitions shared by live operation and replay.
//!
//! Every method here is synchronous and does no I/O: the Space appends the record first (or
//! reads it back during replay) and then applies it here, under the queue's lock. Live
//! operation and recovery therefore run the very same code.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use storage::{DeadReason, Location};
use tokio::sync::{Notify, Semaphore, watch};

use crate::delivery::HandlerKind;
use crate::scheduler::{
    DeadCause, DeliveryState, Event, Lineage, MessageId, MessageState, Scheduler, Slot, Slots,
    SubscriberId,
};
use crate::settings::QueueSettings;

/// What the Space keeps in memory per message besides its scheduling state: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The `Published` record (body included) in the log.
    pub location: Location,
    /// Body size in bytes.
    pub size: u32,
}

/// A subscriber as the user configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberSpec {
    pub endpoint: String,
    pub handler: HandlerKind,
    /// `whsec_<base64>`; never shown by the API.
    pub secret: Option<String>,
    pub max_in_flight: u32,
}

pub(crate) struct Subscriber {
    pub slot: Slot,
    pub spec: SubscriberSpec,
    /// `spec.endpoint`, shared with every attempt instead of copied into each.
    pub endpoint: Arc<str>,
    /// The decoded key of `spec.secret`.
    pub key: Option<Arc<[u8]>>,
    /// Woken when messages are released to this subscriber.
    pub notify: Arc<Notify>,
    /// `max_in_flight` permits: an attempt under way or a retry waiting holds one.
    pub limit: Arc<Semaphore>,
    /// Set to true when the subscriber is removed (or its queue deleted): its tasks stop.
    pub stop: watch::Sender<bool>,
}

/// Attempts and outcome of one (message, subscriber) pair, kept only once there is something
/// to say (a failure, an ack of a message still held, a dead letter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeliveryInfo {
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<u64>,
    pub acked_at_ms: Option<u64>,
    pub dead: Option<(DeadReason, u64)>,
}

/// A remembered `Idempotency-Key`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remembered {
    pub id: MessageId,
    pub body_hash: u64,
    pub expires_at_ms: u64,
}

/// Idempotency keys with their deadlines in arrival order, so that expiring them costs only
/// what expires (the sweeper runs every second; a full scan of a big window would not be idle).
#[derive(Default)]
pub(crate) struct IdempotencyKeys {
    keys: HashMap<String, Remembered>,
    deadlines: VecDeque<(u64, String)>,
}

impl IdempotencyKeys {
    pub fn get(&self, key: &str) -> Option<&Remembered> {
        self.keys.get(key)
    }

    pub fn insert(&mut self, key: String, r: Remembered) {
        self.deadlines.push_back((r.expires_at_ms, key.clone()));
        self.keys.insert(key, r);
    }

    pub fn remove(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Forgets keys whose window is over. Deadlines are in arrival order; a window changed
    /// to be shorter only lets a key live until the ones before it expire.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.deadlines.front() {
            if *at > now_ms {
                break;
            }
            let Some((at, key)) = self.deadlines.pop_front() else {
                break;
            };
            if self.keys.get(&key).is_some_and(|r| r.expires_at_ms == at) {
                self.keys.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Remembered)> {
        self.keys.iter()
    }
}

pub(crate) struct QueueState {
    pub name: Arc<str>,
    pub number: u32,
    pub settings: QueueSettings,
    pub sched: Scheduler<Meta>,
    pub subscribers: BTreeMap<SubscriberId, Subscriber>,
    /// Sequence of the next message id.
    pub next_seq: u64,
    /// Messages waiting, ready or delivering, and their bytes: what the limits bound.
    pub undelivered: u64,
    pub undelivered_bytes: u64,
    /// Publishes accepted but not yet durable: counted against the limits too.
    pub reserved: u64,
    /// Their ids: not yet issued as far as parents and idempotency keys are concerned.
    pub pending: std::collections::HashSet<MessageId>,
    pub reserved_bytes: u64,
    pub idempotency: IdempotencyKeys,
    pub deliveries: HashMap<(MessageId, Option<SubscriberId>), DeliveryInfo>,
    /// Finished messages and when retention removes them.
    pub expiry: BTreeSet<(u64, MessageId)>,
    /// Set when the queue is deleted: its tasks stop, its calls fail.
    pub deleted: bool,
    /// Woken when messages are removed (discarded, expired): a retry waiting out its backoff
    /// for one of them lets go of its `max_in_flight` permit at once.
    pub removed: Arc<Notify>,
}

/// Subscribers to wake after a change.
pub(crate) type Wake = Vec<Arc<Notify>>;

impl QueueState {
    pub fn new(name: &str, number: u32, settings: QueueSettings) -> QueueState {
        QueueState {
            name: Arc::from(name),
            number,
            settings,
            sched: Scheduler::new(settings.on_parent_dead),
            subscribers: BTreeMap::new(),
            next_seq: 0,
            undelivered: 0,
            undelivered_bytes: 0,
            reserved: 0,
            pending: std::collections::HashSet::new(),
            reserved_bytes: 0,
            idempotency: IdempotencyKeys::default(),
            deliveries: HashMap::new(),
            expiry: BTreeSet::new(),
            deleted: false,
            removed: Arc::new(Notify::new()),
        }
    }

    pub fn set_settings(&mut self, settings: QueueSettings) {
        self.settings = settings;
        self.sched.set_on_parent_dead(settings.on_parent_dead);
    }

    /// Whether this queue issued `id` (it may since have been removed).
    pub fn issued(&self, id: MessageId) -> bool {
        !self.pending.contains(&id)
            && matches!(crate::ids::parts(id), Some((n, seq)) if n == self.number && seq < self.next_seq)
    }

    pub fn slot_of(&self, sub: SubscriberId) -> Option<Slot> {
        self.subscribers.get(&sub).map(|s| s.slot)
    }

    /// Applies an accepted message: durable already, or replayed.
    pub fn insert_published(
        &mut self,
        id: MessageId,
        parent: Option<MessageId>,
        fanout: &[SubscriberId],
        meta: Meta,
        now_ms: u64,
        wake: &mut Wake,
    ) {
        if let Some((_, seq)) = crate::ids::parts(id) {
            self.next_seq = self.next_seq.max(seq + 1);
        }
        let mask = fanout
            .iter()
            .filter_map(|s| self.slot_of(*s))
            .fold(0u64, |m, slot| m | (1 << slot.index()));
        let lineage = match parent {
            None => Lineage::Root,
            Some(p) if self.sched.contains(p) => Lineage::Child(p),
            // Gone (delivered and removed, or discarded): nothing left to wait for.
            Some(p) => Lineage::ChildOfRemoved(p),
        };
        self.undelivered += 1;
        self.undelivered_bytes += u64::from(meta.size);
        match self.sched.publish(id, lineage, Slots(mask), meta) {
            Ok(events) => self.handle(events, now_ms, wake),
            Err(e) => {
                // Only a duplicate id can get here (a record replayed twice): harmless.
                self.undelivered -= 1;
                self.undelivered_bytes -= u64::from(meta.size);
                tracing::warn!(queue = %self.name, error = %e, "ignoring a published record");
            }
        }
    }

    pub fn ack(&mut self, id: MessageId, sub: SubscriberId, at_ms: u64, wake: &mut Wake) {
        let Some(slot) = self.slot_of(sub) else {
            return;
        };
        if self.sched.delivery_state(id, slot).is_none() {
            return;
        }
        let events = self.sched.ack(id, slot);
        if self.sched.contains(id) {
            let info = self.deliveries.entry((id, Some(sub))).or_default();
            info.acked_at_ms = Some(at_ms);
            info.next_attempt_at_ms = None;
        }
        self.handle(events, at_ms, wake);
    }

    pub fn failed(
        &mut self,
        id: MessageId,
        sub: SubscriberId,
        attempt: u32,
        error: String,
        next_attempt_at_ms: Option<u64>,
    ) {
        if self.sched.contains(id) && self.slot_of(sub).is_some() {
            let info = self.deliveries.entry((id, Some(sub))).or_default();
            info.attempts = info.attempts.max(attempt);
            info.last_error = Some(error);
            info.next_attempt_at_ms = next_attempt_at_ms;
        }
    }

    pub fn gave_up(
        &mut self,
        id: MessageId,
        sub: SubscriberId,
        attempts: u32,
        error: Option<String>,
        at_ms: u64,
        wake: &mut Wake,
    ) {
        let Some(slot) = self.slot_of(sub) else {
            return;
        };
        if !self.sched.contains(id) {
            return;
        }
        let info = self.deliveries.entry((id, Some(sub))).or_default();
        info.attempts = info.attempts.max(attempts);
        if error.is_some() {
            info.last_error = error;
        }
        info.next_attempt_at_ms = None;
        info.dead = Some((DeadReason::MaxAttempts, at_ms));
        let events = self.sched.give_up(id, slot);
        self.handle(events, at_ms, wake);
    }

    /// Sends a dead message again; returns the subscribers it goes to.
    pub fn redrive(
        &mut self,
        id: MessageId,
        at_ms: u64,
        wake: &mut Wake,
    ) -> Result<Vec<SubscriberId>, crate::ScheduleError> {
        let was_dead = self.sched.state(id) == Some(MessageState::Dead);
        let (slots, events) = self.sched.redrive(id)?;
        let subs: Vec<SubscriberId> = self
            .subscribers
            .iter()
            .filter(|(_, s)| slots.contains(s.slot))
            .map(|(id, _)| *id)
            .collect();
        // Attempts start again; the dead letters are gone.
        for sub in &subs {
            self.deliveries.remove(&(id, Some(*sub)));
        }
        self.deliveries.remove(&(id, None));
        if was_dead {
            self.undelivered += 1;
            if let Some(m) = self.sched.meta(id) {
                self.undelivered_bytes += u64::from(m.size);
            }
            self.expiry.retain(|(_, m)| *m != id);
        }
        self.handle(events, at_ms, wake);
        Ok(subs)
    }

    /// Removes a message (discarded, or its retention is over).
    pub fn remove(
        &mut self,
        id: MessageId,
        now_ms: u64,
        wake: &mut Wake,
    ) -> Result<(), crate::ScheduleError> {
        let state = self.sched.state(id);
        let (meta, events) = self.sched.remove(id)?;
        self.removed.notify_waiters();
        if matches!(
            state,
            Some(MessageState::Waiting | MessageState::Ready | MessageState::Delivering)
        ) {
            self.undelivered -= 1;
            self.undelivered_bytes -= u64::from(meta.size);
        }
        // By key, not by a scan of the map: it holds an entry per failed attempt still owed,
        // millions with a subscriber down. Entries of removed subscribers went with them.
        for sub in self.subscribers.keys() {
            self.deliveries.remove(&(id, Some(*sub)));
        }
        self.deliveries.remove(&(id, None));
        self.handle(events, now_ms, wake);
        Ok(())
    }

    /// Books what the scheduler reports: counters, retention, dead letters, wake-ups.
    pub fn handle(&mut self, events: Vec<Event>, now_ms: u64, wake: &mut Wake) {
        let mut remove_now = Vec::new();
        for e in events {
            match e {
                Event::Released { slots, .. } => {
                    for s in self.subscribers.values() {
                        if slots.contains(s.slot) {
                            wake.push(s.notify.clone());
                        }
                    }
                }
                Event::Delivered { message } => {
                    self.finished(message);
                    let keep = self.settings.retention.delivered.as_millis();
                    if keep == 0 {
                        remove_now.push(message);
                    } else {
                        self.expiry.insert((now_ms.saturating_add(keep), message));
                    }
                }
                Event::Dead { message, cause } => {
                    self.finished(message);
                    if cause == DeadCause::ParentDead {
                        self.deliveries.insert(
                            (message, None),
                            DeliveryInfo {
                                dead: Some((DeadReason::ParentDead, now_ms)),
                                ..DeliveryInfo::default()
                            },
                        );
                    }
                    let keep = self.settings.retention.dead.as_millis();
                    self.expiry.insert((now_ms.saturating_add(keep), message));
                }
            }
        }
        for m in remove_now {
            let _ = self.remove(m, now_ms, wake);
        }
    }

    /// A message left the undelivered class.
    fn finished(&mut self, id: MessageId) {
        if let Some(meta) = self.sched.meta(id) {
            self.undelivered = self.undelivered.saturating_sub(1);
            self.undelivered_bytes = self.undelivered_bytes.saturating_sub(u64::from(meta.size));
        }
    }

    /// Removes what retention and the idempotency window let go of.
    pub fn expire(&mut self, now_ms: u64, wake: &mut Wake) {
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now_ms {
                break;
            }
            self.expiry.pop_first();
            let finished = matches!(
                self.sched.state(id),
                Some(MessageState::Delivered | MessageState::Dead)
            );
            if finished {
                let _ = self.remove(id, now_ms, wake);
            }
        }
        self.idempotency.expire(now_ms);
    }

    /// The per-subscriber view of a message for the API.
    pub fn delivery_views(&self, id: MessageId) -> Vec<DeliveryView> {
        let mut out = Vec::new();
        for (sub_id, sub) in &self.subscribers {
            let Some(state) = self.sched.delivery_state(id, sub.slot) else {
                continue;
            };
            let info = self
                .deliveries
                .get(&(id, Some(*sub_id)))
                .cloned()
                .unwrap_or_default();
            out.push(DeliveryView {
                subscriber: *sub_id,
                endpoint: sub.spec.endpoint.clone(),
                state,
                attempts: info.attempts,
                last_error: info.last_error,
                next_attempt_at_ms: info.next_attempt_at_ms,
                acked_at_ms: info.acked_at_ms,
            });
        }
        out
    }

    /// How long the oldest undelivered message has waited.
    pub fn oldest_undelivered_age(&self, now_ms: u64) -> Option<Duration> {
        self.sched
            .iter_from(None)
            .find(|(_, s, _)| {
                matches!(
                    s,
                    MessageState::Waiting | MessageState::Ready | MessageState::Delivering
                )
            })
            .map(|(id, _, _)| Duration::from_millis(now_ms.saturating_sub(crate::ids::unix_ms(id))))
    }
}

/// One subscriber's view of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub subscriber: SubscriberId,
    pub endpoint: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<u64>,
    pub acked_at_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(n: u128, expires_at_ms: u64) -> Remembered {
        Remembered {
            id: uuid::Uuid::from_u128(n),
            body_hash: 0,
            expires_at_ms,
        }
    }

    #[test]
    fn idempotency_keys_expire_in_deadline_order_and_a_renewed_key_stays() {
        let mut k = IdempotencyKeys::default();
        k.insert("a".into(), remembered(1, 10));
        k.insert("b".into(), remembered(2, 20));
        k.insert("a".into(), remembered(3, 30)); // reused after its window: renewed
        k.expire(15);
        assert_eq!(k.get("a").map(|r| r.id), Some(uuid::Uuid::from_u128(3)));
        assert!(k.get("b").is_some());
        k.expire(25);
        assert!(k.get("b").is_none());
        assert_eq!(k.len(), 1);
        k.expire(30);
        assert_eq!(k.len(), 0);
    }
}

#[cfg(test)]
mod issued_tests {
    use super::*;

    #[test]
    fn an_id_whose_publish_is_not_yet_durable_is_not_issued() {
        let mut q = QueueState::new("q", 4, QueueSettings::default());
        q.next_seq = 10;
        let reserved = crate::ids::message_id(1, 4, 9);
        assert!(q.issued(reserved));
        q.pending.insert(reserved);
        assert!(
            !q.issued(reserved),
            "a child must not name a parent that may never exist"
        );
        assert!(
            !q.issued(crate::ids::message_id(1, 4, 10)),
            "beyond the sequence"
        );
        assert!(!q.issued(crate::ids::message_id(1, 5, 1)), "another queue");
    }
}
