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
use crate::limits::DUE_STALE_SLACK;
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

    /// Drops the entries of messages no longer scheduled once they outnumber the live ones
    /// (discarded scheduled messages would otherwise keep theirs until their due time).
    fn compact(&mut self, live: u64, scheduled: impl Fn(MessageId) -> bool) {
        if self.heap.len() as u64 > 2 * live + DUE_STALE_SLACK {
            self.heap.retain(|Reverse((_, id))| scheduled(*id));
        }
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

    /// Records that `id` is due at `at_ms` (it was just published scheduled).
    pub(super) fn note_due(&mut self, at_ms: u64, id: MessageId) {
        let live = self.sched.counts().scheduled;
        let sched = &self.sched;
        self.due
            .compact(live, |m| sched.raw(m).is_some_and(|r| r.scheduled));
        self.due.push(at_ms, id);
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use storage::{Attributes, Location, Published};

    use crate::queue::QueueState;
    use crate::settings::QueueSettings;

    /// Discarded scheduled messages do not keep their due-time entries for their whole delay.
    #[test]
    fn stale_due_entries_are_dropped_once_they_outnumber_the_live_ones() {
        let mut q = QueueState::new("q", 1, QueueSettings::default());
        let mut wake = Vec::new();
        for seq in 0..5_000u64 {
            let p = Published {
                queue: 1,
                id: crate::ids::message_id(1_000, 1, seq),
                parents: Vec::new(),
                content_type: "text/plain".into(),
                published_at_ms: 1_000,
                idempotency_key: None,
                fanout: vec![],
                attributes: Attributes {
                    event_type: None,
                    deliver_at_ms: Some(1_000 + 30 * 86_400_000),
                    replay_of: None,
                    traceparent: None,
                    tracestate: None,
                },
                body: Bytes::new(),
            };
            let at = Location {
                segment: 1,
                offset: 24,
                len: 10,
            };
            q.apply_published(&p, at, &mut wake);
            q.apply_discarded(p.id, 1_000, &mut wake).unwrap();
        }
        assert!(
            q.due.heap.len() <= 1_100,
            "{} entries kept",
            q.due.heap.len()
        );
        assert_eq!(q.next_due_ms(), None);
    }
}
