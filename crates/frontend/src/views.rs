//! The JSON shapes of the API (SPEC §8): field names are part of the contract.

use serde::Serialize;
use space::time::rfc3339;
use space::{
    Counts, DeadLetter, DeliveryState, MessageId, MessageInfo, MessageState, QueueInfo,
    QueueSettings, SubscriberInfo,
};

#[derive(Serialize)]
pub struct Queue {
    pub name: String,
    pub settings: QueueSettings,
    pub subscribers: Vec<Subscriber>,
    pub counts: QueueCounts,
    pub bytes: u64,
    pub oldest_undelivered_age_ms: Option<u64>,
}

#[derive(Serialize)]
pub struct QueueCounts {
    pub waiting: u64,
    pub ready: u64,
    pub delivering: u64,
    pub delivered: u64,
    pub dead: u64,
}

impl From<Counts> for QueueCounts {
    fn from(c: Counts) -> Self {
        QueueCounts {
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

#[derive(Serialize)]
pub struct Subscriber {
    pub id: u64,
    pub endpoint: String,
    pub handler: &'static str,
    pub max_in_flight: u32,
    pub has_secret: bool,
}

impl From<SubscriberInfo> for Subscriber {
    fn from(s: SubscriberInfo) -> Self {
        Subscriber {
            id: s.id,
            endpoint: s.endpoint,
            handler: s.handler.name(),
            max_in_flight: s.max_in_flight,
            has_secret: s.has_secret,
        }
    }
}

pub fn state_name(s: MessageState) -> &'static str {
    match s {
        MessageState::Waiting => "waiting",
        MessageState::Ready => "ready",
        MessageState::Delivering => "delivering",
        MessageState::Delivered => "delivered",
        MessageState::Dead => "dead",
    }
}

pub fn parse_state(s: &str) -> Option<MessageState> {
    Some(match s {
        "waiting" => MessageState::Waiting,
        "ready" => MessageState::Ready,
        "delivering" => MessageState::Delivering,
        "delivered" => MessageState::Delivered,
        "dead" => MessageState::Dead,
        _ => return None,
    })
}

#[derive(Serialize)]
pub struct Delivery {
    pub subscriber: u64,
    pub endpoint: String,
    pub state: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub acked_at: Option<String>,
}

#[derive(Serialize)]
pub struct Message {
    pub id: MessageId,
    pub queue: String,
    pub parent: Option<MessageId>,
    pub children: Vec<MessageId>,
    pub state: &'static str,
    pub content_type: String,
    pub size: u64,
    pub published_at: String,
    pub deliveries: Vec<Delivery>,
}

impl From<MessageInfo> for Message {
    fn from(m: MessageInfo) -> Self {
        Message {
            id: m.id,
            queue: m.queue,
            parent: m.parent,
            children: m.children,
            state: state_name(m.state),
            content_type: m.content_type,
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

#[derive(Serialize)]
pub struct DeadLetterView {
    pub id: MessageId,
    pub subscriber: Option<u64>,
    pub endpoint: Option<String>,
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

#[derive(Serialize)]
pub struct Published {
    pub id: MessageId,
    pub queue: String,
    pub parent: Option<MessageId>,
}
