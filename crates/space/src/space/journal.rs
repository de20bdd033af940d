//! The ack buffer and its writer task.

use std::sync::{Arc, Mutex};

use storage::{Ack, Record};
use tokio::sync::Notify;

use super::*;

/// Acks on their way to the log. A delivery hands its ack over and lets go of its
/// `max_in_flight` permit at once, instead of waiting for the log writer; one task appends
/// what has gathered, many acks per record. Nothing waits for them to be durable (losing one
/// in a crash only means a redelivery), but shutdown appends what is left.
#[derive(Default)]
pub(super) struct AckBuffer {
    pub(super) acks: Mutex<Vec<Ack>>,
    pub(super) gathered: Notify,
    /// Held while acks taken out are being appended: shutdown's last append waits for one
    /// under way, so that none is cut off by the log closing.
    pub(super) writing: tokio::sync::Mutex<()>,
}

impl AckBuffer {
    pub(super) fn push(&self, ack: Ack) {
        self.acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ack);
        self.gathered.notify_one();
    }

    pub(super) fn take(&self) -> Vec<Ack> {
        std::mem::take(
            &mut *self
                .acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Space {
    /// Appends the acks gathered in the [`AckBuffer`] so far.
    pub(super) async fn write_acks(&self) {
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
    pub(super) fn spawn_ack_writer(&self) {
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
}
