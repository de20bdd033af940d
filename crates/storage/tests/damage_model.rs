//! Property test: a flipped bit anywhere in a log at rest is either reported as corruption or
//! costs nothing. Never silent loss.
//!
//! A log of random records (several segments, sometimes a checkpoint) is closed cleanly; one
//! bit of one of its files is flipped; then:
//! - a normal open either fails (corruption, with file and offset) or replays every record, in
//!   order (damage past the data, such as in the zeros of a preallocated segment, is cut as a
//!   torn tail that held nothing);
//! - an open with `repair` either fails (a damaged checkpoint cannot be rebuilt) or keeps every
//!   record it can, in order, and reports a lost range whenever a record is missing; the log
//!   it leaves opens normally with the same records.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use storage::sim::SimDisk;
use storage::{Config, Log, OpenError, Published, Record, RecoveryReport};
use uuid::Uuid;

fn record(i: u64, body: usize) -> Record {
    Record::Published(Published {
        queue: 3,
        id: Uuid::from_u128(u128::from(i) + 1),
        parents: Vec::new(),
        content_type: "application/octet-stream".into(),
        published_at_ms: 1_700_000_000_000 + i,
        idempotency_key: None,
        fanout: vec![1, 2],
        attributes: Default::default(),
        body: Bytes::from(vec![(i % 251) as u8; body]),
    })
}

fn config(repair: bool, preallocate: bool) -> Config {
    Config {
        segment_bytes: storage::limits::SEGMENT_BYTES_MIN,
        repair,
        preallocate,
        ..Config::default()
    }
}

fn open(disk: &SimDisk, config: Config) -> Result<(Log, Vec<Record>, RecoveryReport), OpenError> {
    let mut recovery = Log::open(Arc::new(disk.clone()), config)?;
    let replayed: Vec<Record> = recovery
        .by_ref()
        .map(|r| r.map(|r| r.record))
        .collect::<Result<_, _>>()?;
    let (log, report) = recovery.finish()?;
    Ok((log, replayed, report))
}

/// Whether `got` is `all` with some records left out, order kept.
fn is_subsequence(got: &[Record], all: &[Record]) -> bool {
    let mut rest = all.iter();
    got.iter().all(|g| rest.any(|a| a == g))
}

#[derive(Debug, Clone)]
struct Case {
    /// Body sizes of the records, appended one per durable append.
    bodies: Vec<usize>,
    /// A checkpoint after this many records, if any.
    checkpoint_after: Option<usize>,
    preallocate: bool,
    /// Which file (index into the sorted names), byte and bit to flip.
    file: proptest::sample::Index,
    byte: proptest::sample::Index,
    bit: u8,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(0usize..900, 1..40),
        proptest::option::of(0usize..40),
        any::<bool>(),
        any::<proptest::sample::Index>(),
        any::<proptest::sample::Index>(),
        0u8..8,
    )
        .prop_map(
            |(bodies, checkpoint_after, preallocate, file, byte, bit)| Case {
                bodies,
                checkpoint_after,
                preallocate,
                file,
                byte,
                bit,
            },
        )
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let disk = SimDisk::new(1);
    let (log, _, _) = open(&disk, config(false, case.preallocate)).unwrap();
    let mut all = Vec::new();
    for (i, body) in case.bodies.iter().enumerate() {
        if case.checkpoint_after == Some(i) {
            rt.block_on(log.checkpoint(vec![Bytes::from_static(b"state")]))
                .unwrap();
            all.clear();
        }
        let r = record(i as u64, *body);
        rt.block_on(log.append(std::slice::from_ref(&r))).unwrap();
        all.push(r);
    }
    log.close();

    let names: Vec<String> = disk
        .file_names()
        .into_iter()
        .filter(|n| n.ends_with(".log") || n == "CHECKPOINT")
        .collect();
    let name = &names[case.file.index(names.len())];
    let mut content = disk.read_file(name).unwrap();
    if content.is_empty() {
        return Ok(());
    }
    let at = case.byte.index(content.len());
    content[at] ^= 1 << case.bit;
    disk.overwrite_file(name, content);
    let flipped = format!("{name} byte {at} bit {}", case.bit);

    match open(&disk, config(false, case.preallocate)) {
        Ok((log, replayed, report)) => {
            log.close();
            prop_assert_eq!(
                &replayed,
                &all,
                "{}: opened without an error but lost records (report {:?})",
                flipped,
                report
            );
        }
        Err(OpenError::Corrupted { .. } | OpenError::Unrecognised { .. }) => {}
        Err(e) => return Err(TestCaseError::fail(format!("{flipped}: {e}"))),
    }

    match open(&disk, config(true, case.preallocate)) {
        Ok((log, replayed, report)) => {
            log.close();
            prop_assert!(
                is_subsequence(&replayed, &all),
                "{}: repair invented or reordered records",
                flipped
            );
            if replayed.len() < all.len() {
                prop_assert!(
                    !report.repaired.is_empty(),
                    "{}: repair lost {} records without reporting them",
                    flipped,
                    all.len() - replayed.len()
                );
            }
            let (log, again, _) = open(&disk, config(false, case.preallocate))
                .map_err(|e| TestCaseError::fail(format!("{flipped}: after repair: {e}")))?;
            log.close();
            prop_assert_eq!(again, replayed, "{}: the repair did not stick", flipped);
        }
        // A damaged checkpoint (its pointer or its parts) cannot be rebuilt by repair.
        Err(OpenError::Corrupted { .. } | OpenError::Unrecognised { .. }) => {}
        Err(e) => return Err(TestCaseError::fail(format!("{flipped}: repair: {e}"))),
    }
    Ok(())
}

proptest! {
    // CI runs 256 cases; PROPTEST_CASES runs more (scripts/soak.sh).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_flipped_bit_is_reported_or_costs_nothing(case in case()) {
        run(case)?;
    }
}
