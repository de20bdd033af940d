//! A subscriber of a queue: what its user configured, and what its dispatcher needs at run time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::delivery::HandlerKind;
use crate::error::SubscriberError;
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
}

impl std::fmt::Debug for SubscriberSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSpec")
            .field("endpoint", &self.endpoint)
            .field("handler", &self.handler)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A subscriber of a queue at run time.
pub(crate) struct Subscriber {
    pub slot: Slot,
    pub spec: SubscriberSpec,
    /// `spec.endpoint`, shared with every attempt instead of copied into each.
    pub endpoint: Arc<str>,
    /// The decoded key of `spec.secret`.
    pub key: Option<Arc<[u8]>>,
    /// Woken when messages are released to this subscriber, or a retry is scheduled.
    pub notify: Arc<Notify>,
    /// `max_in_flight` permits: one per request on the wire. A message waiting out its backoff
    /// holds none.
    pub limit: Arc<Semaphore>,
    /// Set to true when the subscriber is removed (or its queue deleted): its tasks stop.
    pub stop: watch::Sender<bool>,
    /// Messages waiting out their backoff, earliest first. They stay in flight for the
    /// scheduler; the dispatcher sends each again, ahead of new messages, once it is due.
    retries: BinaryHeap<Reverse<(Instant, MessageId)>>,
    /// Failed attempts since the last ack (see `FAILURES_TO_PAUSE_NEW_MESSAGES`).
    consecutive_failures: u32,
}

impl Subscriber {
    pub fn new(slot: Slot, spec: SubscriberSpec, key: Option<Arc<[u8]>>) -> Subscriber {
        let (stop, _) = watch::channel(false);
        Subscriber {
            slot,
            limit: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            endpoint: Arc::from(spec.endpoint.as_str()),
            spec,
            key,
            notify: Arc::new(Notify::new()),
            stop,
            retries: BinaryHeap::new(),
            consecutive_failures: 0,
        }
    }

    /// An attempt was acknowledged (`true`) or failed.
    pub fn record_answer(&mut self, acked: bool) {
        self.consecutive_failures = if acked {
            0
        } else {
            self.consecutive_failures.saturating_add(1)
        };
    }

    /// Whether the dispatcher may take a new message (not a retry): unless every recent
    /// attempt failed and retries are scheduled, which then go first and alone.
    pub fn takes_new_messages(&self) -> bool {
        self.consecutive_failures < crate::limits::FAILURES_TO_PAUSE_NEW_MESSAGES
            || self.retries.is_empty()
    }

    pub fn schedule_retry(&mut self, id: MessageId, at: Instant) {
        self.retries.push(Reverse((at, id)));
        self.notify.notify_one();
    }

    /// The earliest retry due at `now`, taken off the schedule.
    pub fn take_due_retry(&mut self, now: Instant) -> Option<MessageId> {
        match self.retries.peek() {
            Some(Reverse((at, _))) if *at <= now => self.retries.pop().map(|Reverse((_, id))| id),
            _ => None,
        }
    }

    /// When the earliest retry is due.
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse((at, _))| *at)
    }
}
