//! What the feed tells (see `space/feed.rs`): an event, and the sending end a queue holds to
//! tell what happens inside its own transitions. Below both the queue and the Space, so that
//! neither reaches up into the other for it.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{DeadReason, MessageId, SubscriberId};

/// Something that happened to a message of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub queue: Arc<str>,
    pub message: MessageId,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub what: Happened,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// Accepted (durable).
    Published,
    /// A subscriber acknowledged it.
    Delivered {
        subscriber: SubscriberId,
        attempt: u32,
    },
    /// An attempt failed; the next one is due then.
    Failed {
        subscriber: SubscriberId,
        attempt: u32,
        error: String,
        next_attempt_at_ms: u64,
    },
    /// A subscriber gave up on it (its attempts ran out), or it died with a parent
    /// (`parent_dead`): for every subscriber at once (`subscriber` is `None`), or, under
    /// per-subscriber causality, for one.
    DeadLettered {
        subscriber: Option<SubscriberId>,
        reason: DeadReason,
    },
}

impl Happened {
    pub fn name(&self) -> &'static str {
        match self {
            Happened::Published => "published",
            Happened::Delivered { .. } => "delivered",
            Happened::Failed { .. } => "failed",
            Happened::DeadLettered { .. } => "dead_lettered",
        }
    }
}

/// Where a queue tells what happens inside its own transitions (a child dead with its
/// parent); queues built by replay have none.
#[derive(Clone)]
pub(crate) struct FeedSender(broadcast::Sender<FeedEvent>);

impl FeedSender {
    pub fn new(tx: broadcast::Sender<FeedEvent>) -> FeedSender {
        FeedSender(tx)
    }

    /// Tells the watchers, if any (the event is built only then).
    pub fn tell(&self, event: impl FnOnce() -> FeedEvent) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(event());
        }
    }
}
