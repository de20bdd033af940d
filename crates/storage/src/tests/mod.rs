//! Tests of the whole log through its public API, on real files and on the simulated disk,
//! one file per concern; the helpers they share are here.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::io::{Backend, FsBackend};
use crate::segment::segment_name;
use crate::sim::SimDisk;
use crate::*;

mod appends;
mod checkpoints;
mod damage;
mod durability;
mod seeds;

pub(crate) struct Opened {
    pub log: Log,
    pub replayed: Vec<Replayed>,
    pub report: RecoveryReport,
    pub checkpoint: Option<Checkpoint>,
}

pub(crate) fn open(backend: Arc<dyn Backend>, config: Config) -> Result<Opened, OpenError> {
    let mut recovery = Log::open(backend, config)?;
    let checkpoint = recovery.checkpoint().cloned();
    let replayed = recovery.by_ref().collect::<Result<Vec<_>, _>>()?;
    let (log, report) = recovery.finish()?;
    Ok(Opened {
        log,
        replayed,
        report,
        checkpoint,
    })
}

/// Opens the log in `dir` with `repair` on.
pub(super) fn open_repairing(dir: &tempfile::TempDir, config: Config) -> Result<Opened, OpenError> {
    open(
        fs(dir),
        Config {
            repair: true,
            ..config
        },
    )
}

/// Segments of 64 KiB: preallocating the default 64 MiB per test would only cost time.
pub(super) fn test_config() -> Config {
    Config {
        segment_bytes: 64 * 1024,
        ..Config::default()
    }
}

pub(super) fn small_segments() -> Config {
    Config {
        segment_bytes: crate::limits::SEGMENT_BYTES_MIN,
        ..Config::default()
    }
}

pub(super) fn message(i: u64, body_bytes: usize) -> Record {
    Record::Published(Published {
        queue: 1,
        id: Uuid::from_u128(u128::from(i) + 1),
        parents: (i > 0)
            .then(|| Uuid::from_u128(u128::from(i)))
            .into_iter()
            .collect(),
        content_type: "application/json".into(),
        published_at_ms: 1_700_000_000_000 + i,
        idempotency_key: None,
        fanout: vec![1, 2],
        attributes: Default::default(),
        body: Bytes::from(vec![(i % 251) as u8; body_bytes]),
    })
}

pub(super) fn records(replayed: &[Replayed]) -> Vec<Record> {
    replayed.iter().map(|r| r.record.clone()).collect()
}

pub(super) fn fs(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
    Arc::new(FsBackend::open(dir.path()).unwrap())
}
