//! A snapshot's side of the scheduler: each message's durable state as stored, and put back
//! verbatim, with only what it implies (the children index, counts) rebuilt.

use super::entry::{Entry, Finish, RawEntry};
use super::{ScheduleError, Scheduler, Slots, Weighed};
use crate::model::{MessageId, ParentState};

impl<M: Weighed> Scheduler<M> {
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
