//! How parents hold their children back: the one rule publish, release, redrive, removal and
//! the settling of parents in other queues all ask (free, wait, or kill under `dead_letter`, the
//! strongest parent winning), and the index of children it walks.

use super::entry::Children;
use super::{Event, Scheduler, Weighed};
use crate::model::{MessageId, OnParentDead, ParentState};

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
pub(super) enum Hold {
    Free,
    Wait,
    Kill,
}

/// How a parent in `state` holds back a child under `policy`: the rule itself. A parent gone
/// dead (removed by retention) can never arrive: it kills unless the queue says `deliver`.
pub(super) fn hold_for(state: ParentState, policy: OnParentDead) -> Hold {
    match (state, policy) {
        (ParentState::Delivered | ParentState::Gone, _) => Hold::Free,
        (ParentState::Open, _) => Hold::Wait,
        (ParentState::Dead | ParentState::GoneDead, OnParentDead::Deliver) => Hold::Free,
        (ParentState::Dead, OnParentDead::Wait) => Hold::Wait,
        (ParentState::Dead, OnParentDead::DeadLetter) | (ParentState::GoneDead, _) => Hold::Kill,
    }
}

impl<M: Weighed> Scheduler<M> {
    pub(super) fn add_child(&mut self, parent: MessageId, child: MessageId) {
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
    pub(super) fn hold_of(&self, parent: MessageId) -> Hold {
        let state = match self.messages.get(&parent) {
            Some(e) => e.finish().into(),
            None => match self.foreign.get(&parent) {
                Some(s) => *s,
                None => return Hold::Free,
            },
        };
        hold_for(state, self.on_parent_dead)
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
    pub(super) fn hold_by_parents(&self, id: MessageId) -> Hold {
        self.messages.get(&id).map_or(Hold::Free, |e| {
            e.parents
                .iter()
                .map(|p| self.hold_of(p))
                .max()
                .unwrap_or(Hold::Free)
        })
    }

    /// The children of `parent` still waiting for it.
    pub(super) fn waiting_children(&self, parent: MessageId) -> Vec<MessageId> {
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

    pub(super) fn release_children(
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
    pub(super) fn kill_children(&mut self, parent: MessageId, todo: &mut Vec<MessageId>) {
        for child in self.waiting_children(parent) {
            self.change(child, |c| {
                c.waiting = false;
                c.parent_dead = true;
            });
            todo.push(child);
        }
    }
}
