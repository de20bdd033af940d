//! The Space: named queues on one log, with a dispatcher per subscriber.
//!
//! Every change that must survive a crash is appended to the log first and applied to memory
//! after (publishes wait for durability; acks and failures are appended lazily, since losing
//! one only causes a redelivery). On open, the same changes are replayed from the log.
//!
//! Locks: the queue map is behind a short `RwLock`; each queue's state behind its own `Mutex`,
//! never held across an `.await`. Administrative changes (queues, subscribers) are serialised
//! by one async lock so that their records reach the log in the order they apply.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use storage::io::Backend;
use storage::{Log, RecoveryReport};
use tokio::sync::{Notify, watch};

use crate::delivery::Deliverer;
use crate::error::SpaceError;
use crate::queue::{QueueState, SubscriberSpec, Wake};
use crate::scheduler::{MessageId, SubscriberId};
use crate::settings::{QueueSettings, SettingsPatch};

mod admin;
mod dispatch;
mod journal;
mod publish;
mod reclaim;
mod replay;
mod types;
mod views;

use crate::limits;
pub(crate) use admin::add_subscriber_state;
pub use admin::{decode_secret, validate_queue_name};
use journal::AckBuffer;
use reclaim::Maintenance;
pub use reclaim::ReclaimReport;
use replay::Replay;
pub use types::*;

/// How a queue is stored in `QueueCreated`/`QueueUpdated` records.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredQueue {
    number: u32,
    settings: QueueSettings,
}

pub(super) struct Queue {
    state: Mutex<QueueState>,
}

impl Queue {
    pub(super) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) struct Inner {
    log: Log,
    queues: RwLock<BTreeMap<String, Arc<Queue>>>,
    by_number: RwLock<HashMap<u32, Arc<Queue>>>,
    /// Serialises queue and subscriber changes.
    admin: tokio::sync::Mutex<()>,
    next_queue_number: AtomicU32,
    next_subscriber: AtomicU64,
    deliverer: Arc<dyn Deliverer>,
    shutdown: watch::Sender<bool>,
    /// Attempts under way, and a wake-up when they reach zero (graceful shutdown).
    in_flight: AtomicUsize,
    /// Running totals since the Space was opened, for `/metrics`.
    totals: Totals,
    idle: Notify,
    /// Held (shared) by every change from its append to its effect in memory, and taken
    /// exclusively by a checkpoint: the snapshot then matches the log exactly at the
    /// checkpoint's position.
    gate: tokio::sync::RwLock<()>,
    /// One reclaim at a time, and what the last one saw.
    maintenance: tokio::sync::Mutex<Maintenance>,
    endpoint_allow: Option<crate::endpoints::AllowList>,
    acks: Arc<AckBuffer>,
    recent: crate::recent::RecentBodies,
}

/// Running totals since the Space was opened.
#[derive(Default)]
pub(super) struct Totals {
    published: AtomicU64,
    acked: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
}

/// The Space. Cheap to clone. Must be opened, and used, inside a tokio runtime.
#[derive(Clone)]
pub struct Space {
    inner: Arc<Inner>,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn wake_all(wake: Wake) {
    for n in wake {
        n.notify_one();
    }
}

impl Space {
    /// Opens the log, replays it, and starts a dispatcher per subscriber.
    pub fn open(
        backend: Arc<dyn Backend>,
        config: SpaceConfig,
        deliverer: Arc<dyn Deliverer>,
    ) -> Result<(Space, RecoveryReport), SpaceError> {
        let reclaim_interval = config.reclaim_interval.max(Duration::from_millis(1));
        let endpoint_allow = config.endpoint_allow.clone();
        let mut recovery = Log::open(backend, config.storage)?;
        let mut replay = match recovery.checkpoint() {
            None => Replay::default(),
            Some(cp) => {
                let (counters, queues) = crate::snapshot::decode(crate::snapshot::join(&cp.parts))
                    .map_err(|e| SpaceError::Snapshot(e.to_string()))?;
                let by_number = queues
                    .iter()
                    .map(|(name, q)| (q.number, name.clone()))
                    .collect();
                Replay {
                    queues,
                    by_number,
                    next_queue_number: counters.next_queue_number,
                    next_subscriber: counters.next_subscriber,
                    last_ms: 0,
                }
            }
        };
        for item in recovery.by_ref() {
            let replayed = item?;
            match replayed.relocated_from {
                Some(from) => replay.relocate(from, replayed.location, &replayed.record),
                None => replay.apply(replayed.location, replayed.record),
            }
        }
        let (log, report) = recovery.finish()?;
        let (shutdown, _) = watch::channel(false);
        let mut queues = BTreeMap::new();
        let mut by_number = HashMap::new();
        for (name, state) in replay.queues {
            let q = Arc::new(Queue {
                state: Mutex::new(state),
            });
            by_number.insert(q.lock().number, q.clone());
            queues.insert(name, q);
        }
        let space = Space {
            inner: Arc::new(Inner {
                log,
                queues: RwLock::new(queues),
                by_number: RwLock::new(by_number),
                admin: tokio::sync::Mutex::new(()),
                next_queue_number: AtomicU32::new(replay.next_queue_number.max(1)),
                next_subscriber: AtomicU64::new(replay.next_subscriber.max(1)),
                deliverer,
                shutdown,
                in_flight: AtomicUsize::new(0),
                totals: Totals::default(),
                idle: Notify::new(),
                gate: tokio::sync::RwLock::new(()),
                maintenance: tokio::sync::Mutex::new(Maintenance::default()),
                endpoint_allow,
                acks: Arc::default(),
                recent: crate::recent::RecentBodies::new(limits::RECENT_BODIES_BYTES),
            }),
        };
        let now = now_ms();
        for q in space.all_queues() {
            let mut st = q.lock();
            let mut wake = Vec::new();
            st.expire(now, &mut wake);
            let subs: Vec<_> = st
                .subscribers
                .iter()
                .map(|(id, s)| (*id, s.notify.clone()))
                .collect();
            drop(st);
            for (id, notify) in subs {
                space.spawn_dispatcher(q.clone(), id);
                notify.notify_one();
            }
        }
        space.spawn_sweeper();
        space.spawn_reclaimer(reclaim_interval);
        space.spawn_ack_writer();
        Ok((space, report))
    }

    /// Runs a change to completion on its own task: the caller may go away (a client that
    /// disconnects drops its request's future), but a change whose record is being appended
    /// must still be applied to memory, or memory and the log would disagree.
    pub(super) async fn complete<T: Send + 'static>(
        fut: impl std::future::Future<Output = Result<T, SpaceError>> + Send + 'static,
    ) -> Result<T, SpaceError> {
        tokio::spawn(fut)
            .await
            .map_err(|e| SpaceError::Internal(format!("a change did not complete: {e}")))?
    }

    /// Creates a queue, or updates its settings if it exists (nested fields left out keep
    /// their values). Returns the queue and whether it was created.
    pub async fn put_queue(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(QueueInfo, bool), SpaceError> {
        let (this, name, patch) = (self.clone(), name.to_owned(), patch.clone());
        Self::complete(async move { this.put_queue_now(&name, &patch).await }).await
    }

    /// Deletes a queue and its messages; its subscribers' tasks stop.
    pub async fn delete_queue(&self, name: &str) -> Result<(), SpaceError> {
        let (this, name) = (self.clone(), name.to_owned());
        Self::complete(async move { this.delete_queue_now(&name).await }).await
    }

    /// Adds a subscriber; the same endpoint twice returns the existing one (`false`).
    pub async fn add_subscriber(
        &self,
        queue: &str,
        spec: SubscriberSpec,
    ) -> Result<(SubscriberInfo, bool), SpaceError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.add_subscriber_now(&queue, spec).await }).await
    }

    /// Removes a subscriber: pending deliveries to it are dropped, and messages no longer wait
    /// for it.
    pub async fn remove_subscriber(&self, queue: &str, id: SubscriberId) -> Result<(), SpaceError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.remove_subscriber_now(&queue, id).await }).await
    }

    /// Publishes a message; returns once it is durable (under `fsync: always`).
    pub async fn publish(
        &self,
        queue: &str,
        msg: NewMessage,
    ) -> Result<PublishedMessage, SpaceError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.publish_now(&queue, msg).await }).await
    }

    /// Publishes several messages atomically: all are accepted (in one durable record batch)
    /// or none. An entry may name as parent an existing message or an earlier entry. An entry
    /// whose `Idempotency-Key` matches an earlier publish (same body) is not published again:
    /// its place in the answer holds the earlier id.
    pub async fn publish_batch(
        &self,
        queue: &str,
        entries: Vec<BatchEntry>,
    ) -> Result<Vec<PublishedMessage>, SpaceError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.publish_batch_now(&queue, entries).await }).await
    }

    /// Discards a message: it is no longer delivered, and its waiting children go on.
    pub async fn discard(&self, queue: &str, id: MessageId) -> Result<(), SpaceError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.discard_now(&queue, id).await }).await
    }

    /// Sends a dead message again to the subscribers that did not acknowledge it.
    pub async fn redrive(&self, queue: &str, id: MessageId) -> Result<(), SpaceError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.redrive_now(&queue, id).await }).await
    }

    pub(super) fn all_queues(&self) -> Vec<Arc<Queue>> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(super) fn queue(&self, name: &str) -> Result<Arc<Queue>, SpaceError> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| SpaceError::QueueNotFound(name.to_owned()))
    }

    /// Stops taking new work, lets attempts under way finish for up to `grace`, makes what
    /// they acknowledged durable, and closes the log.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        let drained = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                    break;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                in_flight = self.inner.in_flight.load(Ordering::Acquire),
                "shutdown grace over; unfinished deliveries will be sent again after restart"
            );
        }
        self.write_acks().await;
        if let Err(e) = self.inner.log.sync().await {
            tracing::error!(error = %e, "final sync of the log failed");
        }
        self.inner.log.clone().close();
    }

    /// Runs `job` every `interval` until shutdown, while the Space exists.
    pub(super) fn spawn_periodic<F, Fut>(&self, interval: Duration, job: F)
    where
        F: Fn(Space) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                job(Space { inner }).await;
            }
        });
    }

    /// Retention and idempotency windows.
    pub(super) fn spawn_sweeper(&self) {
        self.spawn_periodic(
            Duration::from_millis(limits::SWEEP_INTERVAL_MS),
            |space| async move {
                let now = now_ms();
                for q in space.all_queues() {
                    let mut wake = Vec::new();
                    q.lock().expire(now, &mut wake);
                    wake_all(wake);
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Outcome;
    use crate::queue::SubscriberSpec;
    use crate::settings::{RetryPatch, Span};
    use crate::space::types::BatchEntry;
    use crate::{Attempt, HandlerKind};
    use bytes::Bytes;
    use std::pin::Pin;
    use storage::Ack;

    /// A subscriber that is always down.
    struct Down;

    impl Deliverer for Down {
        fn deliver(
            &self,
            _: Attempt,
        ) -> Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
            Box::pin(async {
                Outcome::Failed {
                    error: "down".into(),
                    retry_after: None,
                }
            })
        }
    }

    fn open(disk: &storage::sim::SimDisk) -> Space {
        let config = SpaceConfig::new(storage::Config::default());
        Space::open(Arc::new(disk.clone()), config, Arc::new(Down))
            .expect("open")
            .0
    }

    #[tokio::test]
    async fn shutdown_appends_the_acks_still_gathered() {
        let disk = storage::sim::SimDisk::new(7);
        let space = open(&disk);
        let patch = SettingsPatch {
            retry: Some(RetryPatch {
                max_attempts: Some(0),
                initial_backoff: Some(Span::secs(3600)),
                max_backoff: Some(Span::secs(3600)),
            }),
            ..SettingsPatch::default()
        };
        space.put_queue("q", &patch).await.expect("queue");
        let sub = space
            .add_subscriber(
                "q",
                SubscriberSpec {
                    endpoint: "http://127.0.0.1:1/".into(),
                    handler: HandlerKind::Webhook,
                    secret: None,
                    max_in_flight: 1,
                },
            )
            .await
            .expect("subscriber")
            .0
            .id;
        // More acks than one record holds, so that the last append is split.
        let count = limits::ACKS_PER_RECORD_MAX + 3;
        let mut messages = Vec::new();
        while messages.len() < count {
            let entries = (0..(count - messages.len()).min(limits::BATCH_MESSAGES_MAX))
                .map(|_| BatchEntry {
                    message: crate::NewMessage {
                        body: Bytes::from_static(b"x"),
                        content_type: None,
                        parent: None,
                        idempotency_key: None,
                    },
                    parent: None,
                })
                .collect();
            let published = space.publish_batch("q", entries).await.expect("publish");
            messages.extend(published.into_iter().map(|m| m.id));
        }
        // The acks are gathered and shutdown starts before the ack writer can run (one
        // thread, and shutdown comes first in its wait).
        for message in messages {
            space.inner.acks.push(Ack {
                message,
                subscriber: sub,
                acked_at_ms: now_ms(),
            });
        }
        space.shutdown(Duration::from_millis(50)).await;
        let space = open(&disk);
        let counts = space.queue_info("q").expect("queue").counts;
        assert_eq!(
            (counts.ready, counts.delivering),
            (0, 0),
            "every gathered ack was written"
        );
        space.shutdown(Duration::from_millis(50)).await;
    }
}
