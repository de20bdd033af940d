//! What the Space asks of a Handler, and the retry schedule it applies to the answers.
//!
//! The Space decides *what* to send to *whom* and *when*; a [`Deliverer`] does the sending
//! (the HTTP handlers live in their own crate). One attempt is one call; the Space counts
//! attempts, waits out the backoff, and gives up after `retry.max_attempts`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::SubscriberError;
use crate::model::{MessageId, SubscriberId};
use crate::settings::Retry;

/// How a subscriber wants its messages (docs/api.md, "Delivery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// Raw body, Standard Webhooks and CloudEvents headers; any 2xx acknowledges.
    Webhook,
    /// The original broker's JSON `{id, content}`; acknowledged by a 2xx with body `true`.
    Legacy,
}

impl HandlerKind {
    pub fn name(self) -> &'static str {
        match self {
            HandlerKind::Webhook => "webhook",
            HandlerKind::Legacy => "legacy",
        }
    }

    pub fn parse(s: &str) -> Option<HandlerKind> {
        match s {
            "webhook" => Some(HandlerKind::Webhook),
            "legacy" => Some(HandlerKind::Legacy),
            _ => None,
        }
    }
}

/// How many messages one request to a subscriber may carry (`batch` in the API). With
/// `max_messages` 1 (the default) every message goes in a request of its own, as a plain
/// webhook; above 1, the dispatcher sends whatever is ready for the subscriber, up to both
/// bounds, as one CloudEvents batch, never waiting for a batch to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Batching {
    /// 1 to [`DELIVERY_BATCH_MESSAGES_MAX`](crate::limits::DELIVERY_BATCH_MESSAGES_MAX).
    pub max_messages: u32,
    /// The bodies of one batch together, in bytes, at most (a larger message goes alone); 1 to
    /// [`DELIVERY_BATCH_BYTES_MAX`](crate::limits::DELIVERY_BATCH_BYTES_MAX).
    pub max_bytes: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_messages: 1,
            max_bytes: crate::limits::DELIVERY_BATCH_BYTES_DEFAULT,
        }
    }
}

impl Batching {
    /// Whether requests carry batches (even of one message) rather than single webhooks.
    pub fn is_batched(&self) -> bool {
        self.max_messages > 1
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), SubscriberError> {
        use crate::limits::{DELIVERY_BATCH_BYTES_MAX, DELIVERY_BATCH_MESSAGES_MAX};
        if !(1..=DELIVERY_BATCH_MESSAGES_MAX).contains(&self.max_messages) {
            return Err(SubscriberError::InvalidBatch(format!(
                "batch.max_messages {} is outside 1..={DELIVERY_BATCH_MESSAGES_MAX}",
                self.max_messages
            )));
        }
        if !(1..=DELIVERY_BATCH_BYTES_MAX).contains(&self.max_bytes) {
            return Err(SubscriberError::InvalidBatch(format!(
                "batch.max_bytes {} is outside 1..={DELIVERY_BATCH_BYTES_MAX}",
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// One attempt to deliver one message to one subscriber.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub message: MessageId,
    pub queue: Arc<str>,
    pub subscriber: SubscriberId,
    pub endpoint: Arc<str>,
    pub handler: HandlerKind,
    /// The decoded `whsec_` key, if the subscriber has one.
    pub secret: Option<Arc<[u8]>>,
    /// The key of the secret a rotation replaced, while its grace period lasts: requests are
    /// signed with both.
    pub previous_secret: Option<Arc<[u8]>>,
    pub body: Bytes,
    pub content_type: String,
    /// Its event type (`ce-type`); `None`: `syncbrok.message`.
    pub event_type: Option<Arc<str>>,
    /// The parents it waited for (`Syncbrok-Parent`, a list for a join).
    pub parents: crate::model::Parents,
    /// Its W3C trace context (`traceparent`, `tracestate`), sent as it was published.
    pub trace: Option<(String, Option<String>)>,
    /// Unix milliseconds.
    pub published_at_ms: u64,
    /// 1-based; restarts at 1 after a redrive.
    pub number: u32,
    /// The subscriber's own headers (`headers`), sent with every request.
    pub headers: CustomHeaders,
}

/// A subscriber's own headers: (name in lowercase, value), checked when it was added.
pub type CustomHeaders = Arc<[(String, String)]>;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Failed {
        error: String,
        /// What the subscriber asked for (`Retry-After` on 429/503).
        retry_after: Option<Duration>,
    },
}

/// Sends attempts. Implemented by the HTTP handlers; the Space calls it from its delivery
/// lanes, at most `max_in_flight` at a time per subscriber, each under `delivery_timeout`.
pub trait Deliverer: Send + Sync + 'static {
    fn deliver(&self, attempt: Attempt) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

    /// Delivers over `channel`, which the calling lane keeps between its attempts (it makes
    /// one at a time, all to the same subscriber): a deliverer may keep its connection there
    /// instead of taking one from a shared pool for every attempt. The future may be dropped
    /// at any point (a timeout): keep nothing in the channel that such a drop would leave
    /// half-used. By default, [`Deliverer::deliver`].
    fn deliver_on<'a>(
        &'a self,
        attempt: Attempt,
        channel: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        let _ = channel;
        self.deliver(attempt)
    }

    /// Delivers several messages to one subscriber in one request (a subscriber whose `batch`
    /// takes more than one message), over `channel` as [`Deliverer::deliver_on`] does. Returns
    /// one outcome per attempt, in their order; a missing one counts as failed. All attempts
    /// are for the same subscriber and queue. By default, each attempt by itself.
    fn deliver_batch_on<'a>(
        &'a self,
        batch: Vec<Attempt>,
        channel: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'a>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for attempt in batch {
                outcomes.push(self.deliver_on(attempt, channel).await);
            }
            outcomes
        })
    }
}

/// What a delivery lane keeps for its deliverer between attempts (see
/// [`Deliverer::deliver_on`]): empty at first, then whatever the deliverer puts there. It
/// goes with its lane, which ends after a while without attempts, so idle connections go.
#[derive(Default)]
pub struct Channel(Option<Box<dyn std::any::Any + Send>>);

impl Channel {
    /// Takes what the channel holds, if it is a `T`.
    pub fn take<T: std::any::Any + Send>(&mut self) -> Option<Box<T>> {
        self.0.take()?.downcast().ok()
    }

    pub fn put<T: std::any::Any + Send>(&mut self, value: T) {
        self.0 = Some(Box::new(value));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// The wait before attempt `next` (2 or more) after a failure: exponential backoff with full
/// jitter — uniform in `[0, min(max_backoff, initial_backoff × 2^(next-2))]` — or what the
/// subscriber asked for with `Retry-After`, capped by `max_backoff` and without jitter.
pub fn backoff(
    retry: &Retry,
    next: u32,
    retry_after: Option<Duration>,
    rng: &mut fastrand::Rng,
) -> Duration {
    let cap = retry.max_backoff.0;
    if let Some(asked) = retry_after {
        return asked.min(cap);
    }
    let doublings = next.saturating_sub(2).min(40);
    let ceiling = retry
        .initial_backoff
        .0
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(cap)
        .min(cap);
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.u64(0..=ceiling_us))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Span;

    fn retry() -> Retry {
        Retry {
            max_attempts: 20,
            initial_backoff: Span::millis(500),
            max_backoff: Span::secs(300),
        }
    }

    #[test]
    fn backoff_grows_exponentially_under_full_jitter_and_is_capped() {
        let mut rng = fastrand::Rng::with_seed(7);
        for next in 2..30u32 {
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << (next - 2).min(31))
                .min(Duration::from_secs(300));
            let mut max_seen = Duration::ZERO;
            for _ in 0..200 {
                let d = backoff(&retry(), next, None, &mut rng);
                assert!(d <= ceiling, "attempt {next}: {d:?} over {ceiling:?}");
                max_seen = max_seen.max(d);
            }
            // Full jitter spreads over the whole range, up near the ceiling.
            assert!(max_seen > ceiling / 2, "attempt {next}: never above half");
        }
    }

    #[test]
    fn retry_after_is_honoured_without_jitter_and_capped() {
        let mut rng = fastrand::Rng::with_seed(1);
        let r = retry();
        assert_eq!(
            backoff(&r, 2, Some(Duration::from_secs(7)), &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(&r, 2, Some(Duration::from_secs(3600)), &mut rng),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn handler_names_roundtrip() {
        for k in [HandlerKind::Webhook, HandlerKind::Legacy] {
            assert_eq!(HandlerKind::parse(k.name()), Some(k));
        }
        assert_eq!(HandlerKind::parse("sms"), None);
    }
}
