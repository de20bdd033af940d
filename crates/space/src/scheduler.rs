//! The scheduler of one queue: which message goes to which subscriber next, under the rules of
//! parented mode (SPEC §2).
//!
//! Pure state: no I/O, no clock, no HTTP. The Space feeds it what happened (a publish, an
//! ack, a subscriber giving up, a redrive, a removal) — live, or replayed from the log after a
//! restart — and it answers with [`Event`]s: which messages were released to which subscribers,
//! which were delivered, which went dead. Dispatchers take work from it with
//! [`Scheduler::next`].
//!
//! Rules kept here:
//! - a message is sent to a subscriber only if that subscriber is in its fan-out set, has not
//!   acknowledged it, has not given up on it, and has no attempt of it under way;
//! - a child is released only when its parent is delivered to every subscriber of the parent's
//!   fan-out set (or the parent is removed, or it died and the queue says `deliver`);
//! - a message is delivered when every subscriber of its fan-out set acknowledged it, dead when
//!   every one either acknowledged or gave up and at least one gave up.
//!
//! Memory: one [`Entry`] per message in an ordered map, whatever the fan-out; subscribers walk
//! the map with a cursor instead of keeping queues of ids.

use std::collections::{BTreeMap, HashMap, VecDeque};

use uuid::Uuid;

/// A message's id (UUIDv7, assigned by the broker).
pub type MessageId = Uuid;
/// A subscriber's id, unique in the Space.
pub type SubscriberId = u64;

/// Most subscribers one queue may have at once: fan-out sets are 64-bit masks of slots, which
/// keeps a message's bookkeeping at a few words whatever its fan-out.
pub const SUBSCRIBERS_PER_QUEUE_MAX: usize = 64;

/// What happens to the waiting children of a message that went dead (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnParentDead {
    /// The children stay `waiting` until the parent is redriven and delivered, or removed.
    #[default]
    Wait,
    /// The children go dead too, reason `parent_dead`.
    DeadLetter,
    /// The children go on; order is given up.
    Deliver,
}

/// A message's state as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    Waiting,
    Ready,
    Delivering,
    Delivered,
    Dead,
}

/// One subscriber's view of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not yet sent, or between attempts of a retry.
    Pending,
    /// An attempt is under way or a retry is scheduled.
    InFlight,
    Acked,
    Dead,
}

/// Why a message went dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadCause {
    /// At least one subscriber gave up (its attempts ran out).
    MaxAttempts,
    /// Its parent went dead and the queue's policy is `dead_letter`.
    ParentDead,
}

/// The position of a subscriber in fan-out masks. Slots are reused after a subscriber is
/// removed, never while it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

impl Slot {
    fn bit(self) -> u64 {
        1u64 << self.0
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slots(pub u64);

impl Slots {
    pub fn contains(self, slot: Slot) -> bool {
        self.0 & slot.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Slot> {
        (0..64u8).filter(move |i| self.0 & (1 << i) != 0).map(Slot)
    }
}

/// How a new message relates to a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lineage {
    /// No parent.
    Root,
    /// The parent is a message this scheduler holds.
    Child(MessageId),
    /// The parent was delivered and has since been removed (retention): the child goes at
    /// once. The Space knows this from its ids, the scheduler no longer can.
    ChildOfRemoved(MessageId),
}

/// What a change caused. The Space persists what must survive a crash and wakes the
/// dispatchers of released slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The message is queued for these subscribers.
    Released { message: MessageId, slots: Slots },
    /// Every subscriber of its fan-out set acknowledged it.
    Delivered { message: MessageId },
    /// It can go no further without a redrive.
    Dead {
        message: MessageId,
        cause: DeadCause,
    },
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("message {0} already exists")]
    Duplicate(MessageId),
    #[error("parent {0} is not a message of this queue")]
    UnknownParent(MessageId),
    #[error("message {0} does not exist")]
    UnknownMessage(MessageId),
    #[error("message {0} is not dead")]
    NotDead(MessageId),
    #[error("the queue already has {SUBSCRIBERS_PER_QUEUE_MAX} subscribers")]
    TooManySubscribers,
    #[error("no subscriber in slot {0:?}")]
    UnknownSlot(Slot),
}

#[derive(Debug, Clone)]
struct Entry<M> {
    /// What the Space keeps with the message (its location in the log, its size).
    meta: M,
    parent: Option<MessageId>,
    fanout: u64,
    acked: u64,
    dead: u64,
    /// Slots with an attempt under way or a retry scheduled.
    active: u64,
    /// Held until the parent is delivered.
    waiting: bool,
    /// Dead as a whole because the parent died (policy `dead_letter`).
    parent_dead: bool,
}

impl<M> Entry<M> {
    fn is_delivered(&self) -> bool {
        !self.waiting && !self.parent_dead && self.acked == self.fanout
    }

    fn is_dead(&self) -> bool {
        self.parent_dead || (self.dead != 0 && (self.acked | self.dead) == self.fanout)
    }

    fn state(&self) -> MessageState {
        if self.is_dead() {
            MessageState::Dead
        } else if self.waiting {
            MessageState::Waiting
        } else if self.acked == self.fanout {
            MessageState::Delivered
        } else if self.active != 0 || self.acked != 0 || self.dead != 0 {
            MessageState::Delivering
        } else {
            MessageState::Ready
        }
    }

    /// Slots that still have to receive it.
    fn owed(&self) -> u64 {
        self.fanout & !self.acked & !self.dead
    }
}

/// Where a subscriber is in the queue. No memory per message: the subscriber walks the
/// ordered message map with a cursor, and only messages released behind the cursor (children
/// of a parent delivered late, redrives, requeues) wait in `behind`.
struct Subscriber {
    id: SubscriberId,
    /// Every message up to here has been considered; `None`: nothing yet.
    cursor: Option<MessageId>,
    /// Released behind the cursor, oldest first. May hold ids that no longer need sending
    /// (acked, removed); [`Scheduler::next`] skips them.
    behind: VecDeque<MessageId>,
}

impl Subscriber {
    fn is_behind(&self, id: MessageId) -> bool {
        self.cursor.is_some_and(|c| id <= c)
    }
}

/// Counts of messages per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub waiting: u64,
    pub ready: u64,
    pub delivering: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// The scheduler of one queue. `M` is what the Space keeps with each message.
pub struct Scheduler<M = ()> {
    on_parent_dead: OnParentDead,
    slots: Vec<Option<Subscriber>>,
    /// Ordered by id, which is publish order: pages and "oldest" come for free.
    messages: BTreeMap<MessageId, Entry<M>>,
    /// Children held by a parent that is not delivered yet, by parent.
    waiting_on: HashMap<MessageId, Vec<MessageId>>,
}

impl<M> Scheduler<M> {
    pub fn new(on_parent_dead: OnParentDead) -> Scheduler<M> {
        Scheduler {
            on_parent_dead,
            slots: Vec::new(),
            messages: BTreeMap::new(),
            waiting_on: HashMap::new(),
        }
    }

    /// Changes the policy for parents that go dead from now on. Children already dead or
    /// released stay so.
    pub fn set_on_parent_dead(&mut self, policy: OnParentDead) {
        self.on_parent_dead = policy;
    }

    /// Adds a subscriber; messages accepted from now on include it in their fan-out set.
    pub fn add_subscriber(&mut self, id: SubscriberId) -> Result<Slot, ScheduleError> {
        // It receives only messages accepted from now on: start past every message held.
        let sub = Subscriber {
            id,
            cursor: self.messages.last_key_value().map(|(k, _)| *k),
            behind: VecDeque::new(),
        };
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = Some(sub);
            return Ok(Slot(i as u8));
        }
        if self.slots.len() == SUBSCRIBERS_PER_QUEUE_MAX {
            return Err(ScheduleError::TooManySubscribers);
        }
        self.slots.push(Some(sub));
        Ok(Slot((self.slots.len() - 1) as u8))
    }

    /// The subscriber in a slot.
    pub fn subscriber(&self, slot: Slot) -> Option<SubscriberId> {
        self.slots.get(slot.index())?.as_ref().map(|s| s.id)
    }

    /// The current fan-out set: every subscriber's slot.
    pub fn all_slots(&self) -> Slots {
        Slots(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_some())
                .fold(0, |m, (i, _)| m | (1 << i)),
        )
    }

    /// Removes a subscriber: nothing is sent to it any more and no message waits for it.
    /// Messages for which it was the last one owed are delivered (or dead) now.
    pub fn remove_subscriber(&mut self, slot: Slot) -> Result<Vec<Event>, ScheduleError> {
        let taken = self
            .slots
            .get_mut(slot.index())
            .and_then(Option::take)
            .ok_or(ScheduleError::UnknownSlot(slot))?;
        drop(taken);
        let bit = slot.bit();
        let mut settled = Vec::new();
        for (id, e) in &mut self.messages {
            if e.fanout & bit != 0 {
                let was_done = e.is_delivered() || e.is_dead();
                e.fanout &= !bit;
                e.acked &= !bit;
                e.dead &= !bit;
                e.active &= !bit;
                if !was_done && !e.waiting {
                    settled.push(*id);
                }
            }
        }
        let mut events = Vec::new();
        for id in settled {
            self.settle(id, &mut events);
        }
        Ok(events)
    }

    /// Accepts a message with the given fan-out set. Returns what it caused: released,
    /// delivered at once (empty fan-out), dead at once (dead parent, policy `dead_letter`), or
    /// nothing (it waits for its parent).
    pub fn publish(
        &mut self,
        id: MessageId,
        lineage: Lineage,
        fanout: Slots,
        meta: M,
    ) -> Result<Vec<Event>, ScheduleError> {
        if self.messages.contains_key(&id) {
            return Err(ScheduleError::Duplicate(id));
        }
        // Slots that are free now cannot be in a fan-out set.
        let fanout = fanout.0 & self.all_slots().0;
        let (parent, parent_state) = match lineage {
            Lineage::Root => (None, None),
            Lineage::ChildOfRemoved(p) => (Some(p), None),
            Lineage::Child(p) => {
                let e = self
                    .messages
                    .get(&p)
                    .ok_or(ScheduleError::UnknownParent(p))?;
                (Some(p), Some((e.is_delivered(), e.is_dead())))
            }
        };
        let mut entry = Entry {
            meta,
            parent,
            fanout,
            acked: 0,
            dead: 0,
            active: 0,
            waiting: false,
            parent_dead: false,
        };
        let mut events = Vec::new();
        match parent_state {
            Some((false, true)) => match self.on_parent_dead {
                OnParentDead::Wait => entry.waiting = true,
                OnParentDead::DeadLetter => entry.parent_dead = true,
                OnParentDead::Deliver => {}
            },
            Some((false, false)) => entry.waiting = true,
            _ => {}
        }
        let (waiting, parent_dead) = (entry.waiting, entry.parent_dead);
        self.messages.insert(id, entry);
        if waiting {
            let p = parent.expect("a waiting message has a parent");
            self.waiting_on.entry(p).or_default().push(id);
        } else if parent_dead {
            events.push(Event::Dead {
                message: id,
                cause: DeadCause::ParentDead,
            });
        } else {
            self.release(id, &mut events);
        }
        Ok(events)
    }

    /// Queues a message for every subscriber it is still owed to, then settles it (it may
    /// owe nothing: an empty fan-out set is delivered at once).
    fn release(&mut self, id: MessageId, events: &mut Vec<Event>) {
        let mut todo = Vec::new();
        self.release_one(id, events, &mut todo);
        self.settle_all(todo, events);
    }

    fn settle(&mut self, id: MessageId, events: &mut Vec<Event>) {
        self.settle_all(vec![id], events);
    }

    /// Reports delivery or death of messages that have no subscriber left to serve, and
    /// passes the news on to their waiting children, transitively (a work list, not
    /// recursion: chains may be long).
    fn settle_all(&mut self, mut todo: Vec<MessageId>, events: &mut Vec<Event>) {
        while let Some(id) = todo.pop() {
            let Some(e) = self.messages.get(&id) else {
                continue;
            };
            if e.waiting || e.active != 0 {
                continue;
            }
            let released_children = if e.is_delivered() {
                events.push(Event::Delivered { message: id });
                true
            } else if e.is_dead() {
                if !e.parent_dead {
                    events.push(Event::Dead {
                        message: id,
                        cause: DeadCause::MaxAttempts,
                    });
                }
                match self.on_parent_dead {
                    OnParentDead::Wait => continue,
                    OnParentDead::Deliver => true,
                    OnParentDead::DeadLetter => {
                        for child in self.waiting_on.remove(&id).unwrap_or_default() {
                            if let Some(c) = self.messages.get_mut(&child)
                                && c.waiting
                                && c.parent == Some(id)
                            {
                                c.waiting = false;
                                c.parent_dead = true;
                                events.push(Event::Dead {
                                    message: child,
                                    cause: DeadCause::ParentDead,
                                });
                                todo.push(child);
                            }
                        }
                        continue;
                    }
                }
            } else {
                continue;
            };
            if released_children {
                for child in self.waiting_on.remove(&id).unwrap_or_default() {
                    if self
                        .messages
                        .get(&child)
                        .is_some_and(|c| c.waiting && c.parent == Some(id))
                    {
                        self.release_one(child, events, &mut todo);
                    }
                }
            }
        }
    }

    /// Queues a message for every subscriber it is still owed to, and adds it to the work list
    /// of messages to settle.
    fn release_one(&mut self, id: MessageId, events: &mut Vec<Event>, todo: &mut Vec<MessageId>) {
        let Some(e) = self.messages.get_mut(&id) else {
            return;
        };
        e.waiting = false;
        let owed = e.owed() & !e.active;
        if owed != 0 {
            for slot in Slots(owed).iter() {
                if let Some(Some(sub)) = self.slots.get_mut(slot.index())
                    && sub.is_behind(id)
                {
                    sub.behind.push_back(id);
                }
            }
            events.push(Event::Released {
                message: id,
                slots: Slots(owed),
            });
        }
        todo.push(id);
    }

    /// The next message to send to a subscriber, oldest first; it is then in flight for that
    /// subscriber until [`Scheduler::ack`], [`Scheduler::give_up`] or [`Scheduler::requeue`].
    pub fn next(&mut self, slot: Slot) -> Option<MessageId> {
        let bit = slot.bit();
        let sub = self.slots.get_mut(slot.index())?.as_mut()?;
        let sendable = |e: &Entry<M>| {
            !e.waiting && !e.parent_dead && e.owed() & bit != 0 && e.active & bit == 0
        };
        while let Some(id) = sub.behind.pop_front() {
            if let Some(e) = self.messages.get_mut(&id)
                && sendable(e)
            {
                e.active |= bit;
                return Some(id);
            }
        }
        // Walk forward. The cursor passes every message it looks at, sendable or not: one that
        // becomes sendable later (a child released, a redrive) is queued in `behind` then, so
        // the walk never looks at a message twice.
        use std::ops::Bound;
        let from = sub.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        for (id, e) in self.messages.range_mut((from, Bound::Unbounded)) {
            sub.cursor = Some(*id);
            if sendable(e) {
                e.active |= bit;
                return Some(*id);
            }
        }
        None
    }

    /// Whether a subscriber may have something to send (a cheap check; `next` decides).
    pub fn has_ready(&self, slot: Slot) -> bool {
        self.slots
            .get(slot.index())
            .and_then(Option::as_ref)
            .is_some_and(|s| {
                !s.behind.is_empty()
                    || self
                        .messages
                        .last_key_value()
                        .is_some_and(|(last, _)| !s.is_behind(*last))
            })
    }

    /// A subscriber acknowledged a message. Also used on replay, without a prior `next`.
    /// Acks for messages or slots no longer here are ignored (the message was removed, the
    /// subscriber too): they are stale, not errors.
    pub fn ack(&mut self, id: MessageId, slot: Slot) -> Vec<Event> {
        let bit = slot.bit();
        let mut events = Vec::new();
        if let Some(e) = self.messages.get_mut(&id)
            && e.fanout & bit != 0
            && e.acked & bit == 0
        {
            e.acked |= bit;
            e.dead &= !bit;
            e.active &= !bit;
            self.settle(id, &mut events);
        }
        events
    }

    /// A subscriber gave up on a message (its attempts ran out).
    pub fn give_up(&mut self, id: MessageId, slot: Slot) -> Vec<Event> {
        let bit = slot.bit();
        let mut events = Vec::new();
        if let Some(e) = self.messages.get_mut(&id)
            && e.owed() & bit != 0
        {
            e.dead |= bit;
            e.active &= !bit;
            self.settle(id, &mut events);
        }
        events
    }

    /// Puts an in-flight message back at the front of a subscriber's queue without an outcome
    /// (its dispatcher is stopping).
    pub fn requeue(&mut self, id: MessageId, slot: Slot) {
        let bit = slot.bit();
        if let Some(e) = self.messages.get_mut(&id)
            && e.active & bit != 0
        {
            e.active &= !bit;
            if let Some(Some(sub)) = self.slots.get_mut(slot.index())
                && sub.is_behind(id)
            {
                sub.behind.push_front(id);
            }
        }
    }

    /// Sends a dead message again to the subscribers that gave up on it (or, if it died with
    /// its parent, to every subscriber that has not acknowledged it). Returns those slots.
    pub fn redrive(&mut self, id: MessageId) -> Result<(Slots, Vec<Event>), ScheduleError> {
        let e = self
            .messages
            .get_mut(&id)
            .ok_or(ScheduleError::UnknownMessage(id))?;
        if !e.parent_dead && e.dead == 0 {
            return Err(ScheduleError::NotDead(id));
        }
        let was_parent_dead = e.parent_dead;
        let slots = if e.parent_dead {
            e.parent_dead = false;
            e.fanout & !e.acked
        } else {
            std::mem::take(&mut e.dead)
        };
        e.dead = 0;
        let parent = e.parent;
        let mut events = Vec::new();
        // A child that died with its parent goes back to waiting if the parent is still held
        // and not delivered: a redrive never breaks parent order.
        if was_parent_dead
            && let Some(p) = parent
            && self.messages.get(&p).is_some_and(|pe| !pe.is_delivered())
        {
            if let Some(e) = self.messages.get_mut(&id) {
                e.waiting = true;
            }
            self.waiting_on.entry(p).or_default().push(id);
            return Ok((Slots(slots), events));
        }
        self.release(id, &mut events);
        Ok((Slots(slots), events))
    }

    /// Removes a message (discarded, or its retention is over). Its waiting children are
    /// released: nothing is left for them to wait on. Attempts under way finish unheard.
    pub fn remove(&mut self, id: MessageId) -> Result<(M, Vec<Event>), ScheduleError> {
        let e = self
            .messages
            .remove(&id)
            .ok_or(ScheduleError::UnknownMessage(id))?;
        if e.waiting
            && let Some(p) = e.parent
            && let Some(siblings) = self.waiting_on.get_mut(&p)
        {
            siblings.retain(|c| *c != id);
            if siblings.is_empty() {
                self.waiting_on.remove(&p);
            }
        }
        let mut events = Vec::new();
        let mut todo = Vec::new();
        for child in self.waiting_on.remove(&id).unwrap_or_default() {
            if self
                .messages
                .get(&child)
                .is_some_and(|c| c.waiting && c.parent == Some(id))
            {
                self.release_one(child, &mut events, &mut todo);
            }
        }
        self.settle_all(todo, &mut events);
        Ok((e.meta, events))
    }

    /// What the Space keeps with a message.
    pub fn meta(&self, id: MessageId) -> Option<&M> {
        self.messages.get(&id).map(|e| &e.meta)
    }

    pub fn meta_mut(&mut self, id: MessageId) -> Option<&mut M> {
        self.messages.get_mut(&id).map(|e| &mut e.meta)
    }

    /// Messages in id (publish) order from `after` (exclusive), with their states.
    pub fn iter_from(
        &self,
        after: Option<MessageId>,
    ) -> impl Iterator<Item = (MessageId, MessageState, &M)> + '_ {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.messages
            .range((start, Bound::Unbounded))
            .map(|(id, e)| (*id, e.state(), &e.meta))
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.messages.contains_key(&id)
    }

    pub fn state(&self, id: MessageId) -> Option<MessageState> {
        self.messages.get(&id).map(Entry::state)
    }

    pub fn parent(&self, id: MessageId) -> Option<MessageId> {
        self.messages.get(&id)?.parent
    }

    /// The message's fan-out set.
    pub fn fanout(&self, id: MessageId) -> Option<Slots> {
        self.messages.get(&id).map(|e| Slots(e.fanout))
    }

    /// One subscriber's view of one message, if it is in the fan-out set.
    pub fn delivery_state(&self, id: MessageId, slot: Slot) -> Option<DeliveryState> {
        let e = self.messages.get(&id)?;
        let bit = slot.bit();
        if e.fanout & bit == 0 {
            return None;
        }
        Some(if e.acked & bit != 0 {
            DeliveryState::Acked
        } else if e.dead & bit != 0 || e.parent_dead {
            DeliveryState::Dead
        } else if e.active & bit != 0 {
            DeliveryState::InFlight
        } else {
            DeliveryState::Pending
        })
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Counts per state. Walks every message: for the API, not the hot path.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.messages.values() {
            match e.state() {
                MessageState::Waiting => c.waiting += 1,
                MessageState::Ready => c.ready += 1,
                MessageState::Delivering => c.delivering += 1,
                MessageState::Delivered => c.delivered += 1,
                MessageState::Dead => c.dead += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> MessageId {
        Uuid::from_u128(n)
    }

    /// A scheduler with `n` subscribers, and their slots.
    fn with_subscribers(policy: OnParentDead, n: u64) -> (Scheduler, Vec<Slot>) {
        let mut s = Scheduler::new(policy);
        let slots = (0..n).map(|i| s.add_subscriber(i + 1).unwrap()).collect();
        (s, slots)
    }

    fn delivered(events: &[Event], m: MessageId) -> bool {
        events.contains(&Event::Delivered { message: m })
    }

    #[test]
    fn a_message_is_delivered_when_every_subscriber_acked() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        assert_eq!(s.state(id(1)), Some(MessageState::Ready));
        assert_eq!(s.next(sl[0]), Some(id(1)));
        assert_eq!(s.next(sl[0]), None, "not twice at once");
        assert_eq!(s.state(id(1)), Some(MessageState::Delivering));
        assert_eq!(
            s.delivery_state(id(1), sl[0]),
            Some(DeliveryState::InFlight)
        );
        assert!(!delivered(&s.ack(id(1), sl[0]), id(1)));
        assert_eq!(s.next(sl[1]), Some(id(1)));
        assert!(delivered(&s.ack(id(1), sl[1]), id(1)));
        assert_eq!(s.state(id(1)), Some(MessageState::Delivered));
    }

    #[test]
    fn a_chain_goes_strictly_in_order_and_siblings_together() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.publish(id(3), Lineage::Child(id(2)), all, ()).unwrap();
        s.publish(id(4), Lineage::Child(id(1)), all, ()).unwrap();
        assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
        assert_eq!(s.next(sl[0]), Some(id(1)));
        assert_eq!(s.next(sl[0]), None, "children wait for the parent");
        let events = s.ack(id(1), sl[0]);
        assert!(events.contains(&Event::Released {
            message: id(2),
            slots: all
        }));
        // Both children of 1 go together; the grandchild waits for 2.
        assert_eq!(s.next(sl[0]), Some(id(2)));
        assert_eq!(s.next(sl[0]), Some(id(4)));
        assert_eq!(s.next(sl[0]), None);
        s.ack(id(2), sl[0]);
        assert_eq!(s.next(sl[0]), Some(id(3)));
    }

    #[test]
    fn unknown_parents_and_duplicates_are_refused() {
        let (mut s, _) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        assert_eq!(
            s.publish(id(2), Lineage::Child(id(1)), all, ()),
            Err(ScheduleError::UnknownParent(id(1)))
        );
        assert!(
            !s.contains(id(2)),
            "a refused publish leaves nothing behind"
        );
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        assert_eq!(
            s.publish(id(1), Lineage::Root, all, ()),
            Err(ScheduleError::Duplicate(id(1)))
        );
    }

    #[test]
    fn a_child_of_a_delivered_or_removed_parent_goes_at_once() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.next(sl[0]);
        s.ack(id(1), sl[0]);
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        assert_eq!(s.state(id(2)), Some(MessageState::Ready));
        s.publish(id(3), Lineage::ChildOfRemoved(id(99)), all, ())
            .unwrap();
        assert_eq!(s.state(id(3)), Some(MessageState::Ready));
        assert_eq!(s.parent(id(3)), Some(id(99)));
    }

    #[test]
    fn an_empty_fanout_is_delivered_at_once_and_releases_its_children() {
        let (mut s, _) = with_subscribers(OnParentDead::Wait, 0);
        let events = s.publish(id(1), Lineage::Root, Slots(0), ()).unwrap();
        assert!(delivered(&events, id(1)));
        let events = s
            .publish(id(2), Lineage::Child(id(1)), Slots(0), ())
            .unwrap();
        assert!(delivered(&events, id(2)));
    }

    #[test]
    fn a_long_chain_of_empty_fanouts_settles_without_recursion() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        s.publish(id(0), Lineage::Root, s.all_slots(), ()).unwrap();
        for n in 1..100_000 {
            s.publish(id(n), Lineage::Child(id(n - 1)), Slots(0), ())
                .unwrap();
        }
        s.next(sl[0]);
        let events = s.ack(id(0), sl[0]);
        assert!(delivered(&events, id(99_999)));
    }

    #[test]
    fn a_dead_parent_holds_its_children_under_wait_until_redriven() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.next(sl[0]);
        let events = s.give_up(id(1), sl[0]);
        assert!(events.contains(&Event::Dead {
            message: id(1),
            cause: DeadCause::MaxAttempts
        }));
        assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
        let (slots, _) = s.redrive(id(1)).unwrap();
        assert_eq!(slots, all);
        assert_eq!(s.next(sl[0]), Some(id(1)));
        s.ack(id(1), sl[0]);
        assert_eq!(s.next(sl[0]), Some(id(2)));
    }

    #[test]
    fn dead_letter_policy_kills_the_whole_line() {
        let (mut s, sl) = with_subscribers(OnParentDead::DeadLetter, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.publish(id(3), Lineage::Child(id(2)), all, ()).unwrap();
        s.next(sl[0]);
        let events = s.give_up(id(1), sl[0]);
        for m in [2, 3] {
            assert!(events.contains(&Event::Dead {
                message: id(m),
                cause: DeadCause::ParentDead
            }));
            assert_eq!(s.state(id(m)), Some(MessageState::Dead));
        }
        // A child published after the parent died is dead at once.
        let events = s.publish(id(4), Lineage::Child(id(1)), all, ()).unwrap();
        assert_eq!(
            events,
            vec![Event::Dead {
                message: id(4),
                cause: DeadCause::ParentDead
            }]
        );
        assert_eq!(s.next(sl[0]), None);
    }

    #[test]
    fn redriving_a_child_dead_with_its_parent_waits_for_the_parent() {
        let (mut s, sl) = with_subscribers(OnParentDead::DeadLetter, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.next(sl[0]);
        s.give_up(id(1), sl[0]);
        assert_eq!(s.state(id(2)), Some(MessageState::Dead));
        // Redrive both, child first: the child must still wait for the parent.
        s.redrive(id(2)).unwrap();
        assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
        s.redrive(id(1)).unwrap();
        assert_eq!(s.next(sl[0]), Some(id(1)));
        assert_eq!(
            s.next(sl[0]),
            None,
            "the child waits for the redriven parent"
        );
        s.ack(id(1), sl[0]);
        assert_eq!(s.next(sl[0]), Some(id(2)));
    }

    #[test]
    fn deliver_policy_lets_children_go_on() {
        let (mut s, sl) = with_subscribers(OnParentDead::Deliver, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.next(sl[0]);
        s.give_up(id(1), sl[0]);
        assert_eq!(s.next(sl[0]), Some(id(2)));
    }

    #[test]
    fn removing_a_parent_releases_its_waiting_children() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.next(sl[0]);
        let (_, events) = s.remove(id(1)).unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Released { message, .. } if *message == id(2)))
        );
        assert_eq!(s.next(sl[0]), Some(id(2)));
        // The attempt of the removed parent finishes unheard.
        assert!(s.ack(id(1), sl[0]).is_empty());
        assert_eq!(s.remove(id(1)), Err(ScheduleError::UnknownMessage(id(1))));
    }

    #[test]
    fn removing_a_waiting_child_unlinks_it() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Child(id(1)), all, ()).unwrap();
        s.remove(id(2)).unwrap();
        s.next(sl[0]);
        let events = s.ack(id(1), sl[0]);
        assert_eq!(events, vec![Event::Delivered { message: id(1) }]);
        assert_eq!(s.next(sl[0]), None);
    }

    #[test]
    fn a_removed_subscriber_is_no_longer_waited_for() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.next(sl[0]);
        s.ack(id(1), sl[0]);
        let events = s.remove_subscriber(sl[1]).unwrap();
        assert!(delivered(&events, id(1)));
        assert_eq!(s.next(sl[1]), None);
        assert_eq!(
            s.remove_subscriber(sl[1]),
            Err(ScheduleError::UnknownSlot(sl[1]))
        );
    }

    #[test]
    fn a_later_subscriber_gets_only_later_messages_and_slots_are_reused() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        s.publish(id(1), Lineage::Root, s.all_slots(), ()).unwrap();
        let late = s.add_subscriber(7).unwrap();
        assert_eq!(s.next(late), None);
        s.publish(id(2), Lineage::Root, s.all_slots(), ()).unwrap();
        assert_eq!(s.next(late), Some(id(2)));
        s.remove_subscriber(sl[0]).unwrap();
        assert_eq!(s.add_subscriber(8).unwrap(), sl[0]);
        assert_eq!(s.subscriber(sl[0]), Some(8));
    }

    #[test]
    fn a_queue_holds_at_most_64_subscribers() {
        let (mut s, _) = with_subscribers(OnParentDead::Wait, 64);
        assert_eq!(
            s.add_subscriber(100),
            Err(ScheduleError::TooManySubscribers)
        );
        assert_eq!(s.all_slots(), Slots(u64::MAX));
    }

    #[test]
    fn redrive_goes_only_to_subscribers_that_gave_up() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        assert_eq!(s.redrive(id(1)), Err(ScheduleError::NotDead(id(1))));
        s.next(sl[0]);
        s.next(sl[1]);
        s.ack(id(1), sl[0]);
        s.give_up(id(1), sl[1]);
        assert_eq!(s.state(id(1)), Some(MessageState::Dead));
        let (slots, _) = s.redrive(id(1)).unwrap();
        assert_eq!(slots, Slots(1 << sl[1].index()));
        assert_eq!(s.next(sl[0]), None);
        assert_eq!(s.next(sl[1]), Some(id(1)));
    }

    #[test]
    fn replayed_acks_need_no_attempt_and_requeue_puts_back_in_front() {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), Lineage::Root, all, ()).unwrap();
        s.publish(id(2), Lineage::Root, all, ()).unwrap();
        s.publish(id(3), Lineage::Root, all, ()).unwrap();
        s.ack(id(1), sl[0]);
        assert_eq!(s.next(sl[0]), Some(id(2)), "the acked message is skipped");
        s.requeue(id(2), sl[0]);
        assert_eq!(s.next(sl[0]), Some(id(2)));
    }

    #[test]
    fn an_entry_stays_small() {
        // The memory budget is 200 bytes per undelivered message for the whole broker.
        assert!(std::mem::size_of::<Entry<()>>() <= 64);
    }
}
