//! What the scheduler's events do to a queue: a released message counted undelivered and its
//! subscribers woken, a delivered or dead one scheduled for expiry and passed on to children in
//! other queues, a child dead with its parent recorded as a dead letter and told to watchers.

use super::{DeadReason, DeliveryInfo, Event, MessageId, QueueState, Removal, SubscriberId, Wake};

impl QueueState {
    /// Tells watchers that `message` died with a parent (for `sub` only, or for all).
    fn tell_dead(&self, message: MessageId, sub: Option<SubscriberId>, at_ms: u64) {
        if let Some(feed) = &self.feed {
            feed.tell(|| crate::feed_event::FeedEvent {
                queue: self.name.clone(),
                message,
                at_ms,
                what: crate::feed_event::Happened::DeadLettered {
                    subscriber: sub,
                    reason: DeadReason::ParentDead,
                },
            });
        }
    }

    /// Books what the scheduler reports: retention, dead letters, wake-ups.
    pub(super) fn handle(&mut self, events: Vec<Event>, at_ms: u64, wake: &mut Wake) {
        let mut remove_now = Vec::new();
        for e in events {
            match e {
                Event::Released { message, slots } => {
                    self.released += 1;
                    self.note_undelivered(message);
                    for s in self.subscribers.values() {
                        if slots.contains(s.slot) {
                            wake.push(s.notify.clone());
                        }
                    }
                }
                Event::Delivered { message } => {
                    self.parent_changed(message, false);
                    let keep = self.settings.retention.delivered.as_millis();
                    if keep == 0 {
                        remove_now.push(message);
                    } else {
                        self.expiry.schedule(message, at_ms.saturating_add(keep));
                    }
                }
                Event::Dead { message, reason } => {
                    self.parent_changed(message, false);
                    if reason == DeadReason::ParentDead {
                        self.tell_dead(message, None, at_ms);
                        self.deliveries.insert(
                            (message, None),
                            DeliveryInfo {
                                dead: Some((DeadReason::ParentDead, at_ms)),
                                ..DeliveryInfo::default()
                            },
                        );
                        self.dead_letters.insert((message, None));
                    }
                    let keep = self.settings.retention.dead.as_millis();
                    self.expiry.schedule(message, at_ms.saturating_add(keep));
                }
                Event::CopyDead { message, slot } => {
                    // One subscriber's copy died with a parent: a dead letter of that
                    // subscriber, reason `parent_dead`.
                    if let Some((sub, _)) = self.subscribers.iter().find(|(_, s)| s.slot == slot) {
                        let (sub, key) = (*sub, (message, Some(*sub)));
                        self.deliveries.entry(key).or_default().dead =
                            Some((DeadReason::ParentDead, at_ms));
                        self.dead_letters.insert(key);
                        self.tell_dead(message, Some(sub), at_ms);
                    }
                }
                Event::Reopened { message } => {
                    self.parent_changed(message, false);
                    self.expiry.cancel(message);
                    self.note_undelivered(message);
                }
            }
        }
        for m in remove_now {
            let _ = self.remove_message(m, Removal::Expired, at_ms, wake);
        }
    }
}
