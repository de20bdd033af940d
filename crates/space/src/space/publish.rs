//! Publishing, one message or a batch: one path. Reserve under the queue's lock (limits,
//! idempotency, parents, ids), append without it, then commit (apply the records) or abort.
//! An id is issued (a valid parent, an idempotent answer) only once its publish is committed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use storage::{Published, Record};

use super::{Queue, Space, wake_all};
use crate::error::PublishError;
use crate::idhash::IdSet;
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, CONTENT_TYPE_BYTES_MAX, DELAY_MAX,
    IDEMPOTENCY_KEY_BYTES_MAX,
};
use crate::model::{MessageId, QueueNumber};
use crate::queue::reservation::Reserved;
use crate::types::{BatchEntry, BatchParent, DeliverAt, NewMessage, PublishedMessage};

/// A reservation the publish still owes an outcome: committed once its records are in the
/// log, aborted if they are not, and aborted by its drop if the task ends before either (so
/// that no reservation is left counting against the limits).
struct Reservation<'a> {
    queue: &'a Queue,
    reserved: Option<Reserved>,
}

impl Reservation<'_> {
    fn commit(mut self, records: &[Published], locations: &[storage::Location]) {
        if let Some(r) = self.reserved.take() {
            let mut wake = Vec::new();
            self.queue.lock().commit(r, records, locations, &mut wake);
            wake_all(wake);
        }
    }

    fn abort(mut self) {
        if let Some(r) = self.reserved.take() {
            self.queue.lock().abort(r);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reserved.take() {
            self.queue.lock().abort(r);
        }
    }
}

/// Whether `c` can be a message's content type: up to [`CONTENT_TYPE_BYTES_MAX`] bytes that an
/// HTTP header value may hold (visible ASCII, spaces and tabs), since every attempt sends it as
/// one. A content type no header can carry would make every attempt fail.
fn is_content_type(c: &str) -> bool {
    c.len() <= CONTENT_TYPE_BYTES_MAX && c.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Checks what can be checked without the queue: sizes, keys, content and event types.
fn check_entries(entries: &[BatchEntry]) -> Result<(), PublishError> {
    let mut keys = HashSet::new();
    for e in entries {
        let m = &e.message;
        if m.event_type
            .as_deref()
            .is_some_and(|t| !crate::event_type::is_event_type(t))
        {
            return Err(PublishError::InvalidEventType);
        }
        if m.content_type
            .as_deref()
            .is_some_and(|c| !is_content_type(c))
        {
            return Err(PublishError::InvalidContentType);
        }
        if u32::try_from(m.body.len()).is_err() {
            return Err(PublishError::BodyTooLarge);
        }
        let trace_ok = m
            .traceparent
            .as_deref()
            .is_none_or(crate::trace::is_traceparent)
            && m.tracestate
                .as_deref()
                .is_none_or(crate::trace::is_tracestate)
            && (m.tracestate.is_none() || m.traceparent.is_some());
        if !trace_ok {
            return Err(PublishError::InvalidTraceContext);
        }
        if let Some(key) = &m.idempotency_key {
            if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
                return Err(PublishError::InvalidIdempotencyKey);
            }
            if !keys.insert(key) {
                return Err(PublishError::InvalidBatch(format!(
                    "idempotency key {key:?} appears twice in one batch"
                )));
            }
        }
    }
    Ok(())
}

/// When a message is due, as a time (unix ms) after `now_ms`; `None` when it is due now. At
/// most [`DELAY_MAX`] ahead.
fn due_time(at: Option<DeliverAt>, now_ms: u64) -> Result<Option<DeliverAt>, PublishError> {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let t = match at {
        None => return Ok(None),
        Some(DeliverAt::After(d)) => now_ms.saturating_add(ms(d)),
        Some(DeliverAt::At(t)) => t,
    };
    if t > now_ms.saturating_add(ms(DELAY_MAX)) {
        return Err(PublishError::InvalidDelay(format!(
            "at most {} days ahead",
            DELAY_MAX.as_secs() / 86_400
        )));
    }
    Ok((t > now_ms).then_some(DeliverAt::At(t)))
}

impl Space {
    /// Publishes a message; returns once it is durable (under `fsync: always`).
    pub async fn publish(
        &self,
        queue: &str,
        msg: NewMessage,
    ) -> Result<PublishedMessage, PublishError> {
        let entry = BatchEntry {
            parents: msg.parents.iter().copied().map(BatchParent::Id).collect(),
            message: msg,
        };
        let mut answers = self.publish_entries(queue, vec![entry]).await?;
        answers
            .pop()
            .ok_or(PublishError::InvalidBatch("no answer".into()))
    }

    /// Publishes several messages atomically: all are accepted (in one durable record batch)
    /// or none. An entry may name as parent an existing message or an earlier entry. An entry
    /// whose `Idempotency-Key` matches an earlier publish (same body) is not published again:
    /// its place in the answer holds the earlier id.
    pub async fn publish_batch(
        &self,
        queue: &str,
        entries: Vec<BatchEntry>,
    ) -> Result<Vec<PublishedMessage>, PublishError> {
        let bytes: usize = entries.iter().map(|e| e.message.body.len()).sum();
        if entries.len() > BATCH_MESSAGES_MAX || bytes > BATCH_BYTES_MAX {
            return Err(PublishError::BatchTooLarge {
                messages: entries.len(),
                bytes,
            });
        }
        self.publish_entries(queue, entries).await
    }

    async fn publish_entries(
        &self,
        queue: &str,
        mut entries: Vec<BatchEntry>,
    ) -> Result<Vec<PublishedMessage>, PublishError> {
        check_entries(&entries)?;
        let now = self.now_ms();
        for e in &mut entries {
            e.message.deliver_at = due_time(e.message.deliver_at, now)?;
        }
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.publish_now(&queue, entries).await }).await
    }

    async fn publish_now(
        &self,
        queue: &str,
        entries: Vec<BatchEntry>,
    ) -> Result<Vec<PublishedMessage>, PublishError> {
        let q = self.inner.registry.get(queue)?;
        // Most publishes name no parent by id: they take no lock for it.
        let names_ids = entries
            .iter()
            .any(|e| e.parents.iter().any(|p| matches!(p, BatchParent::Id(_))));
        let foreign = if names_ids {
            let number = q.lock().number();
            self.check_foreign_parents(number, &entries)?
        } else {
            IdSet::default()
        };
        let change = self.inner.journal.change().await;
        let _order = q.order.read().await;
        let now = self.now_ms();
        let (reservation, records, answers) = {
            let mut st = q.lock();
            let reserved = st.reserve_with(&entries, now, &foreign)?;
            let records = reserved.records(st.number(), &entries, now);
            let answers = reserved.answers.clone();
            let reservation = Reservation {
                queue: &q,
                reserved: Some(reserved),
            };
            (reservation, records, answers)
        };
        if records.is_empty() {
            // Every entry repeated an earlier publish.
            reservation.abort();
            return Ok(answers);
        }
        let as_records: Vec<Record> = records.iter().cloned().map(Record::Published).collect();
        match change.append(&as_records).await {
            Ok(locations) => {
                // Kept before the messages are released to dispatchers, outside the lock.
                for p in &records {
                    self.inner.recent.insert(p);
                }
                reservation.commit(&records, &locations);
                for p in &records {
                    self.tell(|| super::FeedEvent {
                        queue: std::sync::Arc::from(queue),
                        message: p.id,
                        at_ms: p.published_at_ms,
                        what: super::Happened::Published,
                    });
                }
                if !foreign.is_empty() {
                    self.watch_foreign_parents(q.lock().number(), &records);
                }
                if records.iter().any(|p| p.attributes.deliver_at_ms.is_some()) {
                    self.inner.due_changed.notify_one();
                }
                self.inner
                    .totals
                    .published
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                Ok(answers)
            }
            Err(e) => {
                reservation.abort();
                Err(e.into())
            }
        }
    }
}

impl Space {
    /// The parents entries name in other queues of the Space, each checked: its queue exists
    /// and issued it (it may since be finished or removed). An id names its queue, so no
    /// lookup by name is needed. Checked before the queue's lock is taken: a queue's lock is
    /// never held while another's is taken, and an id once issued stays issued.
    fn check_foreign_parents(
        &self,
        number: QueueNumber,
        entries: &[BatchEntry],
    ) -> Result<IdSet<MessageId>, PublishError> {
        let mut foreign = IdSet::default();
        for e in entries {
            for p in &e.parents {
                let BatchParent::Id(id) = *p else { continue };
                let Some((n, _)) = crate::ids::parts(id).filter(|(n, _)| *n != number) else {
                    continue;
                };
                let issued = self.inner.registry.by_number(n).is_some_and(|other| {
                    let st = other.lock();
                    !st.is_deleted() && st.issued(id)
                });
                if !issued {
                    return Err(PublishError::UnknownParent(id));
                }
                foreign.insert(id);
            }
        }
        Ok(foreign)
    }

    /// The messages just published in queue `number` name parents in other queues: those
    /// queues pass on the parents' changes from now on, and the settler looks once at where
    /// each stands already (it may have finished before the child was in).
    fn watch_foreign_parents(&self, number: QueueNumber, records: &[Published]) {
        let mut seen = IdSet::default();
        for p in records.iter().flat_map(|r| r.parents.iter().copied()) {
            let Some((n, _)) = crate::ids::parts(p).filter(|(n, _)| *n != number) else {
                continue;
            };
            if !seen.insert(p) {
                continue;
            }
            if let Some(other) = self.inner.registry.by_number(n) {
                other.lock().watch(p, number);
            }
            self.inner.settler.notify(p, number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_content_type;

    #[test]
    fn content_types_are_what_a_header_can_carry() {
        assert!(is_content_type("application/json; charset=utf-8"));
        assert!(is_content_type(
            &"a".repeat(crate::limits::CONTENT_TYPE_BYTES_MAX)
        ));
        assert!(!is_content_type(
            &"a".repeat(crate::limits::CONTENT_TYPE_BYTES_MAX + 1)
        ));
        assert!(!is_content_type("text/plain\r\nX-Injected: 1"));
        assert!(!is_content_type("text/plain\u{7f}"));
        assert!(!is_content_type("text/plain; name=\u{e9}"));
    }
}
