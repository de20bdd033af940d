//! The state rebuilt from the log: the latest checkpoint's snapshot, restored verbatim, then
//! every record after it, applied in log order through the same transitions live operation
//! uses. Record times are the only clock; queues are found by number.
//!
//! The same application of records serves a cluster's follower, whose Space is rebuilt record
//! by record as the replicated log commits them ([`Rebuilt`] is where the records land: the
//! queues of a replay, or a follower's registry).

use std::collections::BTreeMap;

use bytes::Bytes;
use storage::{Record, Replayed};

use crate::delivery::HandlerKind;
use crate::error::OpenError;
use crate::model::{MessageId, QueueNumber, SubscriberId};
use crate::queue::{QueueState, SubscriberSpec};
use crate::settings::QueueSettings;
use crate::snapshot::Counters;

/// Where replayed records land.
pub(super) trait Rebuilt {
    /// Runs `f` on queue `number`, if there is one.
    fn queue<T>(&mut self, number: QueueNumber, f: impl FnOnce(&mut QueueState) -> T) -> Option<T>;
    fn create(&mut self, state: QueueState);
    fn delete(&mut self, number: QueueNumber);
    /// A queue number or subscriber id a record names: new ones come after it.
    fn saw_queue_number(&mut self, number: QueueNumber);
    fn saw_subscriber(&mut self, id: SubscriberId);
    fn saw_cluster_state(&mut self, state: Bytes);
}

#[derive(Default)]
pub(super) struct Replay {
    queues: BTreeMap<QueueNumber, QueueState>,
    next_queue_number: u32,
    next_subscriber: u64,
    cluster: Bytes,
}

impl Rebuilt for Replay {
    fn queue<T>(&mut self, number: QueueNumber, f: impl FnOnce(&mut QueueState) -> T) -> Option<T> {
        self.queues.get_mut(&number).map(f)
    }

    fn create(&mut self, state: QueueState) {
        self.queues.insert(state.number(), state);
    }

    fn delete(&mut self, number: QueueNumber) {
        self.queues.remove(&number);
    }

    fn saw_queue_number(&mut self, number: QueueNumber) {
        self.next_queue_number = self.next_queue_number.max(number.saturating_add(1));
    }

    fn saw_subscriber(&mut self, id: SubscriberId) {
        self.next_subscriber = self.next_subscriber.max(id.saturating_add(1));
    }

    fn saw_cluster_state(&mut self, state: Bytes) {
        self.cluster = state;
    }
}

impl Replay {
    pub fn from_snapshot(bytes: Bytes) -> Result<Replay, OpenError> {
        let (counters, queues) = crate::snapshot::decode(bytes)?;
        Ok(Replay {
            queues: queues.into_iter().map(|q| (q.number(), q)).collect(),
            next_queue_number: counters.next_queue_number,
            next_subscriber: counters.next_subscriber,
            cluster: counters.cluster,
        })
    }

    /// The queues rebuilt, and the counters for new queues and subscribers.
    pub fn finish(self) -> (Vec<QueueState>, Counters) {
        (
            self.queues.into_values().collect(),
            Counters {
                next_queue_number: self.next_queue_number,
                next_subscriber: self.next_subscriber,
                cluster: self.cluster,
            },
        )
    }

    pub fn apply(&mut self, replayed: Replayed) -> Result<(), OpenError> {
        apply(self, replayed)
    }
}

/// The queue a message id names.
fn queue_of(id: MessageId) -> Option<QueueNumber> {
    crate::ids::parts(id).map(|(number, _)| number)
}

/// Applies one record to `target`, as replay does.
pub(super) fn apply(target: &mut impl Rebuilt, replayed: Replayed) -> Result<(), OpenError> {
    let at = replayed.location;
    let bad = |reason: String| OpenError::Replay { at, reason };
    let mut wake = Vec::new();
    if let Some(from) = replayed.relocated_from {
        // A live record that compaction copied: the message moves, nothing else changes.
        if let Record::Published(p) = &replayed.record {
            target.queue(p.queue, |q| q.relocate(p.id, from, at));
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
            target.saw_queue_number(queue);
            target.create(QueueState::new(&name, queue, settings));
        }
        Record::QueueUpdated { queue, settings } => {
            let settings: QueueSettings = serde_json::from_slice(&settings)
                .map_err(|e| bad(format!("queue {queue}: unreadable settings: {e}")))?;
            target.queue(queue, |q| q.apply_settings(settings, &mut wake));
        }
        Record::QueueDeleted { queue } => target.delete(queue),
        Record::SubscriberAdded {
            queue,
            subscriber,
            endpoint,
            handler,
            secret,
            max_in_flight,
            options,
        } => {
            target.saw_subscriber(subscriber);
            let handler = HandlerKind::parse(&handler)
                .ok_or_else(|| bad(format!("unknown handler {handler:?}")))?;
            target
                .queue(queue, |q| {
                    let spec = SubscriberSpec::from_record(
                        endpoint,
                        handler,
                        secret,
                        max_in_flight,
                        &options,
                    )?;
                    q.apply_subscriber_added(subscriber, spec)
                })
                .transpose()
                .map_err(|e| bad(format!("subscriber {subscriber}: {e}")))?;
        }
        Record::SubscriberUpdated {
            queue,
            subscriber,
            secret,
            options,
        } => {
            target
                .queue(queue, |q| {
                    let Some(s) = q.subscriber(subscriber) else {
                        return Err("an update of a subscriber which is not there".to_owned());
                    };
                    let old = &s.spec;
                    let spec = SubscriberSpec::from_record(
                        old.endpoint.clone(),
                        old.handler,
                        secret,
                        old.max_in_flight,
                        &options,
                    )
                    .map_err(|e| e.to_string())?;
                    q.apply_subscriber_updated(subscriber, spec)
                        .map_err(|e| e.to_string())
                })
                .transpose()
                .map_err(|e| bad(format!("subscriber {subscriber}: {e}")))?;
        }
        Record::SubscriberRemoved {
            queue,
            subscriber,
            removed_at_ms,
        } => {
            target.queue(queue, |q| {
                q.apply_subscriber_removed(subscriber, removed_at_ms, &mut wake)
            });
        }
        Record::Published(p) => {
            target.queue(p.queue, |q| q.apply_published(&p, at, &mut wake));
        }
        Record::Acked { acks } => {
            for a in &acks {
                if let Some(number) = queue_of(a.message) {
                    target.queue(number, |q| q.apply_ack(a, &mut wake));
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
            if let Some(number) = queue_of(message) {
                target.queue(number, |q| {
                    q.apply_failed(message, subscriber, attempt, &error, next_attempt_at_ms)
                });
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
            if let Some(number) = queue_of(message) {
                target.queue(number, |q| {
                    q.apply_dead_lettered(
                        message,
                        subscriber,
                        attempts,
                        last_error.as_deref(),
                        dead_at_ms,
                        &mut wake,
                    )
                });
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
            if let Some(number) = queue_of(message) {
                target.queue(number, |q| {
                    let _ = q.apply_redriven(message, redriven_at_ms, &mut wake);
                });
            }
        }
        Record::Discarded {
            message,
            discarded_at_ms,
        } => {
            if let Some(number) = queue_of(message) {
                target.queue(number, |q| {
                    let _ = q.apply_discarded(message, discarded_at_ms, &mut wake);
                });
            }
        }
        Record::Expired {
            queue,
            messages,
            expired_at_ms,
        } => {
            target.queue(queue, |q| {
                q.apply_expired(&messages, expired_at_ms, &mut wake)
            });
        }
        Record::Released {
            queue,
            messages,
            released_at_ms,
        } => {
            target.queue(queue, |q| {
                q.apply_released(&messages, released_at_ms, &mut wake)
            });
        }
        Record::ParentSettled {
            queue,
            parent,
            state,
            settled_at_ms,
        } => {
            target.queue(queue, |q| {
                q.apply_parent_settled(parent, state, settled_at_ms, &mut wake)
            });
        }
        Record::Replayed {
            queue,
            messages,
            replayed_at_ms,
        } => {
            target.queue(queue, |q| {
                q.apply_replayed(&messages, replayed_at_ms, &mut wake)
            });
        }
        Record::ClusterApplied { state } => target.saw_cluster_state(state),
        Record::Checkpoint { .. } => {}
    }
    Ok(())
}
