//! Per-subscriber causality: a child's copy for subscriber S goes as soon as S acknowledged
//! each of its parents (at once for a parent S does not take), and a parent dead for S holds
//! back, or under `dead_letter` kills, only S's copy.
//!
//! Nothing more is stored per message: which copies a parent still holds back is derived
//! from the parents' own masks when it matters (a parent's outcome for a subscriber, a
//! dispatcher's walk), and `waiting` means "some copy is still held back". Parents in other
//! queues hold every copy alike (their subscribers are not this queue's).

use super::entry::Entry;
use super::parents::hold_for;
use super::{Event, Hold, Scheduler, Slots, Weighed};
use crate::idhash::IdMap;
use crate::model::{MessageId, OnParentDead, ParentState};

/// How the parents of `child` hold back its copy for the subscriber of slot bit `bit`. A free
/// function over the fields it reads, so that a dispatcher's walk may ask while it holds its
/// cursor.
pub(super) fn slot_hold<M>(
    messages: &std::collections::BTreeMap<MessageId, Entry<M>>,
    foreign: &IdMap<MessageId, ParentState>,
    policy: OnParentDead,
    child: &Entry<M>,
    bit: u64,
) -> Hold {
    let one = |parent: MessageId| match messages.get(&parent) {
        Some(p) if p.fanout & bit == 0 || p.acked & bit != 0 => Hold::Free,
        // Dead for this subscriber (or as a whole): as a dead parent.
        Some(p) if p.dead & bit != 0 || p.parent_dead => hold_for(ParentState::Dead, policy),
        Some(_) => Hold::Wait,
        // In another queue: as a whole.
        None => foreign
            .get(&parent)
            .map_or(Hold::Free, |state| hold_for(*state, policy)),
    };
    child.parents.iter().map(one).max().unwrap_or(Hold::Free)
}

impl<M: Weighed> Scheduler<M> {
    pub(super) fn per_subscriber(&self) -> bool {
        self.causality == crate::model::Causality::PerSubscriber
    }

    fn slot_hold_of(&self, id: MessageId, bit: u64) -> Hold {
        self.messages.get(&id).map_or(Hold::Free, |e| {
            slot_hold(&self.messages, &self.foreign, self.on_parent_dead, e, bit)
        })
    }

    /// The copies of a waiting child that no parent holds back any more go (when it is not
    /// held for its due time); it stops waiting once none is held back. Kills nothing: a copy
    /// dies only when a parent dies for its subscriber ([`Scheduler::kill_copies`]) or at
    /// publish, so that a redriven copy waits again, as in global causality.
    pub(super) fn refresh_copies(
        &mut self,
        id: MessageId,
        events: &mut Vec<Event>,
        todo: &mut Vec<MessageId>,
    ) {
        let Some(e) = self.messages.get(&id) else {
            return;
        };
        if !e.waiting || e.parent_dead {
            return;
        }
        let (mut free, mut held) = (0u64, 0u64);
        for slot in Slots(e.owed()).iter() {
            match slot_hold(
                &self.messages,
                &self.foreign,
                self.on_parent_dead,
                e,
                slot.bit(),
            ) {
                Hold::Free => free |= slot.bit(),
                Hold::Wait | Hold::Kill => held |= slot.bit(),
            }
        }
        let go = if e.scheduled { 0 } else { free & !e.active };
        self.change(id, |e| {
            if held == 0 {
                e.waiting = false;
            }
        });
        self.release_to(id, go, events);
        todo.push(id);
    }

    /// `parent` died for the slots in `bits` (its subscriber gave up, or it died as a whole):
    /// under `dead_letter` the copies of its waiting children for those slots die with it, and
    /// theirs below them. Then what is left of each child is looked at again.
    pub(super) fn kill_copies(
        &mut self,
        parent: MessageId,
        bits: u64,
        events: &mut Vec<Event>,
        todo: &mut Vec<MessageId>,
    ) {
        let mut work = vec![(parent, bits)];
        while let Some((parent, bits)) = work.pop() {
            for child in self.waiting_children(parent) {
                let kill = if self.on_parent_dead == OnParentDead::DeadLetter {
                    let owed = self.messages.get(&child).map_or(0, |e| e.owed() & bits);
                    Slots(owed)
                        .iter()
                        .filter(|s| self.slot_hold_of(child, s.bit()) == Hold::Kill)
                        .fold(0, |m, s| m | s.bit())
                } else {
                    0
                };
                if kill != 0 {
                    self.change(child, |c| c.dead |= kill);
                    for slot in Slots(kill).iter() {
                        events.push(Event::CopyDead {
                            message: child,
                            slot,
                        });
                    }
                    work.push((child, kill));
                }
                self.refresh_copies(child, events, todo);
            }
        }
    }

    /// Looks again at every waiting message (the scope changed, a subscriber went).
    pub(super) fn refresh_all_waiting(&mut self, events: &mut Vec<Event>) {
        let waiting: Vec<MessageId> = self
            .messages
            .iter()
            .filter(|(_, e)| e.waiting)
            .map(|(id, _)| *id)
            .collect();
        let mut todo = Vec::new();
        for id in waiting {
            self.refresh_copies(id, events, &mut todo);
        }
        self.settle_all(todo, events);
    }

    /// At publish: the copies a parent already dead for their subscriber kills die at once
    /// (under `dead_letter`); the free ones go.
    pub(super) fn start_copies(
        &mut self,
        id: MessageId,
        events: &mut Vec<Event>,
        todo: &mut Vec<MessageId>,
    ) {
        let owed = self.messages.get(&id).map_or(0, |e| e.owed());
        let kill = Slots(owed)
            .iter()
            .filter(|s| self.slot_hold_of(id, s.bit()) == Hold::Kill)
            .fold(0, |m, s| m | s.bit());
        if kill != 0 {
            self.change(id, |e| e.dead |= kill);
            for slot in Slots(kill).iter() {
                events.push(Event::CopyDead { message: id, slot });
            }
        }
        self.refresh_copies(id, events, todo);
    }
}
