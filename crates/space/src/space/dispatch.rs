//! Dispatchers, delivery lanes and attempts.
//!
//! One dispatcher task per subscriber takes a `max_in_flight` permit, then the subscriber's
//! next message (a retry that is due first, else the scheduler's next), and hands the attempt
//! to one of the subscriber's lanes; a lane that finishes an attempt takes the next message
//! itself while permits and messages are there. For a subscriber that takes batches, an
//! attempt carries whatever else is ready with it (`QueueState::fill_batch`), under the same
//! permit. A lane is a long-lived task that makes one attempt at a time and keeps a [`Channel`] for the deliverer between them (the HTTP handler keeps its
//! connection there): no task is started and no connection is looked up per attempt. Lanes
//! are started as needed, so a subscriber has at most `max_in_flight` of them; a lane idle for
//! `SpaceConfig::lane_idle` ends, and its connection with it.
//!
//! The permit is held while the request is on the wire only: a failed attempt records its
//! outcome, schedules its retry on the subscriber's heap and lets the permit go, so messages
//! waiting out their backoff never keep others from being sent.
//!
//! How outcomes are applied and recorded: `outcome.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use storage::{ReadError, Record};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::{Queue, Space};
use crate::delivery::{Attempt, Channel, Outcome};
use crate::limits::RELOCATED_READ_TRIES;
use crate::model::{MessageId, Parents, SubscriberId};
use crate::settings::QueueSettings;

/// What an attempt needs, if the message is still owed.
enum Prepared {
    /// No longer owed: acknowledged, removed, or the subscriber or queue is gone.
    Gone,
    /// The body cannot be read back: the attempt fails with this error (and is retried).
    Unreadable(u32, QueueSettings, String),
    Ready(Box<Attempt>, QueueSettings),
}

/// The body and headers of a message, from memory or its record.
struct Body {
    body: Bytes,
    content_type: String,
    event_type: Option<Arc<str>>,
    parents: Parents,
    trace: Option<(String, Option<String>)>,
    published_at_ms: u64,
}

/// An attempt handed to a lane, with the permit it holds while on the wire: one message, or
/// for a subscriber that takes batches, a batch (`first` and `more`, possibly none).
struct Job {
    first: MessageId,
    more: Vec<MessageId>,
    batched: bool,
    /// Counted against the subscriber's rate limit until reported done.
    counted: bool,
    permit: OwnedSemaphorePermit,
}

impl Job {
    /// Takes the subscriber's next request (see [`QueueState::take_request`]).
    ///
    /// [`QueueState::take_request`]: crate::queue::QueueState::take_request
    fn take(
        st: &mut crate::queue::QueueState,
        sub: SubscriberId,
        permit: OwnedSemaphorePermit,
    ) -> Option<Job> {
        let request = st.take_request(sub, tokio::time::Instant::now())?;
        let batched = st.subscriber(sub)?.spec.batch.is_batched();
        Some(Job {
            first: request.first,
            more: request.more,
            batched,
            counted: request.counted,
            permit,
        })
    }

    /// The messages it carries.
    fn len(&self) -> u32 {
        u32::try_from(1 + self.more.len()).unwrap_or(u32::MAX)
    }
}

/// The idle lanes of a subscriber, each waiting for its next job.
type IdleLanes = Arc<std::sync::Mutex<Vec<mpsc::Sender<Job>>>>;

/// A delivery lane: makes one attempt at a time for one subscriber, keeping its channel
/// between them.
struct Lane {
    space: Space,
    queue: Arc<Queue>,
    sub: SubscriberId,
    /// The subscriber's `max_in_flight` permits.
    limit: Arc<tokio::sync::Semaphore>,
    idle: IdleLanes,
    stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Lane {
    /// The subscriber's next message, if one is due and a permit is free.
    fn take_next(&self) -> Option<Job> {
        let permit = self.limit.clone().try_acquire_owned().ok()?;
        let job = {
            let mut st = self.queue.lock();
            if st.is_deleted() || st.subscriber(self.sub).is_none() {
                return None;
            }
            Job::take(&mut st, self.sub, permit)?
        };
        self.space.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(job)
    }

    async fn run(mut self, first: Job) {
        let (jobs, mut next) = mpsc::channel(1);
        let mut channel = Channel::default();
        let mut job = first;
        loop {
            let done = job.counted.then(|| job.len());
            if job.batched {
                self.space
                    .attempt_batch(&self.queue, self.sub, job, &mut channel)
                    .await;
            } else {
                self.space
                    .attempt(&self.queue, self.sub, job.first, job.permit, &mut channel)
                    .await;
            }
            if let Some(n) = done {
                let now = tokio::time::Instant::now();
                self.queue.lock().request_done(self.sub, n, now);
            }
            if self.space.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.space.inner.idle.notify_waiters();
            }
            if next.is_closed() || *self.stop.borrow() || *self.shutdown.borrow() {
                return;
            }
            // Busy: take the next message at once, without a round trip through the
            // dispatcher (which still takes what comes when every lane is idle).
            if let Some(next_job) = self.take_next() {
                job = next_job;
                continue;
            }
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(jobs.clone());
            // An idle lane ends after a while, and its connection with it: a subscriber that
            // was busy once keeps no tasks or connections for good.
            let linger = tokio::time::sleep(self.space.inner.lane_idle);
            tokio::select! {
                biased;
                j = next.recv() => match j {
                    Some(j) => {
                        job = j;
                        continue;
                    }
                    None => return,
                },
                () = linger => {}
                _ = self.stop.changed() => {}
                _ = self.shutdown.changed() => {}
            }
            // Ending. The dispatcher may have handed a job over meanwhile: it is made (its
            // message is in flight), then the lane ends; from now on the dispatcher finds the
            // lane closed and starts another.
            next.close();
            match next.try_recv() {
                Ok(j) => job = j,
                Err(_) => return,
            }
        }
    }
}

impl Space {
    pub(super) fn spawn_dispatcher(&self, queue: Arc<Queue>, sub: SubscriberId) {
        let Some((notify, limit, mut stop)) = queue
            .lock()
            .subscriber(sub)
            .map(|s| (s.notify.clone(), s.limit.clone(), s.stop.subscribe()))
        else {
            return;
        };
        let space = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        let lanes: IdleLanes = Arc::default();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop.changed() => return,
                    _ = shutdown.changed() => return,
                };
                if *stop.borrow() || *shutdown.borrow() {
                    return;
                }
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (next, wake_at) = {
                    let mut st = queue.lock();
                    if st.is_deleted() || st.subscriber(sub).is_none() {
                        return;
                    }
                    let next = Job::take(&mut st, sub, permit);
                    (next, st.next_wake_at(sub, tokio::time::Instant::now()))
                };
                match next {
                    Some(job) => {
                        space.inner.in_flight.fetch_add(1, Ordering::AcqRel);
                        let idle = lanes.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        let job = match idle {
                            Some(lane) => match lane.try_send(job) {
                                Ok(()) => continue,
                                // The lane stopped meanwhile.
                                Err(e) => e.into_inner(),
                            },
                            None => job,
                        };
                        let lane = Lane {
                            space: space.clone(),
                            queue: queue.clone(),
                            sub,
                            limit: limit.clone(),
                            idle: lanes.clone(),
                            stop: stop.clone(),
                            shutdown: shutdown.clone(),
                        };
                        tokio::spawn(lane.run(job));
                    }
                    None => {
                        // Until a retry is due or the rate limit has room again, unless
                        // woken first (new messages, an answer, a resume).
                        let wake = async {
                            match wake_at {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = notified => {}
                            _ = wake => {}
                            _ = stop.changed() => return,
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
        });
    }

    /// One attempt of `id` for `sub` over a lane's `channel`, then its outcome.
    async fn attempt(
        &self,
        queue: &Arc<Queue>,
        sub: SubscriberId,
        id: MessageId,
        permit: OwnedSemaphorePermit,
        channel: &mut Channel,
    ) {
        let (number, settings, outcome, took) = match self.prepare_attempt(queue, sub, id) {
            Prepared::Gone => return,
            Prepared::Unreadable(number, settings, error) => (
                number,
                settings,
                Outcome::Failed {
                    error,
                    retry_after: None,
                },
                None,
            ),
            Prepared::Ready(attempt, settings) => {
                let number = attempt.number;
                let timeout = settings.delivery_timeout.0;
                let started = std::time::Instant::now();
                let sent = self.inner.deliverer.deliver_on(*attempt, channel);
                let outcome = match tokio::time::timeout(timeout, sent).await {
                    Ok(o) => o,
                    Err(_) => Outcome::Failed {
                        error: format!("timed out after {}", settings.delivery_timeout),
                        retry_after: None,
                    },
                };
                (number, settings, outcome, Some(started.elapsed()))
            }
        };
        // The request is off the wire: the slot is free for the next one.
        drop(permit);
        self.record_outcome(queue, sub, (id, number), &settings, outcome, took)
            .await;
    }

    /// One attempt of a batch for `sub` (a subscriber that takes batches) over a lane's
    /// `channel`, then the outcome of each of its messages. Messages no longer owed are left
    /// out; one whose body cannot be read fails by itself, without going on the wire.
    async fn attempt_batch(
        &self,
        queue: &Arc<Queue>,
        sub: SubscriberId,
        job: Job,
        channel: &mut Channel,
    ) {
        let Job {
            first,
            more,
            permit,
            ..
        } = job;
        let mut attempts = Vec::with_capacity(1 + more.len());
        let mut results = Vec::new();
        let mut settings = None;
        for id in std::iter::once(first).chain(more) {
            match self.prepare_attempt(queue, sub, id) {
                Prepared::Gone => {}
                Prepared::Unreadable(number, s, error) => {
                    let failed = Outcome::Failed {
                        error,
                        retry_after: None,
                    };
                    results.push((id, number, failed));
                    settings = Some(s);
                }
                Prepared::Ready(attempt, s) => {
                    attempts.push(*attempt);
                    settings = Some(s);
                }
            }
        }
        let Some(settings) = settings else {
            return;
        };
        let mut took = None;
        if !attempts.is_empty() {
            let started = std::time::Instant::now();
            let sent: Vec<(MessageId, u32)> =
                attempts.iter().map(|a| (a.message, a.number)).collect();
            let timeout = settings.delivery_timeout.0;
            let delivered = self.inner.deliverer.deliver_batch_on(attempts, channel);
            // What each message without an outcome fails with.
            let answered = tokio::time::timeout(timeout, delivered).await;
            took = Some(started.elapsed());
            let (outcomes, error) = match answered {
                Ok(outcomes) => {
                    if outcomes.len() != sent.len() {
                        tracing::warn!(
                            sent = sent.len(),
                            outcomes = outcomes.len(),
                            "the deliverer answered a batch with a wrong number of outcomes"
                        );
                    }
                    (outcomes, "the deliverer gave no outcome for it".to_owned())
                }
                Err(_) => (
                    Vec::new(),
                    format!("timed out after {}", settings.delivery_timeout),
                ),
            };
            let mut outcomes = outcomes.into_iter();
            for (id, number) in sent {
                let outcome = outcomes.next().unwrap_or_else(|| Outcome::Failed {
                    error: error.clone(),
                    retry_after: None,
                });
                results.push((id, number, outcome));
            }
        }
        // The request is off the wire: the slot is free for the next one.
        drop(permit);
        self.record_outcomes(queue, sub, &settings, results, took)
            .await;
    }

    /// What the next attempt needs, if the message is still owed to the subscriber.
    fn prepare_attempt(&self, queue: &Queue, sub: SubscriberId, id: MessageId) -> Prepared {
        let now_ms = self.now_ms();
        let (number, name, settings, endpoint, handler, keys, headers) = {
            let st = queue.lock();
            if !st.is_in_flight(id, sub) {
                return Prepared::Gone;
            }
            let Some(s) = st.subscriber(sub) else {
                return Prepared::Gone;
            };
            (
                st.next_attempt_number(id, sub),
                st.name().clone(),
                st.settings(),
                s.endpoint.clone(),
                s.spec.handler,
                (s.key.clone(), s.previous_key(now_ms)),
                s.headers.clone(),
            )
        };
        let body = match self.message_body(queue, id) {
            Ok(Some(b)) => b,
            Ok(None) => return Prepared::Gone,
            Err(e) => {
                self.inner
                    .totals
                    .unreadable_bodies
                    .fetch_add(1, Ordering::Relaxed);
                if matches!(e, ReadError::Io { .. }) {
                    tracing::warn!(message = %id, error = %e, "cannot read a message body; the attempt is retried");
                } else {
                    tracing::error!(message = %id, error = %e, "corrupted record: a message body cannot be read back");
                }
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
                secret: keys.0,
                previous_secret: keys.1,
                body: body.body,
                content_type: body.content_type,
                event_type: body.event_type,
                parents: body.parents,
                trace: body.trace,
                published_at_ms: body.published_at_ms,
                number,
                headers,
            }),
            settings,
        )
    }

    /// A message's body and headers: from the recent bodies, else from its record. `None` if
    /// the queue no longer holds it.
    fn message_body(&self, queue: &Queue, id: MessageId) -> Result<Option<Body>, ReadError> {
        if let Some(r) = self.inner.recent.get(id) {
            return Ok(Some(Body {
                body: r.body,
                content_type: r.content_type,
                event_type: r.event_type,
                parents: r.parents,
                trace: r.trace,
                published_at_ms: r.published_at_ms,
            }));
        }
        Ok(self.read_published(queue, id)?.map(|p| Body {
            body: p.body,
            content_type: p.content_type,
            event_type: p.attributes.event_type.as_deref().map(Arc::from),
            parents: crate::model::Parents::new(&p.parents).unwrap_or_default(),
            trace: crate::recent::trace_of(&p.attributes),
            published_at_ms: p.published_at_ms,
        }))
    }

    /// Reads a message's record. Compaction may move it meanwhile: its old segment is deleted
    /// only after the index points at the copy, so a second look finds it. `None` if the
    /// queue no longer holds the message.
    pub(super) fn read_published(
        &self,
        queue: &Queue,
        id: MessageId,
    ) -> Result<Option<storage::Published>, ReadError> {
        let mut tries = 0;
        loop {
            let Some(meta) = queue.lock().meta(id) else {
                return Ok(None);
            };
            match self.inner.journal.read(meta.location) {
                Ok(Record::Published(p)) if p.id == id => return Ok(Some(p)),
                Ok(other) => {
                    return Err(ReadError::Corrupted {
                        file: format!("segment {}", meta.location.segment),
                        offset: u64::from(meta.location.offset),
                        reason: format!(
                            "expected the published record of {id}, found a record of kind {}",
                            other.kind()
                        ),
                    });
                }
                Err(ReadError::SegmentGone { .. }) if tries < RELOCATED_READ_TRIES => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}
