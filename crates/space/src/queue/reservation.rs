//! Publishes between their check and their record: reserved under the queue's lock (checked
//! against the limits, idempotency keys and parents, given ids), appended to the log without
//! it, then committed (applied) or aborted. Single and batch publishes take the same path.

use std::collections::HashMap;

use bytes::Bytes;
use storage::{Attributes, Location, Published};

use super::{QueueState, Wake, body_hash};
use crate::error::PublishError;
use crate::idhash::IdSet;
use crate::limits::PARENTS_MAX;
use crate::model::{MessageId, Parents, SubscriberId};
use crate::types::{BatchEntry, BatchParent, DeliverAt, PublishedMessage};

/// Publishes reserved and not yet committed or aborted: counted against the limits, their ids
/// not yet issued (a child naming one is refused), their idempotency keys "in progress".
#[derive(Default)]
pub(super) struct PendingPublishes {
    count: u64,
    bytes: u64,
    ids: IdSet<MessageId>,
    keys: HashMap<String, (MessageId, u64)>,
    /// Ids of aborted reservations: their sequence numbers are spent, but no message has them.
    /// (Only an append that failed aborts one, so this stays small; it is not kept across a
    /// restart, after which such an id reads as issued and removed.)
    void: IdSet<MessageId>,
}

impl PendingPublishes {
    /// Whether `id` was given out without (yet) being issued: reserved, or aborted.
    pub fn holds(&self, id: MessageId) -> bool {
        self.ids.contains(&id) || self.void.contains(&id)
    }
}

/// A new message of a reservation: which entry, its id and its parents.
#[derive(Debug, Clone)]
pub(crate) struct Fresh {
    pub entry: usize,
    pub id: MessageId,
    pub parents: Parents,
}

/// Publishes checked and counted, not yet in the log. Consumed by [`QueueState::commit`] or
/// [`QueueState::abort`]; the Space wraps it in a guard that aborts it if neither happens.
#[must_use]
#[derive(Debug)]
pub(crate) struct Reserved {
    /// The answer for every entry, in order; repeated idempotency keys answer the earlier id.
    pub answers: Vec<PublishedMessage>,
    /// The entries that are new messages.
    pub fresh: Vec<Fresh>,
    /// The subscribers every new message goes to, unless their `types` filter leaves it out.
    pub fanout: Vec<SubscriberId>,
    /// The filters of the subscribers that have one; empty if none has.
    filters: Vec<(SubscriberId, std::sync::Arc<[String]>)>,
    bytes: u64,
    keys: Vec<String>,
}

impl Reserved {
    /// The records to append: one `Published` per new message.
    pub fn records(&self, queue: u32, entries: &[BatchEntry], now_ms: u64) -> Vec<Published> {
        self.fresh
            .iter()
            .map(|f| {
                let m = &entries[f.entry].message;
                Published {
                    queue,
                    id: f.id,
                    parents: f.parents.as_slice().to_vec(),
                    content_type: content_type_of(m.content_type.as_deref()).to_owned(),
                    published_at_ms: now_ms,
                    idempotency_key: m.idempotency_key.clone(),
                    fanout: self.fanout_of(m.event_type.as_deref()),
                    attributes: Attributes {
                        event_type: m.event_type.clone(),
                        deliver_at_ms: match m.deliver_at {
                            Some(DeliverAt::At(t)) if t > now_ms => Some(t),
                            _ => None,
                        },
                        replay_of: m.replay_of,
                        traceparent: m.traceparent.clone(),
                        tracestate: m.tracestate.clone(),
                    },
                    body: Bytes::clone(&m.body),
                }
            })
            .collect()
    }
}

impl Reserved {
    /// The fan-out set of a message of type `t`: every subscriber whose filter (if it has one)
    /// matches it.
    fn fanout_of(&self, t: Option<&str>) -> Vec<SubscriberId> {
        if self.filters.is_empty() {
            return self.fanout.clone();
        }
        let passes = |sub: &SubscriberId| {
            self.filters
                .iter()
                .find(|(s, _)| s == sub)
                .is_none_or(|(_, f)| crate::event_type::matches(f, t))
        };
        self.fanout.iter().copied().filter(passes).collect()
    }
}

/// The content type a message is stored with.
pub(crate) fn content_type_of(given: Option<&str>) -> &str {
    given.unwrap_or("application/octet-stream")
}

impl QueueState {
    /// Checks publishes against the queue and reserves them: ids in entry order, parents
    /// resolved, limits counted. Nothing changes if any entry is refused.
    #[cfg(test)]
    pub fn reserve(
        &mut self,
        entries: &[BatchEntry],
        now_ms: u64,
    ) -> Result<Reserved, PublishError> {
        self.reserve_with(entries, now_ms, &IdSet::default())
    }

    /// [`QueueState::reserve`], where `foreign` are parents in other queues the Space checked
    /// (their queues issued them).
    pub fn reserve_with(
        &mut self,
        entries: &[BatchEntry],
        now_ms: u64,
        foreign: &IdSet<MessageId>,
    ) -> Result<Reserved, PublishError> {
        if self.deleted {
            return Err(PublishError::QueueNotFound(self.name.to_string()));
        }
        let hashes: Vec<Option<u64>> = entries
            .iter()
            .map(|e| {
                e.message
                    .idempotency_key
                    .as_ref()
                    .map(|_| body_hash(&e.message.body))
            })
            .collect();
        let repeated = self.repeated_keys(entries, &hashes, now_ms)?;
        let new_count = repeated.iter().filter(|r| r.is_none()).count() as u64;
        let new_bytes: u64 = entries
            .iter()
            .zip(&repeated)
            .filter(|(_, r)| r.is_none())
            .map(|(e, _)| e.message.body.len() as u64)
            .sum();
        self.check_room(new_count, new_bytes)?;
        let (answers, fresh) = self.assign_ids(entries, &repeated, now_ms, foreign)?;
        // Everything is checked: count it.
        self.next_seq += fresh.len() as u64;
        let mut keys = Vec::new();
        for f in &fresh {
            self.pending.ids.insert(f.id);
            if let (Some(key), Some(hash)) =
                (&entries[f.entry].message.idempotency_key, hashes[f.entry])
            {
                self.pending.keys.insert(key.clone(), (f.id, hash));
                keys.push(key.clone());
            }
        }
        self.pending.count += new_count;
        self.pending.bytes += new_bytes;
        Ok(Reserved {
            answers,
            fresh,
            fanout: self.subscribers.keys().copied().collect(),
            filters: self
                .subscribers
                .iter()
                .filter_map(|(id, s)| Some((*id, s.types.clone()?)))
                .collect(),
            bytes: new_bytes,
            keys,
        })
    }

    /// For each entry, the earlier message its idempotency key names (same body), if any.
    fn repeated_keys(
        &self,
        entries: &[BatchEntry],
        hashes: &[Option<u64>],
        now_ms: u64,
    ) -> Result<Vec<Option<MessageId>>, PublishError> {
        let mut repeated = vec![None; entries.len()];
        for (i, e) in entries.iter().enumerate() {
            let (Some(key), Some(hash)) = (&e.message.idempotency_key, hashes[i]) else {
                continue;
            };
            if let Some((_, pending_hash)) = self.pending.keys.get(key) {
                return Err(if *pending_hash == hash {
                    PublishError::IdempotencyInProgress(key.clone())
                } else {
                    PublishError::IdempotencyConflict(key.clone())
                });
            }
            if let Some(r) = self.idempotency.get(key)
                && r.expires_at_ms > now_ms
            {
                if r.body_hash != hash {
                    return Err(PublishError::IdempotencyConflict(key.clone()));
                }
                repeated[i] = Some(r.id);
            }
        }
        Ok(repeated)
    }

    /// Whether the queue has room for this many new messages and bytes, counting those
    /// reserved and not yet committed.
    fn check_room(&self, new_count: u64, new_bytes: u64) -> Result<(), PublishError> {
        let limits = self.settings.limits;
        let undelivered = self.sched.counts().undelivered();
        if let Some(max) = limits.max_messages
            && undelivered + self.pending.count + new_count > max
        {
            return Err(PublishError::QueueFull {
                limit: "max_messages",
            });
        }
        if let Some(max) = limits.max_bytes
            && self.sched.undelivered_bytes() + self.pending.bytes + new_bytes > max
        {
            return Err(PublishError::QueueFull { limit: "max_bytes" });
        }
        if self.next_seq + new_count > crate::ids::SEQUENCE_MAX + 1 {
            return Err(PublishError::SequenceExhausted);
        }
        Ok(())
    }

    /// The answer for every entry (new ids in entry order, from the queue's next sequence)
    /// with parents resolved, and the new messages among them.
    fn assign_ids(
        &self,
        entries: &[BatchEntry],
        repeated: &[Option<MessageId>],
        now_ms: u64,
        foreign: &IdSet<MessageId>,
    ) -> Result<(Vec<PublishedMessage>, Vec<Fresh>), PublishError> {
        let mut answers: Vec<PublishedMessage> = Vec::with_capacity(entries.len());
        let mut fresh = Vec::new();
        let mut next_seq = self.next_seq;
        for (i, e) in entries.iter().enumerate() {
            let parents = self.resolve_parents(i, &e.parents, &answers, foreign)?;
            let answer = match repeated[i] {
                Some(id) => PublishedMessage {
                    id,
                    parents: self.sched.parents(id).cloned().unwrap_or(parents),
                    created: false,
                },
                None => {
                    let id = crate::ids::message_id(now_ms, self.number, next_seq);
                    next_seq += 1;
                    fresh.push(Fresh {
                        entry: i,
                        id,
                        parents: parents.clone(),
                    });
                    PublishedMessage {
                        id,
                        parents,
                        created: true,
                    }
                }
            };
            answers.push(answer);
        }
        Ok((answers, fresh))
    }

    /// The parents entry `i` names, checked: at most [`PARENTS_MAX`], each once, each a message
    /// this queue issued, one of `foreign` (another queue's), or an earlier entry of the batch.
    fn resolve_parents(
        &self,
        i: usize,
        named: &[BatchParent],
        answers: &[PublishedMessage],
        foreign: &IdSet<MessageId>,
    ) -> Result<Parents, PublishError> {
        if named.len() > PARENTS_MAX {
            return Err(PublishError::TooManyParents(named.len()));
        }
        let mut ids = Vec::with_capacity(named.len());
        for p in named {
            let id = match *p {
                BatchParent::Id(p) => {
                    if !self.sched.contains(p) && !self.issued(p) && !foreign.contains(&p) {
                        return Err(PublishError::UnknownParent(p));
                    }
                    p
                }
                BatchParent::Index(j) => match answers.get(j) {
                    Some(a) if j < i => a.id,
                    _ => {
                        return Err(PublishError::InvalidBatch(format!(
                            "entry {i}: parent_index {j} does not name an earlier entry"
                        )));
                    }
                },
            };
            ids.push(id);
        }
        Parents::new(&ids).map_err(PublishError::RepeatedParent)
    }

    /// The records of a reservation are in the log: applies them, and lets the reservation go.
    pub fn commit(
        &mut self,
        reserved: Reserved,
        records: &[Published],
        locations: &[Location],
        wake: &mut Wake,
    ) {
        self.release(&reserved);
        for (p, at) in records.iter().zip(locations) {
            self.apply_published(p, *at, wake);
        }
    }

    /// The records of a reservation did not make it to the log: lets it go, as if it never was.
    pub fn abort(&mut self, reserved: Reserved) {
        self.release(&reserved);
        self.pending
            .void
            .extend(reserved.fresh.iter().map(|f| f.id));
    }

    fn release(&mut self, reserved: &Reserved) {
        self.pending.count -= reserved.fresh.len() as u64;
        self.pending.bytes -= reserved.bytes;
        for f in &reserved.fresh {
            self.pending.ids.remove(&f.id);
        }
        for key in &reserved.keys {
            self.pending.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueSettings;
    use crate::types::NewMessage;

    fn entry(parent: Option<MessageId>) -> BatchEntry {
        BatchEntry {
            message: NewMessage {
                body: Bytes::from_static(b"x"),
                content_type: None,
                idempotency_key: None,
                ..Default::default()
            },
            parents: parent.map(BatchParent::Id).into_iter().collect(),
        }
    }

    /// An aborted publish never was: a child naming its id is refused, while it waits and
    /// after, even once later publishes have moved the sequence past it.
    #[test]
    fn a_child_of_an_aborted_publish_is_refused() {
        let mut q = QueueState::new("q", 1, QueueSettings::default());
        let reserved = q.reserve(&[entry(None)], 1_000).unwrap();
        let id = reserved.fresh[0].id;
        assert!(matches!(
            q.reserve(&[entry(Some(id))], 1_000),
            Err(PublishError::UnknownParent(p)) if p == id
        ));
        q.abort(reserved);
        assert!(matches!(
            q.reserve(&[entry(Some(id))], 1_000),
            Err(PublishError::UnknownParent(p)) if p == id
        ));
        let later = q.reserve(&[entry(None)], 1_001).unwrap();
        assert_ne!(later.fresh[0].id, id);
        assert!(!q.issued(id));
        q.abort(later);
    }

    /// `idempotency.max_keys`: past it the oldest key is forgotten, and publishes anew; a
    /// lower setting applies at once. Driven through records, as live operation and replay are.
    #[test]
    fn past_max_keys_the_oldest_key_publishes_anew() {
        let mut settings = QueueSettings::default();
        settings.idempotency.max_keys = 2;
        let mut q = QueueState::new("q", 1, settings);
        let keyed = |key: &str| BatchEntry {
            message: NewMessage {
                body: Bytes::from_static(b"x"),
                content_type: None,
                idempotency_key: Some(key.to_owned()),
                ..Default::default()
            },
            parents: Vec::new(),
        };
        for (n, key) in ["a", "b", "c"].into_iter().enumerate() {
            let entries = [keyed(key)];
            let r = q.reserve(&entries, 1_000).unwrap();
            let records = r.records(1, &entries, 1_000);
            let at = Location {
                segment: 1,
                offset: 24 + 100 * n as u32,
                len: 100,
            };
            q.commit(r, &records, &[at], &mut Vec::new());
        }
        assert_eq!(q.idempotency_keys(), (2, 1));
        let again = q.reserve(&[keyed("a")], 1_000).unwrap();
        assert!(again.answers[0].created, "a forgotten key publishes anew");
        q.abort(again);
        let repeat = q.reserve(&[keyed("c")], 1_000).unwrap();
        assert!(
            !repeat.answers[0].created,
            "a remembered key answers the first id"
        );
        q.abort(repeat);
        settings.idempotency.max_keys = 1;
        q.apply_settings(settings, &mut Vec::new());
        assert_eq!(q.idempotency_keys(), (1, 2));
    }
}
