//! The replicated log against a model: whatever the operations and wherever a power loss
//! falls between them, the log reopens holding exactly what the model says (each operation is
//! durable when it returns), and a torn append is cut off.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::sim::SimDisk;

fn entry(index: u64, byte: u8, len: usize) -> RaftEntry {
    RaftEntry {
        index,
        payload: Bytes::from(vec![byte; len]),
    }
}

fn open(disk: &Arc<SimDisk>, segment_bytes: u64) -> RaftLog {
    RaftLog::open(disk.clone(), segment_bytes).unwrap()
}

fn all(log: &RaftLog) -> Vec<RaftEntry> {
    log.entries(0..u64::MAX).unwrap()
}

#[test]
fn appends_read_back_across_segments_and_a_restart() {
    let disk = Arc::new(SimDisk::new(1));
    let mut log = open(&disk, 200);
    assert_eq!(log.next_index(), None);
    for i in 0..20 {
        log.append(&[entry(i, i as u8, 30)]).unwrap();
    }
    assert!(
        disk.file_names()
            .iter()
            .filter(|n| n.ends_with(".log"))
            .count()
            > 3
    );
    assert_eq!(
        log.entries(5..8).unwrap(),
        vec![entry(5, 5, 30), entry(6, 6, 30), entry(7, 7, 30)]
    );
    disk.crash();
    disk.restart();
    let log = open(&disk, 200);
    assert_eq!(all(&log).len(), 20);
    assert_eq!(log.next_index(), Some(20));
    let gap = open(&disk, 200).append(&[entry(22, 0, 1)]);
    assert!(matches!(
        gap,
        Err(RaftLogError::Gap {
            expected: 20,
            got: 22
        })
    ));
}

#[test]
fn a_truncated_suffix_stays_gone_and_its_indexes_are_written_again() {
    let disk = Arc::new(SimDisk::new(2));
    let mut log = open(&disk, 150);
    let first: Vec<RaftEntry> = (0..10).map(|i| entry(i, 1, 20)).collect();
    log.append(&first).unwrap();
    log.truncate_after(Some(3)).unwrap();
    assert_eq!(log.next_index(), Some(4));
    log.append(&[entry(4, 2, 20), entry(5, 2, 20)]).unwrap();
    disk.crash();
    disk.restart();
    let log = open(&disk, 150);
    let got = all(&log);
    assert_eq!(got.len(), 6);
    assert!(got[..4].iter().all(|e| e.payload[0] == 1));
    assert!(
        got[4..].iter().all(|e| e.payload[0] == 2),
        "no stale entry of the old suffix"
    );
}

#[test]
fn a_purge_past_the_end_continues_the_log_after_it() {
    let disk = Arc::new(SimDisk::new(3));
    let mut log = open(&disk, 100);
    log.append(&(0..5).map(|i| entry(i, 0, 10)).collect::<Vec<_>>())
        .unwrap();
    log.purge(2, Bytes::from_static(b"id2")).unwrap();
    assert_eq!(log.first_index(), Some(3));
    assert_eq!(log.entries(0..10).unwrap().len(), 2);
    // A snapshot installed from the leader covers more than this node had.
    log.truncate_after(None).unwrap();
    log.purge(40, Bytes::from_static(b"id40")).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (None, Some(41)));
    log.append(&[entry(41, 9, 10)]).unwrap();
    log.save_vote(Bytes::from_static(b"vote")).unwrap();
    disk.crash();
    disk.restart();
    let log = open(&disk, 100);
    assert_eq!(log.purged(), Some(&(40, Bytes::from_static(b"id40"))));
    assert_eq!(all(&log), vec![entry(41, 9, 10)]);
    assert_eq!(log.vote(), Some(&Bytes::from_static(b"vote")));
}

#[test]
fn a_torn_append_is_cut_and_damage_before_the_end_is_reported() {
    let disk = Arc::new(SimDisk::new(4));
    let mut log = open(&disk, 1 << 20);
    log.append(&[entry(0, 1, 100), entry(1, 1, 100)]).unwrap();
    drop(log);
    let name = segment::name(0);
    let mut bytes = disk.read_file(&name).unwrap();
    // Half an entry written after the last sync.
    let mut torn = Vec::new();
    segment::write_entry(&mut torn, 0, 2, &[7; 100]);
    bytes.extend_from_slice(&torn[..50]);
    disk.overwrite_file(&name, bytes.clone());
    let mut log = open(&disk, 1 << 20);
    assert_eq!(log.next_index(), Some(2));
    log.append(&[entry(2, 3, 10)]).unwrap();
    assert_eq!(all(&log).len(), 3);
    drop(log);
    // A flipped byte in the first entry of a segment that is not the last: damage.
    let mut log = open(&disk, 1);
    log.append(&[entry(3, 4, 10)]).unwrap();
    drop(log);
    bytes = disk.read_file(&name).unwrap();
    bytes[HEADER_BYTES + 20] ^= 1;
    disk.overwrite_file(&name, bytes);
    assert!(matches!(
        RaftLog::open(disk.clone(), 1),
        Err(RaftLogError::Corrupted { .. })
    ));
}

#[test]
fn a_failed_append_leaves_nothing_behind_and_the_next_one_goes_in() {
    let disk = Arc::new(SimDisk::new(5));
    let mut log = open(&disk, 1 << 20);
    log.append(&[entry(0, 1, 50)]).unwrap();
    disk.fail_next_write();
    assert!(log.append(&[entry(1, 2, 5000)]).is_err());
    disk.fail_next_sync();
    assert!(log.append(&[entry(1, 3, 5000)]).is_err());
    disk.clear_faults();
    assert_eq!(log.next_index(), Some(1), "neither failed append counts");
    log.append(&[entry(1, 4, 50)]).unwrap();
    disk.crash();
    disk.restart();
    let log = open(&disk, 1 << 20);
    assert_eq!(all(&log), vec![entry(0, 1, 50), entry(1, 4, 50)]);
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8, usize),
    TruncateAfter(u8),
    Purge(u8),
    Vote(u8),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..5, 1usize..120).prop_map(|(n, len)| Op::Append(n, len)),
        1 => any::<u8>().prop_map(Op::TruncateAfter),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => any::<u8>().prop_map(Op::Vote),
        1 => Just(Op::Crash),
    ]
}

/// What the log must hold: entries from `first` on, the purged position, the vote.
#[derive(Default)]
struct Model {
    entries: Vec<RaftEntry>,
    purged: Option<u64>,
    vote: Option<u8>,
    next_byte: u8,
}

impl Model {
    fn next(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index + 1)
            .or(self.purged.map(|p| p + 1))
            .unwrap_or(0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_log_reopens_as_the_model_after_any_power_loss(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..40)) {
        let disk = Arc::new(SimDisk::new(seed));
        let mut log = open(&disk, 300);
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Append(n, len) => {
                    let start = m.next();
                    m.next_byte = m.next_byte.wrapping_add(1);
                    let batch: Vec<RaftEntry> = (0..n as u64).map(|i| entry(start + i, m.next_byte, len)).collect();
                    log.append(&batch).unwrap();
                    m.entries.extend(batch);
                }
                Op::TruncateAfter(k) => {
                    // Only an uncommitted suffix is ever cut: never at or below the purged.
                    let keep = u64::from(k) % (m.next() + 1);
                    if m.purged.is_some_and(|p| keep <= p) {
                        continue;
                    }
                    let keep = keep.checked_sub(1);
                    log.truncate_after(keep).unwrap();
                    m.entries.retain(|e| keep.is_some_and(|k| e.index <= k));
                }
                Op::Purge(k) => {
                    let to = u64::from(k) % (m.next() + 3);
                    if m.purged.is_some_and(|p| to <= p) {
                        continue;
                    }
                    log.purge(to, Bytes::from(to.to_le_bytes().to_vec())).unwrap();
                    m.entries.retain(|e| e.index > to);
                    m.purged = Some(to);
                }
                Op::Vote(v) => {
                    log.save_vote(Bytes::from(vec![v])).unwrap();
                    m.vote = Some(v);
                }
                Op::Crash => {
                    drop(log);
                    disk.crash();
                    disk.restart();
                    log = open(&disk, 300);
                }
            }
            prop_assert_eq!(all(&log), m.entries.clone());
            prop_assert_eq!(log.next_index().unwrap_or(0), m.next());
            prop_assert_eq!(log.purged().map(|p| p.0), m.purged);
            prop_assert_eq!(log.vote().map(|v| v[0]), m.vote);
        }
    }
}
