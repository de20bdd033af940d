//! Messages published for later: their due times, earliest first, and their release.
//!
//! A scheduled message is in the scheduler from its publish, held (state `scheduled`) like a
//! child waiting for its parent, so its own children wait for it; this heap says when each is
//! due. Its release is a `Released` record like any change: taken off the heap when due,
//! appended, then applied (`apply_released`), so replay releases it at the same place in the
//! log, whatever the clock says when the log is read.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{QueueState, Wake};
use crate::model::MessageId;

/// Due times of scheduled messages (unix ms), earliest first: 24 bytes per message. Entries of
/// messages no longer scheduled (discarded, or released by a replayed record) are dropped when
/// reached.
#[derive(Default)]
pub(super) struct DueTimes {
    heap: BinaryHeap<Reverse<(u64, MessageId)>>,
}

impl DueTimes {
    pub fn push(&mut self, at_ms: u64, id: MessageId) {
        self.heap.push(Reverse((at_ms, id)));
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, MessageId)> + '_ {
        self.heap.iter().map(|Reverse(e)| *e)
    }
}

impl QueueState {
    /// Whether `id` is held for its due time.
    fn is_scheduled(&self, id: MessageId) -> bool {
        self.sched.raw(id).is_some_and(|r| r.scheduled)
    }

    /// Takes off the heap up to `max` scheduled messages due at `now_ms`, earliest first, with
    /// their due times: what a `Released` record is to release. Put them back
    /// ([`QueueState::put_back_due`]) if that record cannot be written.
    pub fn take_due(&mut self, now_ms: u64, max: usize) -> Vec<(u64, MessageId)> {
        let mut due = Vec::new();
        while due.len() < max
            && let Some(Reverse((at, id))) = self.due.heap.peek().copied()
            && at <= now_ms
        {
            self.due.heap.pop();
            if self.is_scheduled(id) {
                due.push((at, id));
            }
        }
        due
    }

    pub fn put_back_due(&mut self, due: &[(u64, MessageId)]) {
        for &(at, id) in due {
            self.due.push(at, id);
        }
    }

    /// Scheduled messages fell due: they go to their subscribers (those that still wait for a
    /// parent go when it is delivered).
    pub fn apply_released(&mut self, ids: &[MessageId], at_ms: u64, wake: &mut Wake) {
        for &id in ids {
            if self.is_scheduled(id) {
                let events = self.sched.release_scheduled(id);
                self.handle(events, at_ms, wake);
            }
        }
    }

    /// When the earliest scheduled message is due (entries of messages no longer scheduled
    /// are dropped on the way).
    pub fn next_due_ms(&mut self) -> Option<u64> {
        while let Some(Reverse((at, id))) = self.due.heap.peek().copied() {
            if self.is_scheduled(id) {
                return Some(at);
            }
            self.due.heap.pop();
        }
        None
    }
}
