//! The Space: named queues on one log, with a dispatcher per subscriber.
//!
//! - [`journal`]: the only way to append; the gate, the order of acks, what reclaiming needs;
//! - [`registry`]: the queues by name and by number, and the counters that name new ones;
//! - [`publish`], [`admin`], [`controls`], [`messages`], [`resend`]: the changes users ask for;
//! - [`dispatch`]: the dispatchers, attempts and their outcomes;
//! - [`replay`]: the state rebuilt from a snapshot and the log;
//! - [`maintenance`]: checkpoints, reclaiming segments, retention;
//! - [`settler`]: what a queue learns of parents in other queues;
//! - [`views`]: read-only views for the API and metrics;
//! - [`feed`]: what happens to messages, as it happens, for watchers.
//!
//! Every change follows one pattern: start a [`journal::Change`] (the gate, shared), take the
//! queue's order lock, check and prepare under the queue's state lock, append without it, then
//! apply the record under the state lock again. Locks are always taken in that order: admin
//! lock, gate, order lock, state lock; the state lock is never held across an `.await`.

mod admin;
mod cluster;
mod controls;
mod dispatch;
mod feed;
mod journal;
mod maintenance;
mod messages;
mod outcome;
mod publish;
mod registry;
mod replay;
mod resend;
mod settler;
mod views;

pub use controls::SubscriberUpdate;
pub use feed::{FeedEvent, Happened, Watcher};
pub use messages::RedriveScope;
pub use resend::{ReplayOptions, Replayed};
pub use views::SpaceImage;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use storage::io::Backend;
use storage::{Log, RecoveryReport};
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::delivery::Deliverer;
use crate::error::{JournalError, OpenError};
use crate::limits;
use crate::queue::{QueueState, Wake};
use crate::recent::RecentBodies;
use crate::types::SpaceConfig;

pub use crate::queue::decode_secret;
pub use admin::validate_queue_name;
use journal::Journal;
use maintenance::Maintenance;
use registry::Registry;
use replay::Replay;

/// A queue at run time: its state, and the lock that orders its changes.
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Changes that commute with one another (publishes, acks, failed attempts) hold it
    /// shared; those that do not (giving up, expiry, redrive, discard, settings, subscribers,
    /// deletion: each can decide what a child published meanwhile sees of its parent) hold it
    /// exclusively. Held from a change's append to its effect in memory, it
    /// makes the order in which non-commuting changes reach the log the order in which they
    /// are applied, so that replay rebuilds what live operation built.
    order: tokio::sync::RwLock<()>,
    /// Its latencies since the broker started (observed by live changes only, never by
    /// replay).
    latency: crate::latency::QueueLatency,
}

impl Queue {
    pub(super) fn new(state: QueueState) -> Queue {
        Queue {
            state: Mutex::new(state),
            order: tokio::sync::RwLock::new(()),
            latency: crate::latency::QueueLatency::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    journal: Journal,
    registry: Registry,
    /// Serialises queue and subscriber changes.
    admin: tokio::sync::Mutex<()>,
    deliverer: Arc<dyn Deliverer>,
    clock: Arc<dyn Clock>,
    /// Set on shutdown: dispatchers and periodic tasks stop.
    shutdown: watch::Sender<bool>,
    /// Attempts under way, and a wake-up when they reach zero (graceful shutdown).
    in_flight: AtomicUsize,
    idle: Notify,
    /// Woken when a scheduled message is published: it may be due before the releaser's next
    /// look.
    due_changed: Arc<Notify>,
    /// Running totals since the Space was opened, for `/metrics`.
    totals: Totals,
    /// One reclaim at a time, and what the last one saw.
    maintenance: tokio::sync::Mutex<Maintenance>,
    endpoint_policy: crate::endpoints::EndpointPolicy,
    recent: RecentBodies,
    /// How long an idle delivery lane waits before it ends.
    lane_idle: Duration,
    settler: settler::Settler,
    feed: feed::Feed,
}

/// Running totals since the Space was opened.
#[derive(Default)]
struct Totals {
    published: AtomicU64,
    acked: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    subscribers_disabled: AtomicU64,
    unreadable_bodies: AtomicU64,
}

/// The Space. Cheap to clone. Must be opened, and used, inside a tokio runtime.
#[derive(Clone)]
pub struct Space {
    inner: Arc<Inner>,
}

fn wake_all(wake: Wake) {
    for n in wake {
        n.notify_one();
    }
}

impl Space {
    /// Opens the log, rebuilds the state (from the latest checkpoint, then the records after
    /// it), and starts a dispatcher per subscriber.
    pub fn open(
        backend: Arc<dyn Backend>,
        config: SpaceConfig,
        deliverer: Arc<dyn Deliverer>,
    ) -> Result<(Space, RecoveryReport), OpenError> {
        Space::open_with(backend, config, deliverer, journal::Mode::Single)
    }

    /// [`Space::open`] on a cluster node (see [`crate::replication`]): as the leader, every
    /// change goes through the replicator; as a follower, nothing runs but reads, checkpoints
    /// and reclaiming, and [`Space::apply_committed`] brings the records the leader's changes
    /// committed. The log must hold every committed entry up to the leader's term before a
    /// leader opens (the cluster waits for that).
    pub fn open_replicated(
        backend: Arc<dyn Backend>,
        config: SpaceConfig,
        deliverer: Arc<dyn Deliverer>,
        role: crate::replication::Role,
    ) -> Result<(Space, RecoveryReport), OpenError> {
        let mode = match role {
            crate::replication::Role::Leader(r) => journal::Mode::Leader(r),
            crate::replication::Role::Follower => journal::Mode::Follower,
        };
        Space::open_with(backend, config, deliverer, mode)
    }

    fn open_with(
        backend: Arc<dyn Backend>,
        config: SpaceConfig,
        deliverer: Arc<dyn Deliverer>,
        mode: journal::Mode,
    ) -> Result<(Space, RecoveryReport), OpenError> {
        let reclaim_interval = config.reclaim_interval.max(Duration::from_millis(1));
        let sweep_interval = config.sweep_interval.max(Duration::from_millis(1));
        let mut recovery = Log::open(backend, config.storage)?;
        let mut replay = match recovery.checkpoint() {
            None => Replay::default(),
            Some(cp) => Replay::from_snapshot(crate::snapshot::join(&cp.parts))?,
        };
        for item in recovery.by_ref() {
            replay.apply(item?)?;
        }
        let (log, report) = recovery.finish()?;
        let (queues, counters) = replay.finish();
        let (shutdown, _) = watch::channel(false);
        let (settler, settle_requests) = settler::Settler::new();
        let space = Space {
            inner: Arc::new(Inner {
                journal: Journal::new(log, mode),
                registry: Registry::new(queues.into_iter().map(Queue::new), counters),
                admin: tokio::sync::Mutex::new(()),
                deliverer,
                clock: config.clock,
                shutdown,
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                due_changed: Arc::new(Notify::new()),
                totals: Totals::default(),
                maintenance: tokio::sync::Mutex::new(Maintenance::default()),
                endpoint_policy: config.endpoint_policy,
                recent: RecentBodies::new(limits::RECENT_BODIES_BYTES),
                lane_idle: config.lane_idle,
                settler,
                feed: feed::Feed::new(),
            }),
        };
        space.spawn_reclaimer(reclaim_interval);
        if matches!(space.inner.journal.mode(), journal::Mode::Follower) {
            // A follower changes nothing of its own: no deliveries, no retention, no releases.
            return Ok((space, report));
        }
        space.start_settler(settle_requests);
        for q in space.inner.registry.all() {
            let subs: Vec<_> = q.lock().subscribers().map(|(id, _)| id).collect();
            for id in subs {
                space.spawn_dispatcher(q.clone(), id);
            }
        }
        // What came due while the broker was down goes at once.
        space.spawn_releaser();
        space.spawn_sweeper(sweep_interval);
        Ok((space, report))
    }

    /// Runs a change to completion on its own task: the caller may go away (a client that
    /// disconnects drops its request's future), but a change whose record is being appended
    /// must still be applied to memory, or memory and the log would disagree.
    async fn complete<T, E>(
        fut: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<JournalError> + Send + 'static,
    {
        match tokio::spawn(fut).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(JournalError::ShuttingDown.into()),
        }
    }

    /// The time by the Space's clock (Unix milliseconds).
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
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
        self.inner.journal.close().await;
    }

    /// Runs `job` every `interval` until shutdown, while the Space exists. The first run is one
    /// interval after the call: what recovery rebuilt is left as it was until then.
    fn spawn_periodic<F, Fut>(&self, interval: Duration, job: F)
    where
        F: Fn(Space) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let now = tokio::time::Instant::now();
            // An interval too long to add is as good as never.
            let Some(first) = now.checked_add(interval) else {
                return;
            };
            let mut tick = tokio::time::interval_at(first, interval);
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
}
