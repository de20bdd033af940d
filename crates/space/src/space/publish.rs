//! Publishing, one message or a batch.

use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;

use storage::{Published, Record};

use crate::error::SpaceError;
use crate::ids;
use crate::queue::{Meta, Remembered};
use crate::scheduler::{MessageId, SubscriberId};

use super::*;

pub(super) fn body_hash(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

impl Space {
    /// The body of [`Space::publish`], run on its own task by it.
    pub(super) async fn publish_now(
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
    pub(super) async fn publish_batch_now(
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
}
