//! What the scheduler shows of its messages and subscribers: states, masks, pages in publish
//! order, counts. Reads only.

use super::entry::{Children, Entry};
use super::{Scheduler, Slot, Slots, Weighed};
use crate::model::{Counts, DeliveryState, MessageId, MessageState, Parents, SubscriberId};

/// What [`Scheduler::blocking_roots`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockingRoots {
    /// A root and how many waiting messages are below it, most first.
    pub roots: Vec<(MessageId, usize)>,
    /// A bound was reached: the counts are lower bounds.
    pub cut: bool,
}

impl<M: Weighed> Scheduler<M> {
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

    /// The messages holding back the most waiting messages below them, most first: each a
    /// parent with waiting children that is not waiting itself (a root of what is held back),
    /// with how many waiting messages are below it. Bounded for any queue: at most `scan_max`
    /// parents are looked at and `count_max` messages counted in all; `BlockingRoots::cut`
    /// says a bound was reached (then the counts are lower bounds, and a larger root may be
    /// missing).
    pub fn blocking_roots(&self, scan_max: usize, count_max: usize) -> BlockingRoots {
        let mut cut = self.children.len() > scan_max;
        let mut budget = count_max;
        let mut roots = Vec::new();
        for &parent in self.children.keys().take(scan_max) {
            if self.state(parent) == Some(MessageState::Waiting) {
                continue;
            }
            let mut below = 0;
            let mut todo = self.waiting_children(parent);
            while let Some(child) = todo.pop() {
                if budget == 0 {
                    cut = true;
                    break;
                }
                budget -= 1;
                below += 1;
                todo.extend(self.waiting_children(child));
            }
            if below > 0 {
                roots.push((parent, below));
            }
            if budget == 0 {
                break;
            }
        }
        roots.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        BlockingRoots { roots, cut }
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
}
