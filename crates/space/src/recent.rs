//! Bodies of the most recently published messages, kept in memory within a byte budget, so
//! that a delivery attempt does not read its message back from the log (a `pread`, a buffer
//! and a checksum per attempt) while the message is fresh, which under steady fan-out is
//! always. Oldest out first; a message not (or no longer) here is read from the log.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use storage::Published;

use crate::idhash::IdMap;
use crate::model::MessageId;

/// Bytes charged per entry on top of its body: map and queue slots, the content type.
const ENTRY_OVERHEAD_BYTES: usize = 160;
/// A body is kept only if it takes at most this fraction (1/N) of the budget: one large body
/// must not push out many small ones.
const BUDGET_SHARE_MAX: usize = 64;

/// What an attempt needs of a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecentBody {
    pub body: Bytes,
    pub content_type: String,
    pub event_type: Option<std::sync::Arc<str>>,
    pub parents: crate::model::Parents,
    pub published_at_ms: u64,
    /// Its W3C trace context (`traceparent`, `tracestate`), if it has one.
    pub trace: Option<(String, Option<String>)>,
}

/// The trace context a record carries.
pub(crate) fn trace_of(a: &storage::Attributes) -> Option<(String, Option<String>)> {
    a.traceparent.clone().map(|t| (t, a.tracestate.clone()))
}

pub(crate) struct RecentBodies {
    budget_bytes: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bodies: IdMap<MessageId, RecentBody>,
    /// Insertion order, with each entry's charge.
    order: VecDeque<(MessageId, usize)>,
    bytes: usize,
}

impl RecentBodies {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps a copy of a message just made durable. The body is copied: the caller's may be a
    /// slice of a larger network buffer, which keeping would pin. See [`BUDGET_SHARE_MAX`].
    pub fn insert(&self, p: &Published) {
        let event_type = p.attributes.event_type.as_deref();
        let charge = p.body.len()
            + p.content_type.len()
            + event_type.map_or(0, str::len)
            + ENTRY_OVERHEAD_BYTES;
        if charge > self.budget_bytes / BUDGET_SHARE_MAX {
            return;
        }
        let entry = RecentBody {
            body: Bytes::copy_from_slice(&p.body),
            content_type: p.content_type.clone(),
            event_type: event_type.map(std::sync::Arc::from),
            parents: crate::model::Parents::new(&p.parents).unwrap_or_default(),
            published_at_ms: p.published_at_ms,
            trace: trace_of(&p.attributes),
        };
        let mut st = self.lock();
        if st.bodies.insert(p.id, entry).is_none() {
            st.order.push_back((p.id, charge));
            st.bytes += charge;
        }
        while st.bytes > self.budget_bytes {
            let Some((old, old_charge)) = st.order.pop_front() else {
                break;
            };
            st.bodies.remove(&old);
            st.bytes -= old_charge;
        }
    }

    pub fn get(&self, id: MessageId) -> Option<RecentBody> {
        self.lock().bodies.get(&id).cloned()
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(n: u128, body: &[u8]) -> Published {
        Published {
            queue: 1,
            id: uuid::Uuid::from_u128(n),
            parents: Vec::new(),
            content_type: "text/plain".into(),
            published_at_ms: 7,
            idempotency_key: None,
            fanout: vec![],
            attributes: Default::default(),
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn the_oldest_leave_first_and_the_budget_holds() {
        let charge = 1000 + "text/plain".len() + ENTRY_OVERHEAD_BYTES;
        let recent = RecentBodies::new(charge * BUDGET_SHARE_MAX);
        for n in 0..100 {
            recent.insert(&published(n, &[b'x'; 1000]));
            assert!(recent.bytes() <= charge * BUDGET_SHARE_MAX);
        }
        assert_eq!(recent.get(uuid::Uuid::from_u128(35)), None);
        let kept = recent
            .get(uuid::Uuid::from_u128(36))
            .expect("among the newest 64");
        assert_eq!((kept.body.len(), kept.published_at_ms), (1000, 7));
        assert!(recent.get(uuid::Uuid::from_u128(99)).is_some());
    }

    #[test]
    fn a_body_too_large_for_its_share_is_not_kept() {
        let recent = RecentBodies::new(64 * 1024);
        recent.insert(&published(1, &[0; 2048]));
        assert_eq!(recent.get(uuid::Uuid::from_u128(1)), None);
        assert_eq!(recent.bytes(), 0);
    }
}
