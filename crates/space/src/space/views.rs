//! Read-only views: queues, messages, dead letters, totals.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use storage::{Log, Published, Record};

use crate::error::SpaceError;
use crate::queue::Meta;
use crate::scheduler::{MessageId, MessageState};

use super::*;

impl Space {
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
    pub(super) fn read_message(
        &self,
        queue: &Queue,
        id: MessageId,
    ) -> Result<Published, SpaceError> {
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

    pub(super) fn read_published(&self, meta: Meta) -> Result<Published, SpaceError> {
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
}
