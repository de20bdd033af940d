//! What the API shows of a queue and its messages. Read-only, and bounded: each call costs what
//! it returns (indexes are kept for children, dead letters, counts and content types), never a
//! walk of the queue and never a read of the log.

use std::sync::Arc;
use std::time::Duration;

use storage::Location;

use super::{Interned, QueueState};
use crate::model::{Counts, MessageId, MessageState, SubscriberId};
use crate::types::{DeadLetter, DeliveryView, Page};

/// A message as the queue holds it.
#[derive(Debug, Clone)]
pub(crate) struct MessageView {
    pub state: MessageState,
    pub parents: crate::model::Parents,
    /// The message it is a copy of, for a copy a replay published.
    pub replay_of: Option<MessageId>,
    pub children: Vec<MessageId>,
    pub size: u32,
    /// `None` when the queue's table of content types was full: read it from the record.
    pub content_type: Option<Arc<str>>,
    /// Its event type: `Some(None)` without one; `None` when the queue's table of event types
    /// was full: read it from the record.
    pub event_type: Option<Option<Arc<str>>>,
    pub deliveries: Vec<DeliveryView>,
}

impl QueueState {
    pub fn counts(&self) -> Counts {
        self.sched.counts()
    }

    /// Ids of dead parents removed by retention that were forgotten to stay within
    /// `DEAD_REMOVED_RANGES_PER_QUEUE_MAX` (a child of one goes at once).
    pub fn forgotten_dead_parents(&self) -> u64 {
        self.dead_removed.forgotten()
    }

    /// Idempotency keys remembered now, and forgotten before their window was over (to stay
    /// within `idempotency.max_keys`) since the broker started.
    pub fn idempotency_keys(&self) -> (u64, u64) {
        (self.idempotency.len() as u64, self.idempotency.forgotten())
    }

    /// Body bytes of waiting, ready and delivering messages.
    pub fn undelivered_bytes(&self) -> u64 {
        self.sched.undelivered_bytes()
    }

    /// How long the oldest undelivered message has waited.
    pub fn oldest_undelivered_age(&self, now_ms: u64) -> Option<Duration> {
        let found = self
            .sched
            .iter_at(self.oldest_hint.get())
            .find(|(_, s, _)| s.is_undelivered())
            .map(|(id, _, _)| id);
        self.oldest_hint.set(found);
        found.map(|id| Duration::from_millis(now_ms.saturating_sub(crate::ids::unix_ms(id))))
    }

    /// Where the records of the held messages are.
    pub fn locations(&self) -> impl Iterator<Item = Location> + '_ {
        self.sched.iter_from(None).map(|(_, _, m)| m.location)
    }

    pub fn content_type_name(&self, t: Interned) -> Option<Arc<str>> {
        self.content_types.name(t).cloned()
    }

    /// A message's event type (see [`MessageView::event_type`]).
    pub fn event_type_name(&self, t: Interned) -> Option<Option<Arc<str>>> {
        if t == Interned::NONE {
            return Some(None);
        }
        self.event_types.name(t).map(|n| Some(n.clone()))
    }

    pub fn message_view(&self, id: MessageId) -> Option<MessageView> {
        let meta = self.sched.meta(id)?;
        Some(MessageView {
            state: self.sched.state(id)?,
            parents: self.sched.parents(id).cloned().unwrap_or_default(),
            replay_of: self.replays.get(&id).copied(),
            children: self.sched.children(id),
            size: meta.size,
            content_type: self.content_type_name(meta.content_type),
            event_type: self.event_type_name(meta.event_type),
            deliveries: self.delivery_views(id),
        })
    }

    /// The per-subscriber view of a message.
    pub fn delivery_views(&self, id: MessageId) -> Vec<DeliveryView> {
        let mut out = Vec::new();
        for (sub_id, sub) in &self.subscribers {
            let Some(state) = self.sched.delivery_state(id, sub.slot) else {
                continue;
            };
            let info = self
                .deliveries
                .get(&(id, Some(*sub_id)))
                .cloned()
                .unwrap_or_default();
            out.push(DeliveryView {
                subscriber: *sub_id,
                endpoint: sub.spec.endpoint.clone(),
                state,
                attempts: info.attempts,
                last_error: info.last_error,
                next_attempt_at_ms: info.next_attempt_at_ms,
                acked_at_ms: info.acked_at_ms,
            });
        }
        out
    }

    /// Messages in publish order, optionally of one state, after a cursor.
    pub fn messages_page(
        &self,
        state: Option<MessageState>,
        after: Option<MessageId>,
        limit: usize,
    ) -> Page<(MessageId, MessageState)> {
        let mut page: Vec<_> = self
            .sched
            .iter_from(after)
            .filter(|(_, s, _)| state.is_none_or(|want| *s == want))
            .map(|(id, s, _)| (id, s))
            .take(limit + 1)
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(id, _)| *id)
        } else {
            None
        };
        (page, next)
    }

    /// Dead (message, subscriber) pairs in message order, after a message id. A page ends at
    /// a message boundary, so that `after` loses nothing.
    pub fn dead_letters_page(&self, after: Option<MessageId>, limit: usize) -> Page<DeadLetter> {
        use std::ops::Bound;
        let limit = limit.max(1);
        let start = match after {
            Some(a) => Bound::Excluded((a, Some(SubscriberId::MAX))),
            None => Bound::Unbounded,
        };
        let mut out: Vec<DeadLetter> = Vec::new();
        let mut next = None;
        for &(id, sub) in self.dead_letters.range((start, Bound::Unbounded)) {
            if out.len() >= limit && out.last().is_some_and(|d| d.id != id) {
                next = out.last().map(|d| d.id);
                break;
            }
            let Some(info) = self.deliveries.get(&(id, sub)) else {
                continue;
            };
            let Some((reason, dead_at_ms)) = info.dead else {
                continue;
            };
            out.push(DeadLetter {
                id,
                subscriber: sub,
                endpoint: sub
                    .and_then(|s| self.subscribers.get(&s))
                    .map(|s| s.spec.endpoint.clone()),
                reason,
                attempts: info.attempts,
                last_error: info.last_error.clone(),
                dead_at_ms,
            });
        }
        (out, next)
    }

    /// Every message with a dead delivery, in order.
    pub fn dead_message_ids(&self) -> Vec<MessageId> {
        let mut ids: Vec<MessageId> = self.dead_letters.iter().map(|(id, _)| *id).collect();
        ids.dedup();
        ids
    }
}
