//! What the dispatchers ask of a queue: a subscriber's next message (a due retry first), the
//! messages that go with it in a batch, its retry schedule, and whether an attempt is still
//! wanted.

use tokio::time::Instant;

use super::{Answered, Meta, QueueState};
use crate::model::{DeliveryState, MessageId, SubscriberId};
use crate::scheduler::Scheduler;

/// What one request to a subscriber carries, from [`QueueState::take_request`].
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub first: MessageId,
    /// The rest of its batch (none unless the subscriber takes batches).
    pub more: Vec<MessageId>,
    /// Counted against the subscriber's rate limit: report it done when it is off the wire.
    pub counted: bool,
}

impl QueueState {
    /// What `sub`'s next request carries: its next message and, if it takes batches, what is
    /// ready to go with it. Nothing while it is paused or disabled, or its rate limit has no
    /// room; a batch holds at most what the rate limit has room for. Under a rate limit, the
    /// messages count against it until [`QueueState::request_done`], and `counted` says so
    /// (without one, nothing needs to be reported back).
    pub fn take_request(&mut self, sub: SubscriberId, now: Instant) -> Option<Request> {
        let room = self.subscribers.get_mut(&sub)?.room(now);
        if room == 0 {
            return None;
        }
        let first = self.next_for(sub, now)?;
        let more = self.fill_batch(sub, first, now, room as usize - 1);
        let n = u32::try_from(1 + more.len()).unwrap_or(u32::MAX);
        let counted = self.subscribers.get_mut(&sub).is_some_and(|s| s.sent(n));
        Some(Request {
            first,
            more,
            counted,
        })
    }

    /// A request of `n` messages taken by [`QueueState::take_request`] is off the wire.
    pub fn request_done(&mut self, sub: SubscriberId, n: u32, now: Instant) {
        if let Some(s) = self.subscribers.get_mut(&sub) {
            s.request_done(n, now);
        }
    }

    /// When `sub`'s dispatcher should look again unless woken (see
    /// [`Subscriber::next_wake_at`](super::Subscriber::next_wake_at)).
    pub fn next_wake_at(&mut self, sub: SubscriberId, now: Instant) -> Option<Instant> {
        self.subscribers.get_mut(&sub)?.next_wake_at(now)
    }

    /// A disabling asked for by [`QueueState::should_disable`] did not happen (the subscriber
    /// answered meanwhile, or the record could not be written): it may be asked for again.
    pub fn disable_not_done(&mut self, sub: SubscriberId) {
        if let Some(s) = self.subscribers.get_mut(&sub) {
            s.disabling = false;
        }
    }

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
    /// its `batch` bounds and `max` more — never waiting for more. A child is never in the
    /// batch of its parent: it is released only once its parent is acknowledged by all.
    pub fn fill_batch(
        &mut self,
        sub: SubscriberId,
        first: MessageId,
        now: Instant,
        max: usize,
    ) -> Vec<MessageId> {
        let Some(batch) = self.subscribers.get(&sub).map(|s| s.spec.batch) else {
            return Vec::new();
        };
        if !batch.is_batched() {
            return Vec::new();
        }
        let mut bytes = self.meta(first).map_or(0, |m| u64::from(m.size));
        let mut more = Vec::new();
        while more.len() + 1 < batch.max_messages as usize && more.len() < max {
            let budget = u64::from(batch.max_bytes).saturating_sub(bytes);
            let Some(id) = self.next_within(sub, now, budget) else {
                break;
            };
            bytes += self.meta(id).map_or(0, |m| u64::from(m.size));
            more.push(id);
        }
        more
    }

    /// Whether `sub` is due to be disabled at `now_ms`: active, not being disabled already,
    /// and every attempt failed for the queue's `disable_after` (not 0). Marks it as being
    /// disabled, so that it is asked for once.
    pub fn should_disable(&mut self, sub: SubscriberId, now_ms: u64) -> bool {
        let after = self.settings.disable_after.as_millis();
        let Some(s) = self.subscribers.get_mut(&sub) else {
            return false;
        };
        let due = after > 0
            && s.spec.state.sends()
            && !s.disabling
            && s.failing_for_ms(now_ms).is_some_and(|f| f >= after);
        if due {
            s.disabling = true;
        }
        due
    }

    /// How an attempt of `sub` ended, for its dispatcher's pacing and its health (not
    /// durable state).
    /// Children released so far (see `released`).
    pub fn released(&self) -> u64 {
        self.released
    }

    /// No subscriber has acknowledged `id` yet (and the queue holds it).
    pub fn acked_by_none(&self, id: MessageId) -> bool {
        self.sched.fanout(id).is_some_and(|fanout| {
            !fanout
                .iter()
                .any(|slot| self.sched.delivery_state(id, slot) == Some(DeliveryState::Acked))
        })
    }

    /// An attempt of `sub` took `took` (a batch counts once).
    pub fn observe_attempt(&self, sub: SubscriberId, took: std::time::Duration) {
        if let Some(s) = self.subscribers.get(&sub) {
            s.attempt_duration.observe(took);
        }
    }

    pub fn record_answer(&mut self, sub: SubscriberId, answer: Answered<'_>) {
        if let Some(s) = self.subscribers.get_mut(&sub) {
            s.record_answer(answer);
        }
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
