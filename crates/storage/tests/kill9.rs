//! A real crash test: a child process appends with `fsync: always` from several tasks and
//! reports every acknowledged record on its stdout; the parent kills it with SIGKILL at a random
//! moment, reopens the log, and checks that every acknowledged record is there, intact, at the
//! location it was acknowledged with, and in each task's order. Twenty-four cycles on one data
//! directory, so every cycle also recovers the torn tail the previous kill left.
//!
//! The child is this same test binary, started with `--exact kill9_child --ignored` and the data
//! directory in `SYNCBROK_KILL9_DIR`.
//!
//! SIGKILL kills the process, not the machine: the page cache survives it. Power loss is
//! covered by the simulated disk in `crash_model.rs`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use storage::io::FsBackend;
use storage::{Config, FsyncPolicy, Location, Log, Published, Record};
use uuid::Uuid;

const DIR_ENV: &str = "SYNCBROK_KILL9_DIR";
const CYCLE_ENV: &str = "SYNCBROK_KILL9_CYCLE";
const CYCLES: u64 = 24;
const TASKS: u64 = 8;

fn config() -> Config {
    Config {
        // Small segments, so kills also land around rolls.
        segment_bytes: 256 * 1024,
        fsync: FsyncPolicy::Always,
        ..Config::default()
    }
}

/// The id packs (cycle, task, sequence); the body is derived from the id.
fn id_of(cycle: u64, task: u64, seq: u64) -> Uuid {
    Uuid::from_u128((u128::from(cycle) << 96) | (u128::from(task) << 64) | u128::from(seq))
}

fn body_of(id: Uuid) -> Bytes {
    let n = id.as_u128();
    let len = 50 + (n % 1900) as usize;
    Bytes::from(
        (0..len)
            .map(|i| (n as usize + i * 31) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn record_of(id: Uuid) -> Record {
    Record::Published(Published {
        queue: 1,
        id,
        parents: Vec::new(),
        content_type: "application/octet-stream".into(),
        published_at_ms: 0,
        idempotency_key: None,
        fanout: vec![1, 2, 3],
        attributes: Default::default(),
        body: body_of(id),
    })
}

/// The child: appends until killed. Not a test on its own (it returns at once without its
/// environment); `kill9_crash_cycles` starts it.
#[test]
#[ignore = "started by kill9_crash_cycles as a child process"]
fn kill9_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let backend = Arc::new(FsBackend::open(&dir).unwrap());
    let (log, _) = Log::open(backend, config()).unwrap().finish().unwrap();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        for task in 0..TASKS {
            let log = log.clone();
            let out = out.clone();
            tokio::spawn(async move {
                let mut seq = 0;
                loop {
                    // Every fourth append is a batch of two: atomic on recovery.
                    let n = if seq % 4 == 3 { 2 } else { 1 };
                    let ids: Vec<Uuid> = (0..n).map(|k| id_of(cycle, task, seq + k)).collect();
                    let records: Vec<Record> = ids.iter().map(|id| record_of(*id)).collect();
                    let locations = log.append(&records).await.unwrap();
                    let mut out = out.lock().unwrap();
                    for (id, at) in ids.iter().zip(locations) {
                        writeln!(
                            out,
                            "ACK {} {} {} {}",
                            id.as_u128(),
                            at.segment,
                            at.offset,
                            at.len
                        )
                        .unwrap();
                    }
                    out.flush().unwrap();
                    seq += n;
                }
            });
        }
        // Until SIGKILL.
        std::future::pending::<()>().await
    });
}

/// A small deterministic generator for kill delays; the seed is printed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill9_crash_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill9 seed {rng}");
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<Uuid, Location> = HashMap::new();
    let mut total_torn = 0;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill9_child", "--ignored", "--nocapture"])
            .env(DIR_ENV, dir.path())
            .env(CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_ack, first_ack_seen) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut short by the kill has no newline: it was not fully reported.
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(ack) = line.strip_prefix("ACK ").and_then(|l| l.strip_suffix('\n')) {
                    if acks.is_empty() {
                        let _ = first_ack.send(());
                    }
                    acks.push(ack.to_owned());
                }
                line.clear();
            }
            acks
        });
        // Kill at a random moment while appends are under way.
        first_ack_seen
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("cycle {cycle}: the child acknowledged nothing"));
        let delay = next(&mut rng) % 150;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for ack in reader.join().unwrap() {
            let f: Vec<u128> = ack.split(' ').map(|x| x.parse().unwrap()).collect();
            let at = Location {
                segment: f[1] as u32,
                offset: f[2] as u32,
                len: f[3] as u32,
            };
            acked.insert(Uuid::from_u128(f[0]), at);
        }

        // Reopen and check every record ever acknowledged.
        let backend = Arc::new(FsBackend::open(dir.path()).unwrap());
        let mut recovery = Log::open(backend, config()).unwrap();
        let mut found: HashMap<Uuid, (Location, Record)> = HashMap::new();
        let mut last_seq: HashMap<(u64, u64), u64> = HashMap::new();
        for replayed in recovery.by_ref() {
            let replayed = replayed.unwrap();
            let Record::Published(p) = &replayed.record else {
                panic!("unexpected record {:?}", replayed.record);
            };
            let n = p.id.as_u128();
            let key = ((n >> 96) as u64, (n >> 64) as u64 & 0xFFFF_FFFF);
            let seq = n as u64;
            if let Some(prev) = last_seq.insert(key, seq) {
                assert!(seq > prev, "task {key:?}: {seq} replayed after {prev}");
            }
            found.insert(p.id, (replayed.location, replayed.record.clone()));
        }
        let (log, report) = recovery.finish().unwrap();
        if report.torn_tail.is_some() {
            total_torn += 1;
        }
        for (id, at) in &acked {
            let (location, record) = found
                .get(id)
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged record {id} lost"));
            assert_eq!(location, at, "record {id} moved");
            assert_eq!(record, &record_of(*id), "record {id} damaged");
            assert_eq!(&log.read(*at).unwrap(), record);
        }
        log.close();
    }
    println!(
        "{CYCLES} kills, {} acknowledged records all recovered; {total_torn} torn tails cut",
        acked.len()
    );
}
