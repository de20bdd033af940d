//! A writer that refuses every append after a failed fsync sleeps instead of spinning. In a
//! test binary of its own: it reads the CPU time of the writer threads of its process, which
//! the other tests' logs would add to.

use std::sync::Arc;

use bytes::Bytes;
use storage::sim::SimDisk;
use storage::{AppendError, Config, Log, Published, Record};

fn writer_cpu_ticks() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("syncbrok-log-wr") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        total += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    total
}

#[test]
fn a_poisoned_writer_sleeps_instead_of_spinning() {
    let disk = SimDisk::new(15);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let config = Config {
        segment_bytes: 64 * 1024,
        ..Config::default()
    };
    let mut recovery = Log::open(Arc::new(disk.clone()), config).unwrap();
    assert_eq!(recovery.by_ref().count(), 0);
    let log = recovery.finish().unwrap().0;
    disk.fail_next_sync();
    let record = Record::Published(Published {
        queue: 1,
        id: uuid::Uuid::from_u128(1),
        parents: Vec::new(),
        content_type: "application/json".into(),
        published_at_ms: 1_700_000_000_000,
        idempotency_key: None,
        fanout: vec![1],
        attributes: Default::default(),
        body: Bytes::from_static(b"{}"),
    });
    rt.block_on(async {
        assert!(matches!(
            log.append(&[record]).await,
            Err(AppendError::Poisoned(_))
        ));
    });
    let before = writer_cpu_ticks();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let used = writer_cpu_ticks() - before;
    // A spinning writer burns about 50 ticks in half a second; an idle one none.
    assert!(
        used < 15,
        "the poisoned writer used {used} ticks while idle"
    );
    log.close();
}
