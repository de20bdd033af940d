//! Recovery over arbitrary segment bytes, on the simulated disk: the open either succeeds or
//! reports what is wrong, never panics; with repair it succeeds for any damage after a valid
//! header, and the repaired log opens again, normally, with the same records.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use storage::sim::SimDisk;
use storage::{Config, Log, Record};

fn config(repair: bool) -> Config {
    Config {
        segment_bytes: storage::limits::SEGMENT_BYTES_MIN,
        preallocate: false,
        repair,
        ..Config::default()
    }
}

/// Opens the log, replays it whole and finishes the recovery.
fn open(disk: &SimDisk, repair: bool) -> Option<Vec<Record>> {
    let mut recovery = Log::open(Arc::new(disk.clone()), config(repair)).ok()?;
    let records = recovery
        .by_ref()
        .map(|r| r.map(|r| r.record))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let (log, _) = recovery.finish().ok()?;
    log.close();
    Some(records)
}

fuzz_target!(|data: &[u8]| {
    // Up to two segments: a little-endian u32 gives the first one's length, the rest is the
    // second.
    let (first, second) = match data.split_first_chunk::<4>() {
        Some((len, rest)) => rest.split_at((u32::from_le_bytes(*len) as usize).min(rest.len())),
        None => (data, &[][..]),
    };
    let disk = SimDisk::new(1);
    disk.overwrite_file("0000000001.log", first.to_vec());
    if !second.is_empty() {
        disk.overwrite_file("0000000002.log", second.to_vec());
    }
    let _ = open(&disk, false);
    if let Some(repaired) = open(&disk, true) {
        let again = open(&disk, false).expect("a repaired log opens normally");
        assert_eq!(again, repaired, "the repair is on disk");
    }
});
