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
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use storage::io::Backend;
use storage::{Ack, AppendError, Log, Published, Record, RecoveryReport};
use tokio::sync::{Notify, Semaphore, watch};

use crate::delivery::{Attempt, Deliverer, HandlerKind, Outcome, backoff};
use crate::error::SpaceError;
use crate::ids;
use crate::queue::{DeliveryView, Meta, QueueState, Remembered, Subscriber, SubscriberSpec, Wake};
use crate::scheduler::{Counts, MessageId, MessageState, SUBSCRIBERS_PER_QUEUE_MAX, SubscriberId};
use crate::settings::{QueueSettings, SettingsPatch};

/// Bounds of the Space, each with its reason.
pub mod limits {
    /// Queue names: `[A-Za-z0-9._-]{1,128}` (SPEC §4), so they are safe in URLs and logs.
    pub const QUEUE_NAME_BYTES_MAX: usize = 128;
    /// Endpoints: absolute http(s) URLs of at most this many bytes (SPEC §4).
    pub const ENDPOINT_BYTES_MAX: usize = 2048;
    /// `max_in_flight` per subscriber: each in-flight attempt holds a connection and a task.
    pub const MAX_IN_FLIGHT_DEFAULT: u32 = 64;
    pub const MAX_IN_FLIGHT_MAX: u32 = 4096;
    /// Idempotency keys longer than this are refused: they are kept in memory for the window.
    pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
    /// Content types longer than this are refused; they are stored with every message.
    pub const CONTENT_TYPE_BYTES_MAX: usize = 256;
    /// Error texts kept per failed attempt are cut to this length.
    pub const ERROR_TEXT_BYTES_MAX: usize = 512;
    /// A batch publish holds at most this many messages (SPEC §4) …
    pub const BATCH_MESSAGES_MAX: usize = 1000;
    /// … and at most this many bytes of bodies (SPEC §4); one batch is one log record.
    pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
    /// How often retention and idempotency windows are swept.
    pub const SWEEP_INTERVAL_MS: u64 = 1000;
    /// How often the reclaimer checks whether a checkpoint is due, by default.
    pub const RECLAIM_INTERVAL_MS: u64 = 5000;
    /// Sealed segments since the last checkpoint before another is taken.
    pub const RECLAIM_SEGMENTS_MIN: usize = 2;
    /// Memory for the bodies of the latest messages, so that deliveries need not read them
    /// back from the log.
    pub const RECENT_BODIES_BYTES: usize = 4 * 1024 * 1024;
    /// Acks per log record when gathered acks are appended (32 bytes each).
    pub const ACKS_PER_RECORD_MAX: usize = 4096;
    /// Checkpoint snapshots are written in parts of at most this size (one record each).
    pub const CHECKPOINT_PART_BYTES: usize = 16 * 1024 * 1024;
}

/// How a Space is opened.
#[derive(Debug, Clone)]
pub struct SpaceConfig {
    pub storage: storage::Config,
    /// How often the reclaimer checks whether a checkpoint (and reclaiming the segments
    /// before it) is due.
    pub reclaim_interval: Duration,
    /// `endpoints.allow`: the hosts and networks subscribers may point at; `None` allows all.
    pub endpoint_allow: Option<crate::endpoints::AllowList>,
}

impl SpaceConfig {
    pub fn new(storage: storage::Config) -> SpaceConfig {
        SpaceConfig {
            storage,
            reclaim_interval: Duration::from_millis(limits::RECLAIM_INTERVAL_MS),
            endpoint_allow: None,
        }
    }
}

/// A new message.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub body: Bytes,
    /// Defaults to `application/octet-stream`.
    pub content_type: Option<String>,
    pub parent: Option<MessageId>,
    pub idempotency_key: Option<String>,
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub message: NewMessage,
    /// `NewMessage::parent` is ignored in a batch; the parent is named here.
    pub parent: Option<BatchParent>,
}

/// The parent of a batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchParent {
    /// A message already in the queue.
    Id(MessageId),
    /// An earlier entry of the same batch.
    Index(usize),
}

/// The answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedMessage {
    pub id: MessageId,
    pub parent: Option<MessageId>,
    /// False when an `Idempotency-Key` matched an earlier publish: `id` is that message's.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberInfo {
    pub id: SubscriberId,
    pub endpoint: String,
    pub handler: HandlerKind,
    pub max_in_flight: u32,
    pub has_secret: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub settings: QueueSettings,
    pub subscribers: Vec<SubscriberInfo>,
    pub counts: Counts,
    /// Bytes of undelivered messages.
    pub bytes: u64,
    pub oldest_undelivered_age_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub id: MessageId,
    pub queue: String,
    pub parent: Option<MessageId>,
    pub children: Vec<MessageId>,
    pub state: MessageState,
    pub content_type: String,
    pub size: u64,
    pub published_at_ms: u64,
    pub deliveries: Vec<DeliveryView>,
}

/// One dead (message, subscriber) pair; `subscriber` is `None` for a message dead with its
/// parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: MessageId,
    pub subscriber: Option<SubscriberId>,
    pub endpoint: Option<String>,
    pub reason: storage::DeadReason,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub dead_at_ms: u64,
}

/// A page of a listing and the cursor of the next one (`None` at the end).
pub type Page<T> = (Vec<T>, Option<MessageId>);

/// How a queue is stored in `QueueCreated`/`QueueUpdated` records.
#[derive(Serialize, Deserialize)]
struct StoredQueue {
    number: u32,
    settings: QueueSettings,
}

struct Queue {
    state: Mutex<QueueState>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
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

/// Acks on their way to the log. A delivery hands its ack over and lets go of its
/// `max_in_flight` permit at once, instead of waiting for the log writer; one task appends
/// what has gathered, many acks per record. Nothing waits for them to be durable (losing one
/// in a crash only means a redelivery), but shutdown appends what is left.
#[derive(Default)]
struct AckBuffer {
    acks: Mutex<Vec<Ack>>,
    gathered: Notify,
    /// Held while acks taken out are being appended: shutdown's last append waits for one
    /// under way, so that none is cut off by the log closing.
    writing: tokio::sync::Mutex<()>,
}

impl AckBuffer {
    fn push(&self, ack: Ack) {
        self.acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ack);
        self.gathered.notify_one();
    }

    fn take(&self) -> Vec<Ack> {
        std::mem::take(
            &mut *self
                .acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Running totals since the Space was opened.
#[derive(Default)]
struct Totals {
    published: AtomicU64,
    acked: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
}

/// A snapshot of the Space's running totals (monotonic counters since open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceTotals {
    pub published: u64,
    pub acked: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Attempts under way right now.
    pub in_flight: u64,
}

/// What the reclaimer remembers between runs.
#[derive(Default)]
struct Maintenance {
    /// Log bytes written (since open) at the last checkpoint.
    bytes_at_checkpoint: u64,
    /// Size of the last snapshot: checkpoints are spaced so that they cost no more than the
    /// log they let go of.
    snapshot_bytes: u64,
    /// Log bytes written when the reclaimer last looked.
    bytes_at_last_look: u64,
}

/// What [`Space::reclaim`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub snapshot_bytes: u64,
    pub segments_deleted: u32,
    pub segments_compacted: u32,
    pub records_moved: u64,
}

/// The Space. Cheap to clone. Must be opened, and used, inside a tokio runtime.
#[derive(Clone)]
pub struct Space {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn body_hash(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

fn wake_all(wake: Wake) {
    for n in wake {
        n.notify_one();
    }
}

/// Checks a queue name against SPEC §4.
pub fn validate_queue_name(name: &str) -> Result<(), SpaceError> {
    let ok = !name.is_empty()
        && name.len() <= limits::QUEUE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpaceError::InvalidQueueName(name.to_owned()))
    }
}

fn validate_endpoint(endpoint: &str) -> Result<(), SpaceError> {
    let bad = |why: &str| SpaceError::InvalidEndpoint(format!("{endpoint:?}: {why}"));
    if endpoint.len() > limits::ENDPOINT_BYTES_MAX {
        return Err(bad("longer than 2048 bytes"));
    }
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| bad("not an absolute http or https URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    Ok(())
}

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SpaceError> {
    use base64::Engine;
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or(SpaceError::InvalidSecret)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SpaceError::InvalidSecret)?;
    if key.is_empty() {
        return Err(SpaceError::InvalidSecret);
    }
    Ok(key)
}

fn cut(mut text: String) -> String {
    if text.len() > limits::ERROR_TEXT_BYTES_MAX {
        let mut at = limits::ERROR_TEXT_BYTES_MAX;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
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
    async fn complete<T: Send + 'static>(
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

    fn all_queues(&self) -> Vec<Arc<Queue>> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>, SpaceError> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| SpaceError::QueueNotFound(name.to_owned()))
    }

    /// The body of [`Space::put_queue`], run on its own task by it.
    async fn put_queue_now(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(QueueInfo, bool), SpaceError> {
        validate_queue_name(name)?;
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let existing = self.queue(name).ok();
        let (number, settings) = match &existing {
            Some(q) => {
                let st = q.lock();
                (st.number, st.settings.merged(patch)?)
            }
            None => {
                let number = self.inner.next_queue_number.load(Ordering::Relaxed);
                if number > ids::QUEUE_NUMBER_MAX {
                    return Err(SpaceError::Internal("queue numbers exhausted".into()));
                }
                (number, QueueSettings::default().merged(patch)?)
            }
        };
        let json = Bytes::from(
            serde_json::to_vec(&StoredQueue { number, settings })
                .map_err(|e| SpaceError::Internal(e.to_string()))?,
        );
        let created = existing.is_none();
        let record = if created {
            Record::QueueCreated {
                queue: name.to_owned(),
                settings: json,
            }
        } else {
            Record::QueueUpdated {
                queue: name.to_owned(),
                settings: json,
            }
        };
        self.inner.log.append(std::slice::from_ref(&record)).await?;
        let stored = match &record {
            Record::QueueCreated { settings, .. } | Record::QueueUpdated { settings, .. } => {
                serde_json::from_slice::<StoredQueue>(settings)
                    .map_err(|e| SpaceError::Internal(e.to_string()))?
            }
            _ => unreachable!("built above"),
        };
        match existing {
            Some(q) => q.lock().set_settings(stored.settings),
            None => {
                self.inner
                    .next_queue_number
                    .store(stored.number + 1, Ordering::Relaxed);
                let q = Arc::new(Queue {
                    state: Mutex::new(QueueState::new(name, stored.number, stored.settings)),
                });
                self.inner
                    .queues
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), q.clone());
                self.inner
                    .by_number
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(stored.number, q);
            }
        }
        Ok((self.queue_info(name)?, created))
    }

    /// The body of [`Space::delete_queue`], run on its own task by it.
    async fn delete_queue_now(&self, name: &str) -> Result<(), SpaceError> {
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let q = self.queue(name)?;
        self.inner
            .log
            .append(&[Record::QueueDeleted {
                queue: name.to_owned(),
            }])
            .await?;
        let number = {
            let mut st = q.lock();
            st.deleted = true;
            for s in st.subscribers.values() {
                let _ = s.stop.send(true);
            }
            st.number
        };
        self.inner
            .queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.inner
            .by_number
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&number);
        Ok(())
    }

    pub fn queue_names(&self) -> Vec<String> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn queue_info(&self, name: &str) -> Result<QueueInfo, SpaceError> {
        let q = self.queue(name)?;
        let st = q.lock();
        Ok(QueueInfo {
            name: name.to_owned(),
            settings: st.settings,
            subscribers: st
                .subscribers
                .iter()
                .map(|(id, s)| subscriber_info(*id, s))
                .collect(),
            counts: st.sched.counts(),
            bytes: st.undelivered_bytes,
            oldest_undelivered_age_ms: st
                .oldest_undelivered_age(now_ms())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// The body of [`Space::add_subscriber`], run on its own task by it.
    async fn add_subscriber_now(
        &self,
        queue: &str,
        spec: SubscriberSpec,
    ) -> Result<(SubscriberInfo, bool), SpaceError> {
        validate_endpoint(&spec.endpoint)?;
        if let Some(allow) = &self.inner.endpoint_allow
            && !allow.allows(&spec.endpoint)
        {
            return Err(SpaceError::EndpointNotAllowed(spec.endpoint));
        }
        if spec.max_in_flight == 0 || spec.max_in_flight > limits::MAX_IN_FLIGHT_MAX {
            return Err(SpaceError::InvalidMaxInFlight(spec.max_in_flight));
        }
        if let Some(secret) = &spec.secret {
            decode_secret(secret)?;
        }
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        {
            let st = q.lock();
            if let Some((id, s)) = st
                .subscribers
                .iter()
                .find(|(_, s)| s.spec.endpoint == spec.endpoint)
            {
                return Ok((subscriber_info(*id, s), false));
            }
            if st.subscribers.len() >= SUBSCRIBERS_PER_QUEUE_MAX {
                return Err(SpaceError::TooManySubscribers);
            }
        }
        let id = self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.inner
            .log
            .append(&[Record::SubscriberAdded {
                queue: queue.to_owned(),
                subscriber: id,
                endpoint: spec.endpoint.clone(),
                handler: spec.handler.name().to_owned(),
                secret: spec.secret.clone(),
                max_in_flight: spec.max_in_flight,
            }])
            .await?;
        let info = {
            let mut st = q.lock();
            add_subscriber_state(&mut st, id, spec)?;
            subscriber_info(id, &st.subscribers[&id])
        };
        self.spawn_dispatcher(q, id);
        Ok((info, true))
    }

    pub fn subscribers(&self, queue: &str) -> Result<Vec<SubscriberInfo>, SpaceError> {
        Ok(self.queue_info(queue)?.subscribers)
    }

    /// The body of [`Space::remove_subscriber`], run on its own task by it.
    async fn remove_subscriber_now(&self, queue: &str, id: SubscriberId) -> Result<(), SpaceError> {
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        if !q.lock().subscribers.contains_key(&id) {
            return Err(SpaceError::SubscriberNotFound(id));
        }
        self.inner
            .log
            .append(&[Record::SubscriberRemoved {
                queue: queue.to_owned(),
                subscriber: id,
            }])
            .await?;
        let mut wake = Vec::new();
        remove_subscriber_state(&mut q.lock(), id, now_ms(), &mut wake);
        wake_all(wake);
        Ok(())
    }

    /// The body of [`Space::publish`], run on its own task by it.
    async fn publish_now(
        &self,
        queue: &str,
        msg: NewMessage,
    ) -> Result<PublishedMessage, SpaceError> {
        let q = self.queue(queue)?;
        let content_type = msg
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        if content_type.len() > limits::CONTENT_TYPE_BYTES_MAX {
            return Err(SpaceError::InvalidContentType);
        }
        if let Some(key) = &msg.idempotency_key
            && (key.is_empty() || key.len() > limits::IDEMPOTENCY_KEY_BYTES_MAX)
        {
            return Err(SpaceError::InvalidIdempotencyKey);
        }
        let size = u32::try_from(msg.body.len()).map_err(|_| SpaceError::BodyTooLarge)?;
        let _gate = self.inner.gate.read().await;
        let now = now_ms();
        let hash = msg.idempotency_key.as_ref().map(|_| body_hash(&msg.body));

        // Check and reserve under the lock; append without it.
        let (id, fanout) = {
            let mut st = q.lock();
            if st.deleted {
                return Err(SpaceError::QueueNotFound(queue.to_owned()));
            }
            if let (Some(key), Some(hash)) = (&msg.idempotency_key, hash)
                && let Some(r) = st.idempotency.get(key)
                && r.expires_at_ms > now
            {
                if r.body_hash != hash {
                    return Err(SpaceError::IdempotencyConflict(key.clone()));
                }
                if st.pending.contains(&r.id) {
                    return Err(SpaceError::IdempotencyInProgress(key.clone()));
                }
                let parent = st.sched.parent(r.id).or(msg.parent);
                return Ok(PublishedMessage {
                    id: r.id,
                    parent,
                    created: false,
                });
            }
            if let Some(p) = msg.parent
                && !st.sched.contains(p)
                && !st.issued(p)
            {
                return Err(SpaceError::UnknownParent(p));
            }
            let limits = st.settings.limits;
            if let Some(max) = limits.max_messages
                && st.undelivered + st.reserved + 1 > max
            {
                return Err(SpaceError::QueueFull {
                    limit: "max_messages",
                });
            }
            if let Some(max) = limits.max_bytes
                && st.undelivered_bytes + st.reserved_bytes + u64::from(size) > max
            {
                return Err(SpaceError::QueueFull { limit: "max_bytes" });
            }
            if st.next_seq > ids::SEQUENCE_MAX {
                return Err(SpaceError::Internal("message sequence exhausted".into()));
            }
            let id = ids::message_id(now, st.number, st.next_seq);
            st.next_seq += 1;
            st.pending.insert(id);
            st.reserved += 1;
            st.reserved_bytes += u64::from(size);
            if let (Some(key), Some(body_hash)) = (&msg.idempotency_key, hash) {
                let expires_at_ms = now + st.settings.idempotency.window.as_millis();
                st.idempotency.insert(
                    key.clone(),
                    Remembered {
                        id,
                        body_hash,
                        expires_at_ms,
                    },
                );
            }
            let fanout: Vec<SubscriberId> = st.subscribers.keys().copied().collect();
            (id, fanout)
        };
        let record = Record::Published(Published {
            queue: queue.to_owned(),
            id,
            parent: msg.parent,
            content_type,
            published_at_ms: now,
            idempotency_key: msg.idempotency_key.clone(),
            fanout: fanout.clone(),
            body: msg.body,
        });
        let appended = self.inner.log.append(std::slice::from_ref(&record)).await;
        // Kept before the message is released to dispatchers, outside the queue's lock.
        if let (Ok(_), Record::Published(p)) = (&appended, &record) {
            self.inner.recent.insert(p);
        }
        let mut wake = Vec::new();
        {
            let mut st = q.lock();
            st.reserved -= 1;
            st.reserved_bytes -= u64::from(size);
            st.pending.remove(&id);
            match &appended {
                Ok(locations) => {
                    let meta = Meta {
                        location: locations[0],
                        size,
                    };
                    st.insert_published(id, msg.parent, &fanout, meta, now, &mut wake);
                }
                Err(_) => {
                    if let Some(key) = &msg.idempotency_key {
                        st.idempotency.remove(key);
                    }
                }
            }
        }
        appended?;
        self.inner.totals.published.fetch_add(1, Ordering::Relaxed);
        wake_all(wake);
        Ok(PublishedMessage {
            id,
            parent: msg.parent,
            created: true,
        })
    }

    /// The body of [`Space::publish_batch`], run on its own task by it.
    async fn publish_batch_now(
        &self,
        queue: &str,
        entries: Vec<BatchEntry>,
    ) -> Result<Vec<PublishedMessage>, SpaceError> {
        if entries.len() > limits::BATCH_MESSAGES_MAX {
            return Err(SpaceError::BatchTooLarge(format!(
                "{} messages; a batch holds at most {}",
                entries.len(),
                limits::BATCH_MESSAGES_MAX
            )));
        }
        let total: usize = entries.iter().map(|e| e.message.body.len()).sum();
        if total > limits::BATCH_BYTES_MAX {
            return Err(SpaceError::BatchTooLarge(format!(
                "{total} bytes of bodies; a batch holds at most {}",
                limits::BATCH_BYTES_MAX
            )));
        }
        let q = self.queue(queue)?;
        let _gate = self.inner.gate.read().await;
        let now = now_ms();
        let mut keys_seen = std::collections::HashSet::new();
        for e in &entries {
            let m = &e.message;
            if m.content_type
                .as_ref()
                .is_some_and(|c| c.len() > limits::CONTENT_TYPE_BYTES_MAX)
            {
                return Err(SpaceError::InvalidContentType);
            }
            if let Some(key) = &m.idempotency_key {
                if key.is_empty() || key.len() > limits::IDEMPOTENCY_KEY_BYTES_MAX {
                    return Err(SpaceError::InvalidIdempotencyKey);
                }
                if !keys_seen.insert(key.clone()) {
                    return Err(SpaceError::InvalidBatch(format!(
                        "idempotency key {key:?} appears twice in one batch"
                    )));
                }
            }
        }

        // Check everything and reserve under the lock; append the whole batch without it.
        let mut answers: Vec<PublishedMessage> = Vec::with_capacity(entries.len());
        let mut fresh: Vec<(usize, MessageId, Option<MessageId>, u32)> = Vec::new();
        let fanout = {
            let mut st = q.lock();
            if st.deleted {
                return Err(SpaceError::QueueNotFound(queue.to_owned()));
            }
            // Repeated keys first: they take no room.
            let mut repeated = vec![None; entries.len()];
            for (i, e) in entries.iter().enumerate() {
                if let Some(key) = &e.message.idempotency_key
                    && let Some(r) = st.idempotency.get(key)
                    && r.expires_at_ms > now
                {
                    if r.body_hash != body_hash(&e.message.body) {
                        return Err(SpaceError::IdempotencyConflict(key.clone()));
                    }
                    if st.pending.contains(&r.id) {
                        return Err(SpaceError::IdempotencyInProgress(key.clone()));
                    }
                    repeated[i] = Some(r.id);
                }
            }
            let new_count = repeated.iter().filter(|r| r.is_none()).count() as u64;
            let new_bytes: u64 = entries
                .iter()
                .zip(&repeated)
                .filter(|(_, r)| r.is_none())
                .map(|(e, _)| e.message.body.len() as u64)
                .sum();
            let limits = st.settings.limits;
            if let Some(max) = limits.max_messages
                && st.undelivered + st.reserved + new_count > max
            {
                return Err(SpaceError::QueueFull {
                    limit: "max_messages",
                });
            }
            if let Some(max) = limits.max_bytes
                && st.undelivered_bytes + st.reserved_bytes + new_bytes > max
            {
                return Err(SpaceError::QueueFull { limit: "max_bytes" });
            }
            if st.next_seq + new_count > ids::SEQUENCE_MAX {
                return Err(SpaceError::Internal("message sequence exhausted".into()));
            }
            // Ids in entry order, parents resolved; nothing is changed until all are checked.
            let mut next_seq = st.next_seq;
            for (i, e) in entries.iter().enumerate() {
                let parent = match e.parent {
                    None => None,
                    Some(BatchParent::Id(p)) => {
                        if !st.sched.contains(p) && !st.issued(p) {
                            return Err(SpaceError::UnknownParent(p));
                        }
                        Some(p)
                    }
                    Some(BatchParent::Index(j)) => {
                        if j >= i {
                            return Err(SpaceError::InvalidBatch(format!(
                                "entry {i}: parent_index {j} does not name an earlier entry"
                            )));
                        }
                        Some(answers[j].id)
                    }
                };
                match repeated[i] {
                    Some(id) => answers.push(PublishedMessage {
                        id,
                        parent: st.sched.parent(id).or(parent),
                        created: false,
                    }),
                    None => {
                        let id = ids::message_id(now, st.number, next_seq);
                        next_seq += 1;
                        let size = u32::try_from(e.message.body.len())
                            .map_err(|_| SpaceError::BodyTooLarge)?;
                        fresh.push((i, id, parent, size));
                        answers.push(PublishedMessage {
                            id,
                            parent,
                            created: true,
                        });
                    }
                }
            }
            st.next_seq = next_seq;
            st.pending.extend(fresh.iter().map(|f| f.1));
            st.reserved += new_count;
            st.reserved_bytes += new_bytes;
            for &(i, id, _, _) in &fresh {
                if let Some(key) = &entries[i].message.idempotency_key {
                    let expires_at_ms = now + st.settings.idempotency.window.as_millis();
                    st.idempotency.insert(
                        key.clone(),
                        Remembered {
                            id,
                            body_hash: body_hash(&entries[i].message.body),
                            expires_at_ms,
                        },
                    );
                }
            }
            st.subscribers
                .keys()
                .copied()
                .collect::<Vec<SubscriberId>>()
        };
        let records: Vec<Record> = fresh
            .iter()
            .map(|&(i, id, parent, _)| {
                let m = &entries[i].message;
                Record::Published(Published {
                    queue: queue.to_owned(),
                    id,
                    parent,
                    content_type: m
                        .content_type
                        .clone()
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                    published_at_ms: now,
                    idempotency_key: m.idempotency_key.clone(),
                    fanout: fanout.clone(),
                    body: m.body.clone(),
                })
            })
            .collect();
        let appended = self.inner.log.append(&records).await;
        // Kept before the messages are released to dispatchers, outside the queue's lock.
        if appended.is_ok() {
            for record in &records {
                if let Record::Published(p) = record {
                    self.inner.recent.insert(p);
                }
            }
        }
        let mut wake = Vec::new();
        {
            let mut st = q.lock();
            st.reserved -= fresh.len() as u64;
            st.reserved_bytes -= fresh.iter().map(|f| u64::from(f.3)).sum::<u64>();
            for f in &fresh {
                st.pending.remove(&f.1);
            }
            match &appended {
                Ok(locations) => {
                    for (&(_, id, parent, size), location) in fresh.iter().zip(locations) {
                        let meta = Meta {
                            location: *location,
                            size,
                        };
                        st.insert_published(id, parent, &fanout, meta, now, &mut wake);
                    }
                }
                Err(_) => {
                    for &(i, _, _, _) in &fresh {
                        if let Some(key) = &entries[i].message.idempotency_key {
                            st.idempotency.remove(key);
                        }
                    }
                }
            }
        }
        appended?;
        self.inner
            .totals
            .published
            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
        wake_all(wake);
        Ok(answers)
    }

    /// A message's state, parent, children and per-subscriber deliveries.
    pub fn message(&self, queue: &str, id: MessageId) -> Result<MessageInfo, SpaceError> {
        let q = self.queue(queue)?;
        let (state, parent, children, deliveries) = {
            let st = q.lock();
            let state = st.sched.state(id).ok_or(SpaceError::MessageNotFound(id))?;
            // A scan: for the API, not the hot path.
            let children: Vec<MessageId> = st
                .sched
                .iter_from(Some(id))
                .filter(|(c, _, _)| st.sched.parent(*c) == Some(id))
                .map(|(c, _, _)| c)
                .collect();
            (state, st.sched.parent(id), children, st.delivery_views(id))
        };
        let p = self.read_message(&q, id)?;
        Ok(MessageInfo {
            id,
            queue: queue.to_owned(),
            parent,
            children,
            state,
            content_type: p.content_type,
            size: p.body.len() as u64,
            published_at_ms: p.published_at_ms,
            deliveries,
        })
    }

    /// A message's body and content type.
    pub fn body(&self, queue: &str, id: MessageId) -> Result<(Bytes, String), SpaceError> {
        let q = self.queue(queue)?;
        let p = self.read_message(&q, id)?;
        Ok((p.body, p.content_type))
    }

    /// Reads a message's record. Compaction may move it meanwhile: its old segment is deleted
    /// only after the index points at the copy, so a second look finds it.
    fn read_message(&self, queue: &Queue, id: MessageId) -> Result<Published, SpaceError> {
        let mut tries = 0;
        loop {
            let meta = *queue
                .lock()
                .sched
                .meta(id)
                .ok_or(SpaceError::MessageNotFound(id))?;
            match self.read_published(meta) {
                Err(SpaceError::Read(storage::ReadError::SegmentGone { .. })) if tries < 3 => {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    fn read_published(&self, meta: Meta) -> Result<Published, SpaceError> {
        match self.inner.log.read(meta.location)? {
            Record::Published(p) => Ok(p),
            other => Err(SpaceError::Internal(format!(
                "expected a published record at {:?}, found kind {}",
                meta.location,
                other.kind()
            ))),
        }
    }

    /// Messages in publish order, optionally of one state, after a cursor.
    pub fn messages(
        &self,
        queue: &str,
        state: Option<MessageState>,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<(MessageId, MessageState)>, SpaceError> {
        let q = self.queue(queue)?;
        let st = q.lock();
        let mut page: Vec<_> = st
            .sched
            .iter_from(after)
            .filter(|(_, s, _)| state.is_none_or(|want| *s == want))
            .map(|(id, s, _)| (id, s))
            .take(limit + 1)
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(id, _)| *id)
        } else {
            None
        };
        Ok((page, next))
    }

    /// Dead letters of a queue in message order, after a message id.
    pub fn dead_letters(
        &self,
        queue: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<DeadLetter>, SpaceError> {
        let q = self.queue(queue)?;
        let st = q.lock();
        let mut all: Vec<DeadLetter> = st
            .deliveries
            .iter()
            .filter(|((id, _), _)| after.is_none_or(|a| *id > a))
            .filter_map(|((id, sub), info)| {
                let (reason, dead_at_ms) = info.dead?;
                Some(DeadLetter {
                    id: *id,
                    subscriber: *sub,
                    endpoint: sub
                        .and_then(|s| st.subscribers.get(&s))
                        .map(|s| s.spec.endpoint.clone()),
                    reason,
                    attempts: info.attempts,
                    last_error: info.last_error.clone(),
                    dead_at_ms,
                })
            })
            .collect();
        all.sort_by_key(|d| (d.id, d.subscriber));
        let limit = limit.max(1);
        // A page ends at a message boundary, so that `after` loses nothing.
        let mut next = None;
        if all.len() > limit {
            let last = all[limit - 1].id;
            let end = all.iter().position(|d| d.id > last).unwrap_or(all.len());
            all.truncate(end);
            next = Some(last);
        }
        Ok((all, next))
    }

    /// The body of [`Space::discard`], run on its own task by it.
    async fn discard_now(&self, queue: &str, id: MessageId) -> Result<(), SpaceError> {
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        if !q.lock().sched.contains(id) {
            return Err(SpaceError::MessageNotFound(id));
        }
        let now = now_ms();
        self.inner
            .log
            .append(&[Record::Discarded {
                message: id,
                discarded_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock()
            .remove(id, now, &mut wake)
            .map_err(|_| SpaceError::MessageNotFound(id))?;
        wake_all(wake);
        Ok(())
    }

    /// The body of [`Space::redrive`], run on its own task by it.
    async fn redrive_now(&self, queue: &str, id: MessageId) -> Result<(), SpaceError> {
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        let subscribers = {
            let st = q.lock();
            if !st.sched.contains(id) {
                return Err(SpaceError::MessageNotFound(id));
            }
            let has_dead = st
                .deliveries
                .iter()
                .any(|((m, _), i)| *m == id && i.dead.is_some())
                || st.sched.state(id) == Some(MessageState::Dead);
            if !has_dead {
                return Err(SpaceError::NotDead(id));
            }
            st.subscribers.keys().copied().collect::<Vec<_>>()
        };
        let now = now_ms();
        self.inner
            .log
            .append(&[Record::Redriven {
                message: id,
                subscribers,
                redriven_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock().redrive(id, now, &mut wake).map_err(|e| match e {
            crate::ScheduleError::NotDead(_) => SpaceError::NotDead(id),
            _ => SpaceError::MessageNotFound(id),
        })?;
        wake_all(wake);
        Ok(())
    }

    /// Redrives every dead message of a queue; returns how many.
    pub async fn redrive_all(&self, queue: &str) -> Result<u64, SpaceError> {
        let ids: Vec<MessageId> = {
            let q = self.queue(queue)?;
            let st = q.lock();
            let mut ids: Vec<_> = st
                .deliveries
                .iter()
                .filter(|(_, i)| i.dead.is_some())
                .map(|((m, _), _)| *m)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut n = 0;
        for id in ids {
            match self.redrive(queue, id).await {
                Ok(()) => n += 1,
                Err(SpaceError::NotDead(_) | SpaceError::MessageNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
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

    /// Appends the acks gathered in the [`AckBuffer`] so far.
    async fn write_acks(&self) {
        let _writing = self.inner.acks.writing.lock().await;
        let mut acks = self.inner.acks.take();
        while !acks.is_empty() {
            let rest = acks.split_off(acks.len().min(limits::ACKS_PER_RECORD_MAX));
            let count = acks.len();
            let record = Record::Acked { acks };
            if let Err(e) = self.inner.log.append_lazy(&[record]).await {
                tracing::warn!(error = %e, acks = count, "could not record acks; they will be redelivered after a restart");
            }
            acks = rest;
        }
    }

    /// The task that empties the [`AckBuffer`] into the log until shutdown (which empties it
    /// one last time once deliveries have stopped).
    fn spawn_ack_writer(&self) {
        let buffer = self.inner.acks.clone();
        let weak = Arc::downgrade(&self.inner);
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Shutdown first: from then on its own last append writes what is left.
                    biased;
                    _ = stop.changed() => return,
                    _ = buffer.gathered.notified() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                Space { inner }.write_acks().await;
            }
        });
    }

    /// Writes a checkpoint, then reclaims the segments before it: deletes those that hold no
    /// message still in memory, and compacts those less than half full of such messages
    /// (copies them forward, repoints the index, deletes the segment).
    pub async fn reclaim(&self) -> Result<ReclaimReport, SpaceError> {
        let mut m = self.inner.maintenance.lock().await;
        let mut report = ReclaimReport::default();
        let checkpoint = {
            // Nothing changes while the snapshot is taken and written: it matches the log at
            // the checkpoint's position.
            let _gate = self.inner.gate.write().await;
            let snapshot = {
                let queues: Vec<Arc<Queue>> = self.all_queues();
                let guards: Vec<_> = queues.iter().map(|q| q.lock()).collect();
                let counters = crate::snapshot::Counters {
                    next_queue_number: self.inner.next_queue_number.load(Ordering::Relaxed),
                    next_subscriber: self.inner.next_subscriber.load(Ordering::Relaxed),
                };
                crate::snapshot::encode(&counters, guards.iter().map(|g| &**g))
            };
            report.snapshot_bytes = snapshot.len() as u64;
            let parts = crate::snapshot::parts(snapshot, limits::CHECKPOINT_PART_BYTES);
            self.inner.log.checkpoint(parts).await?
        };
        m.snapshot_bytes = report.snapshot_bytes;
        m.bytes_at_checkpoint = self.inner.log.stats().bytes;

        // Liveness is taken with changes held off, so that every change already applied to
        // memory has had its record written; the sync then makes those records durable before
        // any segment goes (an ack applied in memory must not outlive a crash only as a gap).
        let live = {
            let _gate = self.inner.gate.write().await;
            self.live_bytes_per_segment()
        };
        self.inner.log.sync().await?;
        for segment in self.inner.log.segments() {
            if segment.id >= checkpoint.segment {
                continue;
            }
            let live_bytes = live.get(&segment.id).copied().unwrap_or(0);
            if live_bytes == 0 {
                self.inner
                    .log
                    .delete_segment(segment.id)
                    .map_err(reclaim_error)?;
                report.segments_deleted += 1;
            } else if live_bytes * 2 < segment.bytes {
                report.records_moved += self.compact(segment.id).await?;
                report.segments_compacted += 1;
            }
        }
        Ok(report)
    }

    /// Copies the live messages of a segment forward, repoints them, deletes the segment.
    async fn compact(&self, segment: u32) -> Result<u64, SpaceError> {
        let mut kept: Vec<(MessageId, Arc<Queue>)> = Vec::new();
        let moves = self
            .inner
            .log
            .copy_live_records(segment, |at, record| {
                let Record::Published(p) = record else {
                    return false;
                };
                let Ok(q) = self.queue(&p.queue) else {
                    return false;
                };
                let here = q.lock().sched.meta(p.id).is_some_and(|m| m.location == at);
                if here {
                    kept.push((p.id, q));
                }
                here
            })
            .await
            .map_err(reclaim_error)?;
        for ((id, q), m) in kept.iter().zip(&moves) {
            if let Some(meta) = q.lock().sched.meta_mut(*id)
                && meta.location == m.from
            {
                meta.location = m.to;
            }
        }
        self.inner
            .log
            .delete_segment(segment)
            .map_err(reclaim_error)?;
        Ok(moves.len() as u64)
    }

    /// Whether enough log has piled up since the last checkpoint to make one worth it.
    async fn reclaim_due(&self) -> bool {
        let mut m = self.inner.maintenance.lock().await;
        let written_total = self.inner.log.stats().bytes;
        // Nothing written since the last look: an idle broker does no work here.
        if written_total == m.bytes_at_last_look {
            return false;
        }
        m.bytes_at_last_look = written_total;
        let written = written_total.saturating_sub(m.bytes_at_checkpoint);
        let cp_segment = self
            .inner
            .log
            .checkpoint_location()
            .map_or(0, |c| c.segment);
        let segments = self.inner.log.segments();
        let sealed_since = segments
            .iter()
            .filter(|s| s.id >= cp_segment)
            .count()
            .saturating_sub(1);
        if sealed_since < limits::RECLAIM_SEGMENTS_MIN || written < 2 * m.snapshot_bytes {
            return false;
        }
        // Worth a snapshot only if it lets at least one segment's worth of disk go: a backlog
        // that is all still owed gains nothing from one.
        let live = self.live_bytes_per_segment();
        let active = segments.last().map_or(0, |s| s.id);
        let reclaimable: u64 = segments
            .iter()
            .filter(|s| s.id < active)
            .map(|s| {
                s.bytes
                    .saturating_sub(live.get(&s.id).copied().unwrap_or(0))
            })
            .sum();
        let segment_bytes = segments.first().map_or(u64::MAX, |s| s.bytes);
        reclaimable >= segment_bytes
    }

    /// Bytes of messages still held, per segment.
    fn live_bytes_per_segment(&self) -> HashMap<u32, u64> {
        let mut live: HashMap<u32, u64> = HashMap::new();
        for q in self.all_queues() {
            let st = q.lock();
            for (_, _, meta) in st.sched.iter_from(None) {
                *live.entry(meta.location.segment).or_default() += u64::from(meta.location.len);
            }
        }
        live
    }

    fn spawn_reclaimer(&self, interval: Duration) {
        self.spawn_periodic(interval, |space| async move {
            if space.reclaim_due().await {
                match space.reclaim().await {
                    Ok(r) => tracing::info!(
                        snapshot_bytes = r.snapshot_bytes,
                        deleted = r.segments_deleted,
                        compacted = r.segments_compacted,
                        moved = r.records_moved,
                        "reclaimed log segments"
                    ),
                    Err(e) => tracing::warn!(error = %e, "reclaiming log segments failed"),
                }
            }
        });
    }

    /// Running totals since the Space was opened.
    pub fn totals(&self) -> SpaceTotals {
        let t = &self.inner.totals;
        SpaceTotals {
            published: t.published.load(Ordering::Relaxed),
            acked: t.acked.load(Ordering::Relaxed),
            failed_attempts: t.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: t.dead_lettered.load(Ordering::Relaxed),
            in_flight: self.inner.in_flight.load(Ordering::Relaxed) as u64,
        }
    }

    /// The log underneath (for statistics).
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// Runs `job` every `interval` until shutdown, while the Space exists.
    fn spawn_periodic<F, Fut>(&self, interval: Duration, job: F)
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
    fn spawn_sweeper(&self) {
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

    fn spawn_dispatcher(&self, queue: Arc<Queue>, sub: SubscriberId) {
        let Some((slot, notify, limit, stop)) = ({
            let st = queue.lock();
            st.subscribers.get(&sub).map(|s| {
                (
                    s.slot,
                    s.notify.clone(),
                    s.limit.clone(),
                    s.stop.subscribe(),
                )
            })
        }) else {
            return;
        };
        let space = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut stop_rx = stop;
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop_rx.changed() => return,
                    _ = shutdown.changed() => return,
                };
                if *stop_rx.borrow() || *shutdown.borrow() {
                    return;
                }
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let next = {
                    let mut st = queue.lock();
                    if st.deleted || !st.subscribers.contains_key(&sub) {
                        return;
                    }
                    st.sched.next(slot)
                };
                match next {
                    Some(id) => {
                        space.inner.in_flight.fetch_add(1, Ordering::AcqRel);
                        let space = space.clone();
                        let queue = queue.clone();
                        let stop = stop_rx.clone();
                        tokio::spawn(async move {
                            space.attempts(queue, sub, id, stop).await;
                            drop(permit);
                            if space.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                                space.inner.idle.notify_waiters();
                            }
                        });
                    }
                    None => {
                        drop(permit);
                        tokio::select! {
                            _ = notified => {}
                            _ = stop_rx.changed() => return,
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
        });
    }

    /// Attempts to deliver one message to one subscriber until it is acknowledged, given up,
    /// or no longer owed (removed, discarded), waiting out the backoff between attempts.
    async fn attempts(
        &self,
        queue: Arc<Queue>,
        sub: SubscriberId,
        id: MessageId,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut rng = fastrand::Rng::new();
        loop {
            let (number, settings, outcome) = match self.prepare_attempt(&queue, sub, id) {
                Prepared::Gone => return,
                // Sending it again cannot help: give up at once, with the reason.
                Prepared::Unreadable(number, settings, error) => (
                    number,
                    QueueSettings {
                        retry: crate::settings::Retry {
                            max_attempts: 1,
                            ..settings.retry
                        },
                        ..settings
                    },
                    Outcome::Failed {
                        error,
                        retry_after: None,
                    },
                ),
                Prepared::Ready(attempt, settings) => {
                    let number = attempt.number;
                    let timeout = settings.delivery_timeout.0;
                    let outcome =
                        match tokio::time::timeout(timeout, self.inner.deliverer.deliver(*attempt))
                            .await
                        {
                            Ok(o) => o,
                            Err(_) => Outcome::Failed {
                                error: format!("timed out after {}", settings.delivery_timeout),
                                retry_after: None,
                            },
                        };
                    (number, settings, outcome)
                }
            };
            let gate = self.inner.gate.read().await;
            let now = now_ms();
            match outcome {
                Outcome::Acked => {
                    self.inner.totals.acked.fetch_add(1, Ordering::Relaxed);
                    let mut wake = Vec::new();
                    queue.lock().ack(id, sub, now, &mut wake);
                    wake_all(wake);
                    self.inner.acks.push(Ack {
                        message: id,
                        subscriber: sub,
                        acked_at_ms: now,
                    });
                    return;
                }
                Outcome::Failed { error, retry_after } => {
                    let error = cut(error);
                    let max = settings.retry.max_attempts;
                    if max != 0 && number >= max {
                        let mut wake = Vec::new();
                        queue
                            .lock()
                            .gave_up(id, sub, number, Some(error.clone()), now, &mut wake);
                        wake_all(wake);
                        self.inner
                            .totals
                            .dead_lettered
                            .fetch_add(1, Ordering::Relaxed);
                        let record = Record::DeadLettered {
                            message: id,
                            subscriber: Some(sub),
                            reason: storage::DeadReason::MaxAttempts,
                            attempts: number,
                            last_error: Some(error),
                            dead_at_ms: now,
                        };
                        if let Err(e) = self.inner.log.append_lazy(&[record]).await {
                            tracing::warn!(error = %e, "could not record a dead letter");
                        }
                        return;
                    }
                    let delay = backoff(&settings.retry, number + 1, retry_after, &mut rng);
                    let next_at = now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    queue
                        .lock()
                        .failed(id, sub, number, error.clone(), Some(next_at));
                    self.inner
                        .totals
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    let record = Record::DeliveryFailed {
                        message: id,
                        subscriber: sub,
                        attempt: number,
                        error,
                        failed_at_ms: now,
                        next_attempt_at_ms: Some(next_at),
                    };
                    if let Err(e) = self.inner.log.append_lazy(&[record]).await {
                        tracing::warn!(error = %e, "could not record a failed attempt");
                    }
                    drop(gate);
                    let until = tokio::time::Instant::now() + delay;
                    loop {
                        let removed = queue.lock().removed.clone();
                        let notified = removed.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        if !self.still_owed(&queue, sub, id) {
                            // Discarded or expired meanwhile: free the permit now.
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            _ = notified => continue,
                            _ = stop.changed() => return,
                            // The message stays owed; it is sent again after the restart.
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
        }
    }

    /// Whether an attempt of `id` for `sub` is still wanted (the message held, the subscriber
    /// there, its delivery in flight).
    fn still_owed(&self, queue: &Queue, sub: SubscriberId, id: MessageId) -> bool {
        let st = queue.lock();
        !st.deleted
            && st.subscribers.get(&sub).is_some_and(|s| {
                st.sched.delivery_state(id, s.slot) == Some(crate::DeliveryState::InFlight)
            })
    }

    /// What the next attempt needs, if the message is still owed to the subscriber.
    fn prepare_attempt(&self, queue: &Arc<Queue>, sub: SubscriberId, id: MessageId) -> Prepared {
        let (number, name, settings, endpoint, handler, key) = {
            let st = queue.lock();
            if st.deleted {
                return Prepared::Gone;
            }
            let Some(s) = st.subscribers.get(&sub) else {
                return Prepared::Gone;
            };
            let owed = matches!(
                st.sched.delivery_state(id, s.slot),
                Some(crate::DeliveryState::InFlight)
            );
            if !owed || !st.sched.contains(id) {
                return Prepared::Gone;
            }
            let done = st
                .deliveries
                .get(&(id, Some(sub)))
                .map_or(0, |i| i.attempts);
            (
                done + 1,
                st.name.clone(),
                st.settings,
                s.endpoint.clone(),
                s.spec.handler,
                s.key.clone(),
            )
        };
        let p = match self.inner.recent.get(id) {
            Some(recent) => Ok(recent),
            None => self
                .read_message(queue, id)
                .map(|p| crate::recent::RecentBody {
                    body: p.body,
                    content_type: p.content_type,
                    parent: p.parent,
                    published_at_ms: p.published_at_ms,
                }),
        };
        let p = match p {
            Ok(p) => p,
            Err(SpaceError::MessageNotFound(_)) => return Prepared::Gone,
            Err(e) => {
                tracing::error!(message = %id, error = %e, "cannot read a message body");
                return Prepared::Unreadable(number, settings, format!("body unreadable: {e}"));
            }
        };
        Prepared::Ready(
            Box::new(Attempt {
                message: id,
                queue: name,
                subscriber: sub,
                endpoint,
                handler,
                secret: key,
                body: p.body,
                content_type: p.content_type,
                parent: p.parent,
                published_at_ms: p.published_at_ms,
                number,
            }),
            settings,
        )
    }
}

/// What [`Space::prepare_attempt`] found.
enum Prepared {
    /// No longer owed: acknowledged, removed, or the subscriber is gone.
    Gone,
    /// The body cannot be read back (attempt number, settings, why).
    Unreadable(u32, QueueSettings, String),
    Ready(Box<Attempt>, QueueSettings),
}

fn reclaim_error(e: storage::ReclaimError) -> SpaceError {
    match e {
        storage::ReclaimError::Append(a) => a.into(),
        storage::ReclaimError::Read(r) => SpaceError::Read(r),
        other => SpaceError::Storage(other.to_string()),
    }
}

fn subscriber_info(id: SubscriberId, s: &Subscriber) -> SubscriberInfo {
    SubscriberInfo {
        id,
        endpoint: s.spec.endpoint.clone(),
        handler: s.spec.handler,
        max_in_flight: s.spec.max_in_flight,
        has_secret: s.spec.secret.is_some(),
    }
}

pub(crate) fn add_subscriber_state(
    st: &mut QueueState,
    id: SubscriberId,
    spec: SubscriberSpec,
) -> Result<(), SpaceError> {
    let key = match &spec.secret {
        Some(s) => Some(Arc::<[u8]>::from(decode_secret(s)?)),
        None => None,
    };
    let slot = st
        .sched
        .add_subscriber(id)
        .map_err(|_| SpaceError::TooManySubscribers)?;
    let (stop, _) = watch::channel(false);
    st.subscribers.insert(
        id,
        Subscriber {
            slot,
            limit: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            endpoint: Arc::from(spec.endpoint.as_str()),
            spec,
            key,
            notify: Arc::new(Notify::new()),
            stop,
        },
    );
    Ok(())
}

fn remove_subscriber_state(st: &mut QueueState, id: SubscriberId, now: u64, wake: &mut Wake) {
    if let Some(s) = st.subscribers.remove(&id) {
        let _ = s.stop.send(true);
        st.deliveries.retain(|(_, sub), _| *sub != Some(id));
        if let Ok(events) = st.sched.remove_subscriber(s.slot) {
            st.handle(events, now, wake);
        }
    }
}

/// The state rebuilt from the log, before the Space starts.
#[derive(Default)]
struct Replay {
    queues: BTreeMap<String, QueueState>,
    by_number: HashMap<u32, String>,
    next_queue_number: u32,
    next_subscriber: u64,
    /// The latest time a replayed record carried: the clock for records without one.
    last_ms: u64,
}

impl Replay {
    /// A live record that compaction copied: the message moves, nothing else changes.
    fn relocate(&mut self, from: storage::Location, to: storage::Location, record: &Record) {
        if let Record::Published(p) = record
            && let Some(q) = self.queue_of(p.id)
            && let Some(meta) = q.sched.meta_mut(p.id)
            && meta.location == from
        {
            meta.location = to;
        }
    }

    fn queue_of(&mut self, id: MessageId) -> Option<&mut QueueState> {
        let (number, _) = ids::parts(id)?;
        let name = self.by_number.get(&number)?;
        self.queues.get_mut(name)
    }

    fn apply(&mut self, location: storage::Location, record: Record) {
        let mut wake = Vec::new();
        let at = match &record {
            Record::Published(p) => Some(p.published_at_ms),
            Record::Acked { acks } => acks.iter().map(|a| a.acked_at_ms).max(),
            Record::DeliveryFailed { failed_at_ms, .. } => Some(*failed_at_ms),
            Record::DeadLettered { dead_at_ms, .. } => Some(*dead_at_ms),
            Record::Redriven { redriven_at_ms, .. } => Some(*redriven_at_ms),
            Record::Discarded {
                discarded_at_ms, ..
            } => Some(*discarded_at_ms),
            _ => None,
        };
        if let Some(at) = at {
            self.last_ms = self.last_ms.max(at);
        }
        match record {
            Record::QueueCreated { queue, settings } => {
                let Ok(stored) = serde_json::from_slice::<StoredQueue>(&settings) else {
                    tracing::error!(%queue, "unreadable queue settings in the log; queue skipped");
                    return;
                };
                self.next_queue_number = self.next_queue_number.max(stored.number + 1);
                self.by_number.insert(stored.number, queue.clone());
                self.queues.insert(
                    queue.clone(),
                    QueueState::new(&queue, stored.number, stored.settings),
                );
            }
            Record::QueueUpdated { queue, settings } => {
                if let (Some(q), Ok(stored)) = (
                    self.queues.get_mut(&queue),
                    serde_json::from_slice::<StoredQueue>(&settings),
                ) {
                    q.set_settings(stored.settings);
                }
            }
            Record::QueueDeleted { queue } => {
                if let Some(q) = self.queues.remove(&queue) {
                    self.by_number.remove(&q.number);
                }
            }
            Record::SubscriberAdded {
                queue,
                subscriber,
                endpoint,
                handler,
                secret,
                max_in_flight,
            } => {
                self.next_subscriber = self.next_subscriber.max(subscriber + 1);
                let Some(q) = self.queues.get_mut(&queue) else {
                    return;
                };
                let spec = SubscriberSpec {
                    endpoint,
                    handler: HandlerKind::parse(&handler).unwrap_or(HandlerKind::Webhook),
                    secret,
                    max_in_flight: max_in_flight.max(1),
                };
                if let Err(e) = add_subscriber_state(q, subscriber, spec) {
                    tracing::error!(%queue, subscriber, error = %e, "subscriber in the log could not be restored");
                }
            }
            Record::SubscriberRemoved { queue, subscriber } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    // The record has no time of its own: the latest one seen is the closest.
                    remove_subscriber_state(q, subscriber, self.last_ms, &mut wake);
                }
            }
            Record::Published(p) => {
                let Some(q) = self.queues.get_mut(&p.queue) else {
                    return;
                };
                let size = p.body.len() as u32;
                if let Some(key) = &p.idempotency_key {
                    q.idempotency.insert(
                        key.clone(),
                        Remembered {
                            id: p.id,
                            body_hash: body_hash(&p.body),
                            expires_at_ms: p.published_at_ms
                                + q.settings.idempotency.window.as_millis(),
                        },
                    );
                }
                q.insert_published(
                    p.id,
                    p.parent,
                    &p.fanout,
                    Meta { location, size },
                    p.published_at_ms,
                    &mut wake,
                );
            }
            Record::Acked { acks } => {
                for a in acks {
                    if let Some(q) = self.queue_of(a.message) {
                        q.ack(a.message, a.subscriber, a.acked_at_ms, &mut wake);
                    }
                }
            }
            Record::DeliveryFailed {
                message,
                subscriber,
                attempt,
                error,
                next_attempt_at_ms,
                ..
            } => {
                if let Some(q) = self.queue_of(message) {
                    q.failed(message, subscriber, attempt, error, next_attempt_at_ms);
                }
            }
            Record::DeadLettered {
                message,
                subscriber: Some(subscriber),
                attempts,
                last_error,
                dead_at_ms,
                ..
            } => {
                if let Some(q) = self.queue_of(message) {
                    q.gave_up(
                        message, subscriber, attempts, last_error, dead_at_ms, &mut wake,
                    );
                }
            }
            // A message dead with its parent: the scheduler derives it again from the parent.
            Record::DeadLettered {
                subscriber: None, ..
            } => {}
            Record::Redriven {
                message,
                redriven_at_ms,
                ..
            } => {
                if let Some(q) = self.queue_of(message) {
                    let _ = q.redrive(message, redriven_at_ms, &mut wake);
                }
            }
            Record::Discarded {
                message,
                discarded_at_ms,
            } => {
                if let Some(q) = self.queue_of(message) {
                    let _ = q.remove(message, discarded_at_ms, &mut wake);
                }
            }
            Record::Checkpoint { .. } => {}
        }
    }
}

impl From<AppendError> for SpaceError {
    fn from(e: AppendError) -> SpaceError {
        match e {
            AppendError::NoSpace(e) => SpaceError::DiskFull(e.to_string()),
            AppendError::TooLarge(_) => SpaceError::BodyTooLarge,
            AppendError::Closed => SpaceError::ShuttingDown,
            other => SpaceError::Storage(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Outcome;
    use crate::settings::{RetryPatch, Span};
    use std::pin::Pin;

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
