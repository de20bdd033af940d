//! The inbox: the bounded queue between appenders and the writer thread, and the requests it
//! carries. Its order is the log's order.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::{Semaphore, oneshot};

use crate::error::AppendError;
use crate::frame::{Location, Unit};
use crate::limits::{ACKS_PER_RECORD_MAX, LAZY_SYNC_DELAY_MS};
use crate::record::Ack;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// When an append's waiter is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Once written (in the page cache). Synced later by any durable append, or within
    /// [`crate::limits::LAZY_SYNC_DELAY_MS`] (or the fsync interval).
    Written,
    /// As the fsync policy says: after fsync for `always`, after the write otherwise.
    Policy,
    /// After fsync, whatever the policy (compaction must not delete a segment before its copies
    /// are on disk).
    Synced,
}

pub(crate) type AppendReply = oneshot::Sender<Result<Vec<Location>, AppendError>>;

pub(crate) enum Request {
    Append {
        units: Vec<Unit>,
        wait: Wait,
        /// The records let space go: on a full disk they may use the reserve.
        frees: bool,
        reply: AppendReply,
    },
    /// Write the units (checkpoint parts), sync, then point the checkpoint file at the first.
    Checkpoint {
        units: Vec<Unit>,
        reply: AppendReply,
    },
    Sync {
        reply: oneshot::Sender<Result<(), AppendError>>,
    },
    /// Acks queued by [`Inbox::push_ack`], appended as one lazy `Acked` record. Takes no inbox
    /// slot: acks are queued synchronously, in the order their effects were applied.
    Acks(Vec<Ack>),
}

impl Request {
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Request::Append { units, .. } | Request::Checkpoint { units, .. } => {
                units.iter().map(|u| u.bytes.len()).sum()
            }
            Request::Sync { .. } => 0,
            Request::Acks(acks) => acks.len() * crate::record::ACK_BYTES,
        }
    }

    /// Whether the request holds one of the inbox's slots (see [`Inbox::submit`]).
    pub(crate) fn holds_slot(&self) -> bool {
        !matches!(self, Request::Acks(_))
    }
}

/// The bounded queue between appenders and the writer.
pub(crate) struct Inbox {
    pub(crate) state: Mutex<InboxState>,
    pub(crate) wake: Condvar,
    /// One permit per free slot: appenders wait here when the writer falls behind.
    pub(crate) slots: Semaphore,
}

pub(crate) struct InboxState {
    pub(crate) requests: VecDeque<Request>,
    pub(crate) closed: bool,
    /// How the writer sleeps on the condvar. Appenders notify only while it sleeps, which
    /// saves a futex call per append while it is busy.
    pub(crate) writer_waiting: WriterWait,
}

/// How the writer waits for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterWait {
    /// It is not waiting.
    Busy,
    /// Until woken: nothing written is waiting for a sync.
    Indefinitely,
    /// Until this instant at the latest, to sync what it wrote (and take what is queued).
    Until(std::time::Instant),
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Inbox {
        Inbox {
            state: Mutex::new(InboxState {
                requests: VecDeque::new(),
                closed: false,
                writer_waiting: WriterWait::Busy,
            }),
            wake: Condvar::new(),
            slots: Semaphore::new(capacity),
        }
    }

    /// Queues a request, waiting for a free slot if the inbox is full.
    pub(crate) async fn submit(&self, request: Request) -> Result<(), AppendError> {
        let permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| AppendError::Closed)?;
        permit.forget();
        let mut st = lock(&self.state);
        if st.closed {
            self.slots.add_permits(1);
            return Err(AppendError::Closed);
        }
        st.requests.push_back(request);
        let wake = st.writer_waiting != WriterWait::Busy;
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues an ack at once, behind every request already queued: the log then holds acks in
    /// the order they were queued relative to every other append. Consecutive acks share one
    /// request (and one record) of up to [`ACKS_PER_RECORD_MAX`]. Never waits: acks are small
    /// and come only from deliveries, which the broker bounds.
    ///
    /// Wakes the writer only if it would otherwise sleep past [`LAZY_SYNC_DELAY_MS`]: an ack
    /// is lazy, and rides with the writer's next group (the next append, or the sync it is
    /// already due to make). Under load that saves a thread wake-up and a small write per ack.
    pub(crate) fn push_ack(&self, ack: Ack) -> Result<(), AppendError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(AppendError::Closed);
        }
        match st.requests.back_mut() {
            Some(Request::Acks(acks)) if acks.len() < ACKS_PER_RECORD_MAX => acks.push(ack),
            _ => st.requests.push_back(Request::Acks(vec![ack])),
        }
        let wake = match st.writer_waiting {
            WriterWait::Busy => false,
            WriterWait::Indefinitely => true,
            WriterWait::Until(at) => {
                at > std::time::Instant::now()
                    + std::time::Duration::from_millis(LAZY_SYNC_DELAY_MS)
            }
        };
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Stops accepting; the writer drains what is queued, syncs and exits.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.slots.close();
        self.wake.notify_all();
    }
}
