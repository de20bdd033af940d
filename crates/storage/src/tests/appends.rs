//! Appending and reading back: records, segments, batches, refusals, configuration.

use super::*;

#[tokio::test]
async fn appended_records_read_back_and_replay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let Opened { log, replayed, .. } = open(fs(&dir), test_config()).unwrap();
    assert!(replayed.is_empty());
    let mut written = Vec::new();
    for i in 0..20 {
        let r = message(i, 100);
        let at = log.append(std::slice::from_ref(&r)).await.unwrap();
        assert_eq!(log.read(at[0]).unwrap(), r);
        written.push((at[0], r));
    }
    log.close();
    let again = open(fs(&dir), test_config()).unwrap();
    let expected: Vec<_> = written.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(records(&again.replayed), expected);
    for ((at, r), rep) in written.iter().zip(&again.replayed) {
        assert_eq!(rep.location, *at);
        assert_eq!(&again.log.read(*at).unwrap(), r);
    }
    assert_eq!(again.report.torn_tail, None);
}

#[tokio::test]
async fn segments_roll_and_every_record_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), small_segments()).unwrap().log;
    let mut written = Vec::new();
    for i in 0..60 {
        let r = message(i, 300);
        written.push((log.append(std::slice::from_ref(&r)).await.unwrap()[0], r));
    }
    let segments = log.segments();
    assert!(
        segments.len() > 3,
        "expected several segments, got {segments:?}"
    );
    for s in &segments {
        // A segment passes its target only by the last frame written into it.
        assert!(s.bytes <= crate::limits::SEGMENT_BYTES_MIN + 400, "{s:?}");
    }
    for (at, r) in &written {
        assert_eq!(&log.read(*at).unwrap(), r);
    }
    log.close();
    let again = open(fs(&dir), small_segments()).unwrap();
    assert_eq!(again.replayed.len(), 60);
    assert_eq!(
        again
            .replayed
            .iter()
            .map(|r| r.location)
            .collect::<Vec<_>>(),
        written.iter().map(|(at, _)| *at).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_record_larger_than_a_segment_gets_one_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), small_segments()).unwrap().log;
    let small = message(0, 10);
    let big = message(1, 10_000);
    log.append(std::slice::from_ref(&small)).await.unwrap();
    let at = log.append(std::slice::from_ref(&big)).await.unwrap()[0];
    assert_eq!(at.segment, 2);
    assert_eq!(log.read(at).unwrap(), big);
    log.close();
    let again = open(fs(&dir), small_segments()).unwrap();
    assert_eq!(records(&again.replayed), vec![small, big]);
}

#[tokio::test]
async fn a_batch_is_recovered_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    let first = message(0, 10);
    log.append(std::slice::from_ref(&first)).await.unwrap();
    let batch: Vec<Record> = (1..5).map(|i| message(i, 50)).collect();
    let at = log.append(&batch).await.unwrap();
    assert_eq!(at.len(), 4);
    for (a, r) in at.iter().zip(&batch) {
        assert_eq!(&log.read(*a).unwrap(), r);
    }
    log.close();
    let whole = open(fs(&dir), test_config()).unwrap();
    assert_eq!(whole.replayed.len(), 5);
    whole.log.close();
    // Cut inside the third record of the batch: the batch frame fails as a whole.
    let path = dir.path().join(segment_name(1));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(u64::from(at[2].offset) + 3).unwrap();
    drop(f);
    let cut = open(fs(&dir), test_config()).unwrap();
    assert_eq!(records(&cut.replayed), vec![first]);
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_behind_and_the_log_goes_on() {
    let disk = SimDisk::new(3);
    let log = open(Arc::new(disk.clone()), test_config()).unwrap().log;
    let a = message(0, 100);
    log.append(std::slice::from_ref(&a)).await.unwrap();
    disk.fail_next_write();
    let err = log.append(&[message(1, 5000)]).await.unwrap_err();
    assert!(matches!(err, AppendError::NoSpace(_)), "{err}");
    let c = message(2, 100);
    let at = log.append(std::slice::from_ref(&c)).await.unwrap()[0];
    assert_eq!(log.read(at).unwrap(), c);
    log.close();
    let again = open(Arc::new(disk), test_config()).unwrap();
    assert_eq!(records(&again.replayed), vec![a, c]);
    assert_eq!(again.report.torn_tail, None);
}

#[tokio::test]
async fn appends_after_close_are_refused() {
    let disk = SimDisk::new(8);
    let log = open(Arc::new(disk), test_config()).unwrap().log;
    let other = log.clone();
    log.close();
    assert!(matches!(
        other.append(&[message(0, 1)]).await,
        Err(AppendError::Closed)
    ));
}

#[tokio::test]
async fn oversized_appends_are_refused_before_anything_is_written() {
    let disk = SimDisk::new(9);
    let log = open(Arc::new(disk), test_config()).unwrap().log;
    let huge = message(0, crate::limits::RECORD_PAYLOAD_BYTES_MAX as usize);
    assert!(matches!(
        log.append(&[huge]).await,
        Err(AppendError::TooLarge(_))
    ));
    // Just under the limit is fine.
    let fits = message(1, crate::limits::RECORD_PAYLOAD_BYTES_MAX as usize - 200);
    let at = log.append(std::slice::from_ref(&fits)).await.unwrap()[0];
    assert_eq!(log.read(at).unwrap(), fits);
}

#[tokio::test]
async fn a_bogus_location_is_an_error_not_a_huge_allocation() {
    let disk = SimDisk::new(14);
    let log = open(Arc::new(disk), test_config()).unwrap().log;
    let at = log.append(&[message(0, 10)]).await.unwrap()[0];
    for bogus in [
        Location {
            len: u32::MAX,
            ..at
        },
        Location { len: 3, ..at },
        Location {
            offset: at.offset + 1,
            ..at
        },
    ] {
        assert!(
            matches!(log.read(bogus), Err(ReadError::Corrupted { .. })),
            "{bogus:?}"
        );
    }
    assert!(matches!(
        log.read(Location { segment: 99, ..at }),
        Err(ReadError::SegmentGone { segment: 99 })
    ));
}

#[test]
fn invalid_configurations_are_refused() {
    let disk = SimDisk::new(10);
    for bad in [
        Config {
            segment_bytes: 100,
            ..test_config()
        },
        Config {
            fsync: FsyncPolicy::Interval(std::time::Duration::ZERO),
            ..test_config()
        },
        Config {
            inbox_requests: 0,
            ..test_config()
        },
    ] {
        assert!(matches!(
            Log::open(Arc::new(disk.clone()), bad),
            Err(OpenError::InvalidConfig(_))
        ));
    }
}
