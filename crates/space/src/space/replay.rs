//! The state rebuilt from the log: the latest checkpoint's snapshot, restored verbatim, then
//! every record after it, applied in log order through the same transitions live operation
//! uses. Record times are the only clock; queues are found by number.

use std::collections::BTreeMap;

use bytes::Bytes;
use storage::{Record, Replayed};

use crate::delivery::HandlerKind;
use crate::error::OpenError;
use crate::model::QueueNumber;
use crate::queue::{QueueState, SubscriberSpec};
use crate::settings::QueueSettings;
use crate::snapshot::Counters;

#[derive(Default)]
pub(super) struct Replay {
    queues: BTreeMap<QueueNumber, QueueState>,
    next_queue_number: u32,
    next_subscriber: u64,
}

impl Replay {
    pub fn from_snapshot(bytes: Bytes) -> Result<Replay, OpenError> {
        let (counters, queues) = crate::snapshot::decode(bytes)?;
        Ok(Replay {
            queues: queues.into_iter().map(|q| (q.number(), q)).collect(),
            next_queue_number: counters.next_queue_number,
            next_subscriber: counters.next_subscriber,
        })
    }

    /// The queues rebuilt, and the counters for new queues and subscribers.
    pub fn finish(self) -> (Vec<QueueState>, Counters) {
        (
            self.queues.into_values().collect(),
            Counters {
                next_queue_number: self.next_queue_number,
                next_subscriber: self.next_subscriber,
            },
        )
    }

    fn queue_of_message(&mut self, id: crate::model::MessageId) -> Option<&mut QueueState> {
        let (number, _) = crate::ids::parts(id)?;
        self.queues.get_mut(&number)
    }

    pub fn apply(&mut self, replayed: Replayed) -> Result<(), OpenError> {
        let at = replayed.location;
        let bad = |reason: String| OpenError::Replay { at, reason };
        let mut wake = Vec::new();
        if let Some(from) = replayed.relocated_from {
            // A live record that compaction copied: the message moves, nothing else changes.
            if let Record::Published(p) = &replayed.record
                && let Some(q) = self.queues.get_mut(&p.queue)
            {
                q.relocate(p.id, from, at);
            }
            return Ok(());
        }
        match replayed.record {
            Record::QueueCreated {
                queue,
                name,
                settings,
            } => {
                let settings: QueueSettings = serde_json::from_slice(&settings)
                    .map_err(|e| bad(format!("queue {name:?}: unreadable settings: {e}")))?;
                self.next_queue_number = self.next_queue_number.max(queue + 1);
                self.queues
                    .insert(queue, QueueState::new(&name, queue, settings));
            }
            Record::QueueUpdated { queue, settings } => {
                let settings: QueueSettings = serde_json::from_slice(&settings)
                    .map_err(|e| bad(format!("queue {queue}: unreadable settings: {e}")))?;
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.apply_settings(settings, &mut wake);
                }
            }
            Record::QueueDeleted { queue } => {
                self.queues.remove(&queue);
            }
            Record::SubscriberAdded {
                queue,
                subscriber,
                endpoint,
                handler,
                secret,
                max_in_flight,
                options,
            } => {
                self.next_subscriber = self.next_subscriber.max(subscriber + 1);
                let handler = HandlerKind::parse(&handler)
                    .ok_or_else(|| bad(format!("unknown handler {handler:?}")))?;
                if let Some(q) = self.queues.get_mut(&queue) {
                    let spec = SubscriberSpec::from_record(
                        endpoint,
                        handler,
                        secret,
                        max_in_flight,
                        &options,
                    )
                    .map_err(|e| bad(format!("subscriber {subscriber}: {e}")))?;
                    q.apply_subscriber_added(subscriber, spec)
                        .map_err(|e| bad(format!("subscriber {subscriber}: {e}")))?;
                }
            }
            Record::SubscriberUpdated {
                queue,
                subscriber,
                secret,
                options,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    let s = q.subscriber(subscriber).ok_or_else(|| {
                        bad(format!(
                            "an update of subscriber {subscriber}, which is not there"
                        ))
                    })?;
                    let old = &s.spec;
                    let spec = SubscriberSpec::from_record(
                        old.endpoint.clone(),
                        old.handler,
                        secret,
                        old.max_in_flight,
                        &options,
                    )
                    .map_err(|e| bad(format!("subscriber {subscriber}: {e}")))?;
                    q.apply_subscriber_updated(subscriber, spec)
                        .map_err(|e| bad(format!("subscriber {subscriber}: {e}")))?;
                }
            }
            Record::SubscriberRemoved {
                queue,
                subscriber,
                removed_at_ms,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.apply_subscriber_removed(subscriber, removed_at_ms, &mut wake);
                }
            }
            Record::Published(p) => {
                if let Some(q) = self.queues.get_mut(&p.queue) {
                    q.apply_published(&p, at, &mut wake);
                }
            }
            Record::Acked { acks } => {
                for a in &acks {
                    if let Some(q) = self.queue_of_message(a.message) {
                        q.apply_ack(a, &mut wake);
                    }
                }
            }
            Record::DeliveryFailed {
                message,
                subscriber,
                attempt,
                error,
                next_attempt_at_ms,
                ..
            } => {
                if let Some(q) = self.queue_of_message(message) {
                    q.apply_failed(message, subscriber, attempt, &error, next_attempt_at_ms);
                }
            }
            Record::DeadLettered {
                message,
                subscriber: Some(subscriber),
                attempts,
                last_error,
                dead_at_ms,
                ..
            } => {
                if let Some(q) = self.queue_of_message(message) {
                    q.apply_dead_lettered(
                        message,
                        subscriber,
                        attempts,
                        last_error.as_deref(),
                        dead_at_ms,
                        &mut wake,
                    );
                }
            }
            // A message dead with its parent: the scheduler derives it again from the parent.
            Record::DeadLettered {
                subscriber: None, ..
            } => {}
            Record::Redriven {
                message,
                redriven_at_ms,
                ..
            } => {
                if let Some(q) = self.queue_of_message(message) {
                    let _ = q.apply_redriven(message, redriven_at_ms, &mut wake);
                }
            }
            Record::Discarded {
                message,
                discarded_at_ms,
            } => {
                if let Some(q) = self.queue_of_message(message) {
                    let _ = q.apply_discarded(message, discarded_at_ms, &mut wake);
                }
            }
            Record::Expired {
                queue,
                messages,
                expired_at_ms,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.apply_expired(&messages, expired_at_ms, &mut wake);
                }
            }
            Record::Released {
                queue,
                messages,
                released_at_ms,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.apply_released(&messages, released_at_ms, &mut wake);
                }
            }
            Record::ParentSettled {
                queue,
                parent,
                state,
                settled_at_ms,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.apply_parent_settled(parent, state, settled_at_ms, &mut wake);
                }
            }
            Record::Replayed {
                queue,
                messages,
                replayed_at_ms,
            } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.apply_replayed(&messages, replayed_at_ms, &mut wake);
                }
            }
            Record::Checkpoint { .. } | Record::ClusterApplied { .. } => {}
        }
        Ok(())
    }
}
