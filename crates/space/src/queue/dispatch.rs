//! What the dispatchers ask of a queue: a subscriber's next message (a due retry first), the
//! messages that go with it in a batch, its retry schedule, and whether an attempt is still
//! wanted.

use tokio::time::Instant;

use super::{Answered, Meta, QueueState};
use crate::model::{DeliveryState, MessageId, SubscriberId};
use crate::scheduler::Scheduler;

impl QueueState {
    /// The next message for a subscriber: a retry that is due, else the scheduler's next
    /// (unless the subscriber's recent attempts all failed: see
    /// [`Subscriber::takes_new_messages`]).
    pub fn next_for(&mut self, sub: SubscriberId, now: Instant) -> Option<MessageId> {
        self.next_within(sub, now, u64::MAX)
    }

    /// [`QueueState::next_for`], for a message whose body has at most `budget` bytes: a due
    /// retry or a new message that is larger stays where it is (first in line) and `None` is
    /// returned.
    fn next_within(&mut self, sub: SubscriberId, now: Instant, budget: u64) -> Option<MessageId> {
        let s = self.subscribers.get_mut(&sub)?;
        // Without a bound (a single message), no size is looked up.
        let size = |sched: &Scheduler<Meta>, id| {
            if budget == u64::MAX {
                0
            } else {
                sched.meta(id).map_or(0, |m| u64::from(m.size))
            }
        };
        while let Some(id) = s.peek_due_retry(now) {
            // Stale entries (discarded, expired, acked meanwhile) are skipped.
            if self.sched.delivery_state(id, s.slot) != Some(DeliveryState::InFlight) {
                s.take_due_retry(now);
                continue;
            }
            if size(&self.sched, id) > budget {
                return None;
            }
            return s.take_due_retry(now);
        }
        if !s.takes_new_messages() {
            return None;
        }
        let id = self.sched.next(s.slot)?;
        if size(&self.sched, id) > budget {
            self.sched.requeue(id, s.slot);
            return None;
        }
        Some(id)
    }

    /// After `first`, the messages that go in the same request to `sub`: none unless it takes
    /// batches; otherwise whatever is ready now (due retries first, then new messages), up to
    /// its `batch` bounds — never waiting for more. A child is never in the batch of its parent:
    /// it is released only once its parent is acknowledged by all.
    pub fn fill_batch(
        &mut self,
        sub: SubscriberId,
        first: MessageId,
        now: Instant,
    ) -> Vec<MessageId> {
        let Some(batch) = self.subscribers.get(&sub).map(|s| s.spec.batch) else {
            return Vec::new();
        };
        if !batch.is_batched() {
            return Vec::new();
        }
        let mut bytes = self.meta(first).map_or(0, |m| u64::from(m.size));
        let mut more = Vec::new();
        while more.len() + 1 < batch.max_messages as usize {
            let budget = u64::from(batch.max_bytes).saturating_sub(bytes);
            let Some(id) = self.next_within(sub, now, budget) else {
                break;
            };
            bytes += self.meta(id).map_or(0, |m| u64::from(m.size));
            more.push(id);
        }
        more
    }

    /// How an attempt of `sub` ended, for its dispatcher's pacing and its health (not
    /// durable state).
    pub fn record_answer(&mut self, sub: SubscriberId, answer: Answered<'_>) {
        if let Some(s) = self.subscribers.get_mut(&sub) {
            s.record_answer(answer);
        }
    }

    /// When the subscriber's earliest retry is due.
    pub fn next_retry_at(&self, sub: SubscriberId) -> Option<Instant> {
        self.subscribers.get(&sub)?.next_retry_at()
    }

    pub fn schedule_retry(&mut self, sub: SubscriberId, id: MessageId, at: Instant) {
        if let Some(s) = self.subscribers.get_mut(&sub) {
            s.schedule_retry(id, at);
        }
    }

    /// Whether an attempt of `id` for `sub` is wanted: the message held, the subscriber there,
    /// its delivery in flight.
    pub fn is_in_flight(&self, id: MessageId, sub: SubscriberId) -> bool {
        !self.deleted
            && self.slot_of(sub).is_some_and(|slot| {
                self.sched.delivery_state(id, slot) == Some(DeliveryState::InFlight)
            })
    }

    /// The number (1-based) of the next attempt of `id` for `sub`.
    pub fn next_attempt_number(&self, id: MessageId, sub: SubscriberId) -> u32 {
        self.deliveries
            .get(&(id, Some(sub)))
            .map_or(0, |i| i.attempts)
            .saturating_add(1)
    }
}
