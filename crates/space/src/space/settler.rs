//! The settler: the one writer of what a queue learns of parents in other queues.
//!
//! A child may name a parent in another queue of the Space. Its queue keeps what it last
//! learned of that parent (open, delivered, dead, gone), and only a `ParentSettled` record
//! changes it: the settler reads where the parent stands in its own queue, and if the child's
//! queue does not know it yet, appends the record (after everything that changed the parent,
//! since memory never runs ahead of the log) and applies it. Replay applies the same records
//! at the same points of the log, so every queue sees its foreign parents change as it did
//! live, whatever happened in between in the parent's queue.
//!
//! The settler is told to look when a watched message changes (its queue passes the change on)
//! and when a child naming a foreign parent is published (the parent may have finished
//! before). At start it looks at every foreign parent once: a change that happened before a
//! crash, and was not settled yet, is settled then.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use storage::Record;
use tokio::sync::mpsc;

use super::{Inner, Space, wake_all};
use crate::error::JournalError;
use crate::model::{MessageId, ParentState, QueueNumber};
use crate::queue::{ParentChanged, SettlerHandle};

/// Where changes of watched parents are sent, and how many the settler has not looked at.
pub(crate) struct Settler {
    handle: SettlerHandle,
    pending: Arc<AtomicUsize>,
}

impl Settler {
    pub fn new() -> (Settler, mpsc::UnboundedReceiver<ParentChanged>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let handle = SettlerHandle::new(tx, pending.clone());
        (Settler { handle, pending }, rx)
    }

    /// What a queue passes its watched messages' changes to.
    pub fn sender(&self) -> SettlerHandle {
        self.handle.clone()
    }

    /// Asks the settler to look at `parent` for its children in queue `children_in`.
    pub fn notify(&self, parent: MessageId, children_in: QueueNumber) {
        self.handle.send(ParentChanged {
            parent,
            children_in: vec![children_in],
        });
    }

    /// Changes passed on that the settler has not finished looking at.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

impl Space {
    /// Every queue passes its watched messages' changes to the settler from now on (and tells
    /// watchers of the deaths inside its transitions); each queue's foreign parents are
    /// watched by their own queues, and looked at once.
    pub(super) fn start_settler(&self, rx: mpsc::UnboundedReceiver<ParentChanged>) {
        let queues = self.inner.registry.all();
        for q in &queues {
            q.lock()
                .go_live(self.inner.settler.sender(), self.inner.feed.sender());
        }
        for q in &queues {
            let (number, foreign) = {
                let st = q.lock();
                (st.number(), st.foreign_parents())
            };
            for (parent, _) in foreign {
                let owner =
                    crate::ids::parts(parent).and_then(|(n, _)| self.inner.registry.by_number(n));
                if let Some(owner) = owner {
                    owner.lock().watch(parent, number);
                }
                self.inner.settler.notify(parent, number);
            }
        }
        let weak: std::sync::Weak<Inner> = Arc::downgrade(&self.inner);
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut rx = rx;
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    changed = rx.recv() => changed,
                    _ = shutdown.changed() => return,
                };
                let Some(changed) = changed else { return };
                let Some(inner) = weak.upgrade() else { return };
                let space = Space { inner };
                for children_in in &changed.children_in {
                    if let Err(e) = space.settle(changed.parent, *children_in).await {
                        tracing::warn!(parent = %changed.parent, error = %e, "could not record where a parent in another queue stands; its children there are settled at the next start");
                    }
                }
                space.inner.settler.pending.fetch_sub(1, Ordering::AcqRel);
            }
        });
    }

    /// Where `parent` stands in its own queue: a deleted queue's messages are gone.
    fn state_as_parent(&self, parent: MessageId) -> ParentState {
        crate::ids::parts(parent)
            .and_then(|(n, _)| self.inner.registry.by_number(n))
            .map_or(ParentState::Gone, |owner| {
                owner.lock().state_as_parent(parent)
            })
    }

    /// Makes queue `children_in` learn where `parent` stands, if it does not know yet.
    async fn settle(
        &self,
        parent: MessageId,
        children_in: QueueNumber,
    ) -> Result<(), JournalError> {
        let Some(q) = self.inner.registry.by_number(children_in) else {
            return Ok(());
        };
        let change = self.inner.journal.change().await;
        // Settling may release or kill children: it decides what a child published meanwhile
        // sees of its parent.
        let _order = q.order.write().await;
        let state = self.state_as_parent(parent);
        {
            let st = q.lock();
            if st.is_deleted() || st.known_parent_state(parent).is_none_or(|k| k == state) {
                return Ok(());
            }
        }
        let now = self.now_ms();
        change
            .append_lazy(&[Record::ParentSettled {
                queue: children_in,
                parent,
                state,
                settled_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock().apply_parent_settled(parent, state, now, &mut wake);
        wake_all(wake);
        Ok(())
    }
}
