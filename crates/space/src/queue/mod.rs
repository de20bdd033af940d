//! The state of one queue, and the transitions that change it.
//!
//! Every transition here is driven by a record of the log (`apply_*`): live operation appends a
//! record, then applies it (the ack alone is applied first, then queued for the log); replay
//! applies the same records in log order. Nothing here does I/O or reads a clock: times come
//! from the records. The fields are private, so that no other module can change the state
//! except through these transitions, and the counts kept alongside it stay true.
//!
//! - [`reservation`]: publishes checked against the limits and counted before they are in the
//!   log (reserve, then commit or abort);
//! - [`views`]: what the API shows of the queue and its messages;
//! - [`snapshot`]: the queue in a checkpoint, restored verbatim;
//! - [`image`]: the queue's durable state in a canonical form, for comparisons.

mod dead_removed;
mod dispatch;
mod due;
mod effects;
pub mod explain;
mod idempotency;
pub(crate) mod image;
mod interned;
pub(crate) mod reservation;
pub(crate) mod snapshot;
mod subscriber;
pub(crate) mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use storage::{Ack, Location, Published};
use tokio::sync::Notify;

use crate::error::SubscriberError;
use crate::idhash::IdMap;
use crate::model::{
    DeadReason, DeliveryState, MessageId, MessageState, ParentState, QueueNumber, SubscriberId,
};
use crate::scheduler::{
    Event, ParentLink, Removal, ScheduleError, Scheduler, Slot, Slots, Weighed,
};
use crate::settings::QueueSettings;

use dead_removed::DeadRemoved;
pub(crate) use idempotency::body_hash;
use idempotency::{IdempotencyKeys, Remembered};
pub(crate) use interned::Interned;
use interned::Names;
use reservation::PendingPublishes;
pub(crate) use subscriber::Subscriber;
pub use subscriber::{
    Answered, PreviousSecret, RateLimit, SubscriberSpec, SubscriberState, decode_secret,
};

/// What the Space keeps in memory per message besides its scheduling state: 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The `Published` record (body included) in the log.
    pub location: Location,
    /// Body size in bytes.
    pub size: u32,
    pub content_type: Interned,
    /// Its event type, or [`Interned::NONE`].
    pub event_type: Interned,
}

const _: () = assert!(std::mem::size_of::<Meta>() == 20);

impl Weighed for Meta {
    fn weight(&self) -> u64 {
        u64::from(self.size)
    }
}

/// Attempts and outcome of one (message, subscriber) pair, kept only once there is something
/// to say (a failure, an ack of a message still held, a dead letter). The pair
/// (message, `None`) holds a message that died with its parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeliveryInfo {
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<u64>,
    pub acked_at_ms: Option<u64>,
    pub dead: Option<(DeadReason, u64)>,
}

/// Subscribers to wake after a change.
pub(crate) type Wake = Vec<Arc<Notify>>;

/// A message of this queue that children in other queues wait for changed (finished,
/// reopened, removed, or its queue deleted): those queues must learn where it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentChanged {
    pub parent: MessageId,
    pub children_in: Vec<QueueNumber>,
}

/// Where queues pass on changes of their watched messages (the Space's settler), counting
/// what it has not looked at yet.
#[derive(Clone)]
pub(crate) struct SettlerHandle {
    tx: tokio::sync::mpsc::UnboundedSender<ParentChanged>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl SettlerHandle {
    pub fn new(
        tx: tokio::sync::mpsc::UnboundedSender<ParentChanged>,
        pending: Arc<std::sync::atomic::AtomicUsize>,
    ) -> SettlerHandle {
        SettlerHandle { tx, pending }
    }

    pub fn send(&self, change: ParentChanged) {
        use std::sync::atomic::Ordering;
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(change).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Finished messages and when retention removes them.
#[derive(Default)]
struct Expiry {
    by_time: BTreeSet<(u64, MessageId)>,
    by_id: IdMap<MessageId, u64>,
}

impl Expiry {
    fn schedule(&mut self, id: MessageId, at_ms: u64) {
        self.cancel(id);
        self.by_time.insert((at_ms, id));
        self.by_id.insert(id, at_ms);
    }

    fn cancel(&mut self, id: MessageId) {
        if let Some(at) = self.by_id.remove(&id) {
            self.by_time.remove(&(at, id));
        }
    }

    /// Up to `max` messages due at `now_ms`, earliest first.
    fn due(&self, now_ms: u64, max: usize) -> Vec<MessageId> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }
}

pub(crate) struct QueueState {
    name: Arc<str>,
    number: QueueNumber,
    settings: QueueSettings,
    sched: Scheduler<Meta>,
    subscribers: BTreeMap<SubscriberId, Subscriber>,
    /// Sequence of the next message id.
    next_seq: u64,
    /// Publishes checked and counted, whose records are not in the log yet.
    pending: PendingPublishes,
    idempotency: IdempotencyKeys,
    deliveries: IdMap<(MessageId, Option<SubscriberId>), DeliveryInfo>,
    /// The dead (message, subscriber) pairs of `deliveries`, in order: pages of dead letters
    /// cost what they show.
    dead_letters: BTreeSet<(MessageId, Option<SubscriberId>)>,
    expiry: Expiry,
    /// When each scheduled message is due.
    due: due::DueTimes,
    dead_removed: DeadRemoved,
    content_types: Names,
    event_types: Names,
    /// No undelivered message is older than this one (a hint that only moves forward, and back
    /// when a message becomes undelivered again): the oldest undelivered age costs only the
    /// messages that finished since it was last asked.
    oldest_hint: std::cell::Cell<Option<MessageId>>,
    /// Set when the queue is deleted: its tasks stop, its calls fail.
    deleted: bool,
    /// Messages of this queue that children in other queues name, and those queues. Not
    /// durable: rebuilt at start from what every queue's scheduler holds of its foreign
    /// parents.
    watched: IdMap<MessageId, Vec<QueueNumber>>,
    /// Where changes of watched messages go (the Space's settler); `None` during replay, where
    /// the records say what the other queues learned.
    settler: Option<SettlerHandle>,
    /// Where deaths decided inside the queue's own transitions (children dead with a parent)
    /// are told to watchers; `None` during replay, which tells nothing.
    feed: Option<crate::feed_event::FeedSender>,
    /// Copies a replay published, and the message each copies.
    replays: IdMap<MessageId, MessageId>,
    /// Children released since the queue was built (live or by replay): a live change tells
    /// how many it released by the difference (its latency is observed per child).
    released: u64,
}

impl QueueState {
    pub fn new(name: &str, number: QueueNumber, settings: QueueSettings) -> QueueState {
        QueueState {
            name: Arc::from(name),
            number,
            settings,
            sched: {
                let mut s = Scheduler::new(settings.on_parent_dead);
                let _none_waits_yet = s.set_causality(settings.causality);
                s
            },
            subscribers: BTreeMap::new(),
            next_seq: 0,
            pending: PendingPublishes::default(),
            idempotency: IdempotencyKeys::default(),
            deliveries: IdMap::default(),
            dead_letters: BTreeSet::new(),
            expiry: Expiry::default(),
            due: due::DueTimes::default(),
            dead_removed: DeadRemoved::default(),
            content_types: Names::default(),
            event_types: Names::default(),
            oldest_hint: std::cell::Cell::new(None),
            deleted: false,
            watched: IdMap::default(),
            released: 0,
            settler: None,
            feed: None,
            replays: IdMap::default(),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn number(&self) -> QueueNumber {
        self.number
    }

    pub fn settings(&self) -> QueueSettings {
        self.settings
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn subscriber(&self, id: SubscriberId) -> Option<&Subscriber> {
        self.subscribers.get(&id)
    }

    pub fn subscribers(&self) -> impl Iterator<Item = (SubscriberId, &Subscriber)> {
        self.subscribers.iter().map(|(id, s)| (*id, s))
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.sched.contains(id)
    }

    /// A held message's state; `None` if the queue no longer holds it.
    pub fn state_of_message(&self, id: MessageId) -> Option<MessageState> {
        self.sched.state(id)
    }

    pub fn meta(&self, id: MessageId) -> Option<Meta> {
        self.sched.meta(id).copied()
    }

    /// Repoints a message whose record compaction copied from `from` to `to`.
    pub fn relocate(&mut self, id: MessageId, from: Location, to: Location) {
        if let Some(meta) = self.sched.meta_mut(id)
            && meta.location == from
        {
            meta.location = to;
        }
    }

    /// Whether this queue issued `id` and its publish is durable (it may since have been
    /// removed).
    pub fn issued(&self, id: MessageId) -> bool {
        !self.pending.holds(id)
            && matches!(crate::ids::parts(id), Some((n, seq)) if n == self.number && seq < self.next_seq)
    }

    /// Whether `id` is a dead message that retention removed.
    fn is_dead_removed(&self, id: MessageId) -> bool {
        matches!(crate::ids::parts(id), Some((n, seq)) if n == self.number && self.dead_removed.contains(seq))
    }

    fn slot_of(&self, sub: SubscriberId) -> Option<Slot> {
        self.subscribers.get(&sub).map(|s| s.slot)
    }

    /// A message is waiting, ready or being delivered again: the oldest may be older now.
    fn note_undelivered(&self, id: MessageId) {
        if self.oldest_hint.get().is_some_and(|h| id < h) {
            self.oldest_hint.set(Some(id));
        }
    }

    // ---- transitions, driven by records ----

    /// A message was accepted (its record is durable, or replayed).
    pub fn apply_published(&mut self, p: &Published, location: Location, wake: &mut Wake) {
        if let Some((_, seq)) = crate::ids::parts(p.id) {
            self.next_seq = self.next_seq.max(seq + 1);
        }
        if let Some(of) = p.attributes.replay_of {
            self.replays.insert(p.id, of);
        }
        if let Some(key) = &p.idempotency_key {
            let window = self.settings.idempotency.window.as_millis();
            self.idempotency.insert(
                key.clone(),
                Remembered {
                    id: p.id,
                    body_hash: body_hash(&p.body),
                    expires_at_ms: p.published_at_ms.saturating_add(window),
                },
                self.settings.idempotency.max_keys,
            );
        }
        let meta = Meta {
            location,
            size: u32::try_from(p.body.len()).unwrap_or(u32::MAX),
            content_type: self.content_types.intern(&p.content_type),
            event_type: match &p.attributes.event_type {
                Some(t) => self.event_types.intern(t),
                None => Interned::NONE,
            },
        };
        let mask = p
            .fanout
            .iter()
            .filter_map(|s| self.slot_of(*s))
            .fold(0u64, |m, slot| m | (1 << slot.index()));
        let links: Vec<ParentLink> = p
            .parents
            .iter()
            .map(|&parent| {
                if crate::ids::parts(parent).is_some_and(|(n, _)| n != self.number) {
                    ParentLink::Foreign(parent)
                } else if self.sched.contains(parent) {
                    ParentLink::Held(parent)
                } else if self.is_dead_removed(parent) {
                    ParentLink::RemovedDead(parent)
                } else {
                    // Gone (delivered and removed, or discarded): nothing left to wait for.
                    ParentLink::Removed(parent)
                }
            })
            .collect();
        // Scheduled only if due after it was accepted (the record says both): live operation
        // and replay decide alike.
        let due = p
            .attributes
            .deliver_at_ms
            .filter(|at| *at > p.published_at_ms);
        match self
            .sched
            .publish(p.id, &links, Slots::from_bits(mask), meta, due.is_some())
        {
            Ok(events) => {
                if let Some(at) = due {
                    self.note_due(at, p.id);
                }
                self.note_undelivered(p.id);
                self.handle(events, p.published_at_ms, wake);
            }
            // Only a record replayed twice can get here: harmless.
            Err(e) => tracing::warn!(queue = %self.name, error = %e, "ignoring a published record"),
        }
    }

    /// This queue learned where a parent in another queue stands.
    pub fn apply_parent_settled(
        &mut self,
        parent: MessageId,
        state: ParentState,
        at_ms: u64,
        wake: &mut Wake,
    ) {
        let events = self.sched.settle_foreign(parent, state);
        self.handle(events, at_ms, wake);
    }

    /// Where a parent in another queue stands as this queue last learned it; `None` if no
    /// child here names it.
    pub fn known_parent_state(&self, parent: MessageId) -> Option<ParentState> {
        self.sched.foreign_parent(parent)
    }

    /// Parents in other queues that children here name, as this queue last learned them.
    pub fn foreign_parents(&self) -> Vec<(MessageId, ParentState)> {
        self.sched.foreign_parents().collect()
    }

    /// Where a message this queue issued stands, as children in other queues see it.
    pub fn state_as_parent(&self, id: MessageId) -> ParentState {
        if self.deleted {
            return ParentState::Gone;
        }
        match self.sched.parent_state(id) {
            Some(s) => s,
            None if self.is_dead_removed(id) => ParentState::GoneDead,
            None => ParentState::Gone,
        }
    }

    /// Children in queue `children_in` name `parent`, a message of this queue: its changes
    /// are passed on from now on.
    pub fn watch(&mut self, parent: MessageId, children_in: QueueNumber) {
        let queues = self.watched.entry(parent).or_default();
        if !queues.contains(&children_in) {
            queues.push(children_in);
        }
    }

    /// Where changes of watched messages go from now on.
    /// The queue is live: changes of watched messages go to `settler`, deaths inside its
    /// transitions to `feed`.
    pub fn go_live(&mut self, settler: SettlerHandle, feed: crate::feed_event::FeedSender) {
        self.feed = Some(feed);
        self.settler = Some(settler);
    }

    /// Passes a change of `id` on, if children in other queues wait for it. A removed message
    /// is passed on one last time and no longer watched.
    fn parent_changed(&mut self, id: MessageId, removed: bool) {
        let Some(settler) = &self.settler else {
            return;
        };
        let children_in = if removed {
            self.watched.remove(&id)
        } else {
            self.watched.get(&id).cloned()
        };
        if let Some(children_in) = children_in {
            settler.send(ParentChanged {
                parent: id,
                children_in,
            });
        }
    }

    /// A subscriber acknowledged a message. Returns whether it was still owed the message
    /// (acks of messages or subscribers since removed change nothing).
    pub fn apply_ack(&mut self, ack: &Ack, wake: &mut Wake) -> bool {
        let Some(slot) = self.slot_of(ack.subscriber) else {
            return false;
        };
        if !matches!(
            self.sched.delivery_state(ack.message, slot),
            Some(DeliveryState::Pending | DeliveryState::InFlight)
        ) {
            return false;
        }
        let events = self.sched.ack(ack.message, slot);
        let info = self
            .deliveries
            .entry((ack.message, Some(ack.subscriber)))
            .or_default();
        info.attempts = info.attempts.max(ack.attempt);
        info.acked_at_ms = Some(ack.acked_at_ms);
        info.next_attempt_at_ms = None;
        self.handle(events, ack.acked_at_ms, wake);
        true
    }

    /// An attempt failed and another is scheduled.
    pub fn apply_failed(
        &mut self,
        id: MessageId,
        sub: SubscriberId,
        attempt: u32,
        error: &str,
        next_attempt_at_ms: Option<u64>,
    ) {
        if self.sched.contains(id) && self.slot_of(sub).is_some() {
            let info = self.deliveries.entry((id, Some(sub))).or_default();
            info.attempts = info.attempts.max(attempt);
            info.last_error = Some(error.to_owned());
            info.next_attempt_at_ms = next_attempt_at_ms;
        }
    }

    /// A subscriber gave up on a message: its attempts ran out.
    pub fn apply_dead_lettered(
        &mut self,
        id: MessageId,
        sub: SubscriberId,
        attempts: u32,
        last_error: Option<&str>,
        at_ms: u64,
        wake: &mut Wake,
    ) {
        let Some(slot) = self.slot_of(sub) else {
            return;
        };
        if self.sched.delivery_state(id, slot).is_none() {
            return;
        }
        let info = self.deliveries.entry((id, Some(sub))).or_default();
        info.attempts = info.attempts.max(attempts);
        if let Some(e) = last_error {
            info.last_error = Some(e.to_owned());
        }
        info.next_attempt_at_ms = None;
        info.dead = Some((DeadReason::MaxAttempts, at_ms));
        self.dead_letters.insert((id, Some(sub)));
        let events = self.sched.give_up(id, slot);
        self.handle(events, at_ms, wake);
    }

    /// Sends a dead message again; returns the subscribers it goes to.
    pub fn apply_redriven(
        &mut self,
        id: MessageId,
        at_ms: u64,
        wake: &mut Wake,
    ) -> Result<Vec<SubscriberId>, ScheduleError> {
        let (slots, events) = self.sched.redrive(id)?;
        let subs: Vec<SubscriberId> = self
            .subscribers
            .iter()
            .filter(|(_, s)| slots.contains(s.slot))
            .map(|(id, _)| *id)
            .collect();
        // Attempts start again; the dead letters are gone.
        for sub in subs.iter().map(|s| Some(*s)).chain([None]) {
            self.deliveries.remove(&(id, sub));
            self.dead_letters.remove(&(id, sub));
        }
        self.note_undelivered(id);
        self.handle(events, at_ms, wake);
        Ok(subs)
    }

    /// Delivered messages are sent again to every subscriber of their fan-out sets, in this
    /// order; what is no longer delivered (or held) is left as it is.
    pub fn apply_replayed(&mut self, ids: &[MessageId], at_ms: u64, wake: &mut Wake) {
        for id in ids {
            let Ok(events) = self.sched.replay(*id) else {
                continue;
            };
            // Attempts start again.
            for sub in self.subscribers.keys().map(|s| Some(*s)).chain([None]) {
                self.deliveries.remove(&(*id, sub));
            }
            self.note_undelivered(*id);
            self.handle(events, at_ms, wake);
        }
    }

    /// Whether `id` is held and delivered: what a replay sends again.
    pub fn is_delivered(&self, id: MessageId) -> bool {
        self.sched.state(id) == Some(MessageState::Delivered)
    }

    /// The parents of a held message.
    pub fn parents_of(&self, id: MessageId) -> Option<crate::model::Parents> {
        self.sched.parents(id).cloned()
    }

    /// The subscribers a redrive of `id` would send it to again, or why it cannot be
    /// redriven.
    pub fn redrive_targets(&self, id: MessageId) -> Result<Vec<SubscriberId>, ScheduleError> {
        let raw = self
            .sched
            .raw(id)
            .ok_or(ScheduleError::UnknownMessage(id))?;
        let slots = if raw.parent_dead {
            raw.fanout.bits() & !raw.acked.bits()
        } else if !raw.dead.is_empty() {
            raw.dead.bits()
        } else {
            return Err(ScheduleError::NotDead(id));
        };
        Ok(self
            .subscribers
            .iter()
            .filter(|(_, s)| Slots::from_bits(slots).contains(s.slot))
            .map(|(id, _)| *id)
            .collect())
    }

    /// A message was discarded: its waiting children go on.
    pub fn apply_discarded(
        &mut self,
        id: MessageId,
        at_ms: u64,
        wake: &mut Wake,
    ) -> Result<(), ScheduleError> {
        self.remove_message(id, Removal::Discarded, at_ms, wake)
    }

    /// Retention removed these finished messages.
    pub fn apply_expired(&mut self, ids: &[MessageId], at_ms: u64, wake: &mut Wake) {
        for id in ids {
            let finished = matches!(
                self.sched.state(*id),
                Some(MessageState::Delivered | MessageState::Dead)
            );
            if finished {
                let _ = self.remove_message(*id, Removal::Expired, at_ms, wake);
            }
        }
    }

    pub fn apply_settings(&mut self, settings: QueueSettings, wake: &mut Wake) {
        self.settings = settings;
        self.idempotency.limit(settings.idempotency.max_keys);
        self.sched.set_on_parent_dead(settings.on_parent_dead);
        // A change of scope only releases copies (nothing finishes): no time is needed.
        let events = self.sched.set_causality(settings.causality);
        self.handle(events, 0, wake);
    }

    pub fn apply_subscriber_added(
        &mut self,
        id: SubscriberId,
        spec: SubscriberSpec,
    ) -> Result<(), SubscriberError> {
        let slot = self
            .sched
            .add_subscriber(id)
            .map_err(|_| SubscriberError::TooManySubscribers)?;
        match Subscriber::new(slot, spec) {
            Ok(s) => {
                self.subscribers.insert(id, s);
                Ok(())
            }
            Err(e) => {
                let _ = self.sched.remove_subscriber(slot);
                Err(e)
            }
        }
    }

    /// A subscriber's secret or further settings changed (`spec` is the whole new spec; its
    /// endpoint, handler and `max_in_flight` are those it had). Resumed, it takes its messages
    /// again in order: its retries first, then where its cursor stopped.
    pub fn apply_subscriber_updated(
        &mut self,
        id: SubscriberId,
        spec: SubscriberSpec,
    ) -> Result<(), SubscriberError> {
        let s = self
            .subscribers
            .get_mut(&id)
            .ok_or(SubscriberError::SubscriberNotFound(id))?;
        s.update(spec)
    }

    /// A subscriber was removed: pending deliveries to it are dropped, and messages no longer
    /// wait for it.
    pub fn apply_subscriber_removed(&mut self, id: SubscriberId, at_ms: u64, wake: &mut Wake) {
        let Some(s) = self.subscribers.remove(&id) else {
            return;
        };
        let _ = s.stop.send(true);
        self.deliveries.retain(|(_, sub), _| *sub != Some(id));
        self.dead_letters.retain(|(_, sub)| *sub != Some(id));
        if let Ok(events) = self.sched.remove_subscriber(s.slot) {
            self.handle(events, at_ms, wake);
        }
    }

    /// The queue was deleted: its subscribers' tasks stop and its calls fail from now on.
    pub fn apply_deleted(&mut self) {
        self.deleted = true;
        for s in self.subscribers.values() {
            let _ = s.stop.send(true);
        }
        // Children elsewhere see its messages as discarded.
        let watched: Vec<MessageId> = self.watched.keys().copied().collect();
        for id in watched {
            self.parent_changed(id, true);
        }
    }

    /// Forgets idempotency keys whose window is over. Not a record: replay finds the same
    /// deadlines in the publishes it replays.
    pub fn expire_idempotency_keys(&mut self, now_ms: u64) {
        self.idempotency.expire(now_ms);
    }

    /// Finished messages whose retention is over at `now_ms`, earliest first, at most `max`.
    pub fn due_for_expiry(&self, now_ms: u64, max: usize) -> Vec<MessageId> {
        self.expiry.due(now_ms, max)
    }

    fn remove_message(
        &mut self,
        id: MessageId,
        how: Removal,
        at_ms: u64,
        wake: &mut Wake,
    ) -> Result<(), ScheduleError> {
        let was_dead = self.sched.state(id) == Some(MessageState::Dead);
        let (_, events) = self.sched.remove(id, how)?;
        if how == Removal::Expired
            && was_dead
            && let Some((n, seq)) = crate::ids::parts(id)
            && n == self.number
        {
            self.dead_removed.insert(seq);
        }
        // By key, not by a scan of the map: it holds an entry per failed attempt still owed,
        // millions with a subscriber down. Entries of removed subscribers went with them.
        for sub in self.subscribers.keys().map(|s| Some(*s)).chain([None]) {
            self.deliveries.remove(&(id, sub));
            self.dead_letters.remove(&(id, sub));
        }
        for s in self.subscribers.values_mut() {
            s.forget_retry(id);
        }
        self.expiry.cancel(id);
        self.replays.remove(&id);
        self.parent_changed(id, true);
        self.handle(events, at_ms, wake);
        Ok(())
    }
}
