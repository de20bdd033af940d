//! Dispatchers and delivery attempts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use storage::{Ack, Record};
use tokio::sync::watch;

use crate::delivery::{Attempt, Outcome, backoff};
use crate::error::SpaceError;
use crate::scheduler::{MessageId, SubscriberId};
use crate::settings::QueueSettings;

use super::*;

pub(super) fn cut(mut text: String) -> String {
    if text.len() > limits::ERROR_TEXT_BYTES_MAX {
        let mut at = limits::ERROR_TEXT_BYTES_MAX;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

impl Space {
    pub(super) fn spawn_dispatcher(&self, queue: Arc<Queue>, sub: SubscriberId) {
        let Some((slot, notify, limit, stop)) = ({
            let st = queue.lock();
            st.subscribers.get(&sub).map(|s| {
                (
                    s.slot,
                    s.notify.clone(),
                    s.limit.clone(),
                    s.stop.subscribe(),
                )
            })
        }) else {
            return;
        };
        let space = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut stop_rx = stop;
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop_rx.changed() => return,
                    _ = shutdown.changed() => return,
                };
                if *stop_rx.borrow() || *shutdown.borrow() {
                    return;
                }
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let next = {
                    let mut st = queue.lock();
                    if st.deleted || !st.subscribers.contains_key(&sub) {
                        return;
                    }
                    st.sched.next(slot)
                };
                match next {
                    Some(id) => {
                        space.inner.in_flight.fetch_add(1, Ordering::AcqRel);
                        let space = space.clone();
                        let queue = queue.clone();
                        let stop = stop_rx.clone();
                        tokio::spawn(async move {
                            space.attempts(queue, sub, id, stop).await;
                            drop(permit);
                            if space.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                                space.inner.idle.notify_waiters();
                            }
                        });
                    }
                    None => {
                        drop(permit);
                        tokio::select! {
                            _ = notified => {}
                            _ = stop_rx.changed() => return,
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
        });
    }

    /// Attempts to deliver one message to one subscriber until it is acknowledged, given up,
    /// or no longer owed (removed, discarded), waiting out the backoff between attempts.
    pub(super) async fn attempts(
        &self,
        queue: Arc<Queue>,
        sub: SubscriberId,
        id: MessageId,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut rng = fastrand::Rng::new();
        loop {
            let (number, settings, outcome) = match self.prepare_attempt(&queue, sub, id) {
                Prepared::Gone => return,
                // Sending it again cannot help: give up at once, with the reason.
                Prepared::Unreadable(number, settings, error) => (
                    number,
                    QueueSettings {
                        retry: crate::settings::Retry {
                            max_attempts: 1,
                            ..settings.retry
                        },
                        ..settings
                    },
                    Outcome::Failed {
                        error,
                        retry_after: None,
                    },
                ),
                Prepared::Ready(attempt, settings) => {
                    let number = attempt.number;
                    let timeout = settings.delivery_timeout.0;
                    let outcome =
                        match tokio::time::timeout(timeout, self.inner.deliverer.deliver(*attempt))
                            .await
                        {
                            Ok(o) => o,
                            Err(_) => Outcome::Failed {
                                error: format!("timed out after {}", settings.delivery_timeout),
                                retry_after: None,
                            },
                        };
                    (number, settings, outcome)
                }
            };
            let gate = self.inner.gate.read().await;
            let now = now_ms();
            match outcome {
                Outcome::Acked => {
                    self.inner.totals.acked.fetch_add(1, Ordering::Relaxed);
                    let mut wake = Vec::new();
                    queue.lock().ack(id, sub, now, &mut wake);
                    wake_all(wake);
                    self.inner.acks.push(Ack {
                        message: id,
                        subscriber: sub,
                        acked_at_ms: now,
                    });
                    return;
                }
                Outcome::Failed { error, retry_after } => {
                    let error = cut(error);
                    let max = settings.retry.max_attempts;
                    if max != 0 && number >= max {
                        let mut wake = Vec::new();
                        queue
                            .lock()
                            .gave_up(id, sub, number, Some(error.clone()), now, &mut wake);
                        wake_all(wake);
                        self.inner
                            .totals
                            .dead_lettered
                            .fetch_add(1, Ordering::Relaxed);
                        let record = Record::DeadLettered {
                            message: id,
                            subscriber: Some(sub),
                            reason: storage::DeadReason::MaxAttempts,
                            attempts: number,
                            last_error: Some(error),
                            dead_at_ms: now,
                        };
                        if let Err(e) = self.inner.log.append_lazy(&[record]).await {
                            tracing::warn!(error = %e, "could not record a dead letter");
                        }
                        return;
                    }
                    let delay = backoff(&settings.retry, number + 1, retry_after, &mut rng);
                    let next_at = now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    queue
                        .lock()
                        .failed(id, sub, number, error.clone(), Some(next_at));
                    self.inner
                        .totals
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    let record = Record::DeliveryFailed {
                        message: id,
                        subscriber: sub,
                        attempt: number,
                        error,
                        failed_at_ms: now,
                        next_attempt_at_ms: Some(next_at),
                    };
                    if let Err(e) = self.inner.log.append_lazy(&[record]).await {
                        tracing::warn!(error = %e, "could not record a failed attempt");
                    }
                    drop(gate);
                    let until = tokio::time::Instant::now() + delay;
                    loop {
                        let removed = queue.lock().removed.clone();
                        let notified = removed.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        if !self.still_owed(&queue, sub, id) {
                            // Discarded or expired meanwhile: free the permit now.
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            _ = notified => continue,
                            _ = stop.changed() => return,
                            // The message stays owed; it is sent again after the restart.
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
        }
    }

    /// Whether an attempt of `id` for `sub` is still wanted (the message held, the subscriber
    /// there, its delivery in flight).
    pub(super) fn still_owed(&self, queue: &Queue, sub: SubscriberId, id: MessageId) -> bool {
        let st = queue.lock();
        !st.deleted
            && st.subscribers.get(&sub).is_some_and(|s| {
                st.sched.delivery_state(id, s.slot) == Some(crate::DeliveryState::InFlight)
            })
    }

    /// What the next attempt needs, if the message is still owed to the subscriber.
    pub(super) fn prepare_attempt(
        &self,
        queue: &Arc<Queue>,
        sub: SubscriberId,
        id: MessageId,
    ) -> Prepared {
        let (number, name, settings, endpoint, handler, key) = {
            let st = queue.lock();
            if st.deleted {
                return Prepared::Gone;
            }
            let Some(s) = st.subscribers.get(&sub) else {
                return Prepared::Gone;
            };
            let owed = matches!(
                st.sched.delivery_state(id, s.slot),
                Some(crate::DeliveryState::InFlight)
            );
            if !owed || !st.sched.contains(id) {
                return Prepared::Gone;
            }
            let done = st
                .deliveries
                .get(&(id, Some(sub)))
                .map_or(0, |i| i.attempts);
            (
                done + 1,
                st.name.clone(),
                st.settings,
                s.endpoint.clone(),
                s.spec.handler,
                s.key.clone(),
            )
        };
        let p = match self.inner.recent.get(id) {
            Some(recent) => Ok(recent),
            None => self
                .read_message(queue, id)
                .map(|p| crate::recent::RecentBody {
                    body: p.body,
                    content_type: p.content_type,
                    parent: p.parent,
                    published_at_ms: p.published_at_ms,
                }),
        };
        let p = match p {
            Ok(p) => p,
            Err(SpaceError::MessageNotFound(_)) => return Prepared::Gone,
            Err(e) => {
                tracing::error!(message = %id, error = %e, "cannot read a message body");
                return Prepared::Unreadable(number, settings, format!("body unreadable: {e}"));
            }
        };
        Prepared::Ready(
            Box::new(Attempt {
                message: id,
                queue: name,
                subscriber: sub,
                endpoint,
                handler,
                secret: key,
                body: p.body,
                content_type: p.content_type,
                parent: p.parent,
                published_at_ms: p.published_at_ms,
                number,
            }),
            settings,
        )
    }
}

/// What [`Space::prepare_attempt`] found.
pub(super) enum Prepared {
    /// No longer owed: acknowledged, removed, or the subscriber is gone.
    Gone,
    /// The body cannot be read back (attempt number, settings, why).
    Unreadable(u32, QueueSettings, String),
    Ready(Box<Attempt>, QueueSettings),
}
