//! The `storage` workload: group commit and replay speed of the log.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::io::FsBackend;
use storage::{Config, FsyncPolicy, Log, Published, Record};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the benchmark's data (a temporary directory is made inside it).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Seconds per append measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent appender counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    appenders: Vec<usize>,
    /// Body size of each record, in bytes.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records in the replay measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    replay_records: u64,
    /// Also write results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn record(i: u64, body: &Bytes) -> Record {
    Record::Published(Published {
        queue: 1,
        id: Uuid::from_u128(u128::from(i)),
        parents: Default::default(),
        content_type: "application/octet-stream".into(),
        published_at_ms: i,
        idempotency_key: None,
        fanout: vec![1, 2],
        attributes: Default::default(),
        body: body.clone(),
    })
}

/// This disk's own rate of 1 KiB append + fdatasync, one at a time: the cost group commit
/// shares out.
pub(crate) fn fdatasync_rate(
    dir: &std::path::Path,
    record_bytes: usize,
    seconds: f64,
) -> BenchResult<f64> {
    let path = dir.join("fdatasync.probe");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let buf = vec![0x5Au8; record_bytes];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        f.write_all_at(&buf, n * record_bytes as u64)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(rate)
}

struct AppendResult {
    appenders: usize,
    appends_per_s: f64,
    appends_per_sync: f64,
    p50_us: u64,
    p99_us: u64,
}

fn durable_appends(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    appenders: usize,
    body: &Bytes,
    seconds: f64,
) -> BenchResult<AppendResult> {
    let data = tempfile::tempdir_in(dir)?;
    let (log, _) =
        Log::open(Arc::new(FsBackend::open(data.path())?), Config::default())?.finish()?;
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let latencies = rt.block_on(async {
        let mut tasks = Vec::new();
        for a in 0..appenders {
            let log = log.clone();
            let counter = counter.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = (a as u64) << 40;
                while Instant::now() < deadline {
                    let r = record(i, &body);
                    let t = Instant::now();
                    log.append(std::slice::from_ref(&r)).await?;
                    lat.push(t.elapsed().as_micros() as u64);
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, storage::AppendError>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        Ok::<_, Box<dyn std::error::Error>>(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = log.stats();
    log.close();
    let mut latencies = latencies;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let n = counter.load(Ordering::Relaxed);
    Ok(AppendResult {
        appenders,
        appends_per_s: n as f64 / elapsed,
        appends_per_sync: n as f64 / stats.syncs.max(1) as f64,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    })
}

struct ReplayResult {
    records: u64,
    bytes: u64,
    write_s: f64,
    /// Reopen with the log in the page cache.
    warm_s: f64,
    /// Reopen after dropping the page cache, when allowed.
    cold_s: Option<f64>,
}

fn replay(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    records: u64,
    body: &Bytes,
) -> BenchResult<ReplayResult> {
    let data = tempfile::tempdir_in(dir)?;
    let config = Config {
        fsync: FsyncPolicy::Never,
        ..Config::default()
    };
    let (log, _) = Log::open(Arc::new(FsBackend::open(data.path())?), config.clone())?.finish()?;
    let started = Instant::now();
    rt.block_on(async {
        let writers = 16u64;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let log = log.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < records {
                    log.append(&[record(i, &body)]).await?;
                    i += writers;
                }
                Ok::<_, storage::AppendError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        log.sync().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let write_s = started.elapsed().as_secs_f64();
    let bytes: u64 = log.segments().iter().map(|s| s.bytes).sum();
    log.close();

    let warm_s = reopen(data.path(), &config, records, body.len())?;
    let cold_s = if drop_page_cache() {
        Some(reopen(data.path(), &config, records, body.len())?)
    } else {
        None
    };
    Ok(ReplayResult {
        records,
        bytes,
        write_s,
        warm_s,
        cold_s,
    })
}

/// Opens the log, replays every record (decoding each, as the broker will), and opens it for
/// appends; returns the seconds it took.
fn reopen(
    dir: &std::path::Path,
    config: &Config,
    records: u64,
    body_len: usize,
) -> BenchResult<f64> {
    let started = Instant::now();
    let mut recovery = Log::open(Arc::new(FsBackend::open(dir)?), config.clone())?;
    let mut replayed = 0u64;
    let mut body_bytes = 0u64;
    for r in recovery.by_ref() {
        if let Record::Published(p) = r?.record {
            body_bytes += p.body.len() as u64;
        }
        replayed += 1;
    }
    let (log, _) = recovery.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    log.close();
    if replayed != records || body_bytes != records * body_len as u64 {
        return Err(format!("replayed {replayed} of {records} records").into());
    }
    Ok(seconds)
}

/// Drops the page cache (needs root) so that a replay reads from the disk. The log was synced
/// on close, so its pages are clean and can be dropped.
fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

pub fn run(args: Args) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.dir)?;
    let probe_dir = tempfile::tempdir_in(&args.dir)?;
    let body = Bytes::from(vec![0xA5u8; args.record_bytes]);
    let mut json = Vec::new();

    println!(
        "storage benchmark: {} B records, fsync always, {} s per measurement, data in {}",
        args.record_bytes,
        args.seconds,
        args.dir.display()
    );
    let fsyncs = fdatasync_rate(probe_dir.path(), args.record_bytes, args.seconds)?;
    println!("disk: {fsyncs:.0} fdatasync/s (1 append + fdatasync, one at a time)");
    json.push(format!(
        r#"{{"workload":"storage","measure":"fdatasync_per_s","value":{fsyncs:.1}}}"#
    ));
    println!();
    println!(
        "{:>10} {:>12} {:>16} {:>14} {:>9} {:>9}",
        "appenders", "appends/s", "x fdatasync/s", "appends/fsync", "p50 µs", "p99 µs"
    );
    for &appenders in &args.appenders {
        let r = durable_appends(&rt, &args.dir, appenders, &body, args.seconds)?;
        let ratio = r.appends_per_s / fsyncs;
        println!(
            "{:>10} {:>12.0} {:>16.1} {:>14.1} {:>9} {:>9}",
            r.appenders, r.appends_per_s, ratio, r.appends_per_sync, r.p50_us, r.p99_us
        );
        json.push(format!(
            r#"{{"workload":"storage","measure":"durable_appends","appenders":{},"appends_per_s":{:.1},"ratio_to_fdatasync":{:.2},"appends_per_sync":{:.2},"p50_us":{},"p99_us":{}}}"#,
            r.appenders, r.appends_per_s, ratio, r.appends_per_sync, r.p50_us, r.p99_us
        ));
    }
    if args.replay_records > 0 {
        println!();
        let r = replay(&rt, &args.dir, args.replay_records, &body)?;
        println!(
            "replay: {} records ({:.0} MiB) written in {:.2} s; reopened and replayed in {:.2} s with the page cache warm ({:.0} records/s)",
            r.records,
            r.bytes as f64 / 1048576.0,
            r.write_s,
            r.warm_s,
            r.records as f64 / r.warm_s
        );
        match r.cold_s {
            Some(cold) => println!(
                "        and in {cold:.2} s from the disk, page cache dropped ({:.0} records/s)",
                r.records as f64 / cold
            ),
            None => println!("        (cold replay skipped: dropping the page cache needs root)"),
        }
        let cold = r.cold_s.map_or("null".to_string(), |c| format!("{c:.3}"));
        json.push(format!(
            r#"{{"workload":"storage","measure":"replay","records":{},"bytes":{},"warm_s":{:.3},"cold_s":{cold}}}"#,
            r.records, r.bytes, r.warm_s
        ));
    }
    crate::measure::write_json_lines(args.json.as_deref(), &json)?;
    Ok(())
}
