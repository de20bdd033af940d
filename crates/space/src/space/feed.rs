//! The feed: what happens to messages as it happens, for watchers (`syncbrok tail`, the
//! dashboard). Not durable and not replayed: a watcher sees what happens while it watches.
//! Bounded: the broker never waits for a watcher; one that falls more than
//! [`FEED_EVENTS_BUFFERED`] events behind is told how many it missed. Nothing is built for it
//! while nobody watches.

use tokio::sync::{broadcast, watch};

use super::Space;
use crate::feed_event::FeedSender;
pub use crate::feed_event::{FeedEvent, Happened};
use crate::limits::FEED_EVENTS_BUFFERED;

pub(crate) struct Feed {
    tx: broadcast::Sender<FeedEvent>,
    closed: watch::Sender<bool>,
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
        FeedSender::new(self.tx.clone())
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
