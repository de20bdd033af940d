//! The scheduler of one queue: which message goes to which subscriber next, under the rules of
//! parented mode.
//!
//! Pure state: no I/O, no clock, no HTTP. The Space feeds it what happened (a publish, an
//! ack, a subscriber giving up, a redrive, a removal) — live, or replayed from the log after a
//! restart — and it answers with [`Event`]s: which messages were released to which
//! subscribers, and which finished (delivered or dead) or were reopened. Dispatchers take work
//! from it with [`Scheduler::next`].
//!
//! Rules kept here:
//! - a message is sent to a subscriber only if that subscriber is in its fan-out set, has not
//!   acknowledged it, has not given up on it, and has no attempt of it under way;
//! - a child is released only when its parent is delivered to every subscriber of the parent's
//!   fan-out set, or the parent is discarded, or it died and the queue says `deliver`;
//! - a message is delivered when every subscriber of its fan-out set acknowledged it, dead when
//!   every one either acknowledged or gave up and at least one gave up (or its parent died and
//!   the queue says `dead_letter`, or its dead parent was removed by retention);
//! - events report transitions only: a message is reported delivered or dead once, and again
//!   only after it was reopened (redriven) or changed its outcome (a subscriber that gave up on
//!   it was removed).
//!
//! Memory: one [`Entry`] per message in an ordered map, whatever the fan-out; subscribers walk
//! the map with a cursor instead of keeping queues of ids. Counts per state are kept as they
//! change, so reading them costs nothing.

use std::collections::{BTreeMap, VecDeque};

mod entry;
mod scope;
mod slots;

pub use entry::RawEntry;
use entry::{Children, Cursor, Entry, Finish};
pub use slots::{Slot, Slots};

use crate::idhash::IdMap;
use crate::limits::SUBSCRIBERS_PER_QUEUE_MAX;
use crate::model::{
    Causality, Counts, DeadReason, DeliveryState, MessageId, MessageState, OnParentDead,
    ParentState, Parents, SubscriberId,
};

/// What the scheduler needs to know of what the Space keeps with a message: its size, so that
/// the bytes of undelivered messages are kept as they change.
pub trait Weighed {
    fn weight(&self) -> u64;
}

impl Weighed for () {
    fn weight(&self) -> u64 {
        0
    }
}

/// Where one parent of a new message stands, as the Space knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentLink {
    /// A message this scheduler holds.
    Held(MessageId),
    /// It was delivered or discarded and has since been removed: it holds nothing back. The
    /// Space knows this from its ids, the scheduler no longer can.
    Removed(MessageId),
    /// It died and retention removed it: it can never be delivered, so the child is dead at
    /// once (reason `parent_dead`), unless the queue says `deliver`.
    RemovedDead(MessageId),
    /// A message of another queue. It holds the child back as this queue last learned its
    /// state ([`Scheduler::settle_foreign`]); until it learns one, as if not delivered.
    Foreign(MessageId),
}

impl ParentLink {
    pub fn id(self) -> MessageId {
        match self {
            ParentLink::Held(id)
            | ParentLink::Removed(id)
            | ParentLink::RemovedDead(id)
            | ParentLink::Foreign(id) => id,
        }
    }
}

/// How the parents of a child hold it back, the strongest of them winning: one parent dead
/// under `dead_letter` kills the child, one not delivered (or dead under `wait`) holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hold {
    Free,
    Wait,
    Kill,
}

/// How a message leaves the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Discarded by a user: its waiting children go on.
    Discarded,
    /// Its retention is over (it was delivered or dead). The waiting children of a dead one
    /// go dead: their parent can never arrive.
    Expired,
}

/// What a change caused. The Space books what finished and wakes the dispatchers of released
/// slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The message is queued for these subscribers.
    Released { message: MessageId, slots: Slots },
    /// Every subscriber of its fan-out set acknowledged it.
    Delivered { message: MessageId },
    /// It can go no further without a redrive.
    Dead {
        message: MessageId,
        reason: DeadReason,
    },
    /// It was delivered or dead and is neither any more (redriven).
    Reopened { message: MessageId },
    /// One subscriber's copy died with a parent dead for that subscriber (per-subscriber
    /// causality, `dead_letter`).
    CopyDead { message: MessageId, slot: Slot },
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("message {0} already exists")]
    Duplicate(MessageId),
    #[error("parent {0} is not a message of this queue")]
    UnknownParent(MessageId),
    #[error("parent {0} is named twice")]
    RepeatedParent(MessageId),
    #[error("message {0} does not exist")]
    UnknownMessage(MessageId),
    #[error("message {0} is not dead")]
    NotDead(MessageId),
    #[error("message {0} is not delivered")]
    NotDelivered(MessageId),
    #[error("the queue already has {SUBSCRIBERS_PER_QUEUE_MAX} subscribers")]
    TooManySubscribers,
    #[error("no subscriber in slot {0:?}")]
    UnknownSlot(Slot),
}

/// Books a state change of one entry into the counts and the undelivered bytes.
fn recount(
    counts: &mut Counts,
    bytes: &mut u64,
    before: MessageState,
    after: MessageState,
    w: u64,
) {
    if before == after {
        return;
    }
    counts.sub(before);
    counts.add(after);
    match (before.is_undelivered(), after.is_undelivered()) {
        (true, false) => *bytes = bytes.saturating_sub(w),
        (false, true) => *bytes += w,
        _ => {}
    }
}

/// The scheduler of one queue. `M` is what the Space keeps with each message.
pub struct Scheduler<M = ()> {
    on_parent_dead: OnParentDead,
    causality: Causality,
    slots: Vec<Option<Cursor>>,
    /// Ordered by id, which is publish order: pages and "oldest" come for free.
    messages: BTreeMap<MessageId, Entry<M>>,
    /// The children of every held parent that has any, in publish order (parents in other
    /// queues included).
    children: IdMap<MessageId, Children>,
    /// Parents in other queues that children here name, as this queue last learned them.
    /// An entry lives as long as a child here names it.
    foreign: IdMap<MessageId, ParentState>,
    counts: Counts,
    /// Bytes (weights) of waiting, ready and delivering messages.
    undelivered_bytes: u64,
}

impl<M: Weighed> Scheduler<M> {
    pub fn new(on_parent_dead: OnParentDead) -> Scheduler<M> {
        Scheduler {
            on_parent_dead,
            causality: Causality::Global,
            slots: Vec::new(),
            messages: BTreeMap::new(),
            children: IdMap::default(),
            foreign: IdMap::default(),
            counts: Counts::default(),
            undelivered_bytes: 0,
        }
    }

    /// Changes the policy for parents that go dead from now on. Children already dead or
    /// released stay so.
    pub fn set_on_parent_dead(&mut self, policy: OnParentDead) {
        self.on_parent_dead = policy;
    }

    /// Changes whom children wait for their parents' delivery to, from now on: copies already
    /// sent or dead stay so; under `per_subscriber` the copies no parent holds back go now.
    pub fn set_causality(&mut self, causality: Causality) -> Vec<Event> {
        let mut events = Vec::new();
        if self.causality != causality {
            self.causality = causality;
            if self.per_subscriber() {
                self.refresh_all_waiting(&mut events);
            }
        }
        events
    }

    /// Applies `f` to a message's entry and books the state change it made.
    fn change<R>(&mut self, id: MessageId, f: impl FnOnce(&mut Entry<M>) -> R) -> Option<R> {
        let e = self.messages.get_mut(&id)?;
        let before = e.state();
        let r = f(e);
        let after = e.state();
        recount(
            &mut self.counts,
            &mut self.undelivered_bytes,
            before,
            after,
            e.meta.weight(),
        );
        Some(r)
    }

    /// Adds a subscriber; messages accepted from now on include it in their fan-out set.
    pub fn add_subscriber(&mut self, id: SubscriberId) -> Result<Slot, ScheduleError> {
        // It receives only messages accepted from now on: start past every message held.
        let cursor = Cursor {
            id,
            at: self.messages.last_key_value().map(|(k, _)| *k),
            behind: VecDeque::new(),
        };
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = Some(cursor);
            return Ok(Slot(i as u8));
        }
        if self.slots.len() == SUBSCRIBERS_PER_QUEUE_MAX {
            return Err(ScheduleError::TooManySubscribers);
        }
        self.slots.push(Some(cursor));
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
    /// Messages for which it was the last one owed are delivered (or dead) now; a message that
    /// was dead only because this subscriber gave up on it is delivered if every other one
    /// acknowledged it, and its waiting children go on.
    pub fn remove_subscriber(&mut self, slot: Slot) -> Result<Vec<Event>, ScheduleError> {
        self.slots
            .get_mut(slot.index())
            .and_then(Option::take)
            .ok_or(ScheduleError::UnknownSlot(slot))?;
        let bit = slot.bit();
        let mut touched = Vec::new();
        for (id, e) in &mut self.messages {
            if e.fanout & bit != 0 {
                let before = e.state();
                e.fanout &= !bit;
                e.acked &= !bit;
                e.dead &= !bit;
                e.active &= !bit;
                recount(
                    &mut self.counts,
                    &mut self.undelivered_bytes,
                    before,
                    e.state(),
                    e.meta.weight(),
                );
                if !e.held() {
                    touched.push(*id);
                }
            }
        }
        let mut events = Vec::new();
        self.settle_all(touched, &mut events);
        if self.per_subscriber() {
            self.refresh_all_waiting(&mut events);
        }
        Ok(events)
    }

    /// Accepts a message with the given parents and fan-out set. Returns what it caused:
    /// released, delivered at once (empty fan-out), dead at once (a dead parent), or nothing
    /// (it waits for a parent, or is `scheduled`: held until [`Scheduler::release_scheduled`]).
    pub fn publish(
        &mut self,
        id: MessageId,
        parents: &[ParentLink],
        fanout: Slots,
        meta: M,
        scheduled: bool,
    ) -> Result<Vec<Event>, ScheduleError> {
        if self.messages.contains_key(&id) {
            return Err(ScheduleError::Duplicate(id));
        }
        // Slots that are free now cannot be in a fan-out set.
        let fanout = fanout.0 & self.all_slots().0;
        let mut hold = Hold::Free;
        for link in parents {
            let h = match *link {
                ParentLink::Held(p) if !self.messages.contains_key(&p) => {
                    return Err(ScheduleError::UnknownParent(p));
                }
                // Per subscriber, each copy is looked at once the message is in.
                ParentLink::Held(_) if self.per_subscriber() => Hold::Wait,
                ParentLink::Held(p) => self.hold_of(p),
                ParentLink::Removed(_) => Hold::Free,
                ParentLink::RemovedDead(_) if self.on_parent_dead == OnParentDead::Deliver => {
                    Hold::Free
                }
                ParentLink::RemovedDead(_) => Hold::Kill,
                ParentLink::Foreign(p) => {
                    self.foreign.entry(p).or_insert(ParentState::Open);
                    self.hold_of(p)
                }
            };
            hold = hold.max(h);
        }
        let ids: Vec<MessageId> = parents.iter().map(|l| l.id()).collect();
        let parents_of = Parents::new(&ids).ok_or_else(|| {
            let twice = ids.iter().enumerate().find(|(i, p)| ids[..*i].contains(p));
            ScheduleError::RepeatedParent(twice.map_or(id, |(_, p)| *p))
        })?;
        let (waiting, parent_dead) = (hold == Hold::Wait, hold == Hold::Kill);
        let entry = Entry {
            meta,
            parents: parents_of,
            fanout,
            acked: 0,
            dead: 0,
            active: 0,
            waiting,
            scheduled,
            parent_dead,
            reported: Finish::Open,
        };
        let state = entry.state();
        self.counts.add(state);
        if state.is_undelivered() {
            self.undelivered_bytes += entry.meta.weight();
        }
        self.messages.insert(id, entry);
        for p in ids {
            if self.messages.contains_key(&p) || self.foreign.contains_key(&p) {
                self.add_child(p, id);
            }
        }
        let mut events = Vec::new();
        if parent_dead {
            self.settle_all(vec![id], &mut events);
        } else if waiting && self.per_subscriber() {
            let mut todo = Vec::new();
            self.start_copies(id, &mut events, &mut todo);
            self.settle_all(todo, &mut events);
        } else if !waiting && !scheduled {
            self.release(id, &mut events);
        }
        Ok(events)
    }

    fn add_child(&mut self, parent: MessageId, child: MessageId) {
        match self.children.get_mut(&parent) {
            Some(kids) => kids.push(child),
            None => {
                self.children.insert(parent, Children::One(child));
            }
        }
    }

    /// How a held message holds back its waiting children. A message no longer held holds
    /// nothing back: when it left, its children were released or killed (see
    /// [`Scheduler::remove`]).
    fn hold_of(&self, parent: MessageId) -> Hold {
        let state = match self.messages.get(&parent) {
            Some(e) => e.finish().into(),
            None => match self.foreign.get(&parent) {
                Some(s) => *s,
                None => return Hold::Free,
            },
        };
        match (state, self.on_parent_dead) {
            (ParentState::Delivered | ParentState::Gone, _) => Hold::Free,
            (ParentState::Open, _) => Hold::Wait,
            (ParentState::Dead | ParentState::GoneDead, OnParentDead::Deliver) => Hold::Free,
            (ParentState::Dead, OnParentDead::Wait) => Hold::Wait,
            (ParentState::Dead, OnParentDead::DeadLetter) | (ParentState::GoneDead, _) => {
                Hold::Kill
            }
        }
    }

    /// This queue learned where a parent in another queue stands: its waiting children here
    /// go on, die, or keep waiting, as they would for a parent of this queue reaching that
    /// state. Nothing happens if no child here names it.
    pub fn settle_foreign(&mut self, parent: MessageId, state: ParentState) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(known) = self.foreign.get_mut(&parent) else {
            return events;
        };
        *known = state;
        let mut todo = Vec::new();
        match self.hold_of(parent) {
            Hold::Free => self.release_children(parent, &mut events, &mut todo),
            Hold::Kill => self.kill_children(parent, &mut todo),
            Hold::Wait => {}
        }
        self.settle_all(todo, &mut events);
        events
    }

    /// Parents in other queues that children here name, as this queue last learned them.
    pub fn foreign_parents(&self) -> impl Iterator<Item = (MessageId, ParentState)> + '_ {
        self.foreign.iter().map(|(p, s)| (*p, *s))
    }

    /// A parent in another queue, as this queue last learned it; `None` if no child here
    /// names it.
    pub fn foreign_parent(&self, parent: MessageId) -> Option<ParentState> {
        self.foreign.get(&parent).copied()
    }

    /// Where a message of this queue stands, as a parent in another queue sees it.
    pub fn parent_state(&self, id: MessageId) -> Option<ParentState> {
        self.messages.get(&id).map(|e| e.finish().into())
    }

    /// How all of a message's parents hold it back together.
    fn hold_by_parents(&self, id: MessageId) -> Hold {
        self.messages.get(&id).map_or(Hold::Free, |e| {
            e.parents
                .iter()
                .map(|p| self.hold_of(p))
                .max()
                .unwrap_or(Hold::Free)
        })
    }

    /// A scheduled message is due: it goes to its subscribers as if published now (unless it
    /// still waits for its parent, or died with it). Anything else is left as it is.
    pub fn release_scheduled(&mut self, id: MessageId) -> Vec<Event> {
        let mut events = Vec::new();
        let was = self.change(id, |e| {
            let was = e.scheduled;
            e.scheduled = false;
            (was, e.waiting || e.parent_dead)
        });
        if let Some((true, held)) = was {
            if held && self.per_subscriber() {
                let mut todo = Vec::new();
                self.refresh_copies(id, &mut events, &mut todo);
                self.settle_all(todo, &mut events);
            } else if held {
                self.settle_all(vec![id], &mut events);
            } else {
                self.release(id, &mut events);
            }
        }
        events
    }

    /// Queues a message for every subscriber it is still owed to, then settles it (it may
    /// owe nothing: an empty fan-out set is delivered at once).
    fn release(&mut self, id: MessageId, events: &mut Vec<Event>) {
        let mut todo = Vec::new();
        self.release_one(id, events, &mut todo);
        self.settle_all(todo, events);
    }

    /// Reports what changed of messages whose outcome may have changed, and passes the news
    /// on to their waiting children, transitively (a work list, not recursion: chains may be
    /// long).
    fn settle_all(&mut self, mut todo: Vec<MessageId>, events: &mut Vec<Event>) {
        while let Some(id) = todo.pop() {
            let Some(e) = self.messages.get_mut(&id) else {
                continue;
            };
            let now = e.finish();
            if now == e.reported {
                continue;
            }
            e.reported = now;
            match now {
                Finish::Open => events.push(Event::Reopened { message: id }),
                Finish::Delivered => {
                    events.push(Event::Delivered { message: id });
                    self.release_children(id, events, &mut todo);
                }
                Finish::Dead => {
                    let reason = if e.parent_dead {
                        DeadReason::ParentDead
                    } else {
                        DeadReason::MaxAttempts
                    };
                    events.push(Event::Dead {
                        message: id,
                        reason,
                    });
                    if self.per_subscriber() {
                        let all = self.messages.get(&id).map_or(0, |e| e.fanout);
                        self.kill_copies(id, all, events, &mut todo);
                        continue;
                    }
                    match self.on_parent_dead {
                        OnParentDead::Wait => {}
                        OnParentDead::Deliver => self.release_children(id, events, &mut todo),
                        OnParentDead::DeadLetter => self.kill_children(id, &mut todo),
                    }
                }
            }
        }
    }

    /// The children of `parent` still waiting for it.
    fn waiting_children(&self, parent: MessageId) -> Vec<MessageId> {
        let Some(kids) = self.children.get(&parent) else {
            return Vec::new();
        };
        kids.to_vec()
            .into_iter()
            .filter(|c| {
                self.messages
                    .get(c)
                    .is_some_and(|e| e.waiting && e.parents.contains(parent))
            })
            .collect()
    }

    fn release_children(
        &mut self,
        parent: MessageId,
        events: &mut Vec<Event>,
        todo: &mut Vec<MessageId>,
    ) {
        // A child of a join goes only when none of its other parents holds it back.
        for child in self.waiting_children(parent) {
            if self.per_subscriber() {
                self.refresh_copies(child, events, todo);
            } else if self.hold_by_parents(child) == Hold::Free {
                self.release_one(child, events, todo);
            }
        }
    }

    /// The waiting children of `parent` go dead with it (reason `parent_dead`).
    fn kill_children(&mut self, parent: MessageId, todo: &mut Vec<MessageId>) {
        for child in self.waiting_children(parent) {
            self.change(child, |c| {
                c.waiting = false;
                c.parent_dead = true;
            });
            todo.push(child);
        }
    }

    /// Queues a message for every subscriber it is still owed to, and adds it to the work list
    /// of messages to settle. One still scheduled only stops waiting for its parent: it goes
    /// when it is due.
    fn release_one(&mut self, id: MessageId, events: &mut Vec<Event>, todo: &mut Vec<MessageId>) {
        let Some(Some(owed)) = self.change(id, |e| {
            e.waiting = false;
            (!e.scheduled).then(|| e.owed() & !e.active)
        }) else {
            return;
        };
        if owed != 0 {
            self.queue_behind(id, owed);
            events.push(Event::Released {
                message: id,
                slots: Slots(owed),
            });
        }
        todo.push(id);
    }

    /// Queues a message for the subscribers of `slots` whose cursors passed it already (the
    /// others will find it as they walk on).
    fn queue_behind(&mut self, id: MessageId, slots: u64) {
        for slot in Slots(slots).iter() {
            if let Some(Some(sub)) = self.slots.get_mut(slot.index())
                && sub.is_behind(id)
            {
                sub.behind.push_back(id);
            }
        }
    }

    /// The next message to send to a subscriber, oldest first; it is then in flight for that
    /// subscriber until [`Scheduler::ack`], [`Scheduler::give_up`] or [`Scheduler::requeue`].
    pub fn next(&mut self, slot: Slot) -> Option<MessageId> {
        let bit = slot.bit();
        let (messages, foreign, policy) = (&self.messages, &self.foreign, self.on_parent_dead);
        let per_subscriber = self.causality == Causality::PerSubscriber;
        // Per subscriber, a waiting message's copy goes once no parent holds it back.
        let sendable = |e: &Entry<M>| {
            !e.scheduled
                && !e.parent_dead
                && e.owed() & bit != 0
                && e.active & bit == 0
                && (!e.waiting
                    || (per_subscriber
                        && scope::slot_hold(messages, foreign, policy, e, bit) == Hold::Free))
        };
        let sub = self.slots.get_mut(slot.index())?.as_mut()?;
        let mut found = None;
        while let Some(id) = sub.behind.pop_front() {
            if self.messages.get(&id).is_some_and(sendable) {
                found = Some(id);
                break;
            }
        }
        if found.is_none() {
            // Walk forward. The cursor passes every message it looks at, sendable or not: one
            // that becomes sendable later (a child released, a redrive) is queued in `behind`
            // then, so the walk never looks at a message twice.
            use std::ops::Bound;
            let from = sub.at.map_or(Bound::Unbounded, Bound::Excluded);
            for (id, e) in self.messages.range((from, Bound::Unbounded)) {
                sub.at = Some(*id);
                if sendable(e) {
                    found = Some(*id);
                    break;
                }
            }
        }
        let id = found?;
        self.change(id, |e| e.active |= bit);
        Some(id)
    }

    /// A subscriber acknowledged a message. Also used on replay, without a prior `next`.
    /// Acks for messages or slots no longer here are ignored (the message was removed, the
    /// subscriber too): they are stale, not errors.
    pub fn ack(&mut self, id: MessageId, slot: Slot) -> Vec<Event> {
        let bit = slot.bit();
        let mut events = Vec::new();
        let applied = self.change(id, |e| {
            let owed = e.fanout & bit != 0 && e.acked & bit == 0;
            if owed {
                e.acked |= bit;
                e.dead &= !bit;
                e.active &= !bit;
            }
            owed
        });
        if applied == Some(true) {
            let mut todo = vec![id];
            if self.per_subscriber() {
                for child in self.waiting_children(id) {
                    self.refresh_copies(child, &mut events, &mut todo);
                }
            }
            self.settle_all(todo, &mut events);
        }
        events
    }

    /// A subscriber gave up on a message (its attempts ran out).
    pub fn give_up(&mut self, id: MessageId, slot: Slot) -> Vec<Event> {
        let bit = slot.bit();
        let mut events = Vec::new();
        let applied = self.change(id, |e| {
            let owed = e.owed() & bit != 0;
            if owed {
                e.dead |= bit;
                e.active &= !bit;
            }
            owed
        });
        if applied == Some(true) {
            let mut todo = vec![id];
            if self.per_subscriber() {
                self.kill_copies(id, bit, &mut events, &mut todo);
            }
            self.settle_all(todo, &mut events);
        }
        events
    }

    /// Puts an in-flight message back at the front of a subscriber's queue without an outcome
    /// (its attempt was abandoned).
    pub fn requeue(&mut self, id: MessageId, slot: Slot) {
        let bit = slot.bit();
        let was_active = self.change(id, |e| {
            let active = e.active & bit != 0;
            e.active &= !bit;
            active
        });
        if was_active == Some(true)
            && let Some(Some(sub)) = self.slots.get_mut(slot.index())
            && sub.is_behind(id)
        {
            sub.behind.push_front(id);
        }
    }

    /// Sends a dead message again to the subscribers that gave up on it (or, if it died with
    /// its parent, to every subscriber that has not acknowledged it). Returns those slots.
    pub fn redrive(&mut self, id: MessageId) -> Result<(Slots, Vec<Event>), ScheduleError> {
        let e = self
            .messages
            .get(&id)
            .ok_or(ScheduleError::UnknownMessage(id))?;
        if !e.parent_dead && e.dead == 0 {
            return Err(ScheduleError::NotDead(id));
        }
        // A child that died with a parent goes back to waiting while any of its parents is held
        // and would still hold a new child back: a redrive never breaks parent order.
        // Per subscriber, every copy redriven waits again while a parent holds it back.
        let back_to_waiting = if self.per_subscriber() {
            !e.parents.is_empty()
        } else {
            e.parent_dead && self.hold_by_parents(id) != Hold::Free
        };
        let slots = self
            .change(id, |e| {
                let slots = if e.parent_dead {
                    e.parent_dead = false;
                    e.fanout & !e.acked
                } else {
                    e.dead
                };
                e.dead = 0;
                e.waiting = back_to_waiting;
                slots
            })
            .unwrap_or(0);
        let mut events = Vec::new();
        if back_to_waiting && self.per_subscriber() {
            let mut todo = Vec::new();
            self.refresh_copies(id, &mut events, &mut todo);
            self.settle_all(todo, &mut events);
        } else if back_to_waiting {
            self.settle_all(vec![id], &mut events);
        } else {
            self.release(id, &mut events);
        }
        Ok((Slots(slots), events))
    }

    /// Sends a delivered message again to every subscriber of its fan-out set (a replay). It
    /// waits again if a parent holds it back now (one replayed before it, say: replaying
    /// parents before children keeps their order), and is dead at once if a parent is dead
    /// under `dead_letter`, as a message published now would be.
    pub fn replay(&mut self, id: MessageId) -> Result<Vec<Event>, ScheduleError> {
        let e = self
            .messages
            .get(&id)
            .ok_or(ScheduleError::UnknownMessage(id))?;
        if e.finish() != Finish::Delivered {
            return Err(ScheduleError::NotDelivered(id));
        }
        if self.per_subscriber() {
            // Each copy as for a message published now.
            let has_parents = !e.parents.is_empty();
            self.change(id, |e| {
                e.acked = 0;
                e.dead = 0;
                e.waiting = has_parents;
            });
            let (mut events, mut todo) = (Vec::new(), Vec::new());
            if has_parents {
                self.start_copies(id, &mut events, &mut todo);
                self.settle_all(todo, &mut events);
            } else {
                self.release(id, &mut events);
            }
            return Ok(events);
        }
        // As for a message published now: a parent dead under `dead_letter` kills it.
        let hold = self.hold_by_parents(id);
        self.change(id, |e| {
            e.acked = 0;
            e.dead = 0;
            e.waiting = hold == Hold::Wait;
            e.parent_dead = hold == Hold::Kill;
        });
        let mut events = Vec::new();
        if hold == Hold::Free {
            self.release(id, &mut events);
        } else {
            self.settle_all(vec![id], &mut events);
        }
        Ok(events)
    }

    /// Removes a message (discarded, or its retention is over). Attempts under way finish
    /// unheard. What happens to its waiting children depends on how it goes (see [`Removal`]).
    pub fn remove(
        &mut self,
        id: MessageId,
        how: Removal,
    ) -> Result<(M, Vec<Event>), ScheduleError> {
        let waiting = self.waiting_children(id);
        let e = self
            .messages
            .remove(&id)
            .ok_or(ScheduleError::UnknownMessage(id))?;
        let state = e.state();
        self.counts.sub(state);
        if state.is_undelivered() {
            self.undelivered_bytes = self.undelivered_bytes.saturating_sub(e.meta.weight());
        }
        for p in e.parents.iter() {
            if let Some(siblings) = self.children.get_mut(&p)
                && siblings.remove(id)
            {
                self.children.remove(&p);
                // No child here names it any more: what it is no longer matters here.
                self.foreign.remove(&p);
            }
        }
        self.children.remove(&id);
        let mut events = Vec::new();
        let mut todo = Vec::new();
        let dead = e.finish() == Finish::Dead;
        for child in waiting {
            if how == Removal::Expired && dead {
                self.change(child, |c| {
                    c.waiting = false;
                    c.parent_dead = true;
                });
                todo.push(child);
            } else if self.per_subscriber() {
                self.refresh_copies(child, &mut events, &mut todo);
            } else if self.hold_by_parents(child) == Hold::Free {
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

    /// Messages in id (publish) order from `from` (inclusive).
    pub fn iter_at(
        &self,
        from: Option<MessageId>,
    ) -> impl Iterator<Item = (MessageId, MessageState, &M)> + '_ {
        use std::ops::Bound;
        let start = from.map_or(Bound::Unbounded, Bound::Included);
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

    /// A message's parents, in the order they were named.
    pub fn parents(&self, id: MessageId) -> Option<&Parents> {
        self.messages.get(&id).map(|e| &e.parents)
    }

    /// The children of a held message that are still held, in publish order.
    pub fn children(&self, id: MessageId) -> Vec<MessageId> {
        self.children
            .get(&id)
            .map(Children::to_vec)
            .unwrap_or_default()
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

    /// Counts per state, kept as messages change.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Weights (body bytes) of waiting, ready and delivering messages.
    pub fn undelivered_bytes(&self) -> u64 {
        self.undelivered_bytes
    }

    /// A message's durable scheduling state.
    pub fn raw(&self, id: MessageId) -> Option<RawEntry<&M>> {
        self.messages.get(&id).map(|e| RawEntry {
            meta: &e.meta,
            parents: e.parents.clone(),
            fanout: Slots(e.fanout),
            acked: Slots(e.acked),
            dead: Slots(e.dead),
            waiting: e.waiting,
            scheduled: e.scheduled,
            parent_dead: e.parent_dead,
        })
    }

    /// Puts back a message exactly as a snapshot stored it. Call [`Scheduler::finish_restore`]
    /// once every message is back.
    pub fn restore(&mut self, id: MessageId, raw: RawEntry<M>) -> Result<(), ScheduleError> {
        if self.messages.contains_key(&id) {
            return Err(ScheduleError::Duplicate(id));
        }
        let live = self.all_slots().0;
        let mut e = Entry {
            meta: raw.meta,
            parents: raw.parents,
            fanout: raw.fanout.0 & live,
            acked: raw.acked.0 & live,
            dead: raw.dead.0 & live,
            active: 0,
            waiting: raw.waiting,
            scheduled: raw.scheduled,
            parent_dead: raw.parent_dead,
            reported: Finish::Open,
        };
        e.reported = e.finish();
        let state = e.state();
        self.counts.add(state);
        if state.is_undelivered() {
            self.undelivered_bytes += e.meta.weight();
        }
        self.messages.insert(id, e);
        Ok(())
    }

    /// Puts back what a snapshot stored of a parent in another queue.
    pub fn restore_foreign(&mut self, parent: MessageId, state: ParentState) {
        self.foreign.insert(parent, state);
    }

    /// Rebuilds what restored messages imply: the children of every parent.
    pub fn finish_restore(&mut self) {
        self.children.clear();
        let pairs: Vec<(MessageId, MessageId)> = self
            .messages
            .iter()
            .flat_map(|(id, e)| e.parents.iter().map(move |p| (p, *id)))
            .filter(|(p, _)| self.messages.contains_key(p) || self.foreign.contains_key(p))
            .collect();
        for (parent, child) in pairs {
            self.add_child(parent, child);
        }
    }
}

#[cfg(test)]
mod tests;
