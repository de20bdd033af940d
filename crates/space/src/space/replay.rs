//! Rebuilding the state from the log.

use std::collections::{BTreeMap, HashMap};

use storage::Record;

use crate::delivery::HandlerKind;
use crate::ids;
use crate::queue::{Meta, QueueState, Remembered, SubscriberSpec};
use crate::scheduler::MessageId;

use super::admin::remove_subscriber_state;
use super::publish::body_hash;
use super::*;

/// The state rebuilt from the log, before the Space starts.
#[derive(Default)]
pub(super) struct Replay {
    pub(super) queues: BTreeMap<String, QueueState>,
    pub(super) by_number: HashMap<u32, String>,
    pub(super) next_queue_number: u32,
    pub(super) next_subscriber: u64,
    /// The latest time a replayed record carried: the clock for records without one.
    pub(super) last_ms: u64,
}

impl Replay {
    /// A live record that compaction copied: the message moves, nothing else changes.
    pub(super) fn relocate(
        &mut self,
        from: storage::Location,
        to: storage::Location,
        record: &Record,
    ) {
        if let Record::Published(p) = record
            && let Some(q) = self.queue_of(p.id)
            && let Some(meta) = q.sched.meta_mut(p.id)
            && meta.location == from
        {
            meta.location = to;
        }
    }

    pub(super) fn queue_of(&mut self, id: MessageId) -> Option<&mut QueueState> {
        let (number, _) = ids::parts(id)?;
        let name = self.by_number.get(&number)?;
        self.queues.get_mut(name)
    }

    pub(super) fn apply(&mut self, location: storage::Location, record: Record) {
        let mut wake = Vec::new();
        let at = match &record {
            Record::Published(p) => Some(p.published_at_ms),
            Record::Acked { acks } => acks.iter().map(|a| a.acked_at_ms).max(),
            Record::DeliveryFailed { failed_at_ms, .. } => Some(*failed_at_ms),
            Record::DeadLettered { dead_at_ms, .. } => Some(*dead_at_ms),
            Record::Redriven { redriven_at_ms, .. } => Some(*redriven_at_ms),
            Record::Discarded {
                discarded_at_ms, ..
            } => Some(*discarded_at_ms),
            _ => None,
        };
        if let Some(at) = at {
            self.last_ms = self.last_ms.max(at);
        }
        match record {
            Record::QueueCreated { queue, settings } => {
                let Ok(stored) = serde_json::from_slice::<StoredQueue>(&settings) else {
                    tracing::error!(%queue, "unreadable queue settings in the log; queue skipped");
                    return;
                };
                self.next_queue_number = self.next_queue_number.max(stored.number + 1);
                self.by_number.insert(stored.number, queue.clone());
                self.queues.insert(
                    queue.clone(),
                    QueueState::new(&queue, stored.number, stored.settings),
                );
            }
            Record::QueueUpdated { queue, settings } => {
                if let (Some(q), Ok(stored)) = (
                    self.queues.get_mut(&queue),
                    serde_json::from_slice::<StoredQueue>(&settings),
                ) {
                    q.set_settings(stored.settings);
                }
            }
            Record::QueueDeleted { queue } => {
                if let Some(q) = self.queues.remove(&queue) {
                    self.by_number.remove(&q.number);
                }
            }
            Record::SubscriberAdded {
                queue,
                subscriber,
                endpoint,
                handler,
                secret,
                max_in_flight,
            } => {
                self.next_subscriber = self.next_subscriber.max(subscriber + 1);
                let Some(q) = self.queues.get_mut(&queue) else {
                    return;
                };
                let spec = SubscriberSpec {
                    endpoint,
                    handler: HandlerKind::parse(&handler).unwrap_or(HandlerKind::Webhook),
                    secret,
                    max_in_flight: max_in_flight.max(1),
                };
                if let Err(e) = add_subscriber_state(q, subscriber, spec) {
                    tracing::error!(%queue, subscriber, error = %e, "subscriber in the log could not be restored");
                }
            }
            Record::SubscriberRemoved { queue, subscriber } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    // The record has no time of its own: the latest one seen is the closest.
                    remove_subscriber_state(q, subscriber, self.last_ms, &mut wake);
                }
            }
            Record::Published(p) => {
                let Some(q) = self.queues.get_mut(&p.queue) else {
                    return;
                };
                let size = p.body.len() as u32;
                if let Some(key) = &p.idempotency_key {
                    q.idempotency.insert(
                        key.clone(),
                        Remembered {
                            id: p.id,
                            body_hash: body_hash(&p.body),
                            expires_at_ms: p.published_at_ms
                                + q.settings.idempotency.window.as_millis(),
                        },
                    );
                }
                q.insert_published(
                    p.id,
                    p.parent,
                    &p.fanout,
                    Meta { location, size },
                    p.published_at_ms,
                    &mut wake,
                );
            }
            Record::Acked { acks } => {
                for a in acks {
                    if let Some(q) = self.queue_of(a.message) {
                        q.ack(a.message, a.subscriber, a.acked_at_ms, &mut wake);
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
                if let Some(q) = self.queue_of(message) {
                    q.failed(message, subscriber, attempt, error, next_attempt_at_ms);
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
                if let Some(q) = self.queue_of(message) {
                    q.gave_up(
                        message, subscriber, attempts, last_error, dead_at_ms, &mut wake,
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
                if let Some(q) = self.queue_of(message) {
                    let _ = q.redrive(message, redriven_at_ms, &mut wake);
                }
            }
            Record::Discarded {
                message,
                discarded_at_ms,
            } => {
                if let Some(q) = self.queue_of(message) {
                    let _ = q.remove(message, discarded_at_ms, &mut wake);
                }
            }
            Record::Checkpoint { .. } => {}
        }
    }
}
