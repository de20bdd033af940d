//! What the scheduler keeps per message, and per subscriber.

use std::collections::VecDeque;

use super::Slots;
use crate::model::{MessageId, MessageState, Parents, SubscriberId};

/// Where a message stands as far as events went: what was last reported of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    Open,
    Delivered,
    Dead,
}

impl From<Finish> for crate::model::ParentState {
    fn from(f: Finish) -> Self {
        match f {
            Finish::Open => crate::model::ParentState::Open,
            Finish::Delivered => crate::model::ParentState::Delivered,
            Finish::Dead => crate::model::ParentState::Dead,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Entry<M> {
    /// What the Space keeps with the message (its location in the log, its size).
    pub(super) meta: M,
    /// Kept inline for none or one; a join's list is boxed, so a message without a join costs
    /// no more than one with a single parent.
    pub(super) parents: Parents,
    pub(super) fanout: u64,
    pub(super) acked: u64,
    pub(super) dead: u64,
    /// Slots with an attempt under way or a retry scheduled.
    pub(super) active: u64,
    /// Held until every parent is delivered.
    pub(super) waiting: bool,
    /// Held until the Space says it is due ([`super::Scheduler::release_scheduled`]).
    pub(super) scheduled: bool,
    /// Dead as a whole because a parent died (or a dead parent was removed).
    pub(super) parent_dead: bool,
    /// The last outcome events reported.
    pub(super) reported: Finish,
}

impl<M> Entry<M> {
    pub(super) fn is_delivered(&self) -> bool {
        !self.held() && !self.parent_dead && self.acked == self.fanout
    }

    /// Held back from its subscribers: for its parent, or for its due time.
    pub(super) fn held(&self) -> bool {
        self.waiting || self.scheduled
    }

    pub(super) fn is_dead(&self) -> bool {
        self.parent_dead || (self.dead != 0 && (self.acked | self.dead) == self.fanout)
    }

    pub(super) fn finish(&self) -> Finish {
        if self.is_dead() {
            Finish::Dead
        } else if self.is_delivered() {
            Finish::Delivered
        } else {
            Finish::Open
        }
    }

    pub(super) fn state(&self) -> MessageState {
        if self.is_dead() {
            MessageState::Dead
        } else if self.scheduled {
            MessageState::Scheduled
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
    pub(super) fn owed(&self) -> u64 {
        self.fanout & !self.acked & !self.dead
    }
}

/// A message's durable scheduling state, as a snapshot stores it and restores it verbatim
/// (attempts under way are not state: they are sent again after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry<M> {
    pub meta: M,
    pub parents: Parents,
    pub fanout: Slots,
    pub acked: Slots,
    pub dead: Slots,
    pub waiting: bool,
    pub scheduled: bool,
    pub parent_dead: bool,
}

/// The children of one parent. Most parents in a chain have one: kept inline.
#[derive(Debug, Clone)]
pub(super) enum Children {
    One(MessageId),
    Many(Vec<MessageId>),
}

impl Children {
    pub(super) fn push(&mut self, id: MessageId) {
        match self {
            Children::One(first) => *self = Children::Many(vec![*first, id]),
            Children::Many(v) => v.push(id),
        }
    }

    /// Removes `id`; true if none are left.
    pub(super) fn remove(&mut self, id: MessageId) -> bool {
        match self {
            Children::One(only) => *only == id,
            Children::Many(v) => {
                v.retain(|c| *c != id);
                v.is_empty()
            }
        }
    }

    pub(super) fn to_vec(&self) -> Vec<MessageId> {
        match self {
            Children::One(only) => vec![*only],
            Children::Many(v) => v.clone(),
        }
    }
}

/// Where a subscriber is in the queue. No memory per message: the subscriber walks the
/// ordered message map with a cursor, and only messages released behind the cursor (children
/// of a parent delivered late, redrives, requeues) wait in `behind`.
pub(super) struct Cursor {
    pub(super) id: SubscriberId,
    /// Every message up to here has been considered; `None`: nothing yet.
    pub(super) at: Option<MessageId>,
    /// Released behind the cursor, oldest first. May hold ids that no longer need sending
    /// (acked, removed); [`Scheduler::next`] skips them.
    pub(super) behind: VecDeque<MessageId>,
}

impl Cursor {
    pub(super) fn is_behind(&self, id: MessageId) -> bool {
        self.at.is_some_and(|c| id <= c)
    }
}
