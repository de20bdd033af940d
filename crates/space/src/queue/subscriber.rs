//! A subscriber of a queue: what its user configured, and what its dispatcher needs at run time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::delivery::{Batching, HandlerKind};
use crate::error::SubscriberError;
use crate::idhash::IdSet;
use crate::model::MessageId;
use crate::scheduler::Slot;

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SubscriberError> {
    use base64::Engine;
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or(SubscriberError::InvalidSecret)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SubscriberError::InvalidSecret)?;
    if key.is_empty() {
        return Err(SubscriberError::InvalidSecret);
    }
    Ok(key)
}

/// A subscriber as its user configured it.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriberSpec {
    pub endpoint: String,
    pub handler: HandlerKind,
    /// `whsec_<base64>`; never shown by the API, nor by `Debug`.
    pub secret: Option<String>,
    pub max_in_flight: u32,
    pub batch: Batching,
    /// Headers sent with every request, e.g. `authorization` for a receiver behind auth:
    /// (name in lowercase, value). Values are never shown by the API, nor by `Debug`.
    pub headers: Vec<(String, String)>,
}

/// The settings of a subscriber kept in its record's `options` (JSON): those added after the
/// record's fixed fields. Each is left out when it has its default, so a subscriber without
/// any has empty options. Unknown fields are refused: a record that names one was written by
/// a newer build, and reading it as if the field were absent would change what it means.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Options {
    #[serde(skip_serializing_if = "is_default")]
    batch: Batching,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl SubscriberSpec {
    /// The encoding of the settings kept in the record's `options`: empty if all are default.
    pub fn options(&self) -> bytes::Bytes {
        let options = Options {
            batch: self.batch,
            headers: self.headers.clone(),
        };
        if is_default(&options.batch) && options.headers.is_empty() {
            return bytes::Bytes::new();
        }
        bytes::Bytes::from(serde_json::to_vec(&options).unwrap_or_default())
    }

    /// The spec of a subscriber record: its fixed fields and its `options`.
    pub fn from_record(
        endpoint: String,
        handler: HandlerKind,
        secret: Option<String>,
        max_in_flight: u32,
        options: &[u8],
    ) -> Result<SubscriberSpec, SubscriberError> {
        let options: Options = if options.is_empty() {
            Options::default()
        } else {
            serde_json::from_slice(options)
                .map_err(|e| SubscriberError::InvalidOptions(e.to_string()))?
        };
        let spec = SubscriberSpec {
            endpoint,
            handler,
            secret,
            max_in_flight,
            batch: options.batch,
            headers: options.headers,
        };
        // What was accepted once is within bounds; anything else was not written by a build
        // with these bounds, and is refused rather than used.
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the settings that do not depend on the Space (bounds, combinations).
    pub fn validate(&self) -> Result<(), SubscriberError> {
        self.batch.validate()?;
        validate_headers(&self.headers)?;
        if self.batch.is_batched() && self.handler == HandlerKind::Legacy {
            return Err(SubscriberError::InvalidBatch(
                "the legacy handler sends one message per request: batching needs the webhook handler".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for SubscriberSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSpec")
            .field("endpoint", &self.endpoint)
            .field("handler", &self.handler)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_in_flight", &self.max_in_flight)
            .field("batch", &self.batch)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Header names a subscriber may not set: those every request carries from the broker
/// (`content-type`, the Standard Webhooks, CloudEvents and `syncbrok-` families) and those
/// of HTTP's own framing and connection handling.
const RESERVED_HEADERS: [&str; 9] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];
const RESERVED_HEADER_PREFIXES: [&str; 4] = ["webhook-", "ce-", "syncbrok-", "proxy-"];

/// Checks a subscriber's own headers: at most `SUBSCRIBER_HEADERS_MAX`, names HTTP tokens in
/// lowercase, none reserved or twice, values of visible ASCII (spaces and tabs inside), all
/// together within `SUBSCRIBER_HEADER_BYTES_MAX`.
fn validate_headers(headers: &[(String, String)]) -> Result<(), SubscriberError> {
    use crate::limits::{SUBSCRIBER_HEADER_BYTES_MAX, SUBSCRIBER_HEADERS_MAX};
    let bad = |why: String| Err(SubscriberError::InvalidHeader(why));
    if headers.len() > SUBSCRIBER_HEADERS_MAX {
        return bad(format!("at most {SUBSCRIBER_HEADERS_MAX} headers"));
    }
    let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > SUBSCRIBER_HEADER_BYTES_MAX {
        return bad(format!(
            "names and values together over {SUBSCRIBER_HEADER_BYTES_MAX} bytes"
        ));
    }
    let token =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    let visible = |b: u8| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b);
    for (i, (name, value)) in headers.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(token) {
            return bad(format!("{name:?} is not a header name in lowercase"));
        }
        if RESERVED_HEADERS.contains(&name.as_str())
            || RESERVED_HEADER_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return bad(format!(
                "{name:?} is set by the broker, not by a subscriber"
            ));
        }
        if headers[..i].iter().any(|(n, _)| n == name) {
            return bad(format!("{name:?} given twice"));
        }
        if !value.bytes().all(visible) || value.trim() != value {
            return bad(format!(
                "the value of {name:?} is not visible ASCII without leading or trailing spaces"
            ));
        }
    }
    Ok(())
}

/// A subscriber of a queue at run time.
pub(crate) struct Subscriber {
    pub slot: Slot,
    pub spec: SubscriberSpec,
    /// `spec.endpoint`, shared with every attempt instead of copied into each.
    pub endpoint: Arc<str>,
    /// The decoded key of `spec.secret`.
    pub key: Option<Arc<[u8]>>,
    /// `spec.headers`, shared with every attempt.
    pub headers: crate::delivery::CustomHeaders,
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
    /// Failed attempts since the last ack (see `FAILURES_TO_PAUSE_NEW_MESSAGES`).
    consecutive_failures: u32,
    /// When an attempt was last acknowledged (unix ms), since the broker started.
    last_success_at_ms: Option<u64>,
    /// The error of the last failed attempt, since the broker started.
    last_error: Option<String>,
}

/// How an attempt ended, for a subscriber's pacing and health (not durable state).
#[derive(Debug, Clone, Copy)]
pub enum Answered<'a> {
    Acked { at_ms: u64 },
    Failed { error: &'a str },
}

/// A subscriber's health at run time (since the broker started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Requests on the wire now.
    pub in_flight: u32,
    pub consecutive_failures: u32,
    pub last_success_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl Subscriber {
    pub fn new(slot: Slot, spec: SubscriberSpec, key: Option<Arc<[u8]>>) -> Subscriber {
        let (stop, _) = watch::channel(false);
        Subscriber {
            slot,
            limit: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            endpoint: Arc::from(spec.endpoint.as_str()),
            headers: Arc::from(spec.headers.as_slice()),
            spec,
            key,
            notify: Arc::new(Notify::new()),
            stop,
            retries: BinaryHeap::new(),
            scheduled: IdSet::default(),
            consecutive_failures: 0,
            last_success_at_ms: None,
            last_error: None,
        }
    }

    /// An attempt was acknowledged or failed. An ack ends a pause at once: the dispatcher,
    /// which may be asleep until its next retry is due, is woken.
    pub fn record_answer(&mut self, answer: Answered<'_>) {
        match answer {
            Answered::Acked { at_ms } => {
                if self.paused() {
                    self.notify.notify_one();
                }
                self.consecutive_failures = 0;
                self.last_success_at_ms = Some(at_ms);
            }
            Answered::Failed { error } => {
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

    /// Every recent attempt failed and a full pause's worth of retries is scheduled (see
    /// `FAILURES_TO_PAUSE_NEW_MESSAGES`).
    fn paused(&self) -> bool {
        self.consecutive_failures >= crate::limits::FAILURES_TO_PAUSE_NEW_MESSAGES
            && self.scheduled.len() >= crate::limits::FAILURES_TO_PAUSE_NEW_MESSAGES as usize
    }

    /// Whether the dispatcher may take a new message (not a retry): unless it is paused. A
    /// retry taken off the schedule makes room for one new message, which so goes out as a
    /// probe behind it; a new message that fails fills the room again.
    pub fn takes_new_messages(&self) -> bool {
        !self.paused()
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
        let paused = self.paused();
        if self.scheduled.remove(&id) && paused && !self.paused() {
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
    use crate::limits::FAILURES_TO_PAUSE_NEW_MESSAGES as PAUSE;
    use crate::model::SubscriberId;
    use crate::queue::{QueueSettings, QueueState};

    const SUB: SubscriberId = 1;

    /// A queue of `n` independent messages with one subscriber.
    fn queue(n: u64) -> QueueState {
        let mut q = QueueState::new("q", 1, QueueSettings::default());
        let spec = SubscriberSpec {
            endpoint: "http://a/".into(),
            handler: HandlerKind::Webhook,
            secret: None,
            max_in_flight: 4096,
            batch: Batching::default(),
            headers: Vec::new(),
        };
        q.apply_subscriber_added(SUB, spec).unwrap();
        let mut wake = Vec::new();
        for seq in 0..n {
            let p = Published {
                queue: 1,
                id: crate::ids::message_id(1_000, 1, seq),
                parent: None,
                content_type: "text/plain".into(),
                published_at_ms: 1_000,
                idempotency_key: None,
                fanout: vec![SUB],
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
            q.record_answer(SUB, Answered::Failed { error: "HTTP 500" });
            q.schedule_retry(SUB, id, retry_at);
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn options_read_back_are_held_to_the_bounds_they_were_accepted_under() {
        let read = |handler, options: &[u8]| {
            SubscriberSpec::from_record("http://a/".into(), handler, None, 8, options)
        };
        let web = HandlerKind::Webhook;
        let spec = read(web, br#"{"batch": {"max_messages": 64}}"#).unwrap();
        assert_eq!(spec.batch.max_messages, 64);
        assert_eq!(
            spec.batch.max_bytes,
            crate::limits::DELIVERY_BATCH_BYTES_DEFAULT
        );
        assert_eq!(read(web, b"").unwrap().batch, Batching::default());
        assert_eq!(read(web, &spec.options()).unwrap(), spec);
        for bad in [
            &br#"{"batch": {"max_messages": 5000}}"#[..],
            br#"{"batch": {"max_bytes": 0}}"#,
            br#"{"rate_limit": 3}"#,
            b"not json",
        ] {
            assert!(read(web, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(read(HandlerKind::Legacy, br#"{"batch": {"max_messages": 2}}"#).is_err());
    }

    #[test]
    fn own_headers_are_checked_at_their_edges() {
        let spec = |headers: Vec<(String, String)>| SubscriberSpec {
            endpoint: "http://a/".into(),
            handler: HandlerKind::Webhook,
            secret: None,
            max_in_flight: 1,
            batch: Batching::default(),
            headers,
        };
        let h = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let max = crate::limits::SUBSCRIBER_HEADERS_MAX;
        let many = |n: usize| {
            (0..n)
                .map(|i| h(&format!("x-h{i}"), "v"))
                .collect::<Vec<_>>()
        };
        assert!(spec(many(max)).validate().is_ok());
        assert!(spec(many(max + 1)).validate().is_err());
        // Names and values together: exactly at the bound, and one byte over.
        let at = crate::limits::SUBSCRIBER_HEADER_BYTES_MAX - "authorization".len();
        assert!(
            spec(vec![h("authorization", &"a".repeat(at))])
                .validate()
                .is_ok()
        );
        assert!(
            spec(vec![h("authorization", &"a".repeat(at + 1))])
                .validate()
                .is_err()
        );
        assert!(
            spec(vec![h("authorization", "Bearer x y"), h("x-tenant", "7")])
                .validate()
                .is_ok()
        );
        for reserved in [
            "content-type",
            "host",
            "content-length",
            "webhook-signature",
            "ce-type",
            "syncbrok-queue",
            "proxy-authorization",
        ] {
            let e = spec(vec![h(reserved, "x")]).validate().unwrap_err();
            assert!(
                e.to_string().contains("set by the broker"),
                "{reserved}: {e}"
            );
        }
        for (name, value) in [
            ("Authorization", "x"),
            ("bad name", "x"),
            ("", "x"),
            ("x-a", "line\nbreak"),
            ("x-a", " padded"),
            ("x-a", "caf\u{e9}"),
        ] {
            assert!(
                spec(vec![h(name, value)]).validate().is_err(),
                "{name:?}: {value:?}"
            );
        }
        assert!(spec(vec![h("x-a", "1"), h("x-a", "2")]).validate().is_err());
        assert_eq!(
            SubscriberSpec::from_record(
                "http://a/".into(),
                HandlerKind::Webhook,
                None,
                1,
                &spec(vec![h("authorization", "Bearer x")]).options()
            )
            .unwrap()
            .headers,
            vec![h("authorization", "Bearer x")]
        );
        let debug = format!("{:?}", spec(vec![h("authorization", "Bearer s3cret")]));
        assert!(
            debug.contains("authorization") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn failures_among_acks_never_pause_new_messages() {
        let mut q = queue(200);
        fail_new(&mut q, PAUSE - 1, later());
        q.record_answer(SUB, Answered::Acked { at_ms: 1 });
        fail_new(&mut q, PAUSE - 1, later());
        assert!(q.next_for(SUB, Instant::now()).is_some());
    }

    #[test]
    fn a_full_retry_schedule_after_failures_pauses_until_an_ack() {
        let mut q = queue(200);
        fail_new(&mut q, PAUSE, later());
        assert_eq!(q.next_for(SUB, Instant::now()), None, "paused");
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
    fn a_paused_dispatcher_sends_one_new_message_behind_each_retry() {
        let mut q = queue(200);
        let due = Instant::now() + Duration::from_secs(60);
        fail_new(&mut q, 1, due);
        fail_new(&mut q, PAUSE - 1, later());
        assert_eq!(
            q.next_for(SUB, due),
            Some(crate::ids::message_id(1_000, 1, 0))
        );
        let probe = q.next_for(SUB, due).expect("a probe behind the retry");
        assert_eq!(probe, crate::ids::message_id(1_000, 1, u64::from(PAUSE)));
        // A refused probe goes on the schedule too: paused again.
        q.record_answer(SUB, Answered::Failed { error: "HTTP 500" });
        q.schedule_retry(SUB, probe, later());
        assert_eq!(q.next_for(SUB, due), None);
    }

    #[test]
    fn removing_a_scheduled_message_ends_the_pause() {
        let mut q = queue(200);
        fail_new(&mut q, PAUSE, later());
        assert_eq!(q.next_for(SUB, Instant::now()), None);
        let first = crate::ids::message_id(1_000, 1, 0);
        q.apply_discarded(first, 2_000, &mut Vec::new()).unwrap();
        assert!(q.next_for(SUB, Instant::now()).is_some());
    }
}
