//! Property test: the log against an in-memory model, on a simulated disk that keeps written
//! and durable bytes apart and crashes (power loss) at random points.
//!
//! After every reopen the recovered records must be a prefix of what was written, in order,
//! that (1) contains every record whose append was acknowledged as durable, (2) never splits an
//! atomic append, and (3) invents nothing. Every recovered location must read back its record.
//! Failing cases print the seed and the operations; proptest replays them from
//! `proptest-regressions/`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use storage::sim::SimDisk;
use storage::{AppendError, Config, FsyncPolicy, Log, Published, Record};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    /// Append `records` records atomically; `lazy` appends do not wait for an fsync.
    Append {
        records: usize,
        body: usize,
        lazy: bool,
    },
    /// The write of the next append fails after writing part of it (disk full).
    AppendFailing {
        body: usize,
    },
    /// The next fsync fails: the log refuses appends until reopened.
    FailNextSync,
    Checkpoint {
        parts: usize,
    },
    /// Power loss, then reopen.
    Crash,
    /// Clean close, then reopen.
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1usize..4, 0usize..1500, any::<bool>())
            .prop_map(|(records, body, lazy)| Op::Append { records, body, lazy }),
        1 => (0usize..1500).prop_map(|body| Op::AppendFailing { body }),
        1 => Just(Op::FailNextSync),
        1 => (0usize..3).prop_map(|parts| Op::Checkpoint { parts }),
        2 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn policy_strategy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        4 => Just(FsyncPolicy::Always),
        1 => Just(FsyncPolicy::Interval(Duration::from_millis(2))),
        1 => Just(FsyncPolicy::Never),
    ]
}

/// One record the model knows was written (in the page cache, at least).
#[derive(Debug, Clone)]
struct Entry {
    record: Record,
    /// Records of one append share a group: recovered together or not at all.
    group: u64,
}

struct Model {
    /// Records written since the recovered checkpoint, in log order.
    entries: Vec<Entry>,
    /// How many leading entries are known durable.
    durable: usize,
    checkpoint: Option<Vec<Bytes>>,
    poisoned: bool,
    /// A sync failure was injected and may fire at any later sync (a roll's, a background
    /// one), poisoning the log.
    sync_fault_armed: bool,
    next_id: u128,
    next_group: u64,
}

impl Model {
    fn record(&mut self, body: usize) -> Record {
        self.next_id += 1;
        Record::Published(Published {
            queue: 1,
            id: Uuid::from_u128(self.next_id),
            parents: Vec::new(),
            content_type: "application/octet-stream".into(),
            published_at_ms: self.next_id as u64,
            idempotency_key: None,
            fanout: vec![1],
            attributes: Default::default(),
            body: Bytes::from(vec![(self.next_id % 256) as u8; body]),
        })
    }
}

fn config(fsync: FsyncPolicy, preallocate: bool) -> Config {
    Config {
        segment_bytes: storage::limits::SEGMENT_BYTES_MIN,
        fsync,
        preallocate,
        ..Config::default()
    }
}

/// Opens the log and checks recovery against the model; the model then holds what survived.
fn reopen(disk: &SimDisk, setup: Setup, model: &mut Model) -> Result<Log, TestCaseError> {
    let mut recovery = Log::open(
        Arc::new(disk.clone()),
        config(setup.fsync, setup.preallocate),
    )
    .map_err(|e| TestCaseError::fail(format!("open failed: {e}")))?;
    let checkpoint = recovery.checkpoint().map(|c| c.parts.clone());
    prop_assert_eq!(
        &checkpoint,
        &model.checkpoint,
        "recovered the wrong checkpoint"
    );
    let replayed: Vec<_> = recovery
        .by_ref()
        .collect::<Result<_, _>>()
        .map_err(|e| TestCaseError::fail(format!("replay failed: {e}")))?;
    let (log, _report) = recovery
        .finish()
        .map_err(|e| TestCaseError::fail(format!("finish failed: {e}")))?;

    let n = replayed.len();
    prop_assert!(
        n <= model.entries.len(),
        "recovered {} records, only {} were written",
        n,
        model.entries.len()
    );
    for (i, r) in replayed.iter().enumerate() {
        prop_assert_eq!(&r.record, &model.entries[i].record, "record {} differs", i);
        prop_assert_eq!(r.relocated_from, None);
        let read = log
            .read(r.location)
            .map_err(|e| TestCaseError::fail(format!("read {:?}: {e}", r.location)))?;
        prop_assert_eq!(&read, &r.record);
    }
    prop_assert!(
        n >= model.durable,
        "lost acknowledged records: recovered {}, {} were durable",
        n,
        model.durable
    );
    if n > 0 && n < model.entries.len() {
        prop_assert_ne!(
            model.entries[n - 1].group,
            model.entries[n].group,
            "an atomic append was split"
        );
    }
    model.entries.truncate(n);
    // Recovery syncs what it replayed.
    model.durable = n;
    model.poisoned = false;
    model.sync_fault_armed = false;
    Ok(log)
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    fsync: FsyncPolicy,
    preallocate: bool,
}

fn run(seed: u64, setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fsync = setup.fsync;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let disk = SimDisk::new(seed);
    let mut model = Model {
        entries: Vec::new(),
        durable: 0,
        checkpoint: None,
        poisoned: false,
        sync_fault_armed: false,
        next_id: 0,
        next_group: 0,
    };
    let mut log = reopen(&disk, setup, &mut model)?;
    for op in ops {
        match op {
            Op::Append {
                records,
                body,
                lazy,
            } => {
                let batch: Vec<Record> = (0..records).map(|_| model.record(body)).collect();
                let result = rt.block_on(async {
                    if lazy {
                        log.append_lazy(&batch).await
                    } else {
                        log.append(&batch).await
                    }
                });
                model.next_group += 1;
                let group = model.next_group;
                match result {
                    Ok(locations) => {
                        prop_assert!(!model.poisoned, "a poisoned log accepted an append");
                        prop_assert_eq!(locations.len(), batch.len());
                        model
                            .entries
                            .extend(batch.into_iter().map(|record| Entry { record, group }));
                        if !lazy && fsync == FsyncPolicy::Always {
                            model.durable = model.entries.len();
                        }
                    }
                    Err(AppendError::Poisoned(_)) => {
                        // Written (maybe) but not synced: it may or may not come back.
                        if !model.poisoned {
                            model
                                .entries
                                .extend(batch.into_iter().map(|record| Entry { record, group }));
                        }
                        model.poisoned = true;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("append failed: {e}"))),
                }
            }
            Op::AppendFailing { body } => {
                let r = model.record(body);
                disk.fail_next_write();
                let result = rt.block_on(log.append(&[r]));
                match result {
                    Err(AppendError::NoSpace(_)) => {}
                    // A roll's sync met the injected fault before this append was written.
                    Err(AppendError::Poisoned(_)) if model.poisoned || model.sync_fault_armed => {
                        model.poisoned = true;
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "expected a disk-full error, got {other:?}"
                        )));
                    }
                }
                // Nothing of it may ever be recovered: it is not in the model.
                disk.clear_faults();
            }
            Op::FailNextSync => {
                disk.fail_next_sync();
                model.sync_fault_armed = true;
            }
            Op::Checkpoint { parts } => {
                let state: Vec<Bytes> = (0..parts)
                    .map(|i| Bytes::from(vec![i as u8; 700 * (i + 1)]))
                    .collect();
                match rt.block_on(log.checkpoint(state.clone())) {
                    Ok(_) => {
                        prop_assert!(!model.poisoned);
                        model.checkpoint = Some(if state.is_empty() {
                            vec![Bytes::new()]
                        } else {
                            state
                        });
                        model.entries.clear();
                        model.durable = 0;
                    }
                    Err(AppendError::Poisoned(_)) => model.poisoned = true,
                    Err(e) => return Err(TestCaseError::fail(format!("checkpoint failed: {e}"))),
                }
            }
            Op::Crash => {
                disk.crash();
                drop(log);
                disk.restart();
                log = reopen(&disk, setup, &mut model)?;
            }
            Op::Reopen => {
                log.close();
                disk.clear_faults();
                log = reopen(&disk, setup, &mut model)?;
            }
        }
    }
    disk.crash();
    drop(log);
    disk.restart();
    reopen(&disk, setup, &mut model)?.close();
    Ok(())
}

proptest! {
    // CI runs 192 cases; PROPTEST_CASES runs more (scripts/soak.sh).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(192),
        ..ProptestConfig::default()
    })]

    #[test]
    fn acknowledged_records_survive_random_crashes(
        seed in any::<u64>(),
        fsync in policy_strategy(),
        preallocate in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(), 1..40),
    ) {
        run(seed, Setup { fsync, preallocate }, ops)?;
    }
}
