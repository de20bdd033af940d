//! Read-only views of the Space for the API and metrics: no append, no gate, and work bounded
//! by what is returned. No queue lock is held across I/O: a message's body (or, rarely, its
//! content type) is read after the lock is let go.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use storage::LogStats;

use super::admin::subscriber_info;
use super::{Queue, Space};
use crate::error::{MessageError, QueueNotFound};
use crate::model::{MessageId, MessageState};
use crate::queue::explain::{Explanation, LineageGraph};
use crate::queue::image::QueueImage;
use crate::scheduler::BlockingRoots;
use crate::types::{DeadLetter, MessageInfo, Page, QueueInfo, SpaceTotals, SubscriberInfo};

/// The durable state of the whole Space in a canonical form (see [`QueueImage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceImage {
    pub next_queue_number: u32,
    pub next_subscriber: u64,
    pub queues: Vec<QueueImage>,
}

impl Space {
    pub fn queue_names(&self) -> Vec<String> {
        self.inner.registry.names()
    }

    pub fn queue_info(&self, name: &str) -> Result<QueueInfo, QueueNotFound> {
        let q = self.inner.registry.get(name)?;
        let now = self.now_ms();
        let st = q.lock();
        Ok(QueueInfo {
            name: name.to_owned(),
            settings: st.settings(),
            subscribers: st
                .subscribers()
                .map(|(id, s)| subscriber_info(id, s, now))
                .collect(),
            counts: st.counts(),
            bytes: st.undelivered_bytes(),
            oldest_undelivered_age_ms: st
                .oldest_undelivered_age(now)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            first_delivery: q.latency.first_delivery.snapshot(),
            release: q.latency.release.snapshot(),
            forgotten_dead_parents: st.forgotten_dead_parents(),
            idempotency_keys: st.idempotency_keys().0,
            idempotency_keys_forgotten: st.idempotency_keys().1,
        })
    }

    pub fn subscribers(&self, queue: &str) -> Result<Vec<SubscriberInfo>, QueueNotFound> {
        let q = self.inner.registry.get(queue)?;
        let now = self.now_ms();
        let st = q.lock();
        Ok(st
            .subscribers()
            .map(|(id, s)| subscriber_info(id, s, now))
            .collect())
    }

    /// Why a message is not delivered (yet): its verdict, the ancestors holding it back up to
    /// the root blocker, subscriber health (see [`Explanation`]).
    pub fn explain(&self, queue: &str, id: MessageId) -> Result<Explanation, MessageError> {
        let q = self.inner.registry.get(queue)?;
        let (number, mut e) = {
            let st = q.lock();
            let e = st
                .explain(id, crate::limits::EXPLAIN_DEPTH_MAX)
                .ok_or(MessageError::MessageNotFound(id))?;
            (st.number(), e)
        };
        // Blockers in other queues: how they stand there, each queue's lock taken alone.
        let foreign: Vec<MessageId> = e
            .blockers
            .iter()
            .map(|b| b.id)
            .filter(|b| crate::ids::parts(*b).is_some_and(|(n, _)| n != number))
            .collect();
        for parent in foreign {
            let owner =
                crate::ids::parts(parent).and_then(|(n, _)| self.inner.registry.by_number(n));
            // Delivered or gone there: the settler is about to tell this queue.
            let (name, found, frees) = match owner {
                Some(o) => {
                    let st = o.lock();
                    let frees = matches!(
                        st.state_as_parent(parent),
                        crate::model::ParentState::Delivered | crate::model::ParentState::Gone
                    );
                    (st.name().to_string(), st.verdict_of(parent), frees)
                }
                None => ("(deleted)".to_owned(), None, true),
            };
            e.fill_foreign(parent, name, found, frees);
        }
        Ok(e)
    }

    /// A message's ancestors (`up` levels) and descendants (`down` levels), at most `limit`
    /// messages; each bound is capped by its `limits::LINEAGE_*_MAX`.
    pub fn lineage(
        &self,
        queue: &str,
        id: MessageId,
        up: u32,
        down: u32,
        limit: usize,
    ) -> Result<LineageGraph, MessageError> {
        use crate::limits::{LINEAGE_LEVELS_MAX, LINEAGE_NODES_MAX};
        let q = self.inner.registry.get(queue)?;
        let (number, mut g) = {
            let st = q.lock();
            let g = st
                .lineage(
                    id,
                    up.min(LINEAGE_LEVELS_MAX),
                    down.min(LINEAGE_LEVELS_MAX),
                    limit.min(LINEAGE_NODES_MAX),
                )
                .ok_or(MessageError::MessageNotFound(id))?;
            (st.number(), g)
        };
        // Parents in other queues: their queue and how they stand there.
        for node in &mut g.nodes {
            let Some((n, _)) = crate::ids::parts(node.id).filter(|(n, _)| *n != number) else {
                continue;
            };
            if let Some(owner) = self.inner.registry.by_number(n) {
                let st = owner.lock();
                node.queue = Some(st.name().to_string());
                node.state = st.state_of_message(node.id);
            }
        }
        Ok(g)
    }

    /// The queue a message id was issued by (an id names its queue), if that queue exists.
    pub fn queue_of(&self, id: MessageId) -> Option<String> {
        let (number, _) = crate::ids::parts(id)?;
        let q = self.inner.registry.by_number(number)?;
        let name = q.lock().name().to_string();
        Some(name)
    }

    /// The messages of a queue holding back the most waiting messages below them, most first
    /// (bounded by `limits::BLOCKING_ROOTS_*`).
    pub fn blocking_roots(&self, queue: &str) -> Result<BlockingRoots, QueueNotFound> {
        use crate::limits::{BLOCKING_ROOTS_COUNT_MAX, BLOCKING_ROOTS_SCAN_MAX};
        let q = self.inner.registry.get(queue)?;
        let st = q.lock();
        Ok(st.blocking_roots(BLOCKING_ROOTS_SCAN_MAX, BLOCKING_ROOTS_COUNT_MAX))
    }

    /// A message's state, parent, children and per-subscriber deliveries.
    pub fn message(&self, queue: &str, id: MessageId) -> Result<MessageInfo, MessageError> {
        let q = self.inner.registry.get(queue)?;
        let view = q
            .lock()
            .message_view(id)
            .ok_or(MessageError::MessageNotFound(id))?;
        // Either table may have been full when it was published: then the record says.
        // A scheduled message's due time is in its record only.
        let scheduled = view.state == MessageState::Scheduled;
        let recent = self.inner.recent.get(id);
        let record = if view.content_type.is_none() || view.event_type.is_none() || scheduled {
            Some(self.read_record(&q, id)?)
        } else if recent.is_none() {
            // Only for its trace context: a record that cannot be read back leaves it out
            // rather than the whole message (its attempts say what is wrong).
            self.read_record(&q, id).ok()
        } else {
            None
        };
        let trace = match (&recent, &record) {
            (Some(r), _) => r.trace.clone(),
            (None, Some(r)) => crate::recent::trace_of(&r.attributes),
            (None, None) => None,
        };
        let content_type = match (view.content_type, &record) {
            (Some(t), _) => t.to_string(),
            (None, Some(r)) => r.content_type.clone(),
            (None, None) => String::new(),
        };
        let deliver_at_ms = record
            .as_ref()
            .filter(|_| scheduled)
            .and_then(|r| r.attributes.deliver_at_ms);
        let event_type = match (view.event_type, record) {
            (Some(t), _) => t.map(|t| t.to_string()),
            (None, Some(r)) => r.attributes.event_type,
            (None, None) => None,
        };
        Ok(MessageInfo {
            id,
            queue: queue.to_owned(),
            parents: view.parents,
            children: view.children,
            state: view.state,
            content_type,
            event_type,
            deliver_at_ms,
            replay_of: view.replay_of,
            traceparent: trace.as_ref().map(|t| t.0.clone()),
            tracestate: trace.and_then(|t| t.1),
            size: u64::from(view.size),
            published_at_ms: crate::ids::unix_ms(id),
            deliveries: view.deliveries,
        })
    }

    /// A message's body and content type.
    pub fn body(&self, queue: &str, id: MessageId) -> Result<(Bytes, String), MessageError> {
        let q = self.inner.registry.get(queue)?;
        let p = self.read_record(&q, id)?;
        Ok((p.body, p.content_type))
    }

    fn read_record(&self, q: &Queue, id: MessageId) -> Result<storage::Published, MessageError> {
        self.read_published(q, id)
            .map_err(|source| MessageError::Unreadable { id, source })?
            .ok_or(MessageError::MessageNotFound(id))
    }

    /// Messages in publish order, optionally of one state, after a cursor.
    pub fn messages(
        &self,
        queue: &str,
        state: Option<MessageState>,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<(MessageId, MessageState)>, QueueNotFound> {
        let q = self.inner.registry.get(queue)?;
        let page = q.lock().messages_page(state, after, limit);
        Ok(page)
    }

    /// Dead letters of a queue in message order, after a message id.
    pub fn dead_letters(
        &self,
        queue: &str,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<DeadLetter>, QueueNotFound> {
        let q = self.inner.registry.get(queue)?;
        let page = q.lock().dead_letters_page(after, limit);
        Ok(page)
    }

    /// Running totals since the Space was opened.
    pub fn totals(&self) -> SpaceTotals {
        let t = &self.inner.totals;
        SpaceTotals {
            published: t.published.load(Ordering::Relaxed),
            acked: t.acked.load(Ordering::Relaxed),
            failed_attempts: t.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: t.dead_lettered.load(Ordering::Relaxed),
            subscribers_disabled: t.subscribers_disabled.load(Ordering::Relaxed),
            unreadable_bodies: t.unreadable_bodies.load(Ordering::Relaxed),
            in_flight: self.inner.in_flight.load(Ordering::Relaxed) as u64,
            parents_to_settle: self.inner.settler.pending() as u64,
        }
    }

    /// The log writer's running totals (for metrics and benchmarks).
    /// Why the Space can no longer record anything (its log refuses writes), if so.
    pub fn refusing_writes(&self) -> Option<String> {
        self.inner.journal.refusing_writes()
    }

    pub fn log_stats(&self) -> LogStats {
        self.inner.journal.stats()
    }

    /// The log's segments, in order, with their sizes.
    pub fn log_segments(&self) -> Vec<storage::SegmentInfo> {
        self.inner.journal.segments()
    }

    /// Where the latest checkpoint is, if there is one.
    pub fn checkpoint_location(&self) -> Option<storage::Location> {
        self.inner.journal.checkpoint_location()
    }

    /// The durable state in a canonical form, at the Space's clock: what a restart must
    /// rebuild. For checks that live operation, replay and snapshot restore agree, and for
    /// diagnostics.
    pub fn state_image(&self) -> SpaceImage {
        let now = self.now_ms();
        let counters = self.inner.registry.counters();
        let mut queues: Vec<QueueImage> = self
            .inner
            .registry
            .all()
            .iter()
            .map(|q| q.lock().image(now))
            .collect();
        queues.sort_by_key(|q| q.number);
        SpaceImage {
            next_queue_number: counters.next_queue_number,
            next_subscriber: counters.next_subscriber,
            queues,
        }
    }
}
