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
mod parents;
mod restore;
mod scope;
mod slots;
mod views;

pub use entry::RawEntry;
use entry::{Children, Cursor, Entry, Finish};
use parents::Hold;
pub use parents::ParentLink;
pub use slots::{Slot, Slots};
pub use views::BlockingRoots;

use crate::idhash::IdMap;
use crate::limits::SUBSCRIBERS_PER_QUEUE_MAX;
use crate::model::{
    Causality, Counts, DeadReason, MessageId, MessageState, OnParentDead, ParentState, Parents,
    SubscriberId,
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
        // Checked before anything changes: a refused publish leaves no trace.
        let ids: Vec<MessageId> = parents.iter().map(|l| l.id()).collect();
        let parents_of = Parents::new(&ids).map_err(ScheduleError::RepeatedParent)?;
        if let Some(p) = parents.iter().find_map(|l| match *l {
            ParentLink::Held(p) if !self.messages.contains_key(&p) => Some(p),
            _ => None,
        }) {
            return Err(ScheduleError::UnknownParent(p));
        }
        let mut hold = Hold::Free;
        for link in parents {
            let h = match *link {
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
        self.release_to(id, owed, events);
        todo.push(id);
    }

    /// Releases `id` to the subscribers of `slots` (an event says so): queued for those whose
    /// cursors passed it already, the others find it as they walk on.
    fn release_to(&mut self, id: MessageId, slots: u64, events: &mut Vec<Event>) {
        if slots == 0 {
            return;
        }
        events.push(Event::Released {
            message: id,
            slots: Slots(slots),
        });
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
}

#[cfg(test)]
mod tests;
