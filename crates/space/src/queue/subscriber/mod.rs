//! A subscriber of a queue: what its user configured ([`spec`]), and what its dispatcher
//! needs at run time (its retry schedule, its rate window, its health).

mod rate;
mod spec;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::error::SubscriberError;
use crate::idhash::IdSet;
use crate::model::MessageId;
use crate::scheduler::Slot;
use rate::RateWindow;
pub use spec::{PreviousSecret, RateLimit, SubscriberSpec, SubscriberState, decode_secret};

/// A subscriber of a queue at run time.
pub(crate) struct Subscriber {
    pub slot: Slot,
    pub spec: SubscriberSpec,
    /// `spec.endpoint`, shared with every attempt instead of copied into each.
    pub endpoint: Arc<str>,
    /// The decoded key of `spec.secret`.
    pub key: Option<Arc<[u8]>>,
    /// The decoded key of `spec.previous_secret`, and until when (unix ms) it signs.
    previous_key: Option<(Arc<[u8]>, u64)>,
    /// Messages sent within the last second, if it has a rate limit.
    rate: Option<RateWindow>,
    /// `spec.headers`, shared with every attempt.
    pub headers: crate::delivery::CustomHeaders,
    /// `spec.types`, shared with the publishes it shapes the fan-out of.
    pub types: Option<Arc<[String]>>,
    /// Woken when messages are released to this subscriber, or a retry is scheduled.
    pub notify: Arc<Notify>,
    /// `max_in_flight` permits: one per request on the wire. A message waiting out its backoff
    /// holds none.
    pub limit: Arc<Semaphore>,
    /// Set to true when the subscriber is removed (or its queue deleted): its tasks stop.
    pub stop: watch::Sender<bool>,
    /// Messages waiting out their backoff, earliest first. They stay in flight for the
    /// scheduler; the dispatcher sends each again, ahead of new messages, once it is due.
    /// Entries whose id is no longer in `scheduled` are stale and skipped.
    retries: BinaryHeap<Reverse<(Instant, MessageId)>>,
    /// The messages on the retry schedule (a message removed meanwhile leaves it at once).
    scheduled: IdSet<MessageId>,
    /// Failed attempts since the last ack (see `FAILURES_TO_HOLD_NEW_MESSAGES`).
    consecutive_failures: u32,
    /// When an attempt was last acknowledged (unix ms), since the broker started.
    last_success_at_ms: Option<u64>,
    /// The error of the last failed attempt, since the broker started.
    last_error: Option<String>,
    /// Since when (unix ms) every attempt has failed: the first failure after an ack, a
    /// resume, or the broker's start.
    failing_since_ms: Option<u64>,
    /// Its disabling (after `disable_after` of failures) has been asked for.
    pub disabling: bool,
    /// How long its attempts took, since the broker started.
    pub attempt_duration: crate::latency::Histogram,
}

/// How an attempt ended, for a subscriber's pacing and health (not durable state).
#[derive(Debug, Clone, Copy)]
pub enum Answered<'a> {
    Acked { at_ms: u64 },
    Failed { error: &'a str, at_ms: u64 },
}

/// A subscriber's health at run time (since the broker started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: SubscriberState,
    /// Requests on the wire now.
    pub in_flight: u32,
    pub consecutive_failures: u32,
    pub last_success_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl Subscriber {
    /// A subscriber as its spec says; its secrets are decoded (and refused if they do not).
    pub fn new(slot: Slot, spec: SubscriberSpec) -> Result<Subscriber, SubscriberError> {
        let (stop, _) = watch::channel(false);
        let mut s = Subscriber {
            slot,
            limit: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            endpoint: Arc::from(spec.endpoint.as_str()),
            headers: Arc::from(spec.headers.as_slice()),
            types: None,
            spec: SubscriberSpec::default(),
            key: None,
            previous_key: None,
            rate: None,
            notify: Arc::new(Notify::new()),
            stop,
            retries: BinaryHeap::new(),
            scheduled: IdSet::default(),
            consecutive_failures: 0,
            last_success_at_ms: None,
            last_error: None,
            failing_since_ms: None,
            disabling: false,
            attempt_duration: crate::latency::Histogram::default(),
        };
        s.update(spec)?;
        Ok(s)
    }

    /// Takes a new spec: its secrets, state and rate limit (its endpoint, handler and
    /// `max_in_flight` never change). A changed limit keeps what its window holds; a limit set
    /// where there was none counts from the next request (those on the wire were not counted,
    /// and are not reported done). The dispatcher is woken to see the change.
    pub fn update(&mut self, spec: SubscriberSpec) -> Result<(), SubscriberError> {
        let decode = |s: &str| decode_secret(s).map(Arc::<[u8]>::from);
        self.key = spec.secret.as_deref().map(decode).transpose()?;
        self.previous_key = match &spec.previous_secret {
            Some(p) => Some((decode(&p.secret)?, p.until_ms)),
            None => None,
        };
        self.headers = Arc::from(spec.headers.as_slice());
        self.types = spec.types.as_deref().map(Arc::from);
        self.rate = match (spec.rate_limit, self.rate.take()) {
            (None, _) => None,
            (Some(r), Some(mut w)) => {
                w.set_limit(r.per_second);
                Some(w)
            }
            (Some(r), None) => Some(RateWindow::new(r.per_second)),
        };
        if spec.state.sends() && !self.spec.state.sends() {
            // Resumed: its failures so far no longer count towards disabling it.
            self.failing_since_ms = None;
        }
        self.disabling = false;
        self.spec = spec;
        self.notify.notify_one();
        Ok(())
    }

    /// The key of the secret a rotation replaced, while its grace period lasts at `now_ms`.
    pub fn previous_key(&self, now_ms: u64) -> Option<Arc<[u8]>> {
        self.previous_key
            .as_ref()
            .filter(|(_, until)| now_ms < *until)
            .map(|(k, _)| k.clone())
    }

    /// How many messages may be sent now: none while it is paused or disabled, else what its
    /// rate limit leaves (`u32::MAX` without one).
    pub fn room(&mut self, now: Instant) -> u32 {
        if !self.spec.state.sends() {
            return 0;
        }
        self.rate.as_mut().map_or(u32::MAX, |w| w.room(now))
    }

    /// A request of `n` messages goes on the wire; whether its rate limit counts it.
    pub fn sent(&mut self, n: u32) -> bool {
        match &mut self.rate {
            Some(w) => {
                w.sent(n);
                true
            }
            None => false,
        }
    }

    /// A request of `n` messages is off the wire. Under a rate limit, the dispatcher is woken
    /// to see when room opens next.
    pub fn request_done(&mut self, n: u32, now: Instant) {
        if let Some(w) = &mut self.rate {
            w.answered(n, now);
            self.notify.notify_one();
        }
    }

    /// When the dispatcher should look again unless woken (at `now`): when its rate limit
    /// next has room, if it has none now (a retry that is due cannot go before that); else
    /// when its earliest retry is due. Never while it is paused or disabled.
    pub fn next_wake_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.spec.state.sends() {
            return None;
        }
        if let Some(w) = &mut self.rate
            && w.room(now) == 0
        {
            // None: only an answer makes room, and it wakes the dispatcher.
            return w.next_room_at();
        }
        self.next_retry_at()
    }

    /// How long every attempt has failed, at `now_ms` (none if the last one was acked).
    pub fn failing_for_ms(&self, now_ms: u64) -> Option<u64> {
        self.failing_since_ms.map(|t| now_ms.saturating_sub(t))
    }

    /// An attempt was acknowledged or failed. An ack ends the hold at once: the dispatcher,
    /// which may be asleep until its next retry is due, is woken.
    pub fn record_answer(&mut self, answer: Answered<'_>) {
        match answer {
            Answered::Acked { at_ms } => {
                if self.holding_new_messages() {
                    self.notify.notify_one();
                }
                self.consecutive_failures = 0;
                self.failing_since_ms = None;
                // A disabling asked for meanwhile finds it no longer failing.
                self.disabling = false;
                self.last_success_at_ms = Some(at_ms);
            }
            Answered::Failed { error, at_ms } => {
                self.failing_since_ms.get_or_insert(at_ms);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.last_error.as_deref() != Some(error) {
                    self.last_error = Some(error.to_owned());
                }
            }
        }
    }

    /// How the subscriber is doing.
    pub fn health(&self) -> Health {
        let free = u32::try_from(self.limit.available_permits()).unwrap_or(u32::MAX);
        Health {
            state: self.spec.state,
            in_flight: self.spec.max_in_flight.saturating_sub(free),
            consecutive_failures: self.consecutive_failures,
            last_success_at_ms: self.last_success_at_ms,
            last_error: self.last_error.clone(),
        }
    }

    /// Whether `id` is waiting out its backoff on this subscriber's retry schedule.
    pub fn retry_scheduled(&self, id: MessageId) -> bool {
        self.scheduled.contains(&id)
    }

    /// Whether every `max_in_flight` slot is taken.
    pub fn saturated(&self) -> bool {
        self.limit.available_permits() == 0
    }

    /// Every recent attempt failed and a full hold's worth of retries is scheduled (see
    /// `FAILURES_TO_HOLD_NEW_MESSAGES`).
    fn holding_new_messages(&self) -> bool {
        self.consecutive_failures >= crate::limits::FAILURES_TO_HOLD_NEW_MESSAGES
            && self.scheduled.len() >= crate::limits::FAILURES_TO_HOLD_NEW_MESSAGES as usize
    }

    /// Whether the dispatcher may take a new message (not a retry): unless it holds them. A
    /// retry taken off the schedule makes room for one new message, which so goes out as a
    /// probe behind it; a new message that fails fills the room again.
    pub fn takes_new_messages(&self) -> bool {
        !self.holding_new_messages()
    }

    pub fn schedule_retry(&mut self, id: MessageId, at: Instant) {
        if self.scheduled.insert(id) {
            self.retries.push(Reverse((at, id)));
            self.notify.notify_one();
        }
    }

    /// Takes a removed message off the retry schedule.
    pub fn forget_retry(&mut self, id: MessageId) {
        if self.scheduled.is_empty() {
            return;
        }
        let holding = self.holding_new_messages();
        if self.scheduled.remove(&id) && holding && !self.holding_new_messages() {
            self.notify.notify_one();
        }
    }

    /// The earliest retry due at `now`, left on the schedule (stale entries are dropped).
    pub fn peek_due_retry(&mut self, now: Instant) -> Option<MessageId> {
        while let Some(Reverse((at, id))) = self.retries.peek().copied() {
            if !self.scheduled.contains(&id) {
                self.retries.pop();
                continue;
            }
            return (at <= now).then_some(id);
        }
        None
    }

    /// The earliest retry due at `now`, taken off the schedule.
    pub fn take_due_retry(&mut self, now: Instant) -> Option<MessageId> {
        while let Some(Reverse((at, id))) = self.retries.peek().copied() {
            if !self.scheduled.contains(&id) {
                self.retries.pop();
                continue;
            }
            if at > now {
                return None;
            }
            self.retries.pop();
            self.scheduled.remove(&id);
            return Some(id);
        }
        None
    }

    /// When the earliest retry is due.
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use storage::{Location, Published};
    use tokio::time::Instant;

    use super::*;
    use crate::limits::FAILURES_TO_HOLD_NEW_MESSAGES as HOLD;
    use crate::model::SubscriberId;
    use crate::queue::{QueueSettings, QueueState};

    const SUB: SubscriberId = 1;

    /// A queue of `n` independent messages with one subscriber.
    fn queue(n: u64) -> QueueState {
        let mut q = QueueState::new("q", 1, QueueSettings::default());
        let spec = SubscriberSpec {
            endpoint: "http://a/".into(),
            max_in_flight: 4096,
            ..Default::default()
        };
        q.apply_subscriber_added(SUB, spec).unwrap();
        let mut wake = Vec::new();
        for seq in 0..n {
            let p = Published {
                queue: 1,
                id: crate::ids::message_id(1_000, 1, seq),
                parents: Vec::new(),
                content_type: "text/plain".into(),
                published_at_ms: 1_000,
                idempotency_key: None,
                fanout: vec![SUB],
                attributes: Default::default(),
                body: Bytes::new(),
            };
            let at = Location {
                segment: 1,
                offset: 24 + seq as u32 * 100,
                len: 100,
            };
            q.apply_published(&p, at, &mut wake);
        }
        q
    }

    /// Takes `n` new messages, each failing with its retry due at `retry_at`.
    fn fail_new(q: &mut QueueState, n: u32, retry_at: Instant) {
        for _ in 0..n {
            let id = q.next_for(SUB, Instant::now()).expect("a new message");
            q.record_answer(
                SUB,
                Answered::Failed {
                    error: "HTTP 500",
                    at_ms: 1,
                },
            );
            q.schedule_retry(SUB, id, retry_at);
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn failures_among_acks_never_hold_new_messages() {
        let mut q = queue(200);
        fail_new(&mut q, HOLD - 1, later());
        q.record_answer(SUB, Answered::Acked { at_ms: 1 });
        fail_new(&mut q, HOLD - 1, later());
        assert!(q.next_for(SUB, Instant::now()).is_some());
    }

    #[test]
    fn a_full_retry_schedule_after_failures_holds_new_messages_until_an_ack() {
        let mut q = queue(200);
        fail_new(&mut q, HOLD, later());
        assert_eq!(q.next_for(SUB, Instant::now()), None, "held");
        let notify = q.subscriber(SUB).unwrap().notify.clone();
        // An ack (of an attempt still on the wire) resumes at once, and wakes the dispatcher,
        // which may be asleep until its next retry is due.
        q.record_answer(SUB, Answered::Acked { at_ms: 1 });
        let woken = notify.notified();
        tokio::pin!(woken);
        assert!(woken.as_mut().enable(), "the ack woke the dispatcher");
        assert!(q.next_for(SUB, Instant::now()).is_some());
    }

    #[test]
    fn a_holding_dispatcher_sends_one_new_message_behind_each_retry() {
        let mut q = queue(200);
        let due = Instant::now() + Duration::from_secs(60);
        fail_new(&mut q, 1, due);
        fail_new(&mut q, HOLD - 1, later());
        assert_eq!(
            q.next_for(SUB, due),
            Some(crate::ids::message_id(1_000, 1, 0))
        );
        let probe = q.next_for(SUB, due).expect("a probe behind the retry");
        assert_eq!(probe, crate::ids::message_id(1_000, 1, u64::from(HOLD)));
        // A refused probe goes on the schedule too: held again.
        q.record_answer(
            SUB,
            Answered::Failed {
                error: "HTTP 500",
                at_ms: 1,
            },
        );
        q.schedule_retry(SUB, probe, later());
        assert_eq!(q.next_for(SUB, due), None);
    }

    #[test]
    fn removing_a_scheduled_message_ends_the_hold() {
        let mut q = queue(200);
        fail_new(&mut q, HOLD, later());
        assert_eq!(q.next_for(SUB, Instant::now()), None);
        let first = crate::ids::message_id(1_000, 1, 0);
        q.apply_discarded(first, 2_000, &mut Vec::new()).unwrap();
        assert!(q.next_for(SUB, Instant::now()).is_some());
    }

    /// Replaces the subscriber's spec by what `f` makes of it.
    fn update(q: &mut QueueState, f: impl FnOnce(&mut SubscriberSpec)) {
        let mut spec = q.subscriber(SUB).unwrap().spec.clone();
        f(&mut spec);
        q.apply_subscriber_updated(SUB, spec).unwrap();
    }

    /// The messages of the subscriber's next request.
    fn take(q: &mut QueueState, now: Instant) -> Option<(MessageId, Vec<MessageId>)> {
        q.take_request(SUB, now).map(|r| (r.first, r.more))
    }

    fn id(seq: u64) -> MessageId {
        crate::ids::message_id(1_000, 1, seq)
    }

    #[test]
    fn a_paused_subscriber_takes_nothing_and_resumes_where_it_stopped() {
        let mut q = queue(5);
        let now = Instant::now();
        assert_eq!(take(&mut q, now), Some((id(0), vec![])));
        q.record_answer(
            SUB,
            Answered::Failed {
                error: "HTTP 500",
                at_ms: 1,
            },
        );
        q.schedule_retry(SUB, id(0), now);
        q.request_done(SUB, 1, now);
        for state in [SubscriberState::Paused, SubscriberState::Disabled] {
            update(&mut q, |s| s.state = state);
            assert_eq!(take(&mut q, now), None, "{state:?}");
            assert_eq!(
                q.next_wake_at(SUB, now),
                None,
                "a due retry does not wake it"
            );
        }
        update(&mut q, |s| s.state = SubscriberState::Active);
        assert_eq!(q.next_wake_at(SUB, now), Some(now));
        // Its retry first, then the rest in order.
        let taken: Vec<_> = std::iter::from_fn(|| take(&mut q, now).map(|(m, _)| m)).collect();
        assert_eq!(taken, (0..5).map(id).collect::<Vec<_>>());
    }

    #[test]
    fn a_rate_limit_bounds_batches_and_room_opens_a_second_after_the_answers() {
        let mut q = queue(10);
        update(&mut q, |s| {
            s.batch.max_messages = 10;
            s.rate_limit = Some(RateLimit { per_second: 3 });
        });
        let t0 = Instant::now();
        assert_eq!(take(&mut q, t0), Some((id(0), vec![id(1), id(2)])));
        assert_eq!(take(&mut q, t0), None);
        assert_eq!(q.next_wake_at(SUB, t0), None, "only an answer makes room");
        let t1 = t0 + Duration::from_millis(200);
        q.request_done(SUB, 3, t1);
        assert_eq!(q.next_wake_at(SUB, t1), Some(t1 + Duration::from_secs(1)));
        assert_eq!(take(&mut q, t1 + Duration::from_millis(999)), None);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(take(&mut q, t2), Some((id(3), vec![id(4), id(5)])));
        // Lifting the limit opens room at once, whatever is on the wire.
        update(&mut q, |s| s.rate_limit = None);
        assert_eq!(take(&mut q, t2).map(|(_, more)| more.len()), Some(3));
    }

    /// A retry that is due cannot go while the rate limit has no room: the dispatcher sleeps
    /// until room opens, instead of waking at once for the retry, finding nothing to take,
    /// and waking again.
    #[test]
    fn a_full_rate_window_wakes_the_dispatcher_when_room_opens_not_for_a_due_retry() {
        let mut q = queue(10);
        update(&mut q, |s| s.rate_limit = Some(RateLimit { per_second: 1 }));
        let t0 = Instant::now();
        let (first, _) = take(&mut q, t0).unwrap();
        q.record_answer(
            SUB,
            Answered::Failed {
                error: "HTTP 500",
                at_ms: 1,
            },
        );
        q.schedule_retry(SUB, first, t0);
        q.request_done(SUB, 1, t0);
        assert_eq!(take(&mut q, t0), None, "no room");
        assert_eq!(
            q.next_wake_at(SUB, t0),
            Some(t0 + Duration::from_secs(1)),
            "not the retry, due already"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(q.next_wake_at(SUB, t1), Some(t0), "room: the retry is due");
        assert_eq!(take(&mut q, t1), Some((first, vec![])));
    }

    #[test]
    fn a_disabling_not_done_may_be_asked_for_again() {
        let mut q = QueueState::new(
            "q",
            1,
            QueueSettings {
                disable_after: crate::settings::Span::millis(100),
                ..QueueSettings::default()
            },
        );
        q.apply_subscriber_added(
            SUB,
            SubscriberSpec {
                endpoint: "http://a/".into(),
                ..Default::default()
            },
        )
        .unwrap();
        q.record_answer(
            SUB,
            Answered::Failed {
                error: "down",
                at_ms: 1_000,
            },
        );
        assert!(!q.should_disable(SUB, 1_050), "not failing long enough");
        assert!(q.should_disable(SUB, 1_100));
        assert!(!q.should_disable(SUB, 1_200), "asked for once");
        // An ack meanwhile: the disabling finds it answering, and does not happen.
        q.record_answer(SUB, Answered::Acked { at_ms: 1_150 });
        q.disable_not_done(SUB);
        q.record_answer(
            SUB,
            Answered::Failed {
                error: "down",
                at_ms: 5_000,
            },
        );
        assert!(
            q.should_disable(SUB, 5_100),
            "failing again for long: asked again"
        );
        q.disable_not_done(SUB);
        assert!(
            q.should_disable(SUB, 5_200),
            "a disabling that failed is asked again"
        );
    }
}
