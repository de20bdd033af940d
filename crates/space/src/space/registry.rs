//! The queues of the Space by name and by number, and the counters that name new queues and
//! subscribers. The two maps always agree, and numbers are never reused: records name queues by
//! number, so a queue deleted and created again under its name is another queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::Queue;
use crate::error::{QueueError, QueueNotFound};
use crate::model::{QueueNumber, SubscriberId};
use crate::snapshot::Counters;

pub(super) struct Registry {
    maps: RwLock<Maps>,
    next_queue_number: AtomicU32,
    next_subscriber: AtomicU64,
    /// On a cluster node: the state of the last `ClusterApplied` record applied (how far the
    /// replicated log is applied), kept in snapshots.
    cluster: Mutex<Bytes>,
}

#[derive(Default)]
struct Maps {
    by_name: BTreeMap<Arc<str>, Arc<Queue>>,
    by_number: HashMap<QueueNumber, Arc<Queue>>,
}

impl Registry {
    pub fn new(queues: impl IntoIterator<Item = Queue>, counters: Counters) -> Registry {
        let mut maps = Maps::default();
        for q in queues {
            let (name, number) = {
                let st = q.lock();
                (st.name().clone(), st.number())
            };
            let q = Arc::new(q);
            maps.by_number.insert(number, q.clone());
            maps.by_name.insert(name, q);
        }
        Registry {
            maps: RwLock::new(maps),
            next_queue_number: AtomicU32::new(counters.next_queue_number.max(1)),
            next_subscriber: AtomicU64::new(counters.next_subscriber.max(1)),
            cluster: Mutex::new(counters.cluster),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Result<Arc<Queue>, QueueNotFound> {
        self.read()
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| QueueNotFound(name.to_owned()))
    }

    pub fn by_number(&self, number: QueueNumber) -> Option<Arc<Queue>> {
        self.read().by_number.get(&number).cloned()
    }

    /// Every queue, in name order.
    pub fn all(&self) -> Vec<Arc<Queue>> {
        self.read().by_name.values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().by_name.keys().map(|n| n.to_string()).collect()
    }

    /// A number for a new queue, never given before.
    pub fn take_queue_number(&self) -> Result<QueueNumber, QueueError> {
        self.next_queue_number
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n <= crate::ids::QUEUE_NUMBER_MAX).then_some(n + 1)
            })
            .map_err(|_| QueueError::QueueNumbersExhausted)
    }

    /// An id for a new subscriber, never given before.
    pub fn take_subscriber_id(&self) -> SubscriberId {
        self.next_subscriber.fetch_add(1, Ordering::SeqCst)
    }

    pub fn insert(&self, q: Arc<Queue>) {
        let (name, number) = {
            let st = q.lock();
            (st.name().clone(), st.number())
        };
        let mut maps = self.write();
        maps.by_number.insert(number, q.clone());
        maps.by_name.insert(name, q);
    }

    pub fn remove(&self, name: &str, number: QueueNumber) {
        let mut maps = self.write();
        maps.by_name.remove(name);
        maps.by_number.remove(&number);
    }

    pub fn counters(&self) -> Counters {
        Counters {
            next_queue_number: self.next_queue_number.load(Ordering::SeqCst),
            next_subscriber: self.next_subscriber.load(Ordering::SeqCst),
            cluster: self.cluster_state(),
        }
    }

    pub fn cluster_state(&self) -> Bytes {
        self.cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_cluster_state(&self, state: Bytes) {
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// A queue number or subscriber id seen in a record: new ones are given after it.
    pub fn saw_queue_number(&self, number: QueueNumber) {
        self.next_queue_number
            .fetch_max(number.saturating_add(1), Ordering::SeqCst);
    }

    pub fn saw_subscriber(&self, id: SubscriberId) {
        self.next_subscriber
            .fetch_max(id.saturating_add(1), Ordering::SeqCst);
    }
}
