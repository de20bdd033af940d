//! How attempts end: outcomes applied and recorded. An ack is applied first and queued to the
//! log at once (the acks of a batch together); a failure is appended, then applied, and its
//! retry put on the subscriber's schedule; a last failure becomes a dead letter.
//!
//! Outcomes are applied under a change and the queue's order lock (shared; exclusive when the
//! message may be given up on, since that decides the fate of children published meanwhile).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use storage::{Ack, Record};

use super::journal::Change;
use super::{FeedEvent, Happened, Queue, Space, wake_all};
use crate::delivery::{Outcome, backoff};
use crate::limits::ERROR_TEXT_BYTES_MAX;
use crate::model::{MessageId, SubscriberId};
use crate::queue::Answered;
use crate::queue::QueueState;
use crate::settings::QueueSettings;

/// Cuts an error text to [`ERROR_TEXT_BYTES_MAX`].
fn cut(mut text: String) -> String {
    if text.len() > ERROR_TEXT_BYTES_MAX {
        let mut at = ERROR_TEXT_BYTES_MAX;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// A failed attempt, on its way to the log.
struct Failure {
    id: MessageId,
    sub: SubscriberId,
    number: u32,
    error: String,
    retry_after: Option<std::time::Duration>,
    now: u64,
    /// How long the attempt took, when this failure is the one to count it by.
    took: Option<Duration>,
}

impl Space {
    /// Applies and records how the messages of a batch ended: the acks together (one change,
    /// one pass under the queue's lock), then each failure. The request's duration (`took`)
    /// is counted once.
    pub(super) async fn record_outcomes(
        &self,
        queue: &Arc<Queue>,
        sub: SubscriberId,
        settings: &QueueSettings,
        results: Vec<(MessageId, u32, Outcome)>,
        mut took: Option<Duration>,
    ) {
        let mut acked = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (id, number, outcome) in results {
            match outcome {
                Outcome::Acked => acked.push((id, number)),
                Outcome::Failed { error, retry_after } => {
                    failed.push(self.failure(id, sub, number, error, retry_after));
                }
            }
        }
        if !acked.is_empty() {
            self.record_acks(queue, sub, &acked, took.take()).await;
        }
        for mut f in failed {
            f.took = took.take();
            self.record_failure(queue, settings, f).await;
        }
    }

    /// Applies and records how attempt `number` of `id` ended, and how long it took.
    pub(super) async fn record_outcome(
        &self,
        queue: &Arc<Queue>,
        sub: SubscriberId,
        (id, number): (MessageId, u32),
        settings: &QueueSettings,
        outcome: Outcome,
        took: Option<Duration>,
    ) {
        match outcome {
            Outcome::Acked => self.record_acks(queue, sub, &[(id, number)], took).await,
            Outcome::Failed { error, retry_after } => {
                let mut f = self.failure(id, sub, number, error, retry_after);
                f.took = took;
                self.record_failure(queue, settings, f).await;
            }
        }
    }

    /// Applies acknowledgements of `sub` ((message, attempt number)), each queued to the log
    /// under the queue's lock right after its effect: any change that sees the effect comes
    /// after it in the log. Messages no longer in flight (discarded, expired, their subscriber
    /// or queue removed meanwhile) are skipped. Observes the attempt's duration (`took`),
    /// each message's publish → first delivery, and each child's release after `arrived`.
    async fn record_acks(
        &self,
        queue: &Queue,
        sub: SubscriberId,
        acks: &[(MessageId, u32)],
        took: Option<Duration>,
    ) {
        if acks.is_empty() {
            return;
        }
        let arrived = Instant::now();
        let change = self.inner.journal.change().await;
        let _shared = queue.order.read().await;
        let now = self.now_ms();
        let ack_of = |id, number| Ack {
            message: id,
            subscriber: sub,
            attempt: number,
            acked_at_ms: now,
        };
        let mut acked = Acked {
            wake: Vec::new(),
            applied: 0,
            told: Vec::new(),
        };
        if self.inner.journal.is_replicated() {
            // A cluster node applies an ack once it is committed, like any record: a child is
            // released only when its parent's delivery is on a majority.
            let owed: Vec<Ack> = {
                let st = queue.lock();
                if let Some(took) = took {
                    st.observe_attempt(sub, took);
                }
                acks.iter()
                    .filter(|(id, _)| st.is_in_flight(*id, sub))
                    .map(|&(id, number)| ack_of(id, number))
                    .collect()
            };
            if owed.is_empty() {
                return;
            }
            let record = Record::Acked { acks: owed.clone() };
            if let Err(e) = change.append(&[record]).await {
                tracing::warn!(error = %e, queue = %queue.lock().name(), "acks not committed; the leader after this one delivers them again");
                return;
            }
            let mut st = queue.lock();
            for ack in owed {
                if st.is_in_flight(ack.message, sub) {
                    self.apply_ack(queue, &mut st, ack, arrived, &mut acked);
                }
            }
        } else {
            let mut st = queue.lock();
            if let Some(took) = took {
                st.observe_attempt(sub, took);
            }
            for &(id, number) in acks {
                if st.is_in_flight(id, sub)
                    && self.apply_ack(queue, &mut st, ack_of(id, number), arrived, &mut acked)
                {
                    change.ack(ack_of(id, number));
                }
            }
        }
        for (queue, message, attempt) in acked.told {
            self.tell(|| FeedEvent {
                queue,
                message,
                at_ms: now,
                what: Happened::Delivered {
                    subscriber: sub,
                    attempt,
                },
            });
        }
        self.inner
            .totals
            .acked
            .fetch_add(acked.applied, Ordering::Relaxed);
        wake_all(acked.wake);
    }

    /// Applies one ack of a message in flight, with what it tells: latencies, the feed.
    fn apply_ack(
        &self,
        queue: &Queue,
        st: &mut QueueState,
        ack: Ack,
        arrived: Instant,
        acked: &mut Acked,
    ) -> bool {
        let first = st.acked_by_none(ack.message);
        let released = st.released();
        st.record_answer(
            ack.subscriber,
            Answered::Acked {
                at_ms: ack.acked_at_ms,
            },
        );
        if !st.apply_ack(&ack, &mut acked.wake) {
            return false;
        }
        acked.applied += 1;
        if first {
            let waited = ack
                .acked_at_ms
                .saturating_sub(crate::ids::unix_ms(ack.message));
            queue
                .latency
                .first_delivery
                .observe(Duration::from_millis(waited));
        }
        let hop = arrived.elapsed();
        for _ in released..st.released() {
            queue.latency.release.observe(hop);
        }
        if self.inner.feed.watched() {
            acked
                .told
                .push((st.name().clone(), ack.message, ack.attempt));
        }
        true
    }

    /// A failed attempt of `id` for `sub`, its error cut to size, now.
    fn failure(
        &self,
        id: MessageId,
        sub: SubscriberId,
        number: u32,
        error: String,
        retry_after: Option<std::time::Duration>,
    ) -> Failure {
        Failure {
            id,
            sub,
            number,
            error: cut(error),
            retry_after,
            now: self.now_ms(),
            took: None,
        }
    }

    /// Records a failed attempt: a dead letter if it was the last one allowed, else a retry
    /// after its backoff.
    async fn record_failure(&self, queue: &Arc<Queue>, settings: &QueueSettings, f: Failure) {
        let change = self.inner.journal.change().await;
        // Giving up on a message decides the fate of children published meanwhile: it must
        // not interleave with their publishing, so it holds the order lock exclusively.
        let max = settings.retry.max_attempts;
        let may_give_up = max != 0 && f.number >= max;
        let (_shared, _exclusive);
        if may_give_up {
            _exclusive = queue.order.write().await;
        } else {
            _shared = queue.order.read().await;
        }
        let disable = {
            let mut st = queue.lock();
            if let Some(took) = f.took {
                st.observe_attempt(f.sub, took);
            }
            if !st.is_in_flight(f.id, f.sub) {
                // Discarded, expired, or its subscriber or queue removed meanwhile.
                return;
            }
            st.record_answer(
                f.sub,
                Answered::Failed {
                    error: &f.error,
                    at_ms: f.now,
                },
            );
            st.should_disable(f.sub, f.now)
        };
        if disable {
            self.disable_subscriber(queue.clone(), f.sub);
        }
        if may_give_up && self.give_up(&change, queue, &f).await {
            return;
        }
        self.schedule_retry(&change, queue, settings, f).await;
    }

    /// Records that a subscriber gives up on a message, then applies it. Returns false if the
    /// dead letter could not be recorded: then it is not applied, and the message is tried
    /// again after a backoff (and given up on once that can be recorded).
    async fn give_up(&self, change: &Change<'_>, queue: &Queue, f: &Failure) -> bool {
        let record = Record::DeadLettered {
            message: f.id,
            subscriber: Some(f.sub),
            reason: storage::DeadReason::MaxAttempts,
            attempts: f.number,
            last_error: Some(f.error.clone()),
            dead_at_ms: f.now,
        };
        if let Err(e) = change.append_lazy_freeing(&[record]).await {
            tracing::warn!(error = %e, message = %f.id, "could not record a dead letter");
            return false;
        }
        let mut wake = Vec::new();
        let name = {
            let mut st = queue.lock();
            st.apply_dead_lettered(f.id, f.sub, f.number, Some(&f.error), f.now, &mut wake);
            st.name().clone()
        };
        self.tell(|| FeedEvent {
            queue: name,
            message: f.id,
            at_ms: f.now,
            what: Happened::DeadLettered {
                subscriber: Some(f.sub),
                reason: storage::DeadReason::MaxAttempts,
            },
        });
        self.inner
            .totals
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        wake_all(wake);
        true
    }

    /// Records a failed attempt, applies it, and schedules the next one after its backoff.
    async fn schedule_retry(
        &self,
        change: &Change<'_>,
        queue: &Queue,
        settings: &QueueSettings,
        f: Failure,
    ) {
        let mut rng = fastrand::Rng::new();
        let delay = backoff(&settings.retry, f.number + 1, f.retry_after, &mut rng);
        let next_at = f.now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let record = Record::DeliveryFailed {
            message: f.id,
            subscriber: f.sub,
            attempt: f.number,
            error: f.error.clone(),
            failed_at_ms: f.now,
            next_attempt_at_ms: Some(next_at),
        };
        let recorded = change.append_lazy(&[record]).await;
        let mut st = queue.lock();
        match recorded {
            Ok(_) => st.apply_failed(f.id, f.sub, f.number, &f.error, Some(next_at)),
            Err(e) => {
                tracing::warn!(error = %e, message = %f.id, "could not record a failed attempt")
            }
        }
        st.schedule_retry(f.sub, f.id, tokio::time::Instant::now() + delay);
        let name = st.name().clone();
        drop(st);
        self.tell(|| FeedEvent {
            queue: name,
            message: f.id,
            at_ms: f.now,
            what: Happened::Failed {
                subscriber: f.sub,
                attempt: f.number,
                error: f.error.clone(),
                next_attempt_at_ms: next_at,
            },
        });
        self.inner
            .totals
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// What applying acks did: who to wake, how many applied, what to tell watchers.
struct Acked {
    wake: crate::queue::Wake,
    applied: u64,
    told: Vec<(Arc<str>, MessageId, u32)>,
}
