//! Opening a log that is not as it was written: torn tails, corruption, repair, missing or foreign segments.

use super::*;

#[tokio::test]
async fn a_torn_tail_is_cut_with_a_report_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    let kept: Vec<Record> = (0..5).map(|i| message(i, 64)).collect();
    for r in &kept {
        log.append(std::slice::from_ref(r)).await.unwrap();
    }
    let last = log.append(&[message(5, 64)]).await.unwrap()[0];
    log.close();
    // Tear the last record: keep its header and half its payload.
    let path = dir.path().join(segment_name(1));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let torn_at = u64::from(last.offset) + u64::from(last.len) / 2;
    f.set_len(torn_at).unwrap();
    drop(f);

    let again = open(fs(&dir), test_config()).unwrap();
    assert_eq!(records(&again.replayed), kept);
    let torn = again
        .report
        .torn_tail
        .clone()
        .expect("a torn tail is reported");
    assert_eq!(torn.offset, u64::from(last.offset));
    // Counted to the last non-zero byte: what was really lost.
    assert!(torn.bytes_dropped > 0 && torn.bytes_dropped <= torn_at - u64::from(last.offset));
    let after = message(9, 64);
    again
        .log
        .append(std::slice::from_ref(&after))
        .await
        .unwrap();
    again.log.close();

    let third = open(fs(&dir), test_config()).unwrap();
    assert_eq!(third.report.torn_tail, None);
    let mut expected = kept.clone();
    expected.push(after);
    assert_eq!(records(&third.replayed), expected);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    let at = log.append(&[message(0, 10)]).await.unwrap()[0];
    log.close();
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    let end = u64::from(at.offset + at.len);
    // Garbage in the preallocated zeros right after the last record, and again further on.
    content[end as usize..end as usize + 60].fill(0xAB);
    content[end as usize + 60..end as usize + 90].fill(0);
    content[end as usize + 90..end as usize + 100].fill(0xCD);
    std::fs::write(&path, content).unwrap();
    let again = open(fs(&dir), test_config()).unwrap();
    assert_eq!(again.replayed.len(), 1);
    let torn = again.report.torn_tail.unwrap();
    assert_eq!((torn.offset, torn.bytes_dropped), (end, 100));
    // The garbage is zeroed, not truncated: the segment keeps its preallocated blocks. The
    // reopened log then wrote a sync mark for what recovery synced.
    again.log.close();
    let content = std::fs::read(&path).unwrap();
    let mark = end as usize + crate::frame::SYNC_MARK_BYTES;
    assert_eq!(content[end as usize + 8], 66, "a sync mark");
    assert!(content[mark..].iter().all(|&b| b == 0));
}

/// Writes records into several segments and returns the location of one in segment 1.
async fn log_with_sealed_segments(dir: &tempfile::TempDir) -> (Vec<Record>, Location) {
    let log = open(fs(dir), small_segments()).unwrap().log;
    let mut all = Vec::new();
    let mut victim = None;
    for i in 0..40 {
        let r = message(i, 300);
        let at = log.append(std::slice::from_ref(&r)).await.unwrap()[0];
        if i == 3 {
            victim = Some(at);
        }
        all.push(r);
    }
    log.close();
    (all, victim.unwrap())
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, victim) = log_with_sealed_segments(&dir).await;
    assert_eq!(victim.segment, 1);
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[victim.offset as usize + 20] ^= 0xFF;
    std::fs::write(&path, content).unwrap();

    match open(fs(&dir), small_segments()) {
        Err(OpenError::Corrupted { file, offset, .. }) => {
            assert!(file.ends_with(&segment_name(1)), "{file}");
            assert_eq!(offset, u64::from(victim.offset));
        }
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("expected Corrupted, the log opened"),
    }
}

#[tokio::test]
async fn repair_drops_the_damaged_part_reports_it_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (all, victim) = log_with_sealed_segments(&dir).await;
    let path = dir.path().join(segment_name(1));
    let len_before = std::fs::metadata(&path).unwrap().len();
    let mut content = std::fs::read(&path).unwrap();
    // In the body: the record's kind, queue and id still read as they were.
    content[victim.offset as usize + 120] ^= 0xFF;
    std::fs::write(&path, content).unwrap();

    let repaired = open_repairing(&dir, small_segments()).unwrap();
    let lost = &repaired.report.repaired;
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].offset, u64::from(victim.offset));
    // Only the damaged record goes: repair steps over it to the next valid frame.
    assert_eq!(lost[0].bytes_dropped, u64::from(victim.len));
    assert!(lost[0].bytes_dropped <= len_before - u64::from(victim.offset));
    let Record::Published(p) = &all[3] else {
        unreachable!()
    };
    assert_eq!(lost[0].records.len(), 1);
    assert_eq!(lost[0].records[0].kind, "published");
    assert_eq!(lost[0].records[0].queue, Some(p.queue));
    assert_eq!(lost[0].records[0].messages, vec![p.id]);
    let got = records(&repaired.replayed);
    let mut expected = all.clone();
    expected.remove(3);
    assert_eq!(got, expected, "every intact record is kept");
    repaired.log.close();
    // The repair is on disk: a normal open now succeeds with the same records.
    let again = open(fs(&dir), small_segments()).unwrap();
    assert_eq!(records(&again.replayed), got);
}

/// 200 acknowledged records in the active segment, one byte flipped inside record 50: the
/// records after it were synced (their sync marks say so), so this is corruption, not a torn
/// write to cut off with the 150 acknowledged records after it.
#[tokio::test]
async fn damage_before_synced_records_of_the_last_segment_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    let mut all = Vec::new();
    let mut victim = None;
    for i in 0..200 {
        let r = message(i, 100);
        let at = log.append(std::slice::from_ref(&r)).await.unwrap()[0];
        assert_eq!(at.segment, 1, "all in the active segment");
        if i == 50 {
            victim = Some(at);
        }
        all.push(r);
    }
    // A crash, not a clean close: the page cache keeps what was written.
    drop(log);
    let victim = victim.unwrap();
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[victim.offset as usize + 40] ^= 0x10;
    std::fs::write(&path, content).unwrap();
    match open(fs(&dir), test_config()) {
        Err(OpenError::Corrupted { offset, reason, .. }) => {
            assert_eq!(offset, u64::from(victim.offset));
            assert!(reason.contains("sync mark"), "{reason}");
        }
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(o) => panic!(
            "the damage was cut as a torn tail: {} of 200 records left",
            o.replayed.len()
        ),
    }
    // Repair keeps the 199 intact records and reports the one it lost.
    let repaired = open_repairing(&dir, test_config()).unwrap();
    let mut expected = all.clone();
    expected.remove(50);
    assert_eq!(records(&repaired.replayed), expected);
    assert_eq!(repaired.report.repaired.len(), 1);
    assert_eq!(repaired.report.torn_tail, None);
}

/// A torn write can leave some of its sectors on disk after a power loss: valid frames after
/// the tear, but none of them synced. That is still a torn tail, cut off.
#[tokio::test]
async fn valid_frames_of_an_unsynced_write_after_a_tear_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    let durable: Vec<Record> = (0..5).map(|i| message(i, 100)).collect();
    let mut last = None;
    for r in &durable {
        last = Some(log.append(std::slice::from_ref(r)).await.unwrap()[0]);
    }
    let salt = log.salt();
    log.close();
    // After the last record: the mark its fsync was followed by. Then two appends that were
    // written but never synced: the first torn (its first sector lost), the second whole.
    let last = last.unwrap();
    let end = (last.offset + last.len) as usize + crate::frame::SYNC_MARK_BYTES;
    let mut torn = crate::frame::encode_unit(&[message(5, 600)], salt)
        .unwrap()
        .bytes;
    torn[..16].fill(0);
    let whole = crate::frame::encode_unit(&[message(6, 100)], salt)
        .unwrap()
        .bytes;
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[end..end + torn.len()].copy_from_slice(&torn);
    content[end + torn.len()..end + torn.len() + whole.len()].copy_from_slice(&whole);
    std::fs::write(&path, content).unwrap();
    let again = open(fs(&dir), test_config()).unwrap();
    assert_eq!(records(&again.replayed), durable);
    let tail = again.report.torn_tail.unwrap();
    assert_eq!(tail.offset, end as u64);
    assert_eq!(tail.bytes_dropped as usize, torn.len() + whole.len());
}

#[tokio::test]
async fn a_segment_of_another_format_version_stops_the_open_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    log.append(&[message(0, 10)]).await.unwrap();
    log.close();
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&path, &content).unwrap();
    match open(fs(&dir), test_config()) {
        Err(OpenError::Unrecognised { reason, .. }) => {
            assert!(reason.contains("version 1"), "{reason}");
        }
        Err(e) => panic!("expected Unrecognised, got {e}"),
        Ok(_) => panic!("a segment of another version was taken for a torn header"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        content,
        "nothing was changed"
    );
}

#[tokio::test]
async fn a_damaged_header_with_records_after_it_is_corruption_even_in_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    log.append(&[message(0, 10)]).await.unwrap();
    log.close();
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[13] ^= 0x01;
    std::fs::write(&path, &content).unwrap();
    assert!(matches!(
        open(fs(&dir), test_config()),
        Err(OpenError::Corrupted { offset: 0, .. })
    ));
}

#[tokio::test]
async fn a_missing_middle_segment_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    log_with_sealed_segments(&dir).await;
    std::fs::remove_file(dir.path().join(segment_name(2))).unwrap();
    assert!(matches!(
        open(fs(&dir), small_segments()),
        Err(OpenError::MissingSegment { first: 1, .. })
    ));
}

#[test]
fn a_damaged_checkpoint_pointer_is_corruption() {
    let disk = SimDisk::new(11);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = open(Arc::new(disk.clone()), test_config()).unwrap().log;
        log.checkpoint(vec![Bytes::from_static(b"x")])
            .await
            .unwrap();
        log.close();
    });
    let mut pointer = disk.read_file("CHECKPOINT").unwrap();
    pointer[12] ^= 1;
    disk.overwrite_file("CHECKPOINT", pointer);
    assert!(matches!(
        open(Arc::new(disk), test_config()),
        Err(OpenError::Corrupted { .. })
    ));
}

#[tokio::test]
async fn finish_refuses_after_a_failed_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (_, victim) = log_with_sealed_segments(&dir).await;
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[victim.offset as usize + 20] ^= 0xFF;
    std::fs::write(&path, content).unwrap();
    let mut recovery = Log::open(fs(&dir), small_segments()).unwrap();
    let first_error = recovery.by_ref().find_map(Result::err);
    assert!(matches!(first_error, Some(OpenError::Corrupted { .. })));
    assert!(matches!(recovery.finish(), Err(OpenError::ReplayFailed(_))));
}

/// A batch frame with a valid checksum around garbage: damage, never a torn write.
fn malformed_batch(salt: crate::frame::Salt) -> Vec<u8> {
    let mut frame = Vec::new();
    crate::frame::write_frame(&mut frame, salt, 64, |out| {
        out.extend_from_slice(&[7u8; 40])
    });
    frame
}

#[tokio::test]
async fn a_malformed_frame_in_the_last_segment_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    let at = log.append(&[message(0, 10)]).await.unwrap()[0];
    let salt = log.salt();
    log.close();
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    let end = (at.offset + at.len) as usize;
    let bad = malformed_batch(salt);
    content[end..end + bad.len()].copy_from_slice(&bad);
    std::fs::write(&path, content).unwrap();
    match open(fs(&dir), test_config()) {
        Err(OpenError::Corrupted { offset, .. }) => assert_eq!(offset, end as u64),
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("a malformed batch was taken for a torn tail"),
    }
}

#[tokio::test]
async fn repairing_a_damaged_sealed_header_leaves_a_log_that_opens_normally() {
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = log_with_sealed_segments(&dir).await;
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[2] ^= 0xFF;
    std::fs::write(&path, content).unwrap();
    assert!(matches!(
        open(fs(&dir), small_segments()),
        Err(OpenError::Corrupted { offset: 0, .. })
    ));
    let repaired = open_repairing(&dir, small_segments()).unwrap();
    assert_eq!(repaired.report.repaired.len(), 1);
    let kept = records(&repaired.replayed);
    assert_eq!(kept.last(), all.last());
    repaired.log.close();
    let again = open(fs(&dir), small_segments()).unwrap();
    assert_eq!(records(&again.replayed), kept);
}

#[tokio::test]
async fn a_checkpoint_pointer_outside_its_segment_is_corruption() {
    let disk = SimDisk::new(16);
    let log = open(Arc::new(disk.clone()), test_config()).unwrap().log;
    log.checkpoint(vec![Bytes::from_static(b"x")])
        .await
        .unwrap();
    log.close();
    for (segment, offset) in [(1, 1 << 30), (1, 3), (9, 24)] {
        let pointer = crate::writer::encode_checkpoint_pointer(Location {
            segment,
            offset,
            len: 30,
        });
        disk.overwrite_file("CHECKPOINT", pointer);
        let result = open(Arc::new(disk.clone()), test_config());
        assert!(
            matches!(
                result,
                Err(OpenError::Corrupted { .. } | OpenError::MissingSegment { .. })
            ),
            "segment {segment} offset {offset}"
        );
    }
}

/// A message body may hold bytes that form a valid frame (a client cannot know the log's salt,
/// but nothing stops a body from carrying a copy of another log's data). When damage hits the
/// record around it, repair must resume after the damaged frame, never inside its body.
#[tokio::test]
async fn repair_resumes_after_the_damaged_frame_not_at_a_frame_inside_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), small_segments()).unwrap().log;
    log.append(&[message(0, 10)]).await.unwrap();
    log.close();
    let path = dir.path().join(segment_name(1));
    let header = std::fs::read(&path).unwrap();
    let salt = crate::frame::Salt::new(u32::from_le_bytes(header[16..20].try_into().unwrap()));
    let smuggled = message(1000, 40);
    let inner = crate::frame::encode_unit(std::slice::from_ref(&smuggled), salt)
        .unwrap()
        .bytes;
    let mut body = vec![7u8; 100];
    body.extend_from_slice(&inner);
    body.extend_from_slice(&[7u8; 100]);
    let Record::Published(mut carrier) = message(1, 0) else {
        unreachable!()
    };
    carrier.body = Bytes::from(body);
    let carrier = Record::Published(carrier);
    let log = open(fs(&dir), small_segments()).unwrap().log;
    let victim = log.append(std::slice::from_ref(&carrier)).await.unwrap()[0];
    let after = message(2, 10);
    log.append(std::slice::from_ref(&after)).await.unwrap();
    log.append(&[message(3, 70_000)]).await.unwrap(); // seals segment 1
    log.close();

    let mut content = std::fs::read(&path).unwrap();
    let end = (victim.offset + victim.len) as usize;
    content[end - 50] ^= 0xFF; // in the body, after the smuggled frame
    std::fs::write(&path, content).unwrap();
    let repaired = open_repairing(&dir, small_segments()).unwrap();
    let lost = &repaired.report.repaired;
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].offset, u64::from(victim.offset));
    assert_eq!(lost[0].bytes_dropped, u64::from(victim.len));
    let got = records(&repaired.replayed);
    assert!(
        !got.contains(&smuggled),
        "a frame inside a body was replayed"
    );
    assert!(!got.contains(&carrier));
    assert!(got.contains(&after), "the record after the damage is kept");
    repaired.log.close();
}

/// A directory whose last segment is of the previous format version (written by the build
/// before): it is read, left as it is, and appends go to a new segment of this version, so
/// that no record of a newer kind ever sits under the older header.
#[tokio::test]
async fn appends_after_an_upgrade_go_to_a_segment_of_this_version() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    log.append(&[message(0, 10)]).await.unwrap();
    log.close();
    let path = dir.path().join(segment_name(1));
    let mut content = std::fs::read(&path).unwrap();
    content[8..12].copy_from_slice(&crate::frame::FORMAT_VERSION_OLDEST.to_le_bytes());
    let crc = crc32c::crc32c(&content[0..20]);
    content[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &content).unwrap();

    let Opened { log, replayed, .. } = open(fs(&dir), test_config()).unwrap();
    assert_eq!(records(&replayed), vec![message(0, 10)]);
    let at = log.append(&[message(1, 10)]).await.unwrap();
    assert_eq!(at[0].segment, 2, "a new segment");
    log.close();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        content,
        "the old one untouched"
    );
    let second = std::fs::read(dir.path().join(segment_name(2))).unwrap();
    assert_eq!(
        u32::from_le_bytes(second[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
    let again = open(fs(&dir), test_config()).unwrap();
    assert_eq!(
        records(&again.replayed),
        vec![message(0, 10), message(1, 10)]
    );
    let at = again.log.append(&[message(2, 10)]).await.unwrap();
    assert_eq!(at[0].segment, 2, "a segment of this version goes on");
}

/// The last segment was created (zero-filled) just before a crash, its header never written:
/// it is started afresh in this version and appended to, not left headerless behind a new
/// segment (which the next open would take for a damaged segment in the middle of the log).
#[tokio::test]
async fn a_last_segment_without_a_header_is_started_afresh_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(fs(&dir), test_config()).unwrap().log;
    log.append(&[message(0, 10)]).await.unwrap();
    log.close();
    let second = dir.path().join(segment_name(2));
    std::fs::write(&second, vec![0u8; 4096]).unwrap();

    let Opened { log, report, .. } = open(fs(&dir), test_config()).unwrap();
    assert!(report.torn_tail.is_some());
    let at = log.append(&[message(1, 10)]).await.unwrap();
    assert_eq!(at[0].segment, 2, "the headerless segment, started afresh");
    log.close();
    assert!(!dir.path().join(segment_name(3)).exists());
    let again = open(fs(&dir), test_config()).unwrap();
    assert_eq!(
        records(&again.replayed),
        vec![message(0, 10), message(1, 10)]
    );
}
