//! The side-by-side workloads at a small scale against the real `syncbrok` binary, so that the
//! harness itself stays correct: every delivery counted, chains checked for order, a backlog
//! recovered whole after `kill -9` and drained. Figures are not asserted (they belong to
//! benchmark runs, not tests); what the harness checks and reports is.
//!
//! The `syncbrok` binary must be built next to `syncbrok-bench` (`cargo test --workspace`
//! builds both).

use std::path::PathBuf;
use std::process::Command;

fn syncbrok_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_syncbrok-bench"));
    let binary = bench.with_file_name("syncbrok");
    assert!(
        binary.exists(),
        "{} is missing: run the tests of the whole workspace (cargo test --workspace), which builds it",
        binary.display()
    );
    binary
}

/// Runs `syncbrok-bench ARGS`, checks it succeeded, returns its stdout and the JSON lines it
/// wrote.
fn bench(args: &[&str]) -> (String, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("out.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_syncbrok-bench"))
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--syncbrok-bin")
        .arg(syncbrok_binary())
        .output()
        .expect("syncbrok-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "syncbrok-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = std::fs::read_to_string(&json)
        .expect("JSON results written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (stdout, lines)
}

#[test]
fn fanout_counts_every_delivery_for_syncbrok_and_the_http_limit() {
    let (stdout, lines) = bench(&[
        "fanout",
        "--targets",
        "syncbrok,http-limit",
        "--messages",
        "300",
        "--publishers",
        "8",
        "--rounds",
        "1",
        "--idle-seconds",
        "1",
    ]);
    assert!(stdout.contains("vs http-limit"), "{stdout}");
    let targets: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["target"].is_string()).collect();
    assert_eq!(targets.len(), 2);
    for t in targets {
        assert!(t["deliveries_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{t}");
        assert!(t["p99_us"].as_u64().unwrap_or(0) >= t["p50_us"].as_u64().unwrap_or(0));
    }
    let syncbrok = lines
        .iter()
        .find(|l| l["target"] == "syncbrok")
        .expect("syncbrok");
    assert!(syncbrok["peak_rss_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(lines.iter().any(|l| l["measure"] == "idle_cpu"));
    let disk = lines
        .iter()
        .find(|l| l["measure"] == "disk")
        .expect("disk rate");
    assert!(disk["fdatasync_per_s"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn fanout_with_batched_publishes() {
    let (_, lines) = bench(&[
        "fanout",
        "--targets",
        "syncbrok",
        "--messages",
        "500",
        "--batch",
        "100",
        "--publishers",
        "4",
        "--rounds",
        "1",
        "--idle-seconds",
        "0",
    ]);
    let syncbrok = lines
        .iter()
        .find(|l| l["target"] == "syncbrok")
        .expect("syncbrok's line");
    assert_eq!(syncbrok["batch"], 100);
    assert!(syncbrok["deliveries_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    // 5 batch requests, each durable before its answer (acks add lazy syncs of their own).
    let fsyncs = syncbrok["fsyncs"].as_u64().expect("fsyncs counted");
    assert!(fsyncs >= 1, "{fsyncs} fsyncs");
}

#[test]
fn chains_arrive_in_order_whether_batched_or_one_by_one() {
    for mode in [None, Some("--one-by-one")] {
        let mut args = vec![
            "chains",
            "--chains",
            "20",
            "--length",
            "5",
            "--publishers",
            "4",
            "--rounds",
            "1",
        ];
        args.extend(mode);
        let (_, lines) = bench(&args);
        assert_eq!(lines[0]["order_violations"], 0, "{mode:?}");
        assert_eq!(lines[0]["hops"], 20 * 4, "{mode:?}");
    }
}

#[test]
fn a_backlog_survives_kill_9_and_drains() {
    let (stdout, lines) = bench(&["backlog", "--messages", "3000", "--batch", "500"]);
    assert!(stdout.contains("kill -9, restart"), "{stdout}");
    let recovered = &lines[0];
    assert_eq!(recovered["messages"], 3000);
    assert!(recovered["disk_bytes"].as_u64().unwrap_or(0) > 3000 * 1024);
    let drain = &lines[1];
    assert_eq!(drain["deliveries"], 6000);
}

#[test]
fn scheduled_messages_arrive_after_their_due_time_not_before() {
    let (stdout, lines) = bench(&[
        "scheduled",
        "--messages",
        "2000",
        "--lead-s",
        "3",
        "--spread-s",
        "1",
        "--batch",
        "500",
    ]);
    assert!(stdout.contains("due → delivered"), "{stdout}");
    assert_eq!(lines[0]["messages"], 2000);
    assert_eq!(lines[0]["early"], 0);
}
