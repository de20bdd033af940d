//! Checkpoints and reclaiming log segments.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use storage::Record;

use crate::error::SpaceError;
use crate::scheduler::MessageId;

use super::*;

#[derive(Default)]
pub(super) struct Maintenance {
    /// Log bytes written (since open) at the last checkpoint.
    pub(super) bytes_at_checkpoint: u64,
    /// Size of the last snapshot: checkpoints are spaced so that they cost no more than the
    /// log they let go of.
    pub(super) snapshot_bytes: u64,
    /// Log bytes written when the reclaimer last looked.
    pub(super) bytes_at_last_look: u64,
}

/// What [`Space::reclaim`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub snapshot_bytes: u64,
    pub segments_deleted: u32,
    pub segments_compacted: u32,
    pub records_moved: u64,
}

impl Space {
    /// Writes a checkpoint, then reclaims the segments before it: deletes those that hold no
    /// message still in memory, and compacts those less than half full of such messages
    /// (copies them forward, repoints the index, deletes the segment).
    pub async fn reclaim(&self) -> Result<ReclaimReport, SpaceError> {
        let mut m = self.inner.maintenance.lock().await;
        let mut report = ReclaimReport::default();
        let checkpoint = {
            // Nothing changes while the snapshot is taken and written: it matches the log at
            // the checkpoint's position.
            let _gate = self.inner.gate.write().await;
            let snapshot = {
                let queues: Vec<Arc<Queue>> = self.all_queues();
                let guards: Vec<_> = queues.iter().map(|q| q.lock()).collect();
                let counters = crate::snapshot::Counters {
                    next_queue_number: self.inner.next_queue_number.load(Ordering::Relaxed),
                    next_subscriber: self.inner.next_subscriber.load(Ordering::Relaxed),
                };
                crate::snapshot::encode(&counters, guards.iter().map(|g| &**g))
            };
            report.snapshot_bytes = snapshot.len() as u64;
            let parts = crate::snapshot::parts(snapshot, limits::CHECKPOINT_PART_BYTES);
            self.inner.log.checkpoint(parts).await?
        };
        m.snapshot_bytes = report.snapshot_bytes;
        m.bytes_at_checkpoint = self.inner.log.stats().bytes;

        // Liveness is taken with changes held off, so that every change already applied to
        // memory has had its record written; the sync then makes those records durable before
        // any segment goes (an ack applied in memory must not outlive a crash only as a gap).
        let live = {
            let _gate = self.inner.gate.write().await;
            self.live_bytes_per_segment()
        };
        self.inner.log.sync().await?;
        for segment in self.inner.log.segments() {
            if segment.id >= checkpoint.segment {
                continue;
            }
            let live_bytes = live.get(&segment.id).copied().unwrap_or(0);
            if live_bytes == 0 {
                self.inner
                    .log
                    .delete_segment(segment.id)
                    .map_err(reclaim_error)?;
                report.segments_deleted += 1;
            } else if live_bytes * 2 < segment.bytes {
                report.records_moved += self.compact(segment.id).await?;
                report.segments_compacted += 1;
            }
        }
        Ok(report)
    }

    /// Copies the live messages of a segment forward, repoints them, deletes the segment.
    pub(super) async fn compact(&self, segment: u32) -> Result<u64, SpaceError> {
        let mut kept: Vec<(MessageId, Arc<Queue>)> = Vec::new();
        let moves = self
            .inner
            .log
            .copy_live_records(segment, |at, record| {
                let Record::Published(p) = record else {
                    return false;
                };
                let Ok(q) = self.queue(&p.queue) else {
                    return false;
                };
                let here = q.lock().sched.meta(p.id).is_some_and(|m| m.location == at);
                if here {
                    kept.push((p.id, q));
                }
                here
            })
            .await
            .map_err(reclaim_error)?;
        for ((id, q), m) in kept.iter().zip(&moves) {
            if let Some(meta) = q.lock().sched.meta_mut(*id)
                && meta.location == m.from
            {
                meta.location = m.to;
            }
        }
        self.inner
            .log
            .delete_segment(segment)
            .map_err(reclaim_error)?;
        Ok(moves.len() as u64)
    }

    /// Whether enough log has piled up since the last checkpoint to make one worth it.
    pub(super) async fn reclaim_due(&self) -> bool {
        let mut m = self.inner.maintenance.lock().await;
        let written_total = self.inner.log.stats().bytes;
        // Nothing written since the last look: an idle broker does no work here.
        if written_total == m.bytes_at_last_look {
            return false;
        }
        m.bytes_at_last_look = written_total;
        let written = written_total.saturating_sub(m.bytes_at_checkpoint);
        let cp_segment = self
            .inner
            .log
            .checkpoint_location()
            .map_or(0, |c| c.segment);
        let segments = self.inner.log.segments();
        let sealed_since = segments
            .iter()
            .filter(|s| s.id >= cp_segment)
            .count()
            .saturating_sub(1);
        if sealed_since < limits::RECLAIM_SEGMENTS_MIN || written < 2 * m.snapshot_bytes {
            return false;
        }
        // Worth a snapshot only if it lets at least one segment's worth of disk go: a backlog
        // that is all still owed gains nothing from one.
        let live = self.live_bytes_per_segment();
        let active = segments.last().map_or(0, |s| s.id);
        let reclaimable: u64 = segments
            .iter()
            .filter(|s| s.id < active)
            .map(|s| {
                s.bytes
                    .saturating_sub(live.get(&s.id).copied().unwrap_or(0))
            })
            .sum();
        let segment_bytes = segments.first().map_or(u64::MAX, |s| s.bytes);
        reclaimable >= segment_bytes
    }

    /// Bytes of messages still held, per segment.
    pub(super) fn live_bytes_per_segment(&self) -> HashMap<u32, u64> {
        let mut live: HashMap<u32, u64> = HashMap::new();
        for q in self.all_queues() {
            let st = q.lock();
            for (_, _, meta) in st.sched.iter_from(None) {
                *live.entry(meta.location.segment).or_default() += u64::from(meta.location.len);
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
}

pub(super) fn reclaim_error(e: storage::ReclaimError) -> SpaceError {
    match e {
        storage::ReclaimError::Append(a) => a.into(),
        storage::ReclaimError::Read(r) => SpaceError::Read(r),
        other => SpaceError::Storage(other.to_string()),
    }
}
