//! Real logs written as seeds for the `recovery` fuzz target.

use super::*;

/// Writes real logs as seeds for the `recovery` fuzz target, into
/// `$SYNCBROK_FUZZ_SEEDS/recovery/` (run by `scripts/fuzz.sh`): the first segment's length
/// (u32, little-endian), the first segment, the second.
#[tokio::test]
#[ignore = "writes fuzz seeds; run by scripts/fuzz.sh"]
async fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("SYNCBROK_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join("recovery");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = SimDisk::new(21);
    let config = Config {
        segment_bytes: crate::limits::SEGMENT_BYTES_MIN,
        preallocate: false,
        ..test_config()
    };
    let log = open(Arc::new(disk.clone()), config).unwrap().log;
    log.append(&[message(0, 40)]).await.unwrap();
    log.append(&[message(1, 10), message(2, 10)]).await.unwrap();
    log.append_ack(Ack {
        message: Uuid::from_u128(1),
        subscriber: 1,
        attempt: 1,
        acked_at_ms: 5,
    })
    .unwrap();
    log.checkpoint(vec![Bytes::from_static(b"state")])
        .await
        .unwrap();
    for i in 3..40 {
        log.append(&[message(i, 100)]).await.unwrap();
    }
    log.close();
    let first = disk.read_file(&segment_name(1)).unwrap();
    let second = disk.read_file(&segment_name(2)).unwrap_or_default();
    let mut one = (first.len() as u32).to_le_bytes().to_vec();
    one.extend_from_slice(&first);
    std::fs::write(dir.join("seed-one-segment"), &one).unwrap();
    one.extend_from_slice(&second);
    std::fs::write(dir.join("seed-two-segments"), one).unwrap();
}
