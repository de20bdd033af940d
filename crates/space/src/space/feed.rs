//! The feed: what happens to messages as it happens, for watchers (`syncbrok tail`, the
//! dashboard). Not durable and not replayed: a watcher sees what happens while it watches.
//! Bounded: the broker never waits for a watcher; one that falls more than
//! [`FEED_EVENTS_BUFFERED`] events behind is told how many it missed. Nothing is built for it
//! while nobody watches.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::Space;
use crate::limits::FEED_EVENTS_BUFFERED;
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

pub(crate) struct Feed {
    tx: broadcast::Sender<FeedEvent>,
    closed: watch::Sender<bool>,
}

/// Where a queue tells what happens inside its own transitions (a child dead with its
/// parent); queues built by replay have none.
#[derive(Clone)]
pub(crate) struct FeedSender(broadcast::Sender<FeedEvent>);

impl FeedSender {
    /// Tells the watchers, if any (the event is built only then).
    pub fn tell(&self, event: impl FnOnce() -> FeedEvent) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(event());
        }
    }
}

impl Feed {
    pub fn new() -> Feed {
        Feed {
            tx: broadcast::channel(FEED_EVENTS_BUFFERED).0,
            closed: watch::channel(false).0,
        }
    }

    /// Whether anyone watches: events are built only then.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn send(&self, event: FeedEvent) {
        // No watcher left since `watched`: nothing to do.
        let _ = self.tx.send(event);
    }

    pub fn sender(&self) -> FeedSender {
        FeedSender(self.tx.clone())
    }
}

/// A watcher's end of the feed: the events, and whether the feed was closed (the broker is
/// stopping: a watcher ends its stream then, rather than hold the shutdown up).
pub struct Watcher {
    pub events: broadcast::Receiver<FeedEvent>,
    pub closed: watch::Receiver<bool>,
}

impl Space {
    /// Watches what happens to messages from now on, in every queue.
    pub fn watch(&self) -> Watcher {
        Watcher {
            events: self.inner.feed.tx.subscribe(),
            closed: self.inner.feed.closed.subscribe(),
        }
    }

    /// Ends every watcher's stream (the broker is stopping).
    pub fn close_feed(&self) {
        let _ = self.inner.feed.closed.send(true);
    }

    /// Tells the watchers, if any, what happened (built only if someone watches).
    pub(super) fn tell(&self, event: impl FnOnce() -> FeedEvent) {
        if self.inner.feed.watched() {
            self.inner.feed.send(event());
        }
    }
}
