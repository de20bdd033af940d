//! The JSON shapes of the API (docs/api.md, "Shapes"): field names are part of the contract.

use serde::{Deserialize, Serialize};
use space::time::rfc3339;
use space::{
    Counts, DeadLetter, DeliveryState, MessageInfo, MessageState, QueueInfo, QueueSettings,
    SubscriberInfo,
};
use utoipa::ToSchema;
// Message ids are written as `Uuid` here (not the `Uuid` alias) so that the OpenAPI
// generator recognises them as UUID strings.
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct Queue {
    pub name: String,
    /// Every effective setting, defaults included (docs/api.md, "Configuration").
    #[schema(value_type = Object)]
    pub settings: QueueSettings,
    pub subscribers: Vec<Subscriber>,
    pub counts: QueueCounts,
    pub bytes: u64,
    pub oldest_undelivered_age_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueCounts {
    pub scheduled: u64,
    pub waiting: u64,
    pub ready: u64,
    pub delivering: u64,
    pub delivered: u64,
    pub dead: u64,
}

impl From<Counts> for QueueCounts {
    fn from(c: Counts) -> Self {
        QueueCounts {
            scheduled: c.scheduled,
            waiting: c.waiting,
            ready: c.ready,
            delivering: c.delivering,
            delivered: c.delivered,
            dead: c.dead,
        }
    }
}

impl From<QueueInfo> for Queue {
    fn from(q: QueueInfo) -> Self {
        Queue {
            name: q.name,
            settings: q.settings,
            subscribers: q.subscribers.into_iter().map(Subscriber::from).collect(),
            counts: q.counts.into(),
            bytes: q.bytes,
            oldest_undelivered_age_ms: q.oldest_undelivered_age_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Subscriber {
    pub id: u64,
    pub endpoint: String,
    /// `webhook` or `legacy`.
    #[schema(value_type = String)]
    pub handler: &'static str,
    pub max_in_flight: u32,
    pub has_secret: bool,
    pub batch: Batch,
    /// The names of its own headers; their values are never shown.
    pub headers: Vec<String>,
    /// `active`, `paused` (by an operator) or `disabled` (after `disable_after` of failures):
    /// only an active subscriber receives messages.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub rate_limit: Option<RateLimit>,
    /// The event types it takes (exact names, or prefixes followed by `*`); `null`: every
    /// message.
    pub types: Option<Vec<String>>,
    /// RFC 3339: until when the secret replaced by the latest rotation still signs.
    pub previous_secret_until: Option<String>,
    pub health: SubscriberHealth,
}

/// How a subscriber is doing, since the broker started.
#[derive(Serialize, ToSchema)]
pub struct SubscriberHealth {
    /// Requests on the wire now.
    pub in_flight: u32,
    /// Failed attempts since its last acknowledgement.
    pub consecutive_failures: u32,
    /// RFC 3339.
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    /// Attempts timed since the broker started (a batch counts once).
    pub attempts_timed: u64,
    /// Half of those took at most this many milliseconds (the bound of their histogram bucket;
    /// `null` before any, or past 300 s).
    pub attempt_p50_ms: Option<f64>,
    /// 99 % of them took at most this many milliseconds (likewise).
    pub attempt_p99_ms: Option<f64>,
}

/// At most `per_second` messages sent to the subscriber in any one-second window (a message
/// of a batch counts as one), whatever `max_in_flight` allows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[schema(minimum = 1, maximum = 100000)]
    pub per_second: u32,
}

impl RateLimit {
    pub fn setting(self) -> space::RateLimit {
        space::RateLimit {
            per_second: self.per_second,
        }
    }
}

impl From<SubscriberInfo> for Subscriber {
    fn from(s: SubscriberInfo) -> Self {
        Subscriber {
            id: s.id,
            endpoint: s.endpoint,
            handler: s.handler.name(),
            max_in_flight: s.max_in_flight,
            has_secret: s.has_secret,
            batch: Batch {
                max_messages: Some(s.batch.max_messages),
                max_bytes: Some(s.batch.max_bytes),
            },
            headers: s.headers,
            state: s.state.name(),
            rate_limit: s.rate_limit.map(|r| RateLimit {
                per_second: r.per_second,
            }),
            types: s.types,
            previous_secret_until: s.previous_secret_until_ms.map(space::time::rfc3339),
            health: SubscriberHealth {
                in_flight: s.in_flight,
                consecutive_failures: s.consecutive_failures,
                last_success_at: s.last_success_at_ms.map(space::time::rfc3339),
                last_error: s.last_error,
                attempts_timed: s.attempt_duration.count,
                attempt_p50_ms: s.attempt_duration.quantile_bound_s(0.5).map(|b| b * 1000.0),
                attempt_p99_ms: s
                    .attempt_duration
                    .quantile_bound_s(0.99)
                    .map(|b| b * 1000.0),
            },
        }
    }
}

/// How many messages one request to a subscriber may carry. With `max_messages` above 1, the
/// subscriber receives CloudEvents batches (`application/cloudevents-batch+json`) of whatever
/// is ready, never waiting for a batch to fill. Fields left out take their defaults.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// 1 (the default: one message per request, as a plain webhook) to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_messages: Option<u32>,
    /// The bodies of one batch together, in bytes, at most (default 1 MiB, at most 16 MiB); a
    /// larger message goes alone.
    #[schema(minimum = 1, maximum = 16777216)]
    pub max_bytes: Option<u32>,
}

impl Batch {
    /// The setting this asks for, defaults filled in.
    pub fn batching(self) -> space::Batching {
        let d = space::Batching::default();
        space::Batching {
            max_messages: self.max_messages.unwrap_or(d.max_messages),
            max_bytes: self.max_bytes.unwrap_or(d.max_bytes),
        }
    }
}

pub fn state_name(s: MessageState) -> &'static str {
    match s {
        MessageState::Scheduled => "scheduled",
        MessageState::Waiting => "waiting",
        MessageState::Ready => "ready",
        MessageState::Delivering => "delivering",
        MessageState::Delivered => "delivered",
        MessageState::Dead => "dead",
    }
}

pub fn parse_state(s: &str) -> Option<MessageState> {
    Some(match s {
        "scheduled" => MessageState::Scheduled,
        "waiting" => MessageState::Waiting,
        "ready" => MessageState::Ready,
        "delivering" => MessageState::Delivering,
        "delivered" => MessageState::Delivered,
        "dead" => MessageState::Dead,
        _ => return None,
    })
}

#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub subscriber: u64,
    pub endpoint: String,
    /// `pending`, `in_flight`, `acked` or `dead`.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub acked_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub queue: String,
    /// The first of its parents (`parents` lists them all).
    pub parent: Option<Uuid>,
    /// Every parent it waits (or waited) for, in the order they were named.
    pub parents: Vec<Uuid>,
    pub children: Vec<Uuid>,
    /// `scheduled`, `waiting`, `ready`, `delivering`, `delivered` or `dead`.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub content_type: String,
    /// Its event type (`syncbrok.message` when it was published without one).
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339: when it is due, while it is `scheduled`.
    pub deliver_at: Option<String>,
    /// The message it is a copy of, for a copy a replay published.
    pub replay_of: Option<Uuid>,
    /// Its W3C trace context, if it was published with one (sent with every attempt).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub size: u64,
    pub published_at: String,
    pub deliveries: Vec<Delivery>,
}

impl From<MessageInfo> for Message {
    fn from(m: MessageInfo) -> Self {
        Message {
            id: m.id,
            queue: m.queue,
            parent: m.parents.first(),
            parents: m.parents.as_slice().to_vec(),
            children: m.children,
            state: state_name(m.state),
            content_type: m.content_type,
            event_type: m
                .event_type
                .unwrap_or_else(|| space::limits::EVENT_TYPE_DEFAULT.to_owned()),
            deliver_at: m.deliver_at_ms.map(rfc3339),
            replay_of: m.replay_of,
            traceparent: m.traceparent,
            tracestate: m.tracestate,
            size: m.size,
            published_at: rfc3339(m.published_at_ms),
            deliveries: m
                .deliveries
                .into_iter()
                .map(|d| Delivery {
                    subscriber: d.subscriber,
                    endpoint: d.endpoint,
                    state: match d.state {
                        DeliveryState::Pending => "pending",
                        DeliveryState::InFlight => "in_flight",
                        DeliveryState::Acked => "acked",
                        DeliveryState::Dead => "dead",
                    },
                    attempts: d.attempts,
                    last_error: d.last_error,
                    next_attempt_at: d.next_attempt_at_ms.map(rfc3339),
                    acked_at: d.acked_at_ms.map(rfc3339),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: Uuid,
    pub subscriber: Option<u64>,
    pub endpoint: Option<String>,
    /// `max_attempts` or `parent_dead`.
    #[schema(value_type = String)]
    pub reason: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub dead_at: String,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        DeadLetterView {
            id: d.id,
            subscriber: d.subscriber,
            endpoint: d.endpoint,
            reason: match d.reason {
                storage::DeadReason::MaxAttempts => "max_attempts",
                storage::DeadReason::ParentDead => "parent_dead",
            },
            attempts: d.attempts,
            last_error: d.last_error,
            dead_at: rfc3339(d.dead_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Published {
    pub id: Uuid,
    pub queue: String,
    /// The first of its parents (`parents` lists them all).
    pub parent: Option<Uuid>,
    pub parents: Vec<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<Queue>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriberList {
    pub subscribers: Vec<Subscriber>,
}

#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// Pass back as `after=` for the next page; null at the end.
    pub next: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetterView>,
    pub next: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchPublished {
    pub ids: Vec<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct Redriven {
    pub redriven: u64,
}

/// A subscriber's own headers as given (`{"Authorization": "Bearer …"}`): names in any case,
/// kept in lowercase.
pub fn own_headers(
    given: Option<std::collections::BTreeMap<String, String>>,
) -> Vec<(String, String)> {
    given
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect()
}
