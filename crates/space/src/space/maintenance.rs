//! Keeping the log and memory small: retention (the sweeper), checkpoints, and reclaiming the
//! segments before the latest checkpoint (the reclaimer).
//!
//! Retention is a change like any other: the sweeper appends an `Expired` record naming the
//! finished messages whose time is over, then removes them, so that replay removes them at the
//! same point of the log. Reclaiming decides what is live with every change held off and syncs
//! the log before any segment goes ([`super::journal::Settled`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use storage::{Location, Record};

use super::{Space, wake_all};
use crate::error::ReclaimError;
use crate::limits::{
    CHECKPOINT_PART_BYTES, EXPIRED_PER_RECORD_MAX, RECLAIM_SEGMENTS_MIN, RELEASED_PER_RECORD_MAX,
};
use crate::model::{MessageId, QueueNumber};
use crate::types::ReclaimReport;

/// Records a sweep appends per queue at most; what is left waits for the next sweep.
const EXPIRED_RECORDS_PER_SWEEP: usize = 16;

/// What the reclaimer remembers between runs.
#[derive(Default)]
pub(super) struct Maintenance {
    /// Log bytes written (since open) at the last checkpoint.
    bytes_at_checkpoint: u64,
    /// Size of the last snapshot: checkpoints are spaced so that they cost no more than the
    /// log they let go of.
    snapshot_bytes: u64,
    /// Log bytes written when the reclaimer last looked.
    bytes_at_last_look: u64,
}

/// What is live in the segments before a checkpoint, decided with every change held off.
struct Liveness {
    /// Bytes of held messages, per segment.
    bytes: HashMap<u32, u64>,
    /// The records of held messages in the segments to compact.
    compact: HashMap<u32, HashSet<Location>>,
}

impl Space {
    /// Writes a checkpoint, then reclaims the segments before it: deletes those that hold no
    /// message still in memory, and compacts those less than half full of such messages
    /// (copies them forward, repoints the index, deletes the segment).
    pub async fn reclaim(&self) -> Result<ReclaimReport, ReclaimError> {
        let mut m = self.inner.maintenance.lock().await;
        let mut report = ReclaimReport::default();
        let checkpoint = self
            .inner
            .journal
            .checkpoint(|| {
                let queues = self.inner.registry.all();
                let guards: Vec<_> = queues.iter().map(|q| q.lock()).collect();
                let counters = self.inner.registry.counters();
                let snapshot = crate::snapshot::encode(&counters, guards.iter().map(|g| &**g));
                report.snapshot_bytes = snapshot.len() as u64;
                crate::snapshot::parts(snapshot, CHECKPOINT_PART_BYTES)
            })
            .await?;
        m.snapshot_bytes = report.snapshot_bytes;
        m.bytes_at_checkpoint = self.inner.journal.stats().bytes;

        let segments: Vec<_> = self
            .inner
            .journal
            .segments()
            .into_iter()
            .filter(|s| s.id < checkpoint.segment)
            .collect();
        let sizes: HashMap<u32, u64> = segments.iter().map(|s| (s.id, s.bytes)).collect();
        let settled = self.inner.journal.settled(|| self.liveness(&sizes)).await?;
        for segment in segments {
            let live_bytes = settled.bytes.get(&segment.id).copied().unwrap_or(0);
            if live_bytes == 0 {
                self.inner.journal.delete_segment(segment.id, &settled)?;
                report.segments_deleted += 1;
            } else if let Some(live) = settled.compact.get(&segment.id) {
                report.records_moved += self.compact(segment.id, live, &settled).await?;
                report.segments_compacted += 1;
            }
        }
        Ok(report)
    }

    /// Bytes of held messages per segment, and the records of those in segments less than
    /// half live (to compact). Call with changes held off.
    fn liveness(&self, sizes: &HashMap<u32, u64>) -> Liveness {
        let bytes = self.live_bytes_per_segment();
        let to_compact: HashSet<u32> = sizes
            .iter()
            .filter(|(id, size)| {
                let live = bytes.get(id).copied().unwrap_or(0);
                live > 0 && live * 2 < **size
            })
            .map(|(id, _)| *id)
            .collect();
        let mut compact: HashMap<u32, HashSet<Location>> = HashMap::new();
        if !to_compact.is_empty() {
            for q in self.inner.registry.all() {
                for at in q.lock().locations() {
                    if to_compact.contains(&at.segment) {
                        compact.entry(at.segment).or_default().insert(at);
                    }
                }
            }
        }
        Liveness { bytes, compact }
    }

    /// Copies the live messages of a segment forward, repoints them, deletes the segment.
    async fn compact(
        &self,
        segment: u32,
        live: &HashSet<Location>,
        settled: &super::journal::Settled<Liveness>,
    ) -> Result<u64, ReclaimError> {
        let mut kept: Vec<(QueueNumber, MessageId)> = Vec::new();
        let moves = self
            .inner
            .journal
            .copy_live_records(segment, settled, |at, record| {
                let keep = live.contains(&at) && matches!(record, Record::Published(_));
                if keep && let Record::Published(p) = record {
                    kept.push((p.queue, p.id));
                }
                keep
            })
            .await?;
        for ((queue, id), m) in kept.iter().zip(&moves) {
            if let Some(q) = self.inner.registry.by_number(*queue) {
                q.lock().relocate(*id, m.from, m.to);
            }
        }
        self.inner.journal.delete_segment(segment, settled)?;
        Ok(moves.len() as u64)
    }

    /// Whether enough log has piled up since the last checkpoint to make one worth it.
    async fn reclaim_due(&self) -> bool {
        if self.inner.journal.storage_full() {
            // Whatever can go must go now: nothing else can be written meanwhile.
            return self.reclaimable_bytes() > 0;
        }
        let mut m = self.inner.maintenance.lock().await;
        let written_total = self.inner.journal.stats().bytes;
        // Nothing written since the last look: an idle broker does no work here.
        if written_total == m.bytes_at_last_look {
            return false;
        }
        m.bytes_at_last_look = written_total;
        let written = written_total.saturating_sub(m.bytes_at_checkpoint);
        let cp_segment = self
            .inner
            .journal
            .checkpoint_location()
            .map_or(0, |c| c.segment);
        let segments = self.inner.journal.segments();
        let sealed_since = segments
            .iter()
            .filter(|s| s.id >= cp_segment)
            .count()
            .saturating_sub(1);
        if sealed_since < RECLAIM_SEGMENTS_MIN || written < 2 * m.snapshot_bytes {
            return false;
        }
        // Worth a snapshot only if it lets at least one segment's worth of disk go: a backlog
        // that is all still owed gains nothing from one.
        let segment_bytes = segments.first().map_or(u64::MAX, |s| s.bytes);
        self.reclaimable_bytes() >= segment_bytes
    }

    /// Bytes of sealed segments that no held message needs.
    fn reclaimable_bytes(&self) -> u64 {
        let segments = self.inner.journal.segments();
        let live = self.live_bytes_per_segment();
        let active = segments.last().map_or(0, |s| s.id);
        segments
            .iter()
            .filter(|s| s.id < active)
            .map(|s| {
                s.bytes
                    .saturating_sub(live.get(&s.id).copied().unwrap_or(0))
            })
            .sum()
    }

    /// Bytes of messages still held, per segment.
    fn live_bytes_per_segment(&self) -> HashMap<u32, u64> {
        let mut live: HashMap<u32, u64> = HashMap::new();
        for q in self.inner.registry.all() {
            for at in q.lock().locations() {
                *live.entry(at.segment).or_default() += u64::from(at.len);
            }
        }
        live
    }

    pub(super) fn spawn_reclaimer(&self, interval: Duration) {
        self.spawn_periodic(interval, |space| async move {
            if space.reclaim_due().await {
                match space.reclaim().await {
                    Ok(r) => tracing::info!(
                        snapshot_bytes = r.snapshot_bytes,
                        deleted = r.segments_deleted,
                        compacted = r.segments_compacted,
                        moved = r.records_moved,
                        "reclaimed log segments"
                    ),
                    Err(e) => tracing::warn!(error = %e, "reclaiming log segments failed"),
                }
            }
        });
    }

    /// Releases scheduled messages as they fall due: sleeps until the earliest is due (at most
    /// [`RELEASE_CHECK_MAX_MS`](crate::limits::RELEASE_CHECK_MAX_MS)), or until a publish of
    /// one says it may be earlier. No task or timer per message.
    /// Like the periodic tasks, it holds the Space only while it works: a Space shut down and
    /// dropped closes its log (and lets go of the directory's lock) whatever it waits for.
    pub(super) fn spawn_releaser(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let due_changed = self.inner.due_changed.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let most = Duration::from_millis(crate::limits::RELEASE_CHECK_MAX_MS);
            loop {
                let published = due_changed.notified();
                tokio::pin!(published);
                published.as_mut().enable();
                let Some(inner) = weak.upgrade() else { return };
                let space = Space { inner };
                let (next, stuck) = space.release_due().await;
                let now = space.now_ms();
                drop(space);
                // A release that could not be recorded is tried again after the longest wait,
                // not at once: the log refuses writes for a while (a full disk) or for good.
                let wait = match next {
                    _ if stuck => most,
                    None => most,
                    Some(at) => Duration::from_millis(at.saturating_sub(now)).min(most),
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = published => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// Releases every scheduled message due now, as `Released` records; when the next one is
    /// due, and whether a release could not be recorded.
    pub(super) async fn release_due(&self) -> (Option<u64>, bool) {
        let now = self.now_ms();
        let mut next: Option<u64> = None;
        let mut stuck = false;
        for q in self.inner.registry.all() {
            loop {
                if q.lock().next_due_ms().is_none_or(|at| at > now) {
                    break;
                }
                let change = self.inner.journal.change().await;
                // A release may finish a message (one no subscriber takes), which decides what
                // a child published meanwhile sees of it.
                let _order = q.order.write().await;
                let (number, due) = {
                    let mut st = q.lock();
                    if st.is_deleted() {
                        break;
                    }
                    (st.number(), st.take_due(now, RELEASED_PER_RECORD_MAX))
                };
                if due.is_empty() {
                    break;
                }
                let ids: Vec<MessageId> = due.iter().map(|(_, id)| *id).collect();
                let record = Record::Released {
                    queue: number,
                    messages: ids.clone(),
                    released_at_ms: now,
                };
                // Lost in a crash, it is written again after the restart: the messages are
                // still due then, and go once.
                if let Err(e) = change.append_lazy(&[record]).await {
                    tracing::warn!(error = %e, "could not record messages falling due; they wait");
                    q.lock().put_back_due(&due);
                    stuck = true;
                    break;
                }
                let mut wake = Vec::new();
                q.lock().apply_released(&ids, now, &mut wake);
                wake_all(wake);
            }
            if let Some(at) = q.lock().next_due_ms() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        (next, stuck)
    }

    /// Retention and idempotency windows, every `interval` (`SpaceConfig::sweep_interval`).
    pub(super) fn spawn_sweeper(&self, interval: Duration) {
        self.spawn_periodic(interval, |space| async move { space.sweep().await });
    }

    /// Removes what retention lets go of, as `Expired` records; forgets idempotency keys whose
    /// window is over; releases scheduled messages that are due (the releaser does so too, at
    /// their due time).
    pub async fn sweep(&self) {
        self.release_due().await;
        let now = self.now_ms();
        for q in self.inner.registry.all() {
            q.lock().expire_idempotency_keys(now);
            for _ in 0..EXPIRED_RECORDS_PER_SWEEP {
                if q.lock().due_for_expiry(now, 1).is_empty() {
                    break;
                }
                let change = self.inner.journal.change().await;
                // Removing a parent decides what its children published meanwhile see.
                let _order = q.order.write().await;
                let (number, due) = {
                    let st = q.lock();
                    if st.is_deleted() {
                        break;
                    }
                    (st.number(), st.due_for_expiry(now, EXPIRED_PER_RECORD_MAX))
                };
                if due.is_empty() {
                    break;
                }
                let record = Record::Expired {
                    queue: number,
                    messages: due.clone(),
                    expired_at_ms: now,
                };
                if let Err(e) = change.append_lazy_freeing(&[record]).await {
                    tracing::warn!(error = %e, "could not record expired messages; retention waits");
                    break;
                }
                let mut wake = Vec::new();
                q.lock().apply_expired(&due, now, &mut wake);
                wake_all(wake);
            }
        }
    }
}
